"""Compares method variants on refinement samples: the paper's Table 1 columns, and albedo error with ground truth.

    python scripts/evaluate.py --flagfile configs/eval_synthetic.cfg --json docs/results/eval_synthetic.json

Variants (--variants): prior (3DMM albedo + coarse light), unwrapped (the photo's texture as albedo), fit (the
no-weights UV fit, OD and OC), and every --checkpoints entry name=RUN (a trained RefinementNet, OD and OC; use
it for ablation runs too). Writes one JSON, a markdown table next to it (.md) and a PNG figure (--figure):
input | each variant's re-render | each variant's albedo, for the first images.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Refinement-sample shards (glob), e.g. from scripts/make_refinement_samples.py.")
flags.DEFINE_list("variants", ["prior", "unwrapped", "fit"], "Built-in variants: prior, unwrapped, fit, fit_adam (the fit's previous per-step solver, for paired "
                  "comparisons).")
flags.DEFINE_list("checkpoints", [], "Trained networks as name=path (a run folder, checkpoint or shipped network "
                  "folder; OD and OC rows each).")
flags.DEFINE_string("face_model", "default", "Face model of the samples ('default' or a path): UV mask/symmetry.")
flags.DEFINE_enum("identity", "dlib", ["dlib", "none"], "Identity-similarity column (dlib ResNet) or none.")
flags.DEFINE_integer("limit", 0, "Evaluate at most this many images (0 = all).")
flags.DEFINE_integer("batch_size", 8, "Images per batch.")
flags.DEFINE_integer("fit_steps", 150, "Steps of the fit variant.")
flags.DEFINE_integer("net_fit_steps", 0, "> 0: each --checkpoints network also as '<name>+fit', the product's "
                     "net+fit (this many fit steps from the network's output).")
flags.DEFINE_list("paired", [], "method:baseline pairs of variant names, e.g. 'fit:fit_adam,net:prior': per "
                  "metric the paired mean difference on the same images, its 95% bootstrap interval and the share of "
                  "images where the method is better (in the JSON's 'paired').")
flags.DEFINE_string("json", None, "Output JSON (the markdown table goes next to it with .md).")
flags.DEFINE_string("figure", None, "Output PNG comparing the variants on the first images.")
flags.DEFINE_string("title", "", "Title of the markdown table.")


def main(argv):
    del argv
    import pathlib
    import sys

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation.benchmark import evaluate_variants, markdown_table, paired_variants, variant_figure
    from tf_facetex.refinement.train import inspect_samples

    if not FLAGS.data or not FLAGS.json:
        raise FaceTexError("--data and --json are required (see --help)")
    sizes = inspect_samples(FLAGS.data)  # image/UV size, coefficient count, ground truth: from the first record
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
                                       want_figure=bool(FLAGS.figure), net_fit_steps=FLAGS.net_fit_steps)
    result["paired"] = paired_variants(result, pairs)
    result["command"] = " ".join(["python", *sys.argv])
    io_utils.write_json(FLAGS.json, result)
    table = markdown_table(result, FLAGS.title)
    io_utils.write_text(pathlib.Path(FLAGS.json).with_suffix(".md"), table)
    if FLAGS.figure:
        io_utils.write_image(FLAGS.figure, variant_figure(figure))
    print(table)


if __name__ == "__main__":
    cli.run(main)
