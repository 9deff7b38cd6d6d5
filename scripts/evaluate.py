"""Compares method variants on refinement samples: the paper's Table 1 columns, and albedo error with ground truth;
and the metrics of what a user sees (clean albedo, ghosting, completion, the evaluation from image files).

    python scripts/evaluate.py --flagfile configs/eval_synthetic.cfg --json docs/results/eval_synthetic.json
    python scripts/evaluate.py --protocol=images --data=outputs/synth_eval \
        --json=docs/results/eval_synthetic_images.json
    python scripts/evaluate.py --protocol=ghosting --data=outputs/synth_ghost --json=docs/results/issue17_ghosting.json
    python scripts/evaluate.py --protocol=celebamask --limit=20 --json=docs/results/clean_albedo.json

--protocol:
- ``samples`` (default): --data is a glob of refinement samples (scripts/make_refinement_samples.py; true landmarks
  and masks for synthetic faces). Variants (--variants): prior (3DMM albedo + coarse light), unwrapped (the photo's
  texture as albedo), fit (the no-weights UV fit, OD and OC), and every --checkpoints entry name=RUN (a trained
  RefinementNet, OD and OC). Besides the Table 1 columns on the face mask: the same on the hull of the 68
  landmarks (a region the method's mask does not decide), and with ground truth the best flat colour's error,
  the faces where the albedo beats it, and the completion error on unseen texels (`evaluation.variants`).
  --synthetic_dir records the synthetic set's knobs in the JSON.
- ``images``: --data is a scripts/make_synthetic.py folder; every image file goes through the product's detection,
  alignment, masking and fit (`pipeline.FaceFinder` + `Reconstructor`, scripts/reconstruct.py's defaults), beside
  the same reconstruction from the true landmarks and mask (`evaluation.synthetic_photos`).
- ``ghosting``: --data is a scripts/make_synthetic.py folder with unoccluded renders; ghosting and completion of
  --ghost_variants under each --ghost_masks (`evaluation.ghosting`).
- ``celebamask``: --data is a CelebAMask-HQ folder (default: the shared one); the first --limit held-out photos end
  to end: occluder leak, coverage, re-render on the labelled face and the landmark hull (`evaluation.clean_albedo`).
Writes one JSON (with the command), a markdown table next to it (.md) and, for samples and ghosting, a PNG figure
(--figure).
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
PROTOCOLS = ("samples", "images", "ghosting", "celebamask")
flags.DEFINE_enum("protocol", "samples", list(PROTOCOLS), "What to evaluate (see the module help).")
flags.DEFINE_string("data", None, "samples: refinement-sample shards (glob); images / ghosting: a "
                    "scripts/make_synthetic.py folder; celebamask: a CelebAMask-HQ folder (default: the shared one).")
flags.DEFINE_list("variants", ["prior", "unwrapped", "fit"], "Built-in variants: prior, unwrapped, fit, fit_alt (the fit with --fit_overrides), fit_adam (the fit's previous per-step solver, for paired "
                  "comparisons).")
flags.DEFINE_list("checkpoints", [], "Trained networks as name=path (a run folder, checkpoint or shipped network "
                  "folder; OD and OC rows each).")
flags.DEFINE_string("face_model", "default", "Face model of the samples ('default' or a path): UV mask/symmetry.")
flags.DEFINE_enum("identity", "dlib", ["dlib", "none"], "Identity-similarity column (dlib ResNet) or none.")
flags.DEFINE_integer("limit", 0, "Evaluate at most this many images (0 = all; celebamask: default 20).")
flags.DEFINE_integer("batch_size", 8, "Images per batch.")
flags.DEFINE_integer("fit_steps", 150, "Steps of the fit variant.")
flags.DEFINE_list("fit_overrides", [], "The 'fit_alt' variant: the shipped fit with these UVFitConfig fields "
                  "changed, name=value (e.g. shading_fraction=0.25), for a paired comparison (--paired=fit_alt:fit); "
                  "celebamask: the fit of the whole run.")
flags.DEFINE_integer("net_fit_steps", 0, "> 0: each --checkpoints network also as '<name>+fit', the product's "
                     "net+fit (this many fit steps from the network's output).")
flags.DEFINE_list("paired", [], "method:baseline pairs of variant names, e.g. 'fit:fit_adam,net:prior': per "
                  "metric the paired mean difference on the same images, its 95% bootstrap interval and the share of "
                  "images where the method is better (in the JSON's 'paired').")
flags.DEFINE_string("synthetic_dir", None, "samples: the scripts/make_synthetic.py folder the samples were made "
                    "from; its knobs (manifest.json) are recorded in the JSON.")
flags.DEFINE_list("ghost_variants", ["prior", "uniform", "fit"], "ghosting: variants (evaluation.variants."
                  "symmetry_variant: prior, fit = the shipped fit, uniform = the paper's symmetry term, weight 5 over "
                  "the whole chart, or weighting@seen/scale/unseen).")
flags.DEFINE_list("ghost_masks", ["true", "none"], "ghosting: face masks given to the prior, one run each: 'true' "
                  "(occluder masked out), 'none' (the occluder counts as seen) and/or 'leak' (the projected face as the mask: the "
                  "occluder counts as seen unless the appearance gate removes it).")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "images / celebamask: the face masker "
                  "(scripts/reconstruct.py's default: parsing).")
flags.DEFINE_bool("crossed", False, "images: also true landmarks with the product's mask and detected landmarks "
                  "with the true mask (which of the two the detected path loses to; twice the time).")
flags.DEFINE_float("appearance_gate", None, "images: the reconstructor's appearance gate (`PriorConfig."
                   "appearance_gate`, robust standard deviations; 0 = off); unset = the shipped default.")
flags.DEFINE_integer("landmark_steps", 300, "images / celebamask: landmark-fit steps (scripts/reconstruct.py's).")
flags.DEFINE_list("baseline", [], "celebamask: name=result.json entries copied into the JSON to be shown beside it.")
flags.DEFINE_string("json", None, "Output JSON (the markdown table goes next to it with .md).")
flags.DEFINE_string("figure", None, "Output PNG comparing the variants on the first images.")
flags.DEFINE_string("title", "", "Title of the markdown table.")


def main(argv):
    del argv
    import os
    import pathlib
    import sys
    import time

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError

    if not FLAGS.json or (not FLAGS.data and FLAGS.protocol != "celebamask"):
        raise FaceTexError("--data and --json are required (see --help)")
    start, load_start = time.time(), list(os.getloadavg())
    result, table, figure = {"samples": _samples, "images": _images, "ghosting": _ghosting,
                             "celebamask": _celebamask}[FLAGS.protocol]()
    result["command"] = " ".join(["python", *sys.argv])
    result.update(wall_seconds=time.time() - start, load_average_start=load_start,
                  load_average_end=list(os.getloadavg()))
    io_utils.write_json(FLAGS.json, result)
    io_utils.write_text(pathlib.Path(FLAGS.json).with_suffix(".md"), table)
    if FLAGS.figure and figure is not None:
        io_utils.write_image(FLAGS.figure, figure)
    print(table)


def _samples():
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import clean_report
    from tf_facetex.evaluation.benchmark import evaluate_variants, markdown_table, paired_variants, variant_figure
    from tf_facetex.refinement.train import inspect_samples

    sizes = inspect_samples(FLAGS.data)  # image/UV size, coefficient count, ground truth: from the first record
    manifest = None
    if FLAGS.synthetic_dir:
        from tf_facetex.data.synthetic import load_manifest
        manifest = load_manifest(FLAGS.synthetic_dir)
    checkpoints = {}
    for entry in FLAGS.checkpoints:
        if "=" not in entry:
            raise FaceTexError(f"--checkpoints entry '{entry}' should be name=run_folder")
        name, path = entry.split("=", 1)
        checkpoints[name] = path
    pairs = []
    for entry in FLAGS.paired:
        if entry.count(":") != 1:
            raise FaceTexError(f"--paired entry '{entry}' should be method:baseline")
        pairs.append(tuple(entry.split(":")))
    known = set(FLAGS.variants) | set(checkpoints) | ({f"{n}+fit" for n in checkpoints} if FLAGS.net_fit_steps else set())
    missing = sorted({n for pair in pairs for n in pair} - known)
    if missing:
        raise FaceTexError(f"--paired names {missing}: not among the variants to evaluate {sorted(known)}")
    result, figure = evaluate_variants(FLAGS.data, sizes, FLAGS.variants, checkpoints, face_model=FLAGS.face_model,
                                       identity=FLAGS.identity, limit=FLAGS.limit or None,
                                       batch_size=FLAGS.batch_size, fit_steps=FLAGS.fit_steps,
                                       want_figure=bool(FLAGS.figure), net_fit_steps=FLAGS.net_fit_steps,
                                       fit_overrides=FLAGS.fit_overrides)
    result["fit_overrides"] = list(FLAGS.fit_overrides)
    result["paired"] = paired_variants(result, pairs)
    if manifest is not None:
        result.update(synthetic_dir=FLAGS.synthetic_dir, synthetic_config=manifest["config"],
                      synthetic_seed=manifest["seed"], synthetic_count=manifest["count"])
    extra = clean_report.flat_colour_lines(result)
    extra += ["Re-render on the hull of the 68 landmarks (not the method's mask):", ""]
    extra += clean_report.hull_lines(result)
    table = markdown_table(result, FLAGS.title) + "\n" + "\n".join(extra) + "\n"
    return result, table, variant_figure(figure) if FLAGS.figure else None


def _images():
    from tf_facetex import pipeline
    from tf_facetex.data.synthetic import load_manifest
    from tf_facetex.evaluation import clean_report, synthetic_photos
    from tf_facetex.pipeline import setup

    manifest = load_manifest(FLAGS.data)
    finder = pipeline.FaceFinder(masker=FLAGS.masker)
    reconstructor = setup.build_reconstructor(None if FLAGS.face_model == "default" else FLAGS.face_model,
                                              uv_size=int(manifest["config"]["uv_size"]), fit_steps=FLAGS.fit_steps,
                                              landmark_steps=FLAGS.landmark_steps, turntable_yaws=(),
                                              **_gate_override())
    result = synthetic_photos.run_protocol(FLAGS.data, finder, reconstructor, count=FLAGS.limit or None,
                                           batch_size=FLAGS.batch_size, crossed=FLAGS.crossed)
    return result, _md(FLAGS.title, clean_report.from_images_lines(result)), None


def _gate_override() -> dict:
    """The --appearance_gate override of `ReconstructionConfig` (none when the flag is unset)."""
    return {} if FLAGS.appearance_gate is None else {"appearance_gate": FLAGS.appearance_gate}


def _ghosting():
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import clean_report, ghosting

    try:
        ghosting.check_protocol_names(FLAGS.ghost_variants, FLAGS.ghost_masks)
    except ValueError as err:
        raise FaceTexError(str(err)) from None
    result, figure = ghosting.run_protocol(FLAGS.data, FLAGS.ghost_variants, mask_modes=FLAGS.ghost_masks,
                                           fit_steps=FLAGS.fit_steps, batch_size=FLAGS.batch_size, num=FLAGS.limit,
                                           face_model=None if FLAGS.face_model == "default" else FLAGS.face_model,
                                           figure_faces=4 if FLAGS.figure else 0)
    return result, _md(FLAGS.title, clean_report.ghosting_lines(result)), figure


def _celebamask():
    from tf_facetex import pipeline
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import clean_albedo, clean_report
    from tf_facetex.pipeline import setup

    try:
        baselines = clean_albedo.baseline_summaries(FLAGS.baseline)
    except ValueError as err:
        raise FaceTexError(f"--baseline: {err}") from None
    files, num_held_out = clean_albedo.heldout_files(FLAGS.data, FLAGS.limit or 20)
    finder = pipeline.FaceFinder(masker=FLAGS.masker)
    reconstructor = setup.build_reconstructor(None if FLAGS.face_model == "default" else FLAGS.face_model,
                                              fit_steps=FLAGS.fit_steps, landmark_steps=FLAGS.landmark_steps,
                                              turntable_yaws=())
    if FLAGS.fit_overrides:   # the shipped fit with some UVFitConfig fields changed, for a before/after run
        reconstructor.use_refiner(setup.fit_refiner_with_overrides(reconstructor, FLAGS.fit_steps, FLAGS.fit_overrides))
    result = clean_albedo.run_protocol(files, finder, reconstructor, min(FLAGS.batch_size, 4), num_held_out)
    result["baselines"] = baselines
    result["fit_overrides"] = list(FLAGS.fit_overrides)
    return result, _md(FLAGS.title, clean_report.clean_albedo_lines(result)), None


def _md(title, lines):
    return "\n".join(([f"### {title}", ""] if title else []) + lines) + "\n"


if __name__ == "__main__":
    cli.run(main)
