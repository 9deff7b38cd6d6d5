"""scripts/evaluate.py and tf_facetex.evaluation.{variants,benchmark} on toy-world samples with ground truth."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import metrics
from tf_facetex.evaluation import benchmark
from tf_facetex.evaluation import variants as V
from tf_facetex.refinement import toy_data
from tf_facetex.refinement.train import TrainConfig, inspect_samples, train

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy32(tmp_path_factory):
    return toy_data.write_toy_dataset(tmp_path_factory.mktemp("toy32"), 24, eval_fraction=0.34, image_size=32,
                                      uv_size=32, num_shards=2)


@pytest.fixture(scope="module")
def tiny_run(toy32, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(train_data=toy32["train"], model_dir=str(model_dir), net_preset="small",
                         net_overrides={"base_filters": 8, "num_down": 2, "num_res_blocks": 1}, discriminator_ndf=8,
                         discriminator_overrides={"n_layers": 2}, face_model="toy", global_batch_size=4,
                         steps_per_epoch=2, max_steps=2, learning_rate=1e-3, log_every=1, image_every=0,
                         checkpoint_every=100, progress=False, shuffle_buffer=8)
    train(config, log=lambda *_: None)
    return model_dir


def test_prior_and_unwrapped_variants_on_a_batch(toy32):
    sizes = inspect_samples(toy32["eval"])
    from tf_facetex.prior.samples import sample_dataset
    batch = next(iter(sample_dataset(toy32["eval"], 4, sizes["image_size"], sizes["uv_size"], sizes["num_coeffs"],
                                     training=False, with_ground_truth=True, deterministic=True)))
    uv_mask = tf.constant(toy_data.toy_uv_mask(32), tf.float32)
    prior = V.prior_variant(batch)
    assert prior["light_uv"] is None and prior["albedo_uv"] is batch["prior_albedo_uv"]
    unwrapped = V.unwrapped_variant(batch)
    seen = batch["visibility_uv"].numpy() > 0.5
    seen3 = np.broadcast_to(seen, unwrapped["albedo_uv"].shape)
    assert np.allclose(unwrapped["albedo_uv"].numpy()[seen3], batch["texture_uv"].numpy()[seen3])
    assert np.allclose(unwrapped["albedo_uv"].numpy()[~seen3], batch["prior_albedo_uv"].numpy()[~seen3])
    # The ground truth as a variant: zero albedo error; its render matches the image better than the prior's.
    truth = {"albedo_uv": batch["albedo_gt_uv"], "light_uv": None}
    scores = V.evaluate_batch(batch, truth, uv_mask)
    assert np.allclose(scores["albedo_si_rmse"], 0.0, atol=1e-6)
    assert np.allclose(scores["albedo_ssim"], 1.0, atol=1e-4)
    assert np.all(np.isfinite(scores["oc_psnr"])) and np.all(scores["oc_l1"] >= 0)
    # A known scale of the albedo is absorbed by the scale alignment of si-RMSE.
    scaled = V.evaluate_batch(batch, {"albedo_uv": 0.5 * batch["albedo_gt_uv"], "light_uv": None}, uv_mask)
    assert np.allclose(scaled["albedo_si_rmse"], 0.0, atol=1e-5)
    prior_scores = V.evaluate_batch(batch, prior, uv_mask)
    assert np.all(prior_scores["albedo_si_rmse"] > 1e-3)


def test_evaluate_script_writes_json_table_and_figure(toy32, tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    figure = tmp_path / "eval.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), f"--data={toy32['eval']}", "--variants=prior,unwrapped,fit",
         f"--checkpoints=net={tiny_run}", "--face_model=toy", "--identity=none", "--fit_steps=30", "--batch_size=4",
         f"--json={out}", f"--figure={figure}", "--title=toy"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["images"] == toy32["num_eval"] and report["ground_truth"] is True
    assert set(report["variants"]) == {"prior", "unwrapped", "fit", "net"}
    assert report["detailed_light"] == {"prior": False, "unwrapped": False, "fit": True, "net": True}
    fit, prior = report["variants"]["fit"], report["variants"]["prior"]
    # The fit optimises the re-render against the photo: its OD render beats the prior's on the face mask.
    assert fit["od_psnr"] > prior["oc_psnr"] and fit["od_l1"] < prior["oc_l1"]
    table = out.with_suffix(".md").read_text()
    for row in ("prior (A, L)", "unwrapped", "fit OD (A', L')", "fit OC (A', L)", "net OD (A', L')"):
        assert f"| {row} |" in table
    assert "albedo si-RMSE" in table
    image = tf.io.decode_png(figure.read_bytes()).numpy()
    assert image.shape[0] > 100 and image.std() > 0


def test_evaluate_script_fails_clearly_without_data(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), f"--data={tmp_path}/none-*.tfrecord",
         f"--json={tmp_path / 'x.json'}", "--identity=none"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode != 0
    assert "no files match" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_markdown_rows_follow_detailed_light():
    result = {"images": 2, "data": "d", "ground_truth": False, "identity_network": "none",
              "variants": {"prior": {"oc_l1": 0.1, "oc_psnr": 20.0, "oc_ssim": 0.5},
                           "fit": {"od_l1": 0.05, "od_psnr": 30.0, "od_ssim": 0.9, "oc_l1": 0.08, "oc_psnr": 25.0,
                                   "oc_ssim": 0.8}},
              "detailed_light": {"prior": False, "fit": True}}
    table = benchmark.markdown_table(result, "t")
    assert "| prior (A, L) | 0.1000 | 20.00 | 0.500 | – |" in table
    assert "| fit OD (A', L') | 0.0500 | 30.00 | 0.900 | – |" in table
    assert "albedo si-RMSE" not in table


def test_paired_variants_are_per_image_differences_with_the_right_direction():
    from tf_facetex.evaluation.benchmark import paired_variants

    result = {"per_image": {"fit": {"od_psnr": [30.0, 31.0, 29.0, 30.5], "od_l1": [0.02, 0.03, 0.02, 0.01]},
                            "fit_adam": {"od_psnr": [29.0, 31.5, 28.0, 30.0], "od_l1": [0.03, 0.02, 0.02, 0.02]}}}
    paired = paired_variants(result, [("fit", "fit_adam")])["fit - fit_adam"]
    assert paired["od_psnr"]["mean_difference"] == pytest.approx(0.5)
    assert paired["od_psnr"]["share_better"] == 0.75 and not paired["od_psnr"]["lower_is_better"]
    assert paired["od_l1"]["lower_is_better"] and paired["od_l1"]["share_better"] == 0.5   # 0.02<0.03, 0.01<0.02
    low, high = paired["od_psnr"]["ci95"]
    assert low <= 0.5 <= high


def test_albedo_truth_metrics_flat_baseline_and_completion():
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.2, 0.8, (3, 16, 16, 3)).astype(np.float32)
    chart = np.ones((16, 16, 1), np.float32)
    chart[:, :2] = 0.0
    seen = np.ones((3, 16, 16, 1), np.float32)
    seen[:, 10:] = 0.0
    flat = np.broadcast_to(truth.mean(axis=(1, 2), keepdims=True), truth.shape)
    albedos = np.stack([0.7 * truth[0], flat[1], 1.5 * flat[2] + 0.02 * rng.normal(size=truth[2].shape)])
    values = V.albedo_truth_metrics(albedos, truth, seen, chart)
    expected_flat = metrics_flat = metrics.flat_colour_rmse(truth, np.broadcast_to(chart, seen.shape)).numpy()
    np.testing.assert_allclose(values["albedo_flat_rmse"], expected_flat)
    assert values["albedo_si_rmse"][0] < 1e-5 and values["albedo_unseen_rmse"][0] < 1e-5    # the truth, scaled
    assert values["albedo_beats_flat"].tolist()[0] == 1.0
    # A flat albedo scores the flat colour's error (up to the chart-mean vs whole-map mean): it does not beat it.
    assert values["albedo_si_rmse"][1] >= metrics_flat[1] - 1e-6 and values["albedo_beats_flat"][1] == 0.0
    assert values["albedo_beats_flat"][2] == 0.0
    every = V.albedo_truth_metrics(albedos, truth, np.ones_like(seen), chart)
    assert np.isnan(every["albedo_unseen_rmse"]).all()                 # nothing unseen: no completion error


def test_landmark_hull_masks_cover_the_points():
    points = np.array([[[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]] * 17])
    hull = V.landmark_hull_masks(points, (40, 40))
    assert hull.shape == (1, 40, 40, 1) and hull[0, 20, 20, 0] == 1.0 and hull[0, 5, 5, 0] == 0.0
    assert abs(hull.sum() - 21 * 21) <= 42
