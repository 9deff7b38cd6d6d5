"""Slow training tests (minutes on 2 CPU cores): run with `bash scripts/run_tests.sh slow`.

- the smoke config as shipped, a real SIGTERM to the script and --resume, the NaN guard through the script,
- MultiWorkerMirroredStrategy with two local workers,
- a longer toy-world run whose albedo beats both inputs (prior albedo, unwrapped texture) against ground truth,
- the paper config (paper net, dlib identity for the cross-perceptual term) for two steps,
- our lookup renderer against tf_facetex.rendering's bilinear_sample, and --face_model=<path> through the UV
  rasteriser (tf_facetex.rendering imports tensorflow_graphics, ~15 s).
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_facetex.refinement import toy_data
from tf_facetex.training import checkpoints, summaries

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN = str(REPO / "scripts" / "train.py")
SMOKE = f"--flagfile={REPO / 'configs' / 'refine_smoke.cfg'}"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def toy64(tmp_path_factory):
    return toy_data.write_toy_dataset(tmp_path_factory.mktemp("toy64"), 240, image_size=64, uv_size=64, num_shards=4)


def run_train(*flags, timeout=900):
    return subprocess.run([sys.executable, TRAIN, *flags], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=ENV)


def data_flags(toy, model_dir):
    return [f"--train_data={toy['train']}", f"--eval_data={toy['eval']}", f"--model_dir={model_dir}", "--noprogress"]


def test_smoke_config_as_shipped(toy64, tmp_path):
    result = run_train(SMOKE, *data_flags(toy64, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    losses = summaries.read_metrics(tmp_path / "metrics.jsonl", "loss")
    assert losses[-1]["step"] == 150
    for term in ("total", "image", "image_gradient", "illumination"):
        assert np.mean([r[term] for r in losses[-3:]]) < 0.3 * np.mean([r[term] for r in losses[:3]]), term
    epochs = [r["epoch"] for r in summaries.read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert epochs[0] == 0 and epochs[-1] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-100.index", "ckpt-150.index", "ckpt-50.index"]


def test_sigterm_to_the_script_then_resume(toy64, tmp_path):
    command = [sys.executable, TRAIN, SMOKE, *data_flags(toy64, tmp_path), "--max_steps=1000", "--log_every=1",
               "--checkpoint_every=1000", "--image_every=0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(summaries.read_metrics(metrics, "loss")) >= 5:
            break
        time.sleep(0.5)
    assert process.poll() is None, process.stderr.read()[-3000:]
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    last_logged = summaries.read_metrics(metrics, "loss")[-1]["step"]
    assert last_logged >= 5
    saved = checkpoints.checkpoint_step(str(tmp_path / "checkpoints" / f"ckpt-{last_logged}"))
    assert saved == last_logged  # the killed run lost no step (checkpoint_every was 1000)
    assert f"SIGTERM: saved step {last_logged}" in stdout

    result = run_train(SMOKE, *data_flags(toy64, tmp_path), "--resume", f"--max_steps={last_logged + 3}",
                       "--log_every=1", "--image_every=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"step {last_logged}" in result.stdout + result.stderr
    steps = [r["step"] for r in summaries.read_metrics(metrics, "loss")]
    assert steps == list(range(1, last_logged + 4))


def test_nan_guard_through_the_script(toy64, tmp_path):
    result = run_train(SMOKE, *data_flags(toy64, tmp_path), "--max_steps=20", "--checkpoint_every=4",
                       "--poison_step=6", "--image_every=0", "--log_every=1")
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: non-finite loss at step 6") and "ckpt-4" in message
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest.endswith("ckpt-4") and checkpoints.checkpoint_is_finite(latest)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_strategy_with_two_local_workers(toy64, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN, SMOKE, *data_flags(toy64, tmp_path), "--strategy=multi_worker",
             "--max_steps=12", "--checkpoint_every=6", "--log_every=2", "--image_every=6"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env))
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    chief_log = outputs[0][0] + outputs[0][1]
    assert "strategy multi_worker" in chief_log and "2 replica(s) on 2 worker(s), global batch 8" in chief_log
    losses = summaries.read_metrics(tmp_path / "metrics.jsonl", "loss")
    assert [r["step"] for r in losses] == [1, 2, 4, 6, 8, 10, 12]  # one writer: the chief
    assert losses[-1]["total"] < losses[0]["total"]
    assert checkpoints.checkpoint_step(str(tmp_path / "checkpoints" / "ckpt-12")) == 12


@pytest.mark.timeout(3600)  # ~10 minutes on 2 idle cores; much more when the machine is shared
def test_longer_toy_run_beats_the_prior_and_the_unwrapped_texture(tmp_path):
    """After 1200 steps (about 10 minutes on 2 cores) the refined albedo's scale-invariant RMSE against ground truth,
    on 84 held-out toy faces, is below both the prior albedo's and the unwrapped texture's (numbers printed).

    Setting: the authors' loss preset with the toy identity stand-in for the cross-perceptual term. (With the paper's
    weights as tf_facetex.losses normalises them, smoothness 5 and symmetry 5 flatten A' and the detail moves into the
    light map: A' then ends above the prior's error; see the training report.)
    """
    import tensorflow as tf

    from tf_facetex.prior.samples import sample_dataset
    from tf_facetex.refinement.trainer import evaluate_albedo_vs_baselines
    from tf_facetex.refinement.train import restore_trainer

    toy = toy_data.write_toy_dataset(tmp_path / "data", 560, image_size=64, uv_size=64, num_shards=4, seed=1)
    model_dir = tmp_path / "run"
    result = run_train(SMOKE, *data_flags(toy, model_dir), "--loss_preset=authors", "--identity=toy",
                       "--max_steps=1200", "--steps_per_epoch=100", "--checkpoint_every=1200", "--image_every=0",
                       "--log_every=50", "--eval_batches=0", timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    trainer = restore_trainer(model_dir, log=lambda *_: None)
    evaluation = sample_dataset(toy["eval"], 8, 64, 64, toy_data.TOY_NUM_COEFFS, training=False,
                                with_ground_truth=True)
    report = evaluate_albedo_vs_baselines(tf.function(trainer.predict_albedo, autograph=False), evaluation,
                                          toy_data.toy_uv_mask(64))
    print(json.dumps(report, indent=1))
    for mask in ("chart", "visible"):
        refined = report["refined"][mask]["si_rmse"]
        assert refined < report["prior"][mask]["si_rmse"], (mask, report)
        assert refined < report["unwrapped"][mask]["si_rmse"], (mask, report)


def test_paper_config_with_the_identity_network_runs(toy64, tmp_path):
    pytest.importorskip("face_recognition_models")
    result = run_train(f"--flagfile={REPO / 'configs' / 'refine_paper.cfg'}", *data_flags(toy64, tmp_path),
                       "--face_model=toy", "--batch_size=2", "--max_steps=2", "--log_every=1", "--image_every=0",
                       "--eval_batches=1")
    assert result.returncode == 0, result.stderr[-3000:]
    losses = summaries.read_metrics(tmp_path / "metrics.jsonl", "loss")
    assert [r["step"] for r in losses] == [1, 2]
    assert 0.0 <= losses[0]["cross_perceptual"] <= 2.0
    settings = json.loads((tmp_path / "run_config.json").read_text())
    assert settings["net_preset"] == "paper" and settings["identity"] == "dlib"


def test_render_from_lookup_matches_the_rendering_module(rng):
    interpolate = pytest.importorskip("tf_facetex.rendering.interpolate")
    from tf_facetex.refinement.objective import render_from_lookup

    maps = rng.uniform(size=(2, 16, 16, 5)).astype(np.float32)
    coords = rng.uniform(-2.0, 18.0, size=(2, 9, 7, 2)).astype(np.float32)
    ours = render_from_lookup(maps, coords, np.ones((2, 9, 7, 1), np.float32))
    np.testing.assert_allclose(ours.numpy(), interpolate.bilinear_sample(maps, coords).numpy(), atol=1e-6)


def test_face_model_uv_layout_comes_from_the_uv_rasteriser(tmp_path, tiny_model):
    """--face_model=<path>: the UV mask and texel symmetry of `rendering.uv.build_uv_raster` (imports
    tensorflow_graphics, hence slow)."""
    pytest.importorskip("tf_facetex.rendering.uv")
    from tf_facetex.errors import AssetError
    from tf_facetex.rendering.uv import build_uv_raster
    from tf_facetex.refinement.train import uv_layout

    path = tmp_path / "tiny.npz"
    tiny_model.save(path)
    lines = []
    mask, symmetry = uv_layout(str(path), 32, log=lines.append)
    raster = build_uv_raster(tiny_model, 32)
    assert mask.shape == (32, 32, 1) and mask.dtype == np.float32 and 0 < mask.sum() < 32 * 32
    np.testing.assert_array_equal(mask[..., 0] > 0, raster.mask)
    np.testing.assert_array_equal(symmetry, raster.symmetry_index)
    assert symmetry.shape == (32 * 32,) and symmetry.min() >= 0
    assert any("UV chart" in line for line in lines)
    with pytest.raises(AssetError):
        uv_layout(str(tmp_path / "missing.npz"), 32, log=lines.append)
