"""Ghosting and completion of the trained refinement network against the per-image fit (issue 17's protocol,
`tf_facetex.evaluation.ghosting`): the product's refiners on synthetic faces with an occluder and their unoccluded
renders.

    python scripts/eval_net_ghosting.py --data=outputs/synth_ghost --json=docs/results/net_ghosting.json

The faces go through the product's `PriorModule` (true landmarks; each --masks mode: 'true' = the true face mask,
'none' = no mask, the occluder leaks into the unwrapped texture), then each variant: the prior, the shipped fit
(`FitRefiner`), the network (`NetworkRefiner`) and net+fit (`NetFitRefiner`, the product's settings). The data's
UV size must be the network's.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "A scripts/make_synthetic.py folder with unoccluded renders (e.g. outputs/synth_ghost).")
flags.DEFINE_string("checkpoint", None, "Refinement network (default: saved_models/refinement_net).")
flags.DEFINE_list("masks", ["true", "none"], "Face masks given to the prior, one run each.")
flags.DEFINE_integer("fit_steps", 150, "Steps of the fit variant.")
flags.DEFINE_integer("batch_size", 8, "Faces per batch.")
flags.DEFINE_integer("num", 0, "At most this many faces (0 = all).")
flags.DEFINE_string("json", None, "Results JSON (a markdown table goes next to it).")
flags.DEFINE_string("figure", None, "Optional PNG: photo | unoccluded | truth | each variant's albedo.")


def main(argv):
    del argv
    import pathlib
    import sys
    import time

    from tf_facetex import io_utils
    from tf_facetex.data.synthetic import load_manifest, load_synthetic_face
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import clean_report, ghosting
    from tf_facetex.evaluation import variants as V
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.module import PriorConfig, PriorModule
    from tf_facetex.refinement.checkpoint import default_refinement_net, load_refinement_net
    from tf_facetex.refinement.fit import UVFitConfig
    from tf_facetex.refinement.net_fit import net_fit_refiner
    from tf_facetex.refinement.network import NetworkRefiner

    if not FLAGS.data or not FLAGS.json:
        raise FaceTexError("--data and --json are required")
    manifest = load_manifest(FLAGS.data)
    count = manifest["count"] if not FLAGS.num else min(FLAGS.num, manifest["count"])
    net, info = load_refinement_net(FLAGS.checkpoint or default_refinement_net())
    uv_size = int(manifest["config"]["uv_size"])
    if uv_size != info["uv_size"]:
        raise FaceTexError(f"{FLAGS.data} has UV {uv_size}; the network works at {info['uv_size']}")
    model = load_face_model(None)
    prior = PriorModule(model, PriorConfig(uv_size=uv_size))
    uv_mask, symmetry_index = prior.renderer.uv_mask, prior.renderer.uv_symmetry_index
    network = NetworkRefiner(net, uv_mask, source=info["checkpoint"])
    variants = {"prior": V.prior_variant,
                "fit": V.fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=FLAGS.fit_steps)),
                "net": V._refined(network),
                "net+fit": V._refined(net_fit_refiner(network, uv_mask, symmetry_index))}
    start, runs, figure = time.time(), {}, None
    for mode in FLAGS.masks:
        batches = ([load_synthetic_face(FLAGS.data, i) for i in range(first, min(count, first + FLAGS.batch_size))]
                   for first in range(0, count, FLAGS.batch_size))
        print(f"mask {mode}:")
        values, first = ghosting.evaluate_ghosting(batches, prior, variants, uv_mask, symmetry_index, mode)
        runs[mode] = {"summary": {name: ghosting.summarise(per) for name, per in values.items()}, "per_image": values}
        if FLAGS.figure and first and (mode == "none" or figure is None):
            figure = ghosting.ghost_figure(first, list(variants))
    result = {"command": " ".join(["python", *sys.argv]), "data": FLAGS.data, "seed": manifest["seed"],
              "synthetic_config": manifest["config"],
              "num_faces": count, "masks": list(FLAGS.masks), "fit_steps": FLAGS.fit_steps, "uv_size": uv_size,
              "variants": {name: (v.refiner.describe() if hasattr(v, "refiner") else name)
                           for name, v in variants.items()},
              "runs": runs, "seconds": time.time() - start}
    io_utils.write_json(FLAGS.json, result)
    io_utils.write_text(pathlib.Path(FLAGS.json).with_suffix(".md"),
                        "\n".join(clean_report.ghosting_lines(result)) + "\n")
    if figure is not None:
        io_utils.write_image(FLAGS.figure, figure)
    for mode, run in runs.items():
        for name, summary in run["summary"].items():
            print(f"[ghosting] mask {mode} {name}: " + ", ".join(
                f"{key} {summary[key]['mean']:.4f}" for key in ghosting.TEXT_COLUMNS if key in summary))
    print(f"[ghosting] wrote {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
