"""Reconstructs re-renderable faces from photos: albedo UV texture, SH illumination map, mesh, renders.

    python scripts/reconstruct.py --input photo.jpg --output_dir out/
    python scripts/reconstruct.py --input photos/ --output_dir out/ --all_faces --checkpoint runs/paper

For every face, ``out/<image stem>[_face<k>]/`` gets albedo.png, illumination.npy, shading.png, mesh.obj/.mtl,
coefficients.json, render_detailed.png, render_coarse.png, overlay.jpg, turntable.png (see the README's
"Outputs"). A face folder appears only when it is complete. Failing inputs (unreadable, no face) are listed at the
end and in ``out/errors.json``; the exit status is non-zero only when every input failed. ``out/index.html`` is a
contact sheet of all results in the folder.

Default path (no weights): the per-image fit for the prior and the UV-space fit for the details. With
``--checkpoint`` (a scripts/train.py run folder) the trained refinement network replaces the UV fit.

Several photos of one person: ``--same_person`` (the photos of --input, or of each of its sub-folders, are one
person) or ``--groups manifest`` fit ONE identity, expression-free shape and albedo to all of a person's photos,
with a pose, expression and light per photo: one folder per person, ``out/<folder or group>/``, with the files
above plus ``photos/<photo>/`` (that photo's crop, re-render, overlay and light).

    python scripts/reconstruct.py --input selfies/ --output_dir out/ --same_person
"""
from absl import flags

from tf_facetex import cli
from tf_facetex.pipeline import setup
from tf_facetex.prior.appearance_gate import DEFAULT_GATE

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "An image file or a folder of images (searched recursively; .jpg .jpeg .png "
                    ".webp .bmp .gif (first frame) .tif .tiff). Entries that are not photos are listed in errors.json; "
                    "an --output_dir inside the folder is left out.")
flags.DEFINE_string("output_dir", None, "Output folder; one sub-folder per face, plus index.html and errors.json.")
flags.DEFINE_enum("refiner", setup.DEFAULT_REFINER, list(setup.REFINER_MODES), "Detail stage: 'fit' = the per-image UV fit "
                  "(--fit_steps; needs no weights); 'net' = one forward pass of the refinement network; 'net+fit' = "
                  "the network's albedo and light as the start of a --net_fit_steps fit. The net modes use "
                  "--checkpoint, default the shipped saved_models/refinement_net/ (UV 128). README, 'Refiner modes', "
                  "gives each mode's quality and speed.")
flags.DEFINE_string("checkpoint", None, "Refinement network of the net modes: a shipped network folder "
                    "(network.json + refinement_net.weights.h5), a scripts/train.py run folder (run_config.json + "
                    "checkpoints/), its checkpoints/ folder or a checkpoint prefix. Default: $TF_FACETEX_REFINEMENT_NET, "
                    "then saved_models/refinement_net/. Given without --refiner, it means --refiner=net.")
flags.DEFINE_integer("net_fit_steps", 30, "Steps of the fit after the network (--refiner=net+fit).")
flags.DEFINE_string("face_model", None, "Face model: .npz, ICT-FaceKit folder/archive or BFM_model_front.mat. "
                    "Default: $TF_FACETEX_FACE_MODEL, then the cached/shared ICT-FaceKit (see README, Assets).")
flags.DEFINE_bool("all_faces", False, "Reconstruct every face of a photo (folders <stem>_face0, _face1, ... largest "
                  "first) instead of only the largest.")
flags.DEFINE_enum("prior", "fit", ["fit", "regressor"], "Prior coefficients from the per-image landmark + "
                  "photometric fit (no weights) or from the trained regressor (no landmarks needed; --regressor_weights, default "
                  "the shipped saved_models/prior_regressor/).")
flags.DEFINE_string("regressor_weights", None, "PriorRegressor weights (.weights.h5) for --prior=regressor; default "
                    "the shipped regressor (its backbone from regressor.json).")
flags.DEFINE_string("regressor_backbone", "resnet50", "Backbone the --regressor_weights were trained with.")
flags.DEFINE_integer("uv_size", None, "UV texture size S (albedo.png is S x S). Default 256, or the checkpoint's.")
flags.DEFINE_integer("fit_steps", 150, "Adam steps of the UV-space detail fit (--refiner=fit). Fewer is "
                     "faster and smoother; 150 is the tested default.")
flags.DEFINE_integer("landmark_steps", 300, "Steps of the landmark fit (--prior=fit).")
flags.DEFINE_float("appearance_gate", DEFAULT_GATE, "Face-mask pixels whose hue departs from the fitted face model's "
                   "by more than this many robust standard deviations are not taken into the albedo (occluders the "
                   "face parser does not know: microphones, coloured objects); eyes and lips are exempt, brows get a looser bound. "
                   "0 = off. docs/RESULTS.md measures it.")
flags.DEFINE_integer("batch_size", 1, "Faces reconstructed together (more uses more memory; the fit runs jointly).")
flags.DEFINE_enum("mesh_pose", "unposed", ["unposed", "posed"], "mesh.obj geometry: 'unposed' = fitted identity + "
                  "expression in the model frame (centred, facing +z); 'posed' = as seen in the photo (world frame, "
                  "camera at z = +1 m).")
flags.DEFINE_string("turntable_light", "studio", "Light preset of turntable.png (see scripts/relight.py --help).")
flags.DEFINE_enum("detector", "auto", ["auto", "hog", "cnn"], "dlib face detector: auto = HOG, then the CNN "
                  "(slower, finds dark / side-lit faces) only when HOG finds nothing; each also on an "
                  "exposure-normalised copy. coefficients.json records which found the face.")
flags.DEFINE_string("face_box", None, "x0,y0,x1,y1: the face's box in pixels (every input), when you know where the "
                    "face is; the detector refines it when it finds a face there, else the box is used as is.")
flags.DEFINE_string("box_file", None, "Per-photo face boxes: JSON {photo path: [x0, y0, x1, y1]} or TSV lines "
                    "'path<TAB>x0<TAB>y0<TAB>x1<TAB>y1' (paths as given, relative to the file, or file names).")
flags.DEFINE_enum("group_fallback", "none", ["none", "landmarks", "box"], "Photos of one folder are one subject: a "
                  "photo with no detection borrows the landmarks (same camera, e.g. a light stage) or the box of the "
                  "best-lit photo of its folder that has one.")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "Face mask (which pixels the fit explains and "
                  "the unwrap keeps): the shipped parsing network (a WARNING and 'skin' when its default weights are missing), the "
                  "landmark + skin-colour mask, or the landmark hull.")
flags.DEFINE_string("parsing_weights", None, "Parsing-network weights for --masker=parsing (default: "
                    "$TF_FACETEX_PARSING_NET or the shipped saved_models/parsing_net/parsing_net.keras; see its "
                    "MODEL_CARD.md). A path given here that does not exist is an error.")
flags.DEFINE_bool("same_person", False, "The photos of --input (or of each of its sub-folders) are one person: fit "
                  "one identity, expression-free shape and albedo to them, a pose, expression and light per photo; "
                  "one folder per person (out/<folder>/, with photos/<photo>/ re-renders). The largest face of each "
                  "photo is used.")
flags.DEFINE_string("groups", None, "Like --same_person, with the groups from a manifest: JSON {person: [photo paths]} or "
                    "TSV lines 'person<TAB>photo path' (relative paths: to the manifest's folder). --input is not used.")
flags.DEFINE_bool("recursive", True, "Search sub-folders of --input.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    del argv
    import pathlib

    from tf_facetex import pipeline
    from tf_facetex.errors import FaceTexError
    from tf_facetex.inputs import list_inputs
    from tf_facetex.lighting_presets import PRESET_NAMES

    grouped = FLAGS.same_person or FLAGS.groups is not None
    if not FLAGS.output_dir or not (FLAGS.input or FLAGS.groups):
        raise FaceTexError("--input and --output_dir are required (--groups may replace --input; see --help)")
    if grouped and FLAGS.all_faces:
        raise FaceTexError("--same_person / --groups take the largest face of each photo; drop --all_faces")
    if FLAGS.same_person and FLAGS.groups:
        raise FaceTexError("give --same_person (groups by folder) or --groups (a manifest), not both")
    if FLAGS.prior == "regressor" and not FLAGS.regressor_weights:
        from tf_facetex import paths

        if not paths.shipped_prior_regressor_present():
            raise FaceTexError(f"--prior=regressor: no --regressor_weights and no shipped regressor in "
                               f"{paths.prior_regressor_dir()}; or use the default --prior=fit")
    for name in ("checkpoint", "face_model", "regressor_weights", "parsing_weights"):
        value = getattr(FLAGS, name)
        if value and not pathlib.Path(value).expanduser().exists():
            raise FaceTexError(f"--{name} {value}: not found")
    if FLAGS.turntable_light not in PRESET_NAMES:
        raise FaceTexError(f"--turntable_light must be one of {', '.join(PRESET_NAMES)}")
    # --checkpoint alone keeps its earlier meaning (the network instead of the fit)
    refiner_mode = "net" if FLAGS.checkpoint and not FLAGS["refiner"].present else FLAGS.refiner
    if grouped and refiner_mode == "net":
        raise FaceTexError("--same_person / --groups fit one albedo to several photos: use --refiner fit (the default) "
                           "or net+fit")
    if FLAGS.net_fit_steps < 1:
        raise FaceTexError("--net_fit_steps must be >= 1")
    if FLAGS.fit_steps < 1 or FLAGS.batch_size < 1 or (FLAGS.uv_size is not None and FLAGS.uv_size < 16):
        raise FaceTexError("--fit_steps and --batch_size must be >= 1 and --uv_size >= 16")
    if FLAGS.groups:
        groups = pipeline.read_group_manifest(FLAGS.groups)
        listing = None
    else:
        listing = list_inputs(FLAGS.input, recursive=FLAGS.recursive, output_dir=FLAGS.output_dir)
        groups = pipeline.groups_by_folder(listing.files, FLAGS.input) if FLAGS.same_person else None
    out_dir = pipeline.check_output_dir(FLAGS.output_dir)
    for note in (listing.notes if listing else []):
        print(f"[reconstruct] {note}")
    from tf_facetex.data.known_faces import build_detector

    detector = build_detector(FLAGS.detector, face_box=FLAGS.face_box, box_file=FLAGS.box_file,
                              group_fallback=FLAGS.group_fallback)
    preprocessor = pipeline.FaceFinder(detector=detector, masker=FLAGS.masker, all_faces=FLAGS.all_faces,
                                       parsing_weights=FLAGS.parsing_weights)

    def make_reconstructor():
        reconstructor = pipeline.build_reconstructor(
            FLAGS.face_model, FLAGS.checkpoint, FLAGS.prior, FLAGS.regressor_weights, FLAGS.regressor_backbone,
            FLAGS.uv_size, FLAGS.fit_steps, FLAGS.landmark_steps, FLAGS.turntable_light, refiner=refiner_mode,
            net_fit_steps=FLAGS.net_fit_steps, appearance_gate=FLAGS.appearance_gate)
        refiner = reconstructor.refiner.describe()
        details = [f"{refiner['steps']} fit steps"] if "steps" in refiner else []
        details += [f"network {refiner['checkpoint']}"] if "checkpoint" in refiner else []
        print(f"[reconstruct] prior: {FLAGS.prior}; details: {refiner['name']} ({', '.join(details)}); "
              f"UV {reconstructor.config.uv_size}")
        return reconstructor

    options = pipeline.OutputOptions(mesh_pose=FLAGS.mesh_pose)
    skipped = listing.skipped if listing else ()
    if groups is not None:
        print(f"[reconstruct] {len(groups)} person(s): " + ", ".join(f"{name} ({len(paths)} photo(s))"
                                                                    for name, paths in groups.items()))
        summary = pipeline.reconstruct_groups(groups, out_dir, make_reconstructor, preprocessor, options=options,
                                              progress=FLAGS.progress, verbose=FLAGS.verbose, skipped=skipped)
    else:
        summary = pipeline.reconstruct_inputs(
            listing.files, out_dir, make_reconstructor, preprocessor, batch_size=FLAGS.batch_size, options=options,
            all_faces=FLAGS.all_faces, progress=FLAGS.progress, verbose=FLAGS.verbose, skipped=skipped)
    for output in summary.outputs:
        metrics = output["metrics"]
        if "photo_metrics" in output:
            each = ", ".join(f"{m['detailed_psnr_db']:.2f}" for m in output["photo_metrics"])
            print(f"  {output['folder']}/  one albedo from {len(output['photos'])} photo(s); R(A',L'_k) per photo "
                  f"{each} dB (PSNR on the face mask)")
            continue
        print(f"  {output['folder']}/  R(A',L') {metrics['detailed_psnr_db']:.2f} dB, R(A',L) "
              f"{metrics['coarse_psnr_db']:.2f} dB, prior {metrics['prior_psnr_db']:.2f} dB (PSNR on the face mask)"
              + (f"; face from {output['detector']}" if output.get("detector", "hog") != "hog" else ""))
    for error in summary.errors:
        print(f"  {'skipped' if error.get('skipped') else 'failed'}: {error['error']}")
    skipped = f", {summary.skipped} entries skipped" if summary.skipped else ""
    print(f"[reconstruct] {len(summary.outputs)} face(s) from {summary.inputs - summary.failed_inputs}/"
          f"{summary.inputs} input(s){skipped} in {summary.seconds:.1f} s -> {out_dir}/ (contact sheet: "
          f"{out_dir}/index.html" + (f"; errors: {out_dir}/errors.json" if summary.errors else "") + ")")
    if summary.all_failed:
        raise FaceTexError(f"all {summary.inputs} input(s) failed (listed in {out_dir}/errors.json)")


if __name__ == "__main__":
    cli.run(main)
