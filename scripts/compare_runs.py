"""The last validation figures of several scripts/train.py runs side by side (e.g. a loss-preset comparison).

    python scripts/compare_runs.py --runs=shipped=outputs/preset/shipped,paper=outputs/preset/paper_plain \
        --json=docs/results/refine_cpu_preset.json

Per run: its step, the loss preset and overrides from run_config.json, and the newest 'eval' (real validation:
OD/OC PSNR, SSIM) and 'eval_gt' (synthetic validation: albedo si-RMSE, OD PSNR) records of metrics.jsonl. The
weighted validation loss is not compared: each preset weights its terms differently. A markdown table goes next
to the JSON.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "name=run_dir entries.")
flags.DEFINE_string("json", None, "Output JSON (the markdown table goes next to it with .md).")
flags.DEFINE_string("title", "Validation figures of the runs", "Title of the markdown table.")

COLUMNS = (("eval", "od_psnr", "val OD PSNR ↑"), ("eval", "oc_psnr", "val OC PSNR ↑"),
           ("eval", "od_ssim", "val OD SSIM ↑"), ("eval_gt", "albedo_si_rmse", "synthetic albedo si-RMSE ↓"),
           ("eval_gt", "od_psnr", "synthetic OD PSNR ↑"), ("eval_gt", "oc_psnr", "synthetic OC PSNR ↑"))


def main(argv):
    del argv
    import json
    import pathlib
    import sys

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.training.summaries import read_metrics

    rows = {}
    for entry in FLAGS.runs or []:
        name, _, run_dir = entry.partition("=")
        metrics = pathlib.Path(run_dir) / "metrics.jsonl"
        if not run_dir or not metrics.is_file():
            raise FaceTexError(f"--runs {entry!r}: expected name=run_dir with a metrics.jsonl")
        config = json.loads((pathlib.Path(run_dir) / "run_config.json").read_text())
        last = {kind: (read_metrics(metrics, kind) or [{}])[-1] for kind in ("eval", "eval_gt")}
        rows[name] = {"run_dir": run_dir, "step": last["eval"].get("step"),
                      "settings": {key: config.get(key) for key in ("loss_preset", "weight_overrides",
                                                                    "symmetry_form", "illumination_mask")},
                      **{f"{kind}.{key}": last[kind].get(key) for kind, key, _ in COLUMNS}}
    if not rows:
        raise FaceTexError("--runs is empty")
    result = {"command": " ".join(["python", *sys.argv]), "runs": rows}
    lines = [f"### {FLAGS.title}", "", "| run | settings | step | " + " | ".join(c[2] for c in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for name, row in rows.items():
        cells = ["–" if row[f"{kind}.{key}"] is None else f"{row[f'{kind}.{key}']:.4g}" for kind, key, _ in COLUMNS]
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items() if v not in (None, "", {}))
        lines.append(f"| {name} | {settings} | {row['step']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if FLAGS.json:
        io_utils.write_json(FLAGS.json, result)
        io_utils.write_text(str(pathlib.Path(FLAGS.json).with_suffix(".md")), table)


if __name__ == "__main__":
    cli.run(main)
