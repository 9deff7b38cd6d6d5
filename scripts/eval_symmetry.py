"""Ghosting and completion of the albedo under each form of the symmetry term, on synthetic faces.

    nice -n 10 .venv/bin/python scripts/eval_symmetry.py --data /tmp/synth_occ --json docs/results/x.json \
        [--variants prior,uniform,visibility,confidence] [--mask true|none] [--figure x.png]

Data: a folder of scripts/make_synthetic.py (its --uv_size is the fit's UV size; --occluder_prob 1 for
ghosting). Each face goes through the product: the `PriorModule` fit on its true landmarks (mask: --mask), then
the shipped UV fit (`evaluation.variants.fit_variant`, `FitRefiner`) with the symmetry term's weighting of the
variant's name, weighting[@seen_weight[/seen_scale[/unseen_mirror_weight]]] ('uniform' is today's term;
'visibility@1/0.05' pulls two seen texels by a saturating L1 of scale 0.05; see `losses.symmetry_weights`), or
the prior albedo ('prior'). `tf_facetex.evaluation.ghosting` defines every number.
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
flags.DEFINE_list("variants", ["prior", "uniform", "visibility", "confidence"],
                  "prior, or a symmetry weighting (uniform, visibility, confidence) with an optional @seen_weight.")
flags.DEFINE_enum("mask", "true", ["true", "none"], "Face mask given to the prior: the generator's (occluder "
                  "masked out) or none (the occluder counts as seen, as a masker that misses it).")
flags.DEFINE_integer("fit_steps", 150, "UV-fit steps (the shipped default).")
flags.DEFINE_integer("batch_size", 8, "Faces per batch.")
flags.DEFINE_string("face_model", None, "Face model (default: as scripts/make_synthetic.py).")
flags.DEFINE_string("json", None, "Results JSON (written atomically).")
flags.DEFINE_string("figure", None, "PNG: input | true albedo | each variant's albedo, for the first faces.")
flags.DEFINE_integer("figure_faces", 4, "Faces in the figure.")
flags.DEFINE_string("label", "", "A name for this run, recorded in the JSON.")

PRINTED = ("ghost_rmse", "ghost_excess", "completion_rmse", "occluded_rmse", "albedo_si_rmse")


def _variant(name, uv_mask, symmetry_index, steps):
    from tf_facetex.evaluation import variants as V
    from tf_facetex.errors import FaceTexError
    from tf_facetex.losses import SYMMETRY_WEIGHTINGS
    from tf_facetex.refinement.fit import UVFitConfig

    if name == "prior":
        return V.prior_variant
    weighting, _, pull = name.partition("@")
    seen, scale, unseen = (pull.split("/") + ["", "", ""])[:3]
    if weighting not in SYMMETRY_WEIGHTINGS:
        raise FaceTexError(f"--variants: unknown variant {name!r} (prior, or one of {SYMMETRY_WEIGHTINGS}[@w])")
    return V.fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=steps, symmetry_weighting=weighting,
                                                              symmetry_seen_weight=float(seen or 0.0),
                                                              symmetry_seen_scale=float(scale or 0.0),
                                                              symmetry_unseen_mirror_weight=float(unseen or 0.0)))


def main(argv):
    del argv
    import collections
    import json
    import pathlib
    import time

    import numpy as np

    from tf_facetex import io_utils, visualize
    from tf_facetex.data.synthetic import load_synthetic_face
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import ghosting
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.module import PriorConfig, PriorModule

    if not FLAGS.data or not FLAGS.json:
        raise FaceTexError("--data and --json are required (see --help)")
    manifest = json.loads((pathlib.Path(FLAGS.data) / "manifest.json").read_text())
    count = manifest["count"] if not FLAGS.num else min(FLAGS.num, manifest["count"])
    uv_size = int(manifest["config"]["uv_size"])
    model = load_face_model(FLAGS.face_model)
    prior = PriorModule(model, PriorConfig(uv_size=uv_size))
    uv_mask, symmetry_index = prior.renderer.uv_mask, prior.renderer.uv_symmetry_index
    variants = {name: _variant(name, uv_mask, symmetry_index, FLAGS.fit_steps) for name in FLAGS.variants}
    values = {name: collections.defaultdict(list) for name in variants}
    figure_rows, start = [], time.time()
    for first in range(0, count, FLAGS.batch_size):
        faces = [load_synthetic_face(FLAGS.data, i) for i in range(first, min(count, first + FLAGS.batch_size))]
        batch, occluded = ghosting.prior_samples(prior, faces, FLAGS.mask)
        albedos = {}
        for name, variant in variants.items():
            albedos[name] = variant(batch)["albedo_uv"]
            for key, value in ghosting.mirror_metrics(batch, albedos[name], uv_mask, occluded,
                                                      symmetry_index).items():
                values[name][key].extend(np.asarray(value).tolist())
        for b in range(len(faces)):
            if len(figure_rows) < FLAGS.figure_faces:
                row = [visualize.label(faces[b]["image"], f"face {first + b}"),
                       visualize.label(_uv_image(batch["albedo_gt_uv"][b], 224), "true albedo")]
                row += [visualize.label(_uv_image(albedos[name][b], 224), name) for name in variants]
                figure_rows.append(row)
        print(f"  {first + len(faces)}/{count} faces ({time.time() - start:.0f} s)", flush=True)
    summary = {name: ghosting.summarise(dict(per)) for name, per in values.items()}
    result = {"label": FLAGS.label, "command": " ".join(["python", *sys.argv]), "data": str(FLAGS.data),
              "synthetic_config": manifest["config"], "seed": manifest["seed"], "num_faces": count,
              "mask": FLAGS.mask, "fit_steps": FLAGS.fit_steps, "uv_size": uv_size,
              "variants": {name: getattr(v, "refiner", None) and v.refiner.describe() for name, v in variants.items()},
              "summary": summary, "per_image": {name: dict(per) for name, per in values.items()},
              "seconds": time.time() - start}
    io_utils.write_json(FLAGS.json, result)
    if FLAGS.figure and figure_rows:
        io_utils.write_image(FLAGS.figure, visualize.grid(figure_rows))
    print(f"{'variant':16s} " + " ".join(f"{key:>16s}" for key in PRINTED))
    for name in variants:
        print(f"{name:16s} " + " ".join(f"{summary[name][key]['mean']:16.4f}" for key in PRINTED))
    print(f"wrote {FLAGS.json} ({count} faces, {result['seconds']:.0f} s)")


def _uv_image(albedo_uv, size):
    """[S, S, 3] float -> uint8 [size, size, 3] (nearest-neighbour upscale: texels stay visible)."""
    import cv2
    import numpy as np

    array = np.clip(np.asarray(albedo_uv, np.float32), 0.0, 1.0)
    return (cv2.resize(array, (size, size), interpolation=cv2.INTER_NEAREST) * 255 + 0.5).astype(np.uint8)


if __name__ == "__main__":
    cli.run(main)
