"""Ships a trained refinement network: its generator as saved_models/refinement_net/ (network.json +
refinement_net.weights.h5) and MODEL_CARD.md (architecture, parameters, data and split, steps, wall time,
command, held-out figures, sha256).

    python scripts/ship_refinement_net.py --run_dir=outputs/refine_cpu/authors \
        --samples_json=docs/results/real_recipe_samples.json \
        --eval_json=docs/results/eval_real_net.json,docs/results/eval_synthetic_net.json
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "scripts/train.py run folder (its newest checkpoint is shipped).")
flags.DEFINE_string("out", "saved_models/refinement_net", "Shipped network folder.")
flags.DEFINE_string("name", "refinement_net_cpu_real", "Name recorded in network.json and the card.")
flags.DEFINE_string("samples_json", "docs/results/real_recipe_samples.json", "The recipe's sample summary (data).")
flags.DEFINE_list("eval_json", [], "scripts/evaluate.py results (held-out tables: the real test split, the synthetic "
                  "set), optional.")
flags.DEFINE_string("check_data", "outputs/real_recipe/samples/val/samples-*.tfrecord",
                    "Refinement samples (glob) on which float32 and float16-rounded weights are compared.")
flags.DEFINE_integer("check_samples", 32, "Samples of --check_data used for the float16 comparison.")
flags.DEFINE_float("float16_tolerance", 1e-3, "Weights are stored as float16 when the outputs (albedo, light maps) "
                   "of the rounded weights stay within this of float32's on --check_data; else float32.")
flags.DEFINE_string("train_command", "", "The training command(s), for the card (default: from run_config.json).")


def _eval_rows(run_dir):
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if r.get("kind") == "eval"]
    speeds = [r["steps_per_second"] for r in rows if r.get("kind") == "train" and r.get("steps_per_second")]
    return evals, speeds


def main(argv):
    del argv
    import json
    import pathlib

    import tensorflow as tf

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.prior.samples import sample_dataset
    from tf_facetex.networks.precision import float16_output_error
    from tf_facetex.refinement.checkpoint import load_refinement_net, save_shipped_net
    from tf_facetex.refinement.network import network_inputs, unseen_noise
    from tf_facetex.training.summaries import training_wall_seconds
    from tf_facetex.refinement.train import inspect_samples, uv_layout

    if not FLAGS.run_dir:
        raise FaceTexError("--run_dir is required")
    run_dir = pathlib.Path(FLAGS.run_dir)
    config = json.loads((run_dir / "run_config.json").read_text())
    net, info = load_refinement_net(run_dir)
    step = int(info["checkpoint"].rsplit("-", 1)[-1])
    evals, speeds = _eval_rows(run_dir)
    wall = training_wall_seconds(run_dir)
    final_val = max((r for r in evals if r["step"] <= step), key=lambda r: r["step"], default=None)
    samples = json.loads(pathlib.Path(FLAGS.samples_json).read_text()) if FLAGS.samples_json else {}
    record = {"name": FLAGS.name, "net_preset": config.get("net_preset"), "uv_size": info["uv_size"],
              "face_model": info.get("face_model"), "steps": step, "wall_seconds": wall,
              "loss_preset": config.get("loss_preset"), "train_data": config.get("train_data"),
              "batch_size": config.get("global_batch_size"), "steps_per_epoch": config.get("steps_per_epoch"),
              "train_samples": samples.get("train", {}).get("count"), "val_samples": samples.get("val", {}).get("count"),
              "validation_at_ship": final_val}
    sizes = inspect_samples(FLAGS.check_data)
    batch = next(iter(sample_dataset(FLAGS.check_data, FLAGS.check_samples, sizes["image_size"], sizes["uv_size"],
                                     sizes["num_coeffs"], training=False)))
    uv_mask, _ = uv_layout(config.get("face_model") or "default", info["uv_size"], log=lambda *_: None)
    seen = batch["visibility_uv"]
    filled = (seen * batch["texture_uv"] + (1.0 - seen) * unseen_noise(info["uv_size"])) * uv_mask
    float16_error = float16_output_error(net, network_inputs(net, batch, filled, uv_mask))
    float16 = float16_error <= FLAGS.float16_tolerance
    record["storage"] = {"dtype": "float16" if float16 else "float32", "float16_max_abs_output_error": float16_error,
                         "checked_on": f"{int(batch['texture_uv'].shape[0])} samples of {FLAGS.check_data}"}
    weights = save_shipped_net(net, FLAGS.out, record, float16=float16)
    sha = io_utils.file_sha256(weights)
    size = weights.stat().st_size
    lines = [f"# Model card: {FLAGS.name} (the shipped refinement network)", "",
             f"- file: `{FLAGS.out}/refinement_net.weights.h5` ({size / 1e6:.2f} MB, Keras weights stored as {record['storage']['dtype']}) + "
             f"`network.json` (architecture); sha256 `{sha}`",
             f"- architecture: RefinementNet preset `{config.get('net_preset')}` (the paper's topology: shared encoder "
             f"without skips, residual blocks, albedo decoder 3 ch, light decoder 27 ch), UV {info['uv_size']}, "
             + (f"outputs = corrections of the {net.albedo_base} albedo (at most {net.albedo_delta:g}) and of the "
                "coarse light gamma (zero-initialised output convolutions: an untrained network returns its bases), "
                if net.residual else "absolute outputs, ") +
             f"{net.count_params():,} parameters; config: `{json.dumps(json.loads((pathlib.Path(FLAGS.out) / 'network.json').read_text())['net_config'])}`",
             f"- training: `scripts/train.py --flagfile=configs/refine_cpu.cfg` with loss preset "
             f"`{config.get('loss_preset')}`, batch {config.get('global_batch_size')}, {step} steps "
             f"({step / max(1, config.get('steps_per_epoch') or 1):.2f} epochs of {config.get('steps_per_epoch')} steps), "
             f"Adam {config.get('learning_rate')} x{config.get('lr_decay')} per epoch; 2 CPU cores, "
             f"{min(speeds):.2f}-{max(speeds):.2f} steps/s logged (shared machine)"
             + (f", wall time {wall / 3600:.2f} h" if wall else "") if speeds else "",
             f"- command: `{FLAGS.train_command or 'see configs/refine_cpu.cfg'}`",
             f"- data: refinement samples (the fit prior, UV 128, 224 px crops) of UTKFace + CelebAMask-HQ-mini train "
             f"images, content-hash 85/15 train/test split (scripts/run_real_recipe.sh): "
             f"{record['train_samples']} train samples; validation = {record['val_samples']} samples of train shards "
             f"60-63 (never trained on); test = the test split (never seen). Training shards: "
             f"`{config.get('train_data')}`"
             + (f"; synthetic validation (albedo against steps): `{config.get('eval_gt_data')}`"
                if config.get("eval_gt_data") else "") + ".",
             "", "## Held-out figures", ""]
    if final_val:
        lines.append(f"Validation at step {final_val['step']}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in sorted(final_val.items()) if k not in ("step", "kind")))
    columns = (("od_psnr", "OD PSNR", "{:.2f}"), ("od_ssim", "OD SSIM", "{:.3f}"), ("oc_psnr", "OC PSNR", "{:.2f}"),
               ("od_identity", "OD identity", "{:.3f}"), ("albedo_si_rmse", "albedo si-RMSE", "{:.4f}"),
               ("relight_rmse", "relight RMSE", "{:.4f}"))
    for path in FLAGS.eval_json:
        result = json.loads(pathlib.Path(path).read_text())
        shown = [c for c in columns if any(c[0] in v for v in result["variants"].values())]
        lines += ["", f"{result['data']} ({result['images']} images; `scripts/evaluate.py`, {path}):", "",
                  "| variant | " + " | ".join(label for _, label, _ in shown) + " | ms/image |",
                  "|---|" + "---|" * (len(shown) + 1)]
        for name, values in result["variants"].items():
            timing = (result.get("ms_per_image") or {}).get(name)
            cells = [form.format(values[key]) if key in values else "" for key, _, form in shown]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if timing is None else round(timing)} |")
    lines += ["", f"Storage: {record['storage']['dtype']}. With the weights rounded to float16 the albedo and light maps "
              f"differ from float32's by at most {float16_error:.2e} on {record['storage']['checked_on']} (tolerance "
              f"{FLAGS.float16_tolerance:g}: float16 is stored when within it; the loader casts back to float32).", ""]
    io_utils.write_text(pathlib.Path(FLAGS.out) / "MODEL_CARD.md", "\n".join(line for line in lines if line is not None))
    print(f"[ship] {weights} ({size / 1e6:.2f} MB, sha256 {sha[:16]}...), step {step}")


if __name__ == "__main__":
    cli.run(main)
