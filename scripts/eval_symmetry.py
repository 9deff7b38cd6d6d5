"""Ghosting and completion of the albedo under each form of the symmetry term, on synthetic faces.

    nice -n 5 .venv/bin/python scripts/eval_symmetry.py --data outputs/synth_ghost --mask true,none \
        --json docs/results/issue17_ghosting.json [--variants prior,uniform,fit] [--figure x.png]

Data: a folder of scripts/make_synthetic.py with the unoccluded renders (``image_clean``; its --uv_size is the
fit's UV size; --occluder_prob 1 for ghosting). Each face, and its unoccluded render, goes through the product:
the `PriorModule` fit on its true landmarks (each --mask, one run each), then the shipped UV fit (`FitRefiner`) with the
symmetry term of the variant's name (`evaluation.variants.symmetry_variant`: 'uniform' is the paper's term the
fit had before issue 17, 'fit' the shipped default), or the prior albedo ('prior'). `tf_facetex.evaluation.ghosting`
defines every number. The same protocol runs as `scripts/evaluate.py --protocol=ghosting`.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Synthetic-face folder (scripts/make_synthetic.py --out).")
flags.DEFINE_integer("num", 0, "Use the first N faces (0 = all).")
flags.DEFINE_list("variants", ["prior", "uniform", "fit"], "Variants: prior, fit, uniform, or a symmetry weighting "
                  "(uniform, visibility, confidence) with optional @seen_weight[/seen_scale[/unseen_mirror_weight]].")
flags.DEFINE_list("mask", ["true", "none"], "Face masks given to the prior, each a run: 'true' (the generator's, "
                  "occluder masked out), 'none' (the occluder counts as seen, as a masker that misses it) and/or 'leak' (the "
                  "projected face as the mask, the appearance gate running as on real photos).")
flags.DEFINE_integer("fit_steps", 150, "UV-fit steps (the shipped default).")
flags.DEFINE_integer("batch_size", 8, "Faces per batch.")
flags.DEFINE_string("face_model", None, "Face model (default: as scripts/reconstruct.py).")
flags.DEFINE_string("json", None, "Results JSON (written atomically).")
flags.DEFINE_string("figure", None, "PNG: input | unoccluded | true albedo | each variant's albedo, first faces.")
flags.DEFINE_integer("figure_faces", 4, "Faces in the figure.")
flags.DEFINE_string("label", "", "A name for this run, recorded in the JSON.")


def main(argv):
    del argv
    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import ghosting

    if not FLAGS.data or not FLAGS.json:
        raise FaceTexError("--data and --json are required (see --help)")
    try:
        ghosting.check_protocol_names(FLAGS.variants, FLAGS.mask)
    except ValueError as err:
        raise FaceTexError(str(err)) from None
    result, figure = ghosting.run_protocol(FLAGS.data, FLAGS.variants, mask_modes=FLAGS.mask, fit_steps=FLAGS.fit_steps,
                                         batch_size=FLAGS.batch_size, num=FLAGS.num,
                                         face_model=FLAGS.face_model,
                                         figure_faces=FLAGS.figure_faces if FLAGS.figure else 0)
    result.update(label=FLAGS.label, command=" ".join(["python", *sys.argv]))
    io_utils.write_json(FLAGS.json, result)
    if FLAGS.figure and figure is not None:
        io_utils.write_image(FLAGS.figure, figure)
    print(ghosting.text_table(result))
    print(f"wrote {FLAGS.json} ({result['num_faces']} faces, {result['seconds']:.0f} s)")


if __name__ == "__main__":
    cli.run(main)
