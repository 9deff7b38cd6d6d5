"""Runs the frozen prior module once per image and writes refinement-sample TFRecords for scripts/train.py.

    python scripts/make_refinement_samples.py --input 'data/faces/train-*.tfrecord' --out data/samples/train \
        [--prior fit|regressor --regressor_weights W] [--preview preview.png]

Input: aligned-face TFRecords from scripts/preprocess.py or scripts/make_synthetic.py --tfrecord (synthetic
ground truth is carried along). Output: ``OUT/samples-k-of-n.tfrecord`` (format: tf_facetex.prior.samples),
``OUT/summary.json`` (count, mean landmark error, mean coarse PSNR), and optionally a preview grid
(input | coarse render | overlay | unwrapped texture | prior albedo) for inspection.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Glob of aligned-face TFRecords (data pipeline format).")
flags.DEFINE_string("out", None, "Output folder for the refinement-sample shards.")
flags.DEFINE_string("face_model", None, "Face model (.npz, ICT-FaceKit folder, BFM .mat); default: see README.")
flags.DEFINE_enum("prior", "fit", ["fit", "regressor"], "Coefficients from the per-image fit or the regressor.")
flags.DEFINE_string("regressor_weights", None, "PriorRegressor weights (.weights.h5) for --prior=regressor.")
flags.DEFINE_string("regressor_backbone", "resnet50", "Backbone of the regressor weights.")
flags.DEFINE_integer("uv_size", 256, "UV map size.")
flags.DEFINE_integer("batch_size", 8, "Images per prior batch.")
flags.DEFINE_integer("num_shards", 4, "Output shards.")
flags.DEFINE_integer("limit", 0, "Stop after this many images (0 = all).")
flags.DEFINE_integer("fit_steps", 300, "Landmark-fit iterations.")
flags.DEFINE_float("appearance_gate", None, "The appearance gate (`PriorConfig.appearance_gate`; 0 = off); unset = "
                   "the product's default.")
flags.DEFINE_string("preview", None, "Write a PNG grid of the first batch here.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    del argv
    import dataclasses

    from tf_facetex import io_utils
    from tf_facetex.data.tfrecords import make_dataset
    from tf_facetex.errors import FaceTexError
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.landmark_fit import LandmarkFitConfig
    from tf_facetex.prior.module import PriorConfig, PriorModule, write_refinement_samples
    from tf_facetex.prior.preview import prior_preview

    if not FLAGS.input or not FLAGS.out:
        raise FaceTexError("--input and --out are required (see --help)")
    model = load_face_model(FLAGS.face_model)
    regressor = None
    if FLAGS.prior == "regressor":
        from tf_facetex.prior.regressor import load_regressor
        regressor = load_regressor(model, FLAGS.regressor_weights, backbone=FLAGS.regressor_backbone)
    config = PriorConfig(mode=FLAGS.prior, uv_size=FLAGS.uv_size,
                         landmark=dataclasses.replace(LandmarkFitConfig(), steps=FLAGS.fit_steps))
    if FLAGS.appearance_gate is not None:
        config = dataclasses.replace(config, appearance_gate=FLAGS.appearance_gate)
    prior = PriorModule(model, config, regressor=regressor)
    dataset = make_dataset(FLAGS.input, FLAGS.batch_size, training=False, deterministic=True)
    if FLAGS.preview:
        batch = next(iter(dataset))
        result = prior(batch["image"], batch["landmarks"], batch["mask"])
        io_utils.write_image(FLAGS.preview, prior_preview(result))
        print(f"wrote {FLAGS.preview}")
    summary = write_refinement_samples(prior, dataset, FLAGS.out, num_shards=FLAGS.num_shards,
                                       progress=FLAGS.progress, limit=FLAGS.limit or None)
    summary.update(prior=FLAGS.prior, face_model=model.source, uv_size=FLAGS.uv_size,
                   num_coeffs=prior.layout.size, image_size=config.image_size)
    io_utils.write_json(f"{FLAGS.out}/summary.json", summary)
    print(f"wrote {summary['count']} samples to {FLAGS.out} (mean landmark error "
          f"{summary['mean_landmark_error_px']} px, mean coarse PSNR {summary['mean_coarse_psnr_db']} dB)")


if __name__ == "__main__":
    cli.run(main)
