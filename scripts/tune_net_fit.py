"""Chooses the net+fit settings on VALIDATION samples: the start (`refinement.net_fit.NET_FIT_STARTS`), the steps and
the learning rate of the short fit after the network, against the 150-step fit, with the product's refiners.

    python scripts/tune_net_fit.py --checkpoint=outputs/refine_cpu/final \
        --data=real_val='outputs/real_recipe/samples/val/samples-*.tfrecord' \
        --data=synthetic_val='outputs/i18/synth_val_samples/*.tfrecord' \
        --starts=network,network_albedo,photo --steps=20,30 --learning_rates=0.01,0.02 \
        --json=docs/results/net_fit_tuning.json

Never give it the test split: the tables of docs/RESULTS.md are measured there with the settings chosen here.
Per data set and variant: OD / OC PSNR (face mask), albedo si-RMSE and relight RMSE (with ground truth), and
ms/image of the detail stage (wall clock over the batches after a warm-up batch, shared CPU).
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The refinement network (shipped folder or scripts/train.py run).")
flags.DEFINE_multi_string("data", [], "name=glob of VALIDATION refinement samples (repeatable).")
flags.DEFINE_list("starts", ["network", "network_albedo", "photo"], "net+fit starts to compare.")
flags.DEFINE_list("steps", ["30"], "Step counts of the short fit.")
flags.DEFINE_list("learning_rates", ["0.01"], "Learning rates of the short fit.")
flags.DEFINE_integer("fit_steps", 150, "Steps of the reference fit.")
flags.DEFINE_integer("limit", 48, "Samples per data set (0 = all).")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_string("face_model", "default", "Face model of the samples.")
flags.DEFINE_string("json", "", "Write the results here.")

KEYS = ("od_psnr", "oc_psnr", "od_ssim", "albedo_si_rmse", "relight_rmse")


def main(argv):
    del argv
    import os
    import time

    import numpy as np

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import variants
    from tf_facetex.prior.samples import sample_dataset
    from tf_facetex.refinement.checkpoint import load_refinement_net
    from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
    from tf_facetex.refinement.net_fit import NetFitRefiner
    from tf_facetex.refinement.network import NetworkRefiner
    from tf_facetex.refinement.train import inspect_samples, uv_layout

    if not FLAGS.checkpoint or not FLAGS.data:
        raise FaceTexError("--checkpoint and --data are required")
    net, info = load_refinement_net(FLAGS.checkpoint)
    uv_mask, symmetry_index = uv_layout(FLAGS.face_model, info["uv_size"])
    network = NetworkRefiner(net, uv_mask)
    candidates = {"prior": variants.prior_variant, "net": variants._refined(network),
                  f"fit{FLAGS.fit_steps}": variants.fit_variant(uv_mask, symmetry_index,
                                                               UVFitConfig(steps=FLAGS.fit_steps))}
    for steps in FLAGS.steps:
        candidates[f"fit{steps}"] = variants.fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=int(steps)))
        for rate in FLAGS.learning_rates:
            for start in FLAGS.starts:
                fit = FitRefiner(uv_mask, symmetry_index, UVFitConfig(steps=int(steps), learning_rate=float(rate)))
                candidates[f"net+fit/{start}/{steps}/{rate}"] = variants._refined(NetFitRefiner(network, fit, start))
    report = {"command": "python scripts/tune_net_fit.py " + " ".join(
        f"--{name}={FLAGS[name].value}" for name in ("checkpoint", "starts", "steps", "learning_rates", "fit_steps",
                                                      "limit", "batch_size")) + "".join(
        f" --data={d}" for d in FLAGS.data), "checkpoint": info["checkpoint"], "load": os.getloadavg(), "data": {}}
    for entry in FLAGS.data:
        name, _, pattern = entry.partition("=")
        sizes = inspect_samples(pattern)
        batches = list(sample_dataset(pattern, FLAGS.batch_size, sizes["image_size"], sizes["uv_size"],
                                      sizes["num_coeffs"], training=False, with_ground_truth=sizes["has_ground_truth"],
                                      deterministic=True))
        if FLAGS.limit:
            batches = batches[:max(1, FLAGS.limit // FLAGS.batch_size)]
        results = {}
        for label, variant in candidates.items():
            variant(batches[0])                                   # warm-up: tracing and compilation
            sums, count, seconds = {}, 0, 0.0
            for batch in batches:
                start = time.perf_counter()
                output = variant(batch)
                np.asarray(output["albedo_uv"])
                seconds += time.perf_counter() - start
                values = variants.evaluate_batch(batch, output, uv_mask)
                for key in KEYS:
                    if key in values:
                        sums[key] = sums.get(key, 0.0) + float(np.nansum(values[key]))
                count += int(batch["image"].shape[0])
            results[label] = {**{k: v / count for k, v in sums.items()}, "ms_per_image": 1000.0 * seconds / count,
                              "images": count}
            print(f"[tune] {name} {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[label].items()),
                  flush=True)
        report["data"][name] = {"pattern": pattern, "results": results}
    if FLAGS.json:
        io_utils.write_json(FLAGS.json, report)
        print(f"[tune] wrote {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
