"""Ships a trained prior regressor: saved_models/prior_regressor/ (regressor.weights.h5 + regressor.json) and
MODEL_CARD.md (architecture, parameters, data and split, steps, wall time, command, held-out figures, sha256).

    python scripts/ship_prior_regressor.py --run_dir=outputs/prior_real/compact \
        --val_json=outputs/prior_real/prior_real_val.json --test_json=docs/results/prior_real_test.json

The newest checkpoint of the run is shipped. Weights are stored as float16 when the coefficients of the rounded
weights stay within --float16_tolerance of float32's on validation crops.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "scripts/train_prior.py run folder.")
flags.DEFINE_string("out", "saved_models/prior_regressor", "Shipped regressor folder.")
flags.DEFINE_string("name", "prior_regressor_compact_real", "Name recorded in regressor.json and the card.")
flags.DEFINE_string("val_json", "", "train_prior.py --results_json of the validation split (optional).")
flags.DEFINE_string("test_json", "", "train_prior.py --evaluate_only --results_json on the test split (optional).")
flags.DEFINE_integer("check_images", 32, "Validation crops on which float32 and float16-rounded weights are compared.")
flags.DEFINE_float("float16_tolerance", 1e-3, "Store float16 when the coefficients stay within this of float32's.")
flags.DEFINE_string("train_command", "python scripts/train_prior.py --flagfile=configs/prior_real_cpu.cfg",
                    "The training command, for the card.")

METRICS = ("landmark_px", "skin_psnr")


def _figures(path):
    import json
    import pathlib

    result = json.loads(pathlib.Path(path).read_text())
    rows = ["| method | landmark px (224) ↓ | skin PSNR dB ↑ |", "|---|---|---|"]
    for method, values in result["methods"].items():
        rows.append(f"| {method} | " + " | ".join(f"{values.get(k, float('nan')):.2f}" for k in METRICS) + " |")
    return result, rows


def main(argv):
    del argv
    import json
    import pathlib

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.networks.precision import float16_output_error
    from tf_facetex.prior.regressor import save_shipped_regressor
    from tf_facetex.prior.train import make_prior_dataset, restore_prior_trainer
    from tf_facetex.training.summaries import training_wall_seconds

    if not FLAGS.run_dir:
        raise FaceTexError("--run_dir is required")
    run_dir = pathlib.Path(FLAGS.run_dir)
    config = json.loads((run_dir / "run_config.json").read_text())
    trainer = restore_prior_trainer(run_dir)
    regressor, step = trainer.regressor, int(trainer.step.numpy())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = [r["steps_per_second"] for r in rows if r.get("kind") == "train" and r.get("steps_per_second")]
    wall = training_wall_seconds(run_dir)
    batch = next(iter(make_prior_dataset(config["eval_data"], FLAGS.check_images, training=False)))
    images = batch["image"] if isinstance(batch, dict) else batch[0]
    error = float16_output_error(regressor, images)
    float16 = error <= FLAGS.float16_tolerance
    record = {"name": FLAGS.name, "steps": step, "wall_seconds": wall, "train_data": config.get("train_data"),
              "eval_data": config.get("eval_data"),
              "storage": {"dtype": "float16" if float16 else "float32", "float16_max_abs_coefficient_error": error,
                          "checked_on": f"{int(images.shape[0])} crops of {config.get('eval_data')}"}}
    weights = save_shipped_regressor(regressor, FLAGS.out, record, float16=float16)
    sha, size = io_utils.file_sha256(weights), weights.stat().st_size
    lines = [f"# Model card: {FLAGS.name} (the shipped prior regressor)", "",
             f"- file: `{FLAGS.out}/regressor.weights.h5` ({size / 1e6:.2f} MB, Keras weights stored as "
             f"{record['storage']['dtype']}) + `regressor.json` (backbone, crop size, coefficient layout); "
             f"sha256 `{sha}`",
             f"- architecture: `PriorRegressor`, backbone `{regressor.backbone_name}` (conv-BN stack to 7x7, 1x1 "
             f"conv, flatten, 256 units, zero-initialised linear head), {regressor.count_params():,} parameters; "
             f"{regressor.image_size} px aligned crops (uint8 or [0, 1]) -> {regressor.layout.size} coefficients "
             f"(layout {regressor.layout_sizes}) of the ICT-FaceKit model",
             f"- training: {step} steps of batch {config.get('batch_size')} "
             f"({step / max(1, config.get('steps_per_epoch') or 1):.2f} epochs of {config.get('steps_per_epoch')} "
             f"steps), Adam {config.get('learning_rate')} x{config.get('lr_decay')} per epoch; losses: Deng et al.'s "
             f"photometric, 68-landmark and regularisers plus pseudo-labels from a {config.get('pseudo_fit_steps')}-"
             f"step landmark fit of every batch (id, expression, angles); no identity term"
             + (f"; 2 CPU cores, {min(speeds):.2f}-{max(speeds):.2f} steps/s logged (shared machine)" if speeds else "")
             + (f"; wall time {wall / 60:.0f} min" if wall else ""),
             f"- command: `{FLAGS.train_command}`",
             f"- data: aligned crops (scripts/preprocess.py: HOG + dlib 68 landmarks, the shipped parsing-net mask) of "
             f"UTKFace + CelebAMask-HQ-mini train images, content-hash 85/15 train/test split "
             f"(scripts/run_real_recipe.sh): train = train-split shards 0-59 (`{config.get('train_data')}`), "
             f"validation = shards 60-63 (`{config.get('eval_data')}`, never trained on); the test split is never "
             f"seen in training.",
             f"- storage: {record['storage']['dtype']}; with the weights rounded to float16 the coefficients differ "
             f"from float32's by at most {error:.2e} on {record['storage']['checked_on']} (tolerance "
             f"{FLAGS.float16_tolerance:g}).",
             "", "## Held-out figures", "",
             "Real photos have no true coefficients, so the figures are the 68-landmark error of the projected model "
             "landmarks against the detected ones (px at 224) and the PSNR of the render on the skin mask; "
             "`mean_face*` are the untrained baselines, `landmark_fit` is the teacher the servable replaces.", ""]
    for title, path in (("Validation", FLAGS.val_json), ("Test split", FLAGS.test_json)):
        if path:
            result, table = _figures(path)
            lines += [f"{title} ({result.get('num_images')} photos, `{path}`):", "", *table, ""]
    io_utils.write_text(pathlib.Path(FLAGS.out) / "MODEL_CARD.md", "\n".join(lines))
    print(f"[ship] {weights} ({size / 1e6:.2f} MB, {record['storage']['dtype']}, sha256 {sha[:16]}...), step {step}")


if __name__ == "__main__":
    cli.run(main)
