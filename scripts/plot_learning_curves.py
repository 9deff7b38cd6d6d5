"""Learning curves of a scripts/train.py run: train loss terms and validation loss / re-render metrics against steps.

    python scripts/plot_learning_curves.py --run_dir=outputs/refine_cpu/authors --out=docs/results/refine_cpu_curves.png

Also prints the flattening figure: the relative change of the validation loss (loss_uv_total) over the last 20% of
the steps. With a ground-truth validation set (scripts/train.py --eval_gt_data: synthetic faces) a fourth panel shows
the albedo si-RMSE against steps.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Training run folder (metrics.jsonl).")
flags.DEFINE_string("out", None, "Output PNG.")
flags.DEFINE_string("title", "", "Figure title.")
flags.DEFINE_string("json", "", "Also write the validation rows and the flattening figure here (for docs/RESULTS.md).")


def flattening(evals, key="loss_uv_total"):
    """(step_a, value_a, step_b, value_b, relative change) of ``key`` from the evaluation nearest 80% of the
    last step to the last one; None with fewer than two evaluations."""
    rows = [r for r in evals if key in r]
    if len(rows) < 2:
        return None
    last = rows[-1]
    target = 0.8 * last["step"]
    first = min(rows[:-1], key=lambda r: abs(r["step"] - target))
    return first["step"], first[key], last["step"], last[key], (last[key] - first[key]) / first[key]


def main(argv):
    del argv
    import json
    import pathlib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tf_facetex.errors import FaceTexError

    if not FLAGS.run_dir or not FLAGS.out:
        raise FaceTexError("--run_dir and --out are required")
    rows = [json.loads(line) for line in (pathlib.Path(FLAGS.run_dir) / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    train = [r for r in rows if r.get("kind") == "loss"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    gt_evals = [r for r in rows if r.get("kind") == "eval_gt"]
    figure, axes = plt.subplots(1, 4 if gt_evals else 3, figsize=(20 if gt_evals else 15, 4))
    for key in ("total", "image", "symmetry", "prior_l1", "gan"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            axes[0].plot(*zip(*points), label=key, linewidth=0.8)
    axes[0].set_title("train loss terms (logged)")
    for key in ("loss_uv_total", "loss_image", "loss_symmetry", "loss_prior_l1"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=key)
    axes[1].set_title("validation loss (UV terms, no GAN)")
    for key in ("od_psnr", "oc_psnr"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            axes[2].plot(*zip(*points), marker="o", label=key)
    axes[2].set_title("validation re-render PSNR (dB, face mask)")
    if gt_evals:
        points = [(r["step"], r["albedo_si_rmse"]) for r in gt_evals if r.get("albedo_si_rmse") is not None]
        axes[3].plot(*zip(*points), marker="o", label="albedo si-RMSE (network)")
        axes[3].set_title("synthetic validation: albedo si-RMSE vs ground truth")
    for axis in axes:
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    if FLAGS.title:
        figure.suptitle(FLAGS.title)
    figure.tight_layout()
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FLAGS.out, dpi=90)
    flat = flattening(evals)
    if flat:
        print(f"validation loss_uv_total: step {flat[0]} {flat[1]:.4f} -> step {flat[2]} {flat[3]:.4f} "
              f"({100 * flat[4]:+.1f}% over the last ~20% of the steps)")
    flat_gt = flattening(gt_evals, "albedo_si_rmse")
    if flat_gt:
        print(f"synthetic validation albedo_si_rmse: step {flat_gt[0]} {flat_gt[1]:.5f} -> step {flat_gt[2]} "
              f"{flat_gt[3]:.5f} ({100 * flat_gt[4]:+.1f}%)")
    if FLAGS.json:
        from tf_facetex import io_utils

        io_utils.write_json(FLAGS.json, {
            "command": f"python scripts/plot_learning_curves.py --run_dir={FLAGS.run_dir} --out={FLAGS.out} "
                       f"--json={FLAGS.json}",
            "run_dir": FLAGS.run_dir, "figure": FLAGS.out, "last_step": max((r["step"] for r in rows), default=0),
            "flattening": None if not flat else {"key": "loss_uv_total", "from_step": flat[0], "from": flat[1],
                                                 "to_step": flat[2], "to": flat[3], "relative_change": flat[4]},
            "albedo_flattening": None if not flat_gt else {
                "key": "albedo_si_rmse", "from_step": flat_gt[0], "from": flat_gt[1], "to_step": flat_gt[2],
                "to": flat_gt[3], "relative_change": flat_gt[4]},
            "validation": evals, "validation_ground_truth": gt_evals})
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    cli.run(main)
