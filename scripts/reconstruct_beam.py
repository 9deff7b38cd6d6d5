"""Batch reconstruction on Apache Beam: the face folders of ``scripts/reconstruct.py`` for many photos, on any
runner (DirectRunner here; Flink, Spark, Dataflow unchanged: only the pipeline options differ).

    bash scripts/install_tools.sh beam          # apache-beam in its own venv on top of .venv (~/.cache/tf_facetex)
    PYTHONPATH=$PWD ~/.cache/tf_facetex/beam_venv/bin/python scripts/reconstruct_beam.py \
        --input photos/ --output_dir out/ -- --runner=DirectRunner --direct_num_workers=2

Flags after ``--`` are Beam pipeline options, e.g. ``--runner=FlinkRunner --flink_master=host:8081
--environment_type=PROCESS``, ``--runner=SparkRunner --spark_master_url=spark://host:7077``, or ``--runner=
DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --sdk_container_image=IMAGE`` (an image with
tf_facetex and its requirements installed). The workers read the inputs and write ``--output_dir`` with plain file
operations, so both must be on a file system every worker sees (NFS, a mounted bucket). Results: one folder per
face (complete when it exists), ``errors.json`` (unreadable files, photos without a face, failed faces) and
``index.html``, as reconstruct.py writes them; the exit status is non-zero only when every input failed.
"""
from absl import flags

from tf_facetex import cli
from tf_facetex.pipeline import setup

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "An image file or a folder of images (searched recursively), or a text file "
                    "with one image path a line (--input_list).")
flags.DEFINE_bool("input_list", False, "--input is a text file listing image paths (one a line).")
flags.DEFINE_string("output_dir", None, "Output folder; one sub-folder per face, plus index.html and errors.json.")
flags.DEFINE_enum("refiner", setup.DEFAULT_REFINER, list(setup.REFINER_MODES), "Detail stage (see "
                  "scripts/reconstruct.py --help).")
flags.DEFINE_string("checkpoint", None, "Refinement network of the net modes (default: the shipped one); given "
                    "without --refiner, it means --refiner=net.")
flags.DEFINE_integer("net_fit_steps", 30, "Steps of the fit after the network (--refiner=net+fit).")
flags.DEFINE_string("face_model", None, "Face model (default: as scripts/reconstruct.py).")
flags.DEFINE_bool("all_faces", False, "Every face of a photo (folders <stem>_face<k>).")
flags.DEFINE_enum("prior", "fit", ["fit", "regressor"], "Prior coefficients: the per-image fit or the regressor.")
flags.DEFINE_string("regressor_weights", None, "PriorRegressor weights for --prior=regressor.")
flags.DEFINE_string("regressor_backbone", "resnet50", "Backbone the regressor weights were trained with.")
flags.DEFINE_integer("uv_size", None, "UV texture size (default 256, or the checkpoint's).")
flags.DEFINE_integer("fit_steps", 150, "Adam steps of the UV-space detail fit (--refiner=fit).")
flags.DEFINE_integer("landmark_steps", 300, "Steps of the landmark fit (--prior=fit).")
flags.DEFINE_integer("batch_size", 1, "Most faces reconstructed together by one worker call.")
flags.DEFINE_enum("mesh_pose", "unposed", ["unposed", "posed"], "mesh.obj / mesh.glb geometry (see reconstruct.py).")
flags.DEFINE_string("turntable_light", "studio", "Light preset of turntable.png.")
flags.DEFINE_enum("detector", "auto", ["auto", "hog", "cnn"], "dlib face detector (as scripts/reconstruct.py): auto = "
                  "HOG, then the CNN when HOG finds nothing.")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "Face mask (see reconstruct.py).")


def main(argv):
    import json
    import pathlib

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tf_facetex import beam_batch, pipeline
    from tf_facetex.errors import FaceTexError

    if not FLAGS.input or not FLAGS.output_dir:
        raise FaceTexError("--input and --output_dir are required (see --help)")
    if FLAGS.prior == "regressor" and not FLAGS.regressor_weights:
        raise FaceTexError("--prior=regressor needs --regressor_weights")
    if FLAGS.fit_steps < 1 or FLAGS.batch_size < 1:
        raise FaceTexError("--fit_steps and --batch_size must be >= 1")
    if FLAGS.input_list:
        listing = pathlib.Path(FLAGS.input).expanduser()
        if not listing.is_file():
            raise FaceTexError(f"--input {listing}: no such list file")
        inputs = [pathlib.Path(line.strip()) for line in listing.read_text().splitlines() if line.strip()]
        if not inputs:
            raise FaceTexError(f"--input {listing}: the list is empty")
    else:
        inputs = pipeline.resolve_inputs(FLAGS.input)
    out_dir = pipeline.check_output_dir(FLAGS.output_dir)
    spec = beam_batch.ReconstructionSpec(
        face_model=FLAGS.face_model, checkpoint=FLAGS.checkpoint,
        refiner="net" if FLAGS.checkpoint and not FLAGS["refiner"].present else FLAGS.refiner,
        net_fit_steps=FLAGS.net_fit_steps, prior=FLAGS.prior,
        regressor_weights=FLAGS.regressor_weights, regressor_backbone=FLAGS.regressor_backbone, uv_size=FLAGS.uv_size,
        fit_steps=FLAGS.fit_steps, landmark_steps=FLAGS.landmark_steps, turntable_light=FLAGS.turntable_light,
        detector=FLAGS.detector, masker=FLAGS.masker, all_faces=FLAGS.all_faces, mesh_pose=FLAGS.mesh_pose,
        batch_size=FLAGS.batch_size, verbose=FLAGS.verbose)
    options = PipelineOptions(argv[1:])          # everything after `--`
    summary_path = out_dir / ".beam_summary"
    with beam.Pipeline(options=options) as p:
        summary = beam_batch.build_pipeline(p, inputs, out_dir, spec)
        _ = summary | "Summary" >> beam.Map(lambda s: json.dumps(s)) | beam.io.WriteToText(
            str(summary_path), shard_name_template="")
    result = json.loads(summary_path.read_text())
    summary_path.unlink()
    for output in result["outputs"]:
        print(f"  {output['folder']}/  R(A',L') {output['metrics']['detailed_psnr_db']:.2f} dB")
    for error in result["errors"]:
        print(f"  failed: {error['input']}: {error['error']}")
    failed = {e["input"] for e in result["errors"]}
    print(f"[reconstruct_beam] {len(result['outputs'])} face(s) from {len(inputs) - len(failed)}/{len(inputs)} "
          f"input(s) -> {out_dir}/ (contact sheet: {out_dir}/index.html)")
    if not result["outputs"]:
        raise FaceTexError(f"all {len(inputs)} input(s) failed (listed in {out_dir}/errors.json)")


if __name__ == "__main__":
    cli.run(main)
