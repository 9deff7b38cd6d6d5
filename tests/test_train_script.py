"""The training loop and scripts/train.py: smoke config, NaN guard, SIGTERM + resume (fast ones).

The loop tests run `train()` in-process on a tiny network; the smoke test runs the real script with the smoke config.
"""
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from tf_facetex.errors import TrainingError
from tf_facetex.refinement import toy_data
from tf_facetex.training import checkpoints, summaries
from tf_facetex.refinement.train import TrainConfig, train

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_NET = {"base_filters": 8, "num_down": 2, "num_res_blocks": 1}
TINY_DISCRIMINATOR = {"n_layers": 2}


@pytest.fixture(scope="module")
def toy32(tmp_path_factory):
    return toy_data.write_toy_dataset(tmp_path_factory.mktemp("toy32"), 20, eval_fraction=0.2, image_size=32,
                                      uv_size=32, num_shards=2)


@pytest.fixture(scope="module")
def toy64(tmp_path_factory):
    return toy_data.write_toy_dataset(tmp_path_factory.mktemp("toy64"), 64, image_size=64, uv_size=64, num_shards=4)


def tiny_config(toy, model_dir, **changes):
    config = TrainConfig(train_data=toy["train"], model_dir=str(model_dir), net_preset="small",
                         net_overrides=TINY_NET, discriminator_ndf=8, discriminator_overrides=TINY_DISCRIMINATOR,
                         face_model="toy", global_batch_size=4, steps_per_epoch=2, max_steps=8, learning_rate=1e-3,
                         log_every=1, image_every=0, checkpoint_every=100, progress=False, shuffle_buffer=16)
    return dataclasses.replace(config, **changes)


def loss_steps(model_dir):
    return [r["step"] for r in summaries.read_metrics(pathlib.Path(model_dir) / "metrics.jsonl", "loss")]


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(toy32, tmp_path):
    config = tiny_config(toy32, tmp_path, checkpoint_every=2, poison_step=5)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 5 \(.*image=nan") as error:
        train(config, log=lambda *_: None)
    assert "ckpt-4" in str(error.value) and "--resume" in str(error.value)
    keeper_dir = tmp_path / "checkpoints"
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(keeper_dir))
    assert pathlib.Path(state.model_checkpoint_path).name == "ckpt-4"
    assert checkpoints.checkpoint_step(state.model_checkpoint_path) == 4
    assert checkpoints.checkpoint_is_finite(state.model_checkpoint_path)
    assert loss_steps(tmp_path) == [1, 2, 3, 4]  # the poisoned step was neither logged nor saved


def test_sigterm_saves_the_current_step_and_resume_continues_there(toy32, tmp_path):
    def kill_at_step_3(step, logs):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, handled by the loop's StopSignal

    config = tiny_config(toy32, tmp_path, max_steps=8, checkpoint_every=100)
    stopped = train(config, log=lambda *_: None, on_step=kill_at_step_3)
    assert stopped.interrupted and stopped.step == 3
    assert checkpoints.checkpoint_step(stopped.checkpoint) == 3  # nothing lost although checkpoint_every is 100

    with pytest.raises(TrainingError, match="pass --resume"):
        train(config, log=lambda *_: None)  # the same folder without --resume: refused, nothing overwritten

    lines = []
    resumed = train(dataclasses.replace(config, resume=True, max_steps=5), log=lines.append)
    assert any("resumed from" in line and "step 3, epoch 1" in line for line in lines), lines
    assert not resumed.interrupted and resumed.step == 5 and resumed.epoch == 2
    assert checkpoints.checkpoint_step(resumed.checkpoint) == 5
    assert loss_steps(tmp_path) == [1, 2, 3, 4, 5]

    with pytest.raises(TrainingError, match="other settings .*net_overrides"):
        train(dataclasses.replace(config, resume=True, net_overrides={**TINY_NET, "base_filters": 4}),
              log=lambda *_: None)


def test_smoke_config_lowers_total_and_image_loss(toy64, tmp_path):
    """scripts/train.py --flagfile=configs/refine_smoke.cfg, bounded to 30 steps on toy data."""
    model_dir = tmp_path / "run"
    command = [sys.executable, str(REPO / "scripts" / "train.py"),
               f"--flagfile={REPO / 'configs' / 'refine_smoke.cfg'}",
               f"--train_data={toy64['train']}", f"--eval_data={toy64['eval']}", f"--model_dir={model_dir}",
               "--max_steps=30", "--log_every=5", "--checkpoint_every=15", "--image_every=15", "--eval_batches=1",
               "--noprogress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    losses = summaries.read_metrics(model_dir / "metrics.jsonl", "loss")
    assert [r["step"] for r in losses] == [1, 5, 10, 15, 20, 25, 30]
    for term in ("total", "image"):
        start = np.mean([r[term] for r in losses[:2]])
        end = np.mean([r[term] for r in losses[-2:]])
        assert end < 0.5 * start, (term, start, end)
    assert {"illumination", "symmetry", "smoothness", "prior_l1", "gan", "image_gradient", "d_loss"} <= set(losses[0])
    train_records = summaries.read_metrics(model_dir / "metrics.jsonl", "train")
    assert train_records[0]["prior_l1_weight"] == 1.0 and train_records[0]["learning_rate"] == pytest.approx(1e-3)
    evaluation = summaries.read_metrics(model_dir / "metrics.jsonl", "eval")[-1]
    assert evaluation["step"] == 30 and np.isfinite(evaluation["od_psnr"]) and "albedo_si_rmse" in evaluation
    assert checkpoints.checkpoint_step(str(model_dir / "checkpoints" / "ckpt-30")) == 30
    assert list((model_dir / "tensorboard").glob("events.out.tfevents.*"))
    settings = json.loads((model_dir / "run_config.json").read_text())
    assert settings["net_preset"] == "small" and settings["uv_size"] == 64 and settings["steps_per_epoch"] == 50


def test_union_of_train_patterns_ground_truth_validation_and_fit_losses(toy32, tmp_path):
    """Comma-separated --train_data trains on the union (steps per epoch counted over both); --eval_gt_data logs
    the albedo error against steps as eval_gt/*; --symmetry_form=fit trains with the per-image fit's symmetry."""
    from tf_facetex.refinement.train import loss_options

    config = tiny_config(toy32, tmp_path, train_data=f"{toy32['train']},{toy32['eval']}", steps_per_epoch=0,
                         max_steps=4, eval_every=2, eval_batches=1, eval_data=toy32["eval"],
                         eval_gt_data=toy32["eval"], symmetry_form="fit", loss_preset="paper",
                         net_overrides={**TINY_NET, "outputs": "residual", "albedo_base": "unwrapped"})
    lines = []
    result = train(config, log=lines.append)
    assert result.step == 4
    assert any("5 steps/epoch" in line for line in lines), lines           # (16 + 4) samples // batch 4
    gt_rows = summaries.read_metrics(tmp_path / "metrics.jsonl", "eval_gt")
    assert [r["step"] for r in gt_rows] == [2, 4]
    assert all(np.isfinite(r["albedo_si_rmse"]) for r in gt_rows)
    assert [r["step"] for r in summaries.read_metrics(tmp_path / "metrics.jsonl", "eval")] == [2, 4]
    assert loss_options(config).symmetry_weighting == "visibility"
    assert loss_options(dataclasses.replace(config, symmetry_form="")).symmetry_weighting == "uniform"
    with pytest.raises(TrainingError, match="symmetry_form"):
        loss_options(dataclasses.replace(config, symmetry_form="mirror"))
