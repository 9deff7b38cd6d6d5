"""Issue 19, item 2: would a warm start across the photos of one run help the UV fit? (the measurement behind
docs/METHOD.md's answer; writes warm_start_check.json next to this file)

    .venv/bin/python docs/results/issue19/warm_start_check.py 'outputs/synth_eval_samples/*.tfrecord'

On the synthetic evaluation samples (ground-truth albedo), in file order, each photo's product UV fit
(`FitRefiner`, the shipped default config) from its own start (cold: the unwrapped texture / shading where seen,
the prior elsewhere; gamma as the light) against the same fit started from the previous photo's result (A', L'
of the photo before it in the run: `FitRefiner(..., start=...)`), with the default 150 steps and with 50; paired
albedo si-RMSE (chart, seen texels) and the fit objective.
"""
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_facetex import io_utils, losses, metrics  # noqa: E402
from tf_facetex.face_model import load_face_model  # noqa: E402
from tf_facetex.prior.samples import sample_dataset  # noqa: E402
from tf_facetex.refinement import uv_solver  # noqa: E402
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig  # noqa: E402
from tf_facetex.rendering import FaceRenderer  # noqa: E402


def load_samples(pattern):
    model = load_face_model(None, allow_clone=False, log=lambda *_: None)
    first = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)[:1])))
    example = tf.train.Example.FromString(first.numpy())
    num_coeffs = len(example.features.feature["coeffs"].float_list.value)
    image_size = int(round((len(example.features.feature["pixel_uv"].bytes_list.value[0]) / 4) ** 0.5))
    dataset = sample_dataset(pattern, 1, image_size, 256, num_coeffs, training=False, with_ground_truth=True,
                             deterministic=True, repeat=False)
    return [dict(batch) for batch in dataset], model


def main(pattern):
    samples, model = load_samples(pattern)
    renderer = FaceRenderer(model, 224, 256)
    weights = uv_solver.term_weights(losses.LossWeights.preset("paper"))
    fits = {steps: FitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, UVFitConfig(steps=steps))
            for steps in (150, 50)}
    rows = {f"{kind}_{steps}": [] for kind in ("cold", "warm") for steps in fits}
    load_before = [round(x, 2) for x in os.getloadavg()]
    start_time = time.perf_counter()
    previous = None
    for sample in samples:
        fit_inputs = {k: tf.convert_to_tensor(sample[k], tf.float32) for k in uv_solver.SAMPLE_KEYS}
        truth = sample["albedo_gt_uv"]
        region = renderer.uv_mask[None] * tf.ones_like(truth[..., :1])
        seen = sample["visibility_uv"] * region
        results = {}
        for steps, fit in fits.items():
            results[f"cold_{steps}"] = fit(fit_inputs)
            if previous is not None:
                results[f"warm_{steps}"] = fit(fit_inputs, start=previous)
        for name, out in results.items():
            terms = uv_solver.fit_terms(out["albedo_uv"], out["light_uv"], fit_inputs, renderer.uv_mask,
                                        renderer.uv_symmetry_index, UVFitConfig().symmetry())
            rows[name].append({
                "albedo_si_rmse": float(metrics.albedo_metrics(out["albedo_uv"], truth, region)["si_rmse"][0]),
                "albedo_seen_si_rmse": float(metrics.albedo_metrics(out["albedo_uv"], truth, seen)["si_rmse"][0]),
                "objective": float(uv_solver.weighted_total(terms, weights))})
        previous = {"albedo_uv": results["cold_150"]["albedo_uv"], "light_uv": results["cold_150"]["light_uv"]}
    summary = {}
    baseline = rows["cold_150"][1:]          # the photos that have a previous one (warm rows hold only those)
    for name, entries in rows.items():
        mine = entries if name.startswith("warm") else entries[1:]
        row = {"photos": len(mine)}
        for key in ("albedo_si_rmse", "albedo_seen_si_rmse", "objective"):
            values = np.array([e[key] for e in mine])
            diff = values - np.array([e[key] for e in baseline])
            row[key + "_mean"] = round(float(values.mean()), 6)
            row[key + "_minus_cold_150"] = round(float(diff.mean()), 6)
            row[key + "_minus_cold_150_se"] = round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 6)
        summary[name] = row
    result = {"command": f"python docs/results/issue19/warm_start_check.py '{pattern}'", "samples": pattern,
              "count": len(samples), "summary": summary, "per_photo": rows, "seconds": round(time.perf_counter()
                                                                                            - start_time, 1),
              "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "cpu_count": os.cpu_count()}
    print(json.dumps(summary, indent=1))
    io_utils.write_json(pathlib.Path(__file__).with_suffix(".json"), result, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/synth_eval_samples/*.tfrecord")
