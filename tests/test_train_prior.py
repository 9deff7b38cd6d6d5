"""Prior-regressor training (issue 6.3): each loss on known values with finite non-zero gradients, the trainer on the
procedural test model (gradients reach the regressor, the reflectance term is skipped without an albedo basis), a
short run that lowers the loss, resume, the NaN guard, and (slow) the script end to end in graph mode."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.errors import TrainingError
from tf_facetex.prior import evaluation as prior_evaluation
from tf_facetex.prior import losses as prior_losses
from tf_facetex.prior import train as prior_train
from tf_facetex.prior import trainer as prior_trainer
from tf_facetex.prior.landmark_fit import deng_landmark_weights

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _grad(fn, x):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = fn(x)
    grad = tape.gradient(value, x)
    return float(value), grad.numpy()


def _finite_nonzero(grad):
    assert grad is not None and np.isfinite(grad).all() and np.abs(grad).sum() > 0


# ---------------------------------------------------------------------------------------------------- loss terms


def test_photometric_loss_is_the_masked_mean_pixel_norm():
    image = np.full((2, 8, 8, 3), 0.5, np.float32)
    rendered = image + np.array([0.3, 0.4, 0.0], np.float32)          # |diff| = 0.5 per pixel
    mask = np.zeros((2, 8, 8, 1), np.float32)
    mask[:, 2:6, 2:6] = 1.0
    rendered[:, 0, 0] = 9.0                                           # outside the mask: ignored
    value, grad = _grad(lambda r: prior_losses.photometric_loss(r, image, mask), rendered)
    assert value == pytest.approx(0.5, abs=1e-5)
    _finite_nonzero(grad)
    assert np.all(grad[:, 0, 0] == 0.0)                               # no gradient outside the mask
    # Robust: doubling the error doubles the loss (a norm, not a square); an empty mask gives 0.
    assert float(prior_losses.photometric_loss(image + 2 * (rendered - image) * mask, image, mask)) == pytest.approx(1.0, 1e-5)
    assert float(prior_losses.photometric_loss(rendered, image, np.zeros_like(mask))) == 0.0
    # At zero error the gradient stays finite (eps inside the sqrt).
    _, grad0 = _grad(lambda r: prior_losses.photometric_loss(r, image, mask), image.copy())
    assert np.isfinite(grad0).all()


def test_landmark_loss_weights_and_scale():
    target = np.random.default_rng(0).uniform(0, 224, (2, 68, 2)).astype(np.float32)
    predicted = target + np.array([3.0, 4.0], np.float32)             # 5 px everywhere
    weights = deng_landmark_weights()
    value, grad = _grad(lambda p: prior_losses.landmark_loss(p, target, weights), predicted)
    assert value == pytest.approx(25.0 * weights.mean(), rel=1e-5)
    _finite_nonzero(grad)
    # Nose and inner mouth count 20x.
    assert abs(grad[0, 30, 0]) == pytest.approx(20 * abs(grad[0, 0, 0]), rel=1e-5)
    # A 112 crop with scale 2 measures in 224-crop pixels: 4x the squared distance.
    assert float(prior_losses.landmark_loss(predicted, target, weights, scale=2.0)) == pytest.approx(100 * weights.mean(), 1e-5)
    assert np.allclose(prior_losses.landmark_error(predicted, target).numpy(), 5.0)
    assert np.allclose(prior_losses.landmark_error(predicted, target, scale=2.0).numpy(), 10.0)


def test_identity_loss_is_one_minus_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    assert float(prior_losses.identity_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    b = np.array([[0.0, 3.0], [0.0, -1.0]], np.float32)               # orthogonal, opposite
    assert float(prior_losses.identity_loss(a, b)) == pytest.approx((1.0 + 2.0) / 2, abs=1e-6)
    _, grad = _grad(lambda x: prior_losses.identity_loss(x, b), np.array([[1.0, 0.5], [0.3, 1.0]], np.float32))
    _finite_nonzero(grad)


def test_coefficient_regularizer_and_blendshape_box():
    ident = np.ones((2, 3), np.float32)
    exp = np.full((2, 2), 0.5, np.float32)
    tex = np.full((2, 4), 2.0, np.float32)
    value = float(prior_losses.coefficient_regularizer(ident, exp, tex, w_id=1.0, w_exp=0.8, w_tex=0.5))
    assert value == pytest.approx(3.0 + 0.8 * 0.5 + 0.5 * 16.0, rel=1e-6)
    # No albedo basis: an empty tex block is fine.
    assert float(prior_losses.coefficient_regularizer(ident, exp, np.zeros((2, 0), np.float32))) == pytest.approx(3.0 + 0.4)
    # Blend-shape weights outside [0, 1] pay box_weight * distance^2 on top.
    outside = np.array([[-0.5, 1.5]] * 2, np.float32)
    pca = float(prior_losses.coefficient_regularizer(ident, outside, tex[:, :0], w_exp=0.0))
    box = float(prior_losses.coefficient_regularizer(ident, outside, tex[:, :0], w_exp=0.0, blendshapes=True, box_weight=10.0))
    assert box - pca == pytest.approx(10.0 * (0.25 + 0.25), rel=1e-5)
    _, grad = _grad(lambda x: prior_losses.coefficient_regularizer(x, exp, tex), ident)
    _finite_nonzero(grad)


def test_gamma_whiteness_zero_for_white_light():
    white = np.tile(np.linspace(-0.2, 0.3, 9, dtype=np.float32), 3)[None]
    assert float(prior_losses.gamma_whiteness(white)) == pytest.approx(0.0, abs=1e-9)
    coloured = np.zeros((1, 27), np.float32)
    coloured[0, 0] = 0.3                                              # red DC only: mean 0.1
    # deviations on the DC: 0.2, -0.1, -0.1 -> squared sum 0.06 over 27 entries
    value, grad = _grad(prior_losses.gamma_whiteness, coloured)
    assert value == pytest.approx(0.06 / 27, rel=1e-5)
    _finite_nonzero(grad)


def test_reflectance_loss_is_the_skin_albedo_spread():
    albedo = np.zeros((1, 3, 3), np.float32)
    albedo[0, 0] = 0.2
    albedo[0, 1] = 0.4
    albedo[0, 2] = 5.0                                                # not skin: ignored
    skin = np.array([True, True, False])
    value, grad = _grad(lambda a: prior_losses.reflectance_loss(a, skin), albedo)
    # skin mean 0.3; 2 vertices x 3 channels x 0.1^2 / (1 batch x 2 skin vertices)
    assert value == pytest.approx(6 * 0.01 / 2, rel=1e-5)
    _finite_nonzero(grad)
    assert np.all(grad[0, 2] == 0.0)
    assert float(prior_losses.reflectance_loss(np.full((2, 3, 3), 0.7, np.float32), skin)) == pytest.approx(0.0, abs=1e-9)


def test_pseudo_label_weights_and_loss():
    from tf_facetex.face_model.decoder import CoefficientLayout

    layout = CoefficientLayout(2, 1, 0)
    weights = prior_losses.pseudo_label_weights(layout, ("id", "angles", "translation"))
    assert np.all(weights[layout.slices["id"]] == 0.0)                # compared as a mesh, not one by one
    assert np.allclose(weights[layout.slices["angles"]], 1.0 / prior_losses.PSEUDO_ANGLE_SCALE ** 2)
    assert np.allclose(weights[layout.slices["translation"]], 1.0 / prior_losses.PSEUDO_TRANSLATION_SCALE ** 2)
    assert not weights[layout.slices["gamma"]].any()
    predicted = np.zeros((2, layout.size), np.float32)
    predicted[:, layout.slices["angles"]] = prior_losses.PSEUDO_ANGLE_SCALE    # one scale off on each of 3 angles -> 3
    value, grad = _grad(lambda p: prior_losses.pseudo_label_loss(p, np.zeros_like(predicted), weights), predicted)
    assert value == pytest.approx(3.0, rel=1e-5)
    assert np.all(grad[:, layout.slices["gamma"]] == 0.0)
    with pytest.raises(ValueError):
        prior_losses.pseudo_label_weights(layout, ("shape",))


def test_pseudo_label_shape_term_is_the_mean_squared_vertex_distance(tiny_model):
    from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder

    layout = CoefficientLayout.for_model(tiny_model)
    basis = prior_losses.pseudo_shape_basis(tiny_model, layout, ("id", "exp"))
    assert prior_losses.pseudo_shape_basis(tiny_model, layout, ("angles",)) is None
    rng = np.random.default_rng(3)
    predicted = rng.normal(size=(3, layout.size)).astype(np.float32)
    target = rng.normal(size=(3, layout.size)).astype(np.float32)
    zeros = np.zeros(layout.size, np.float32)
    value, grad = _grad(lambda p: prior_losses.pseudo_label_loss(p, target, zeros, basis), predicted)
    # brute force: decode both meshes, mean squared vertex distance over the face region / scale^2
    decoder = FaceDecoder(tiny_model)
    region = np.flatnonzero(tiny_model.face_region_mask)
    meshes = [decoder.shape(layout.split(tf.constant(c))["id"], layout.split(tf.constant(c))["exp"]).numpy()[:, region]
              for c in (predicted, target)]
    expected = np.mean(np.sum((meshes[0] - meshes[1]) ** 2, -1), -1) / prior_losses.PSEUDO_SHAPE_SCALE ** 2
    assert value == pytest.approx(float(expected.mean()), rel=1e-4)
    assert np.all(grad[:, layout.slices["gamma"]] == 0.0) and np.any(grad[:, layout.slices["id"]] != 0.0)
    valid = np.array([1.0, 0.0, 0.0], np.float32)                    # per-sample weights
    only_first = prior_losses.pseudo_label_loss(predicted, target, zeros, basis, valid)
    assert float(only_first) == pytest.approx(float(expected[0]) / 3.0, rel=1e-4)


def test_loss_weights_are_deng_and_overridable():
    weights = prior_losses.PriorLossWeights()
    assert (weights.photometric, weights.landmark, weights.identity, weights.coefficients) == (1.92, 1.6e-3, 0.2, 3e-4)
    assert weights.with_overrides({"landmark": 1.0}).landmark == 1.0
    with pytest.raises(ValueError, match="unknown"):
        weights.with_overrides({"symmetry": 1.0})


# ---------------------------------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def small_world(tiny_model):
    """16 synthetic faces of the procedural model at 48 px, as a data-pipeline-like batch dict."""
    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.rendering import FaceRenderer

    config = SyntheticConfig(image_size=48, uv_size=32, occluder_prob=0.0, specular_prob=0.0)
    faces = SyntheticFaceGenerator(tiny_model, FaceRenderer(tiny_model, 48, 32), config).generate(
        np.random.default_rng(1), 16)
    batch = {"image": tf.constant(faces["image"].astype(np.float32) / 255.0), "mask": tf.constant(faces["face_mask"]),
             "landmarks": tf.constant(faces["landmarks"]), "gt_coeffs": tf.constant(faces["coeffs"])}
    return tiny_model, batch


def _trainer(model, image_size=48, **config):
    config = prior_train.PriorTrainConfig(backbone="tiny", jit_render=False, learning_rate=1e-3, **config)
    return prior_train.build_prior_trainer(config, model, image_size, steps_per_epoch=10)


def test_trainer_gradients_reach_the_regressor(small_world):
    model, batch = small_world
    trainer = _trainer(model)
    assert trainer.term_names() == ("photometric", "landmark", "coefficients", "gamma", "reflectance")
    variables = trainer.regressor.trainable_variables
    for term in ("photometric", "landmark"):
        with tf.GradientTape() as tape:
            coeffs = trainer.regressor(batch["image"][:4], training=True)
            terms, out = trainer.loss_terms({k: v[:4] for k, v in batch.items()}, coeffs)
        grads = tape.gradient(terms[term], variables)
        head = grads[-2].numpy()                                  # the linear head's kernel
        assert np.isfinite(head).all() and np.abs(head).sum() > 0, term
        assert np.isfinite(float(terms[term])) and float(terms[term]) > 0
    assert out["render"].shape == (4, 48, 48, 3) and out["landmarks"].shape == (4, 68, 2)
    # The untrained regressor is the mean face: its metrics equal the zero-coefficient baseline's.
    values = trainer.evaluation_values({k: v[:4] for k, v in batch.items()})
    zeros = prior_trainer.prediction_metrics(trainer, {k: v[:4] for k, v in batch.items()}, tf.zeros([4, trainer.layout.size]))
    assert np.allclose(values["landmark_px"], zeros["landmark_px"], atol=1e-4)
    assert set(values) >= {"landmark_px", "skin_psnr", "shape_rmse_mm", "id_rmse", "exp_rmse", "angle_error_deg"}


def test_evaluate_prior_baselines(small_world):
    """The held-out table: true coefficients have zero shape error; the landmark fit (from the data's exact
    landmarks) places the face far better than the unposed mean face; the untrained regressor is the mean face."""
    model, batch = small_world
    trainer = _trainer(model)
    data = tf.data.Dataset.from_tensor_slices({k: batch[k][:8] for k in ("image", "mask", "landmarks", "gt_coeffs")})
    results = prior_evaluation.evaluate_prior(trainer, data.batch(4), landmark_fit_steps=60)
    methods = results["methods"]
    assert results["num_images"] == 8
    assert set(methods) == {"regressor", "mean_face", "mean_face_pos_pose", "mean_face_gt_pose_light",
                            "landmark_fit", "true_coefficients"}
    assert methods["true_coefficients"]["shape_rmse_mm"] == pytest.approx(0.0, abs=1e-4)
    assert methods["landmark_fit"]["landmark_px"] < 0.5 * methods["mean_face"]["landmark_px"]
    assert methods["regressor"]["shape_rmse_mm"] == pytest.approx(methods["mean_face"]["shape_rmse_mm"], rel=1e-4)
    paired = results["regressor_vs_mean_face"]["shape_rmse_mm"]       # identical predictions: no difference
    assert paired["mean_difference"] == pytest.approx(0.0, abs=1e-4) and paired["share_better"] == 0.0
    assert "landmark_fit" not in prior_evaluation.evaluate_prior(trainer, data.batch(4), max_batches=1,
                                                   landmark_fit_steps=0)["methods"]


def test_paired_comparison_has_the_right_sign_and_interval():
    rng = np.random.default_rng(0)
    baseline = {"shape_rmse_mm": rng.uniform(4.0, 6.0, 400), "skin_psnr": rng.uniform(10.0, 14.0, 400)}
    method = {"shape_rmse_mm": baseline["shape_rmse_mm"] - 0.2 + rng.normal(0.0, 0.3, 400),
              "skin_psnr": baseline["skin_psnr"] + 2.0}
    out = prior_evaluation.paired_comparison(method, baseline)
    shape = out["shape_rmse_mm"]
    assert shape["ci95"][0] < shape["mean_difference"] < shape["ci95"][1] < 0.0   # better, and clearly so
    assert shape["mean_difference"] == pytest.approx(-0.2, abs=0.05) and 0.6 < shape["share_better"] < 0.85
    assert out["skin_psnr"]["share_better"] == 1.0 and not out["skin_psnr"]["lower_is_better"]
    worse = prior_evaluation.paired_comparison(baseline, method)["shape_rmse_mm"]
    assert worse["ci95"][0] > 0.0 and worse["share_better"] < 0.4


def test_reflectance_term_is_skipped_without_an_albedo_basis(small_world):
    model, batch = small_world
    no_basis = model.replace(albedo_basis=np.zeros((0, model.num_vertices, 3), np.float32))
    trainer = _trainer(no_basis)
    assert "reflectance" not in trainer.term_names()
    small = {k: v[:2] for k, v in batch.items() if k != "gt_coeffs"}
    terms, _ = trainer.loss_terms(small, trainer.regressor(small["image"]))
    assert "reflectance" not in terms and np.isfinite(float(trainer.weighted_total(terms)))


def test_train_steps_lower_the_loss(small_world):
    """A few eager Adam steps on one batch (overfitting it) lower the weighted total and the landmark error."""
    model, batch = small_world
    trainer = _trainer(model)
    data = {k: batch[k] for k in ("image", "mask", "landmarks")}
    first = trainer.train_step_logs(data)
    for _ in range(25):
        logs = trainer.train_step_logs(data)
    assert int(trainer.step.numpy()) == 26 and int(trainer.epoch.numpy()) == 2
    assert float(logs["total"]) < 0.8 * float(first["total"])
    assert float(logs["landmark_px"]) < float(first["landmark_px"])


def _write_records(world, folder):
    """The small world's faces as data-pipeline TFRecords (split train/test) with coefficients."""
    from tf_facetex.data import tfrecords
    from tf_facetex.data.align import AlignedFace

    model, batch = world
    folder.mkdir(parents=True, exist_ok=True)
    records = {"train": [], "test": []}
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for i in range(16):
        image = np.round(batch["image"][i].numpy() * 255).astype(np.uint8)
        aligned = AlignedFace(image=image, landmarks=batch["landmarks"][i].numpy(), transform=identity,
                              inverse=identity, original_shape=(48, 48), valid=np.ones((48, 48), np.float32),
                              mask=batch["mask"][i].numpy()[..., 0], box=np.array([0, 0, 48, 48], np.float32),
                              score=1.0, face_index=0)
        split = "test" if i >= 12 else "train"
        records[split].append(tfrecords.encode_example(aligned, source_path=f"s/{i}", sha1=f"s{i}", split=split,
                                                       extras={"coeffs": batch["gt_coeffs"][i].numpy()}))
    for split, items in records.items():
        tfrecords.write_records_atomic(folder / f"{split}-00000-of-00001.tfrecord", items)
    return str(folder / "train-*.tfrecord"), str(folder / "test-*.tfrecord")


def test_sweep_landmark_fit_script(small_world, tmp_path):
    """scripts/sweep_landmark_fit.py on records with true coefficients: exact landmarks fit better than the mean
    face; noise makes it worse; the JSON lists every prior x noise pair."""
    data, _ = _write_records(small_world, tmp_path / "data")
    out = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_landmark_fit.py"), f"--data={data}",
                           "--face_model=procedural", "--noise_px=0,3", "--priors=2:2,10:10", "--steps=150",
                           f"--json={out}"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["num_faces"] == 12 and len(results["fits"]) == 4
    exact = [r for r in results["fits"] if r["noise_px"] == 0.0]
    noisy = [r for r in results["fits"] if r["noise_px"] == 3.0]
    assert all(r["landmark_error_px"] < n["landmark_error_px"] for r, n in zip(exact, noisy))
    assert min(r["shape_rmse_mm"] for r in exact) < results["mean_face_shape_rmse_mm"]


@pytest.fixture
def eager_functions():
    tf.config.run_functions_eagerly(True)   # the loop logic, without minutes of graph tracing on 2 CPU cores
    yield
    tf.config.run_functions_eagerly(False)


def test_resume_continues_at_the_saved_step(small_world, tmp_path, eager_functions, monkeypatch):
    monkeypatch.setattr(prior_train, "load_model_for_training", lambda spec, log=print: small_world[0])
    train, test = _write_records(small_world, tmp_path / "data")
    common = dict(train_data=train, eval_data=test, model_dir=str(tmp_path / "run"), backbone="tiny", batch_size=4,
                  learning_rate=1e-3, checkpoint_every=3, log_every=1, image_every=0, eval_batches=1,
                  pseudo_labels="dataset", weight_overrides={"pseudo_label": 0.1}, jit_render=False, progress=False)
    steps = []
    first = prior_train.train_prior(prior_train.PriorTrainConfig(max_steps=4, **common), log=lambda *_: None,
                           on_step=lambda s, logs: steps.append(s))
    assert first.step == 4 and first.checkpoint.endswith("ckpt-4") and pathlib.Path(first.weights).is_file()
    assert "pseudo_label" in first.logs and np.isfinite(first.logs["pseudo_label"])
    with pytest.raises(TrainingError, match="--resume"):
        prior_train.train_prior(prior_train.PriorTrainConfig(max_steps=6, **common), log=lambda *_: None)
    second = prior_train.train_prior(prior_train.PriorTrainConfig(max_steps=7, resume=True, **common), log=lambda *_: None,
                            on_step=lambda s, logs: steps.append(s))
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert second.step == 7 and second.checkpoint.endswith("ckpt-7")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if r["kind"] == "loss"} == set(range(1, 8))
    assert any(p.name.startswith("events") for p in (tmp_path / "run" / "tensorboard").iterdir())
    # The weights load into a fresh regressor (what --regressor_weights uses).
    from tf_facetex.prior.regressor import load_regressor

    regressor = load_regressor(small_world[0], second.weights, backbone="tiny", image_size=48)
    assert regressor(small_world[1]["image"][:1]).shape == (1, regressor.layout.size)


def test_nan_guard_stops_without_saving(small_world, tmp_path, eager_functions, monkeypatch):
    monkeypatch.setattr(prior_train, "load_model_for_training", lambda spec, log=print: small_world[0])
    train, _ = _write_records(small_world, tmp_path / "data")
    config = prior_train.PriorTrainConfig(train_data=train, model_dir=str(tmp_path / "run"), backbone="tiny", batch_size=4,
                                 max_steps=5, checkpoint_every=1, image_every=0, poison_step=3, jit_render=False,
                                 progress=False)
    with pytest.raises(TrainingError, match="non-finite loss at step 3"):
        prior_train.train_prior(config, log=lambda *_: None)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("ckpt-*.index"))
    assert checkpoints == ["ckpt-1.index", "ckpt-2.index"]


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_script_smoke_run_graph_mode(tmp_path):
    """scripts/train_prior.py on the procedural model in graph mode: trains, lowers the landmark error below the mean
    face's on its (tiny) training set, writes the results JSON; --evaluate_only re-reads the run."""
    results = tmp_path / "results.json"
    command = [sys.executable, str(ROOT / "scripts" / "train_prior.py"), "--flagfile", str(ROOT / "configs" /
               "prior_smoke.cfg"), "--face_model=procedural", f"--model_dir={tmp_path / 'run'}",
               f"--synthetic_dir={tmp_path / 'synthetic'}", "--synthetic_count=48", "--synthetic_uv_size=32",
               "--render_size=0", "--max_steps=120", "--steps_per_epoch=40", "--image_every=60",
               f"--results_json={results}", "--noprogress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(results.read_text())
    methods = figures["methods"]
    assert figures["step"] == 120 and figures["num_images"] > 0
    assert methods["regressor"]["landmark_px"] < methods["mean_face"]["landmark_px"]
    again = subprocess.run(command[:2] + [f"--model_dir={tmp_path / 'run'}", "--evaluate_only", "--face_model=procedural",
                                          f"--results_json={tmp_path / 'again.json'}", "--noprogress"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again.json").read_text())["methods"]["regressor"] == pytest.approx(
        methods["regressor"], rel=1e-4)
