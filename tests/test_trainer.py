"""FaceTexTrainer, its schedule, checkpoints and the toy world (fast, in-process, tiny networks)."""
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.errors import TrainingError
from tf_facetex.losses import LossWeights
from tf_facetex.networks import AlbedoDiscriminator, RefinementNet
from tf_facetex.prior.samples import sample_dataset
from tf_facetex.refinement import toy_data
from tf_facetex.training import checkpoints, schedule
from tf_facetex.refinement.trainer import FaceTexTrainer, evaluate_albedo_vs_baselines
from tf_facetex.refinement.train import inspect_samples
from tf_facetex.refinement.objective import render_from_lookup
from tf_facetex.sh import shading_uv

SIZE = 32          # toy image and UV side for these tests
BATCH = 4
STEPS_PER_EPOCH = 2


def tiny_trainer(embed_fn=None, weights="paper", norm="batch", outputs="absolute", albedo_base="prior"):
    """A FaceTexTrainer with a 2-level, 8-filter generator and a 2-layer discriminator (fast to trace)."""
    generator = RefinementNet(uv_size=SIZE, base_filters=8, num_down=2, num_res_blocks=1, norm=norm, outputs=outputs,
                              albedo_base=albedo_base)
    discriminator = AlbedoDiscriminator(ndf=8, n_layers=2, norm=norm)
    trainer = FaceTexTrainer(generator, discriminator, toy_data.toy_uv_mask(SIZE), embed_fn=embed_fn,
                             loss_weights=weights, steps_per_epoch=STEPS_PER_EPOCH)
    plan = schedule.TrainSchedule(global_batch_size=BATCH, steps_per_epoch=STEPS_PER_EPOCH)
    trainer.compile(*plan.make_optimizers(trainer.epoch))
    trainer.build_optimizers()
    return trainer


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return toy_data.write_toy_dataset(out, 16, eval_fraction=0.25, image_size=SIZE, uv_size=SIZE, num_shards=2)


@pytest.fixture(scope="module")
def batch(toy_shards):
    dataset = sample_dataset(toy_shards["train"], BATCH, SIZE, SIZE, toy_data.TOY_NUM_COEFFS, training=False,
                             with_ground_truth=True, deterministic=True)
    return next(iter(dataset))


@pytest.fixture(scope="module")
def trained(batch, tmp_path_factory):
    """A tiny trainer after 3 compiled steps on one batch, its initial weights, logs and a checkpoint."""
    keras_seed = 1
    keras.utils.set_random_seed(keras_seed)
    trainer = tiny_trainer()
    initial = {"g": [v.numpy() for v in trainer.generator.trainable_variables],
               "d": [v.numpy() for v in trainer.discriminator.trainable_variables]}
    step = tf.function(trainer.train_step_logs, autograph=False)
    logs = [{k: float(v) for k, v in step(batch).items()} for _ in range(3)]
    directory = tmp_path_factory.mktemp("ckpt")
    keeper = checkpoints.CheckpointKeeper(directory, trainer)
    path = keeper.save()
    return {"trainer": trainer, "initial": initial, "logs": logs, "directory": directory, "path": path}


# -- rendering and the toy world ---------------------------------------------------------------------------------

def test_render_from_lookup_is_bilinear_and_masked(rng):
    maps = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
    coords = rng.uniform(-1.0, 8.0, size=(2, 5, 6, 2)).astype(np.float32)  # some outside: clamped
    coords[0, 0, 0] = [2.0, 3.0]             # a texel centre -> exactly that texel
    coords[0, 0, 1] = [2.5, 3.0]             # half-way between two texels in x
    mask = np.ones((2, 5, 6, 1), np.float32)
    mask[1, 2, 3] = 0.0
    rendered = render_from_lookup(maps, coords, mask).numpy()
    np.testing.assert_allclose(rendered[0, 0, 0], maps[0, 3, 2], atol=1e-6)
    np.testing.assert_allclose(rendered[0, 0, 1], 0.5 * (maps[0, 3, 2] + maps[0, 3, 3]), atol=1e-6)
    expected = np.stack([toy_data.bilinear_lookup(maps[b], coords[b]) for b in range(2)]) * mask
    np.testing.assert_allclose(rendered, expected, atol=1e-5)
    assert np.all(rendered[1, 2, 3] == 0.0)
    # Gradients reach exactly the texels the lookup touches.
    maps_t = tf.constant(maps)
    with tf.GradientTape() as tape:
        tape.watch(maps_t)
        total = tf.reduce_sum(render_from_lookup(maps_t, tf.constant([[[[2.25, 3.0]]]] * 2), tf.ones([2, 1, 1, 1])))
    grad = tape.gradient(total, maps_t).numpy()
    np.testing.assert_allclose(grad[0, 3, 2], 0.75, atol=1e-6)
    np.testing.assert_allclose(grad[0, 3, 3], 0.25, atol=1e-6)
    assert np.count_nonzero(grad[0, ..., 0]) == 2


def test_toy_world_renders_itself_by_the_lookup_model(rng):
    sample = toy_data.make_toy_sample(rng, image_size=48, uv_size=32, max_yaw=0.6)
    proj = sample["proj_mask"][..., 0] > 0
    face = sample["face_mask"][..., 0] > 0
    assert face.sum() > 0.25 * face.size and np.all(proj[face])  # M_face = M_parsing * M_proj
    # R(A_gt, irradiance_gt) through the trainer's renderer is the photo (up to noise and 8-bit rounding).
    colour = sample["albedo_gt_uv"] * sample["irradiance_gt_uv"]
    rendered = render_from_lookup(colour[None], sample["pixel_uv"][None], sample["proj_mask"][None])[0].numpy()
    error = np.abs(rendered - sample["image"])[proj]
    assert error.mean() < 0.006 and error.max() < 0.05
    # The irradiance is SH shading (the trainer's sh.shading of the stored normals and gamma) times a shadow <= 1.
    shading = shading_uv(sample["normals_uv"][None], sample["gamma"][None])[0].numpy()
    ratio = sample["irradiance_gt_uv"] / shading
    assert ratio.max() < 1.06 and np.median(ratio) > 0.85
    # The unwrapped texture holds the photo's colours (lighting baked in) on visible texels and exact 0 elsewhere.
    visible = sample["visibility_uv"][..., 0] > 0
    assert 0.3 < visible.mean() < toy_data.toy_uv_mask(32).mean() + 1e-6
    assert np.all(sample["texture_uv"][~visible] == 0.0)
    interior = visible & (np.abs(np.arange(32) - 15.5)[None, :] < 10)
    assert np.median(np.abs(sample["texture_uv"] - colour)[interior]) < 0.03
    # The prior misses the detail: far smoother than the ground truth, but close on average.
    chart = toy_data.toy_uv_mask(32)[..., 0] > 0

    def roughness(x):  # mean |x difference| over neighbour pairs inside the chart
        pairs = chart[:, 1:] & chart[:, :-1]
        return np.abs(np.diff(x, axis=1))[pairs].mean()

    assert roughness(sample["prior_albedo_uv"]) < 0.5 * roughness(sample["albedo_gt_uv"])
    assert np.abs(sample["prior_albedo_uv"] - sample["albedo_gt_uv"])[chart].mean() < 0.2


def test_toy_shards_decode_with_ground_truth(toy_shards, batch):
    info = inspect_samples(toy_shards["train"])
    assert info == {"image_size": SIZE, "uv_size": SIZE, "num_coeffs": toy_data.TOY_NUM_COEFFS,
                    "has_ground_truth": True, "num_files": 2}
    assert batch["albedo_gt_uv"].shape == (BATCH, SIZE, SIZE, 3) and batch["pixel_uv"].shape == (BATCH, SIZE, SIZE, 2)
    with pytest.raises(TrainingError, match="no files match"):
        inspect_samples(str(toy_shards["train"]) + ".missing")


# -- schedule ----------------------------------------------------------------------------------------------------

def test_learning_rate_decays_per_epoch_to_the_floor():
    assert schedule.epoch_learning_rate(0) == pytest.approx(1e-4)
    assert schedule.epoch_learning_rate(1) == pytest.approx(0.98e-4)
    assert schedule.epoch_learning_rate(9) == pytest.approx(1e-4 * 0.98 ** 9)
    assert schedule.epoch_learning_rate(113) > 1e-5 and schedule.epoch_learning_rate(114) == pytest.approx(1e-5)
    epoch = tf.Variable(0, dtype=tf.int64)
    decay = schedule.EpochDecay(1e-4, 0.98, 1e-5, epoch)
    assert float(decay(123)) == pytest.approx(1e-4)           # the optimiser's step does not matter
    epoch.assign(3)
    assert float(decay(0)) == pytest.approx(1e-4 * 0.98 ** 3, rel=1e-6)
    epoch.assign(500)
    assert float(decay(0)) == pytest.approx(1e-5)
    plan = schedule.TrainSchedule(steps_per_epoch=7, epochs=3)
    assert plan.total_steps == 21 and plan.epoch_of_step(14) == 2
    assert schedule.TrainSchedule(steps_per_epoch=7, max_steps=5).total_steps == 5


def test_scheduled_weights_follow_the_epoch_and_the_ablations():
    paper = LossWeights.preset("paper")
    at_0 = {k: float(v) for k, v in schedule.scheduled_weights(paper, tf.constant(0)).items()}
    at_1 = {k: float(v) for k, v in schedule.scheduled_weights(paper, tf.Variable(1, dtype=tf.int64)).items()}
    assert at_0 == pytest.approx({k: v for k, v in paper.at_epoch(0).items() if v})
    assert at_0["prior_l1"] == 1.0 and at_1["prior_l1"] == 0.0
    assert "extra" not in at_0  # weight 0: left out of the total
    ablated = schedule.scheduled_weights(paper.without("symmetry", "gan"), 0)
    assert "symmetry" not in ablated and "gan" not in ablated and "image" in ablated
    authors = schedule.scheduled_weights(LossWeights.preset("authors"), 5)
    assert float(authors["prior_l1"]) == 1.0 and float(authors["image"]) == 1.0


# -- the trainer -------------------------------------------------------------------------------------------------

def test_train_step_updates_both_networks_with_their_own_optimizers(trained):
    trainer, logs = trained["trainer"], trained["logs"]
    expected = {"illumination", "symmetry", "smoothness", "prior_l1", "gan", "image_gradient", "image", "total",
                "d_loss"}
    assert set(logs[0]) == expected  # no identity network: no cross-perceptual term
    assert all(np.isfinite(v) for step_logs in logs for v in step_logs.values())
    # The weighted total of the first step (epoch 0) is the paper's weighted sum of the logged terms.
    weights = LossWeights.preset("paper").at_epoch(0)
    assert logs[0]["total"] == pytest.approx(sum(weights[k] * logs[0][k] for k in expected - {"total", "d_loss"}),
                                             rel=1e-5)
    assert logs[-1]["image"] < logs[0]["image"]  # three steps on one batch already fit it better
    assert int(trainer.step.numpy()) == 3 and int(trainer.epoch.numpy()) == 1  # step 3 ran in epoch 2 // 2 = 1
    assert int(trainer.g_optimizer.iterations.numpy()) == 3 and int(trainer.d_optimizer.iterations.numpy()) == 3
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(1e-4 * 0.98)
    g_slots = {id(v) for v in trainer.g_optimizer.variables}
    assert not g_slots & {id(v) for v in trainer.d_optimizer.variables}
    for key, net in (("g", trainer.generator), ("d", trainer.discriminator)):
        changed = [not np.array_equal(a, b.numpy()) for a, b in zip(trained["initial"][key], net.trainable_variables)]
        assert np.mean(changed) > 0.9, key


def test_prior_l1_weight_drops_after_the_first_epoch(trained):
    trainer = trained["trainer"]
    terms = {name: tf.constant(1.0) for name in trainer.generator_term_names()}
    epoch = int(trainer.epoch.numpy())
    try:
        trainer.epoch.assign(0)
        first = float(trainer.weighted_total(terms))
        trainer.epoch.assign(1)
        later = float(trainer.weighted_total(terms))
    finally:
        trainer.epoch.assign(epoch)
    paper = LossWeights.preset("paper")
    assert first == pytest.approx(sum(paper.at_epoch(0)[n] for n in terms))
    assert first - later == pytest.approx(paper.prior_l1)


def test_unseen_texels_get_fresh_noise_each_training_step(trained, batch):
    trainer = trained["trainer"]
    first = trainer.generator_inputs(batch, training=True)["texture_uv"].numpy()
    second = trainer.generator_inputs(batch, training=True)["texture_uv"].numpy()
    seen = np.broadcast_to(batch["visibility_uv"].numpy() > 0, first.shape)
    chart = np.broadcast_to(toy_data.toy_uv_mask(SIZE)[None] > 0, first.shape)
    np.testing.assert_array_equal(first[seen], batch["texture_uv"].numpy()[seen])
    assert np.mean(first[chart & ~seen] != second[chart & ~seen]) > 0.99
    assert np.all(first[~chart] == 0.0)
    eval_a = trainer.generator_inputs(batch, training=False)["texture_uv"].numpy()
    eval_b = trainer.generator_inputs(batch, training=False)["texture_uv"].numpy()
    np.testing.assert_array_equal(eval_a, eval_b)  # evaluation is reproducible


def test_cross_render_pairs_each_albedo_with_the_previous_samples_light(batch):
    calls = []

    def embed_fn(images, landmarks):  # a differentiable stand-in for ArcFace: coarse colour layout
        calls.append(landmarks.shape)
        return tf.reshape(tf.image.resize(images, [4, 4]), [tf.shape(images)[0], -1])

    trainer = tiny_trainer(embed_fn=embed_fn)
    outputs = trainer.forward(batch, training=False)
    renders = trainer.render(batch, outputs)
    albedo, light = outputs["albedo"], outputs["light"]
    for b in range(BATCH):
        a = (b - 1) % BATCH
        shading = shading_uv(batch["normals_uv"][b:b + 1], light[a:a + 1])
        expected = render_from_lookup(albedo[b:b + 1] * shading, batch["pixel_uv"][b:b + 1],
                                      batch["proj_mask"][b:b + 1])
        np.testing.assert_allclose(renders["cross"][b:b + 1].numpy(), expected.numpy(), atol=1e-5)
    terms = trainer.generator_terms(batch, outputs, renders)
    assert "cross_perceptual" in terms and 0.0 <= float(terms["cross_perceptual"]) <= 2.0
    assert calls and calls[0] == (BATCH, 68, 2)
    assert "cross_perceptual" in trainer.log_names


def test_keras_fit_and_evaluate_run_the_custom_steps(toy_shards):
    trainer = tiny_trainer()
    train = sample_dataset(toy_shards["train"], BATCH, SIZE, SIZE, toy_data.TOY_NUM_COEFFS, training=True)
    history = trainer.fit(train, steps_per_epoch=2, epochs=1, verbose=0)
    assert {"image", "total", "d_loss", "prior_l1"} <= set(history.history)
    assert int(trainer.step.numpy()) == 2
    evaluation = sample_dataset(toy_shards["eval"], BATCH, SIZE, SIZE, toy_data.TOY_NUM_COEFFS, training=False,
                                with_ground_truth=True)
    results = trainer.evaluate(evaluation, verbose=0, return_dict=True)
    assert set(results) == set(trainer.eval_names) | set(trainer.eval_loss_names) | {"albedo_si_rmse"}
    assert all(np.isfinite(v) for v in results.values()) and 0.0 < results["od_ssim"] <= 1.0
    # the validation objective is the weighted sum of the validation terms (linear, so also of their means)
    terms = {name[len("loss_"):]: results[name] for name in trainer.eval_loss_names if name != "loss_uv_total"}
    assert results["loss_uv_total"] == pytest.approx(float(trainer.weighted_total(terms)), rel=1e-4)
    assert results["loss_uv_total"] > 0.0
    report = evaluate_albedo_vs_baselines(trainer.predict_albedo, evaluation, toy_data.toy_uv_mask(SIZE))
    assert report["num_samples"] == 4
    for name in ("refined", "prior", "unwrapped"):
        for mask in ("chart", "visible"):
            assert 0.0 < report[name][mask]["si_rmse"] < 1.0
    # The unwrapped texture is 0 on unseen texels: worse on the whole chart than where it was seen.
    assert report["unwrapped"]["chart"]["si_rmse"] > report["unwrapped"]["visible"]["si_rmse"]


# -- checkpoints -------------------------------------------------------------------------------------------------

def test_a_new_trainer_resumes_step_epoch_weights_and_adam_state(trained):
    saved = trained["trainer"]
    resumed = tiny_trainer()
    keeper = checkpoints.CheckpointKeeper(trained["directory"], resumed)
    assert keeper.restore_latest() == 3 == checkpoints.checkpoint_step(trained["path"])
    assert int(resumed.epoch.numpy()) == 1
    for name in ("g_optimizer", "d_optimizer"):
        before, after = getattr(saved, name).variables, getattr(resumed, name).variables
        assert len(before) == len(after) > 10
        assert int(getattr(resumed, name).iterations.numpy()) == 3
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        momenta = [v for v in after if "momentum" in v.path or "velocity" in v.path]
        assert momenta and any(np.any(v.numpy() != 0) for v in momenta)  # real Adam slots, not fresh zeros
    for a, b in zip(saved.generator.variables + saved.discriminator.variables,
                    resumed.generator.variables + resumed.discriminator.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keeper_never_writes_a_non_finite_state(trained):
    poisoned = tiny_trainer()
    keeper = checkpoints.CheckpointKeeper(trained["directory"], poisoned)
    keeper.restore_latest()
    kernel = poisoned.generator.trainable_variables[0]
    kernel.assign(tf.fill(kernel.shape, np.nan))
    with pytest.raises(TrainingError, match="non-finite"):
        keeper.save()
    assert keeper.latest == trained["path"] and checkpoints.checkpoint_is_finite(keeper.latest)


def test_stop_signal_turns_sigterm_into_a_flag():
    previous = signal.getsignal(signal.SIGTERM)
    with checkpoints.StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


# -- distribution ----------------------------------------------------------------------------------------------

MIRRORED_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_facetex.networks import AlbedoDiscriminator, RefinementNet
    from tf_facetex.prior.samples import sample_dataset
    from tf_facetex.refinement import toy_data
    from tf_facetex.refinement.trainer import FaceTexTrainer

    batch = next(iter(sample_dataset(sys.argv[1], 4, 32, 32, toy_data.TOY_NUM_COEFFS, training=False)))
    batch["visibility_uv"] = tf.ones_like(batch["visibility_uv"])  # no random noise: both runs see the same input

    def one_step(strategy):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            g = RefinementNet(uv_size=32, base_filters=8, num_down=2, num_res_blocks=1, norm="none")
            d = AlbedoDiscriminator(ndf=8, n_layers=2, norm="none")
            trainer = FaceTexTrainer(g, d, toy_data.toy_uv_mask(32), steps_per_epoch=10)
            # Plain SGD: the update is lr * gradient, so a wrong loss scale would show (Adam would hide it).
            trainer.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))
            trainer.build_optimizers()
        before = [v.numpy() for v in g.trainable_variables + d.trainable_variables]
        dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
        # Eager (no tf.function): same maths, no tracing cost in a test.
        logs = strategy.run(trainer.train_step_logs, args=(next(iter(dataset)),))
        image = strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["image"], axis=None)
        deltas = [v.numpy() - b for v, b in zip(g.trainable_variables + d.trainable_variables, before)]
        return float(image), deltas, int(trainer.step.numpy())

    single = one_step(tf.distribute.get_strategy())
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = one_step(mirrored_strategy)
    worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)) for a, b in zip(single[1], mirrored[1]))
    print(json.dumps({"image": [single[0], mirrored[0]], "worst_relative_update_difference": worst,
                      "steps": [single[2], mirrored[2]]}))
""")


def test_mirrored_strategy_takes_the_same_step_as_one_device(toy_shards):
    """Two replicas with half the batch each must apply the gradient of the global-batch mean (loss / replicas)."""
    result = subprocess.run([sys.executable, "-c", MIRRORED_CHECK, toy_shards["train"]], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    import json
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == [1, 1]
    assert report["image"][0] == pytest.approx(report["image"][1], rel=1e-4)
    # With a per-replica loss of mean/replicas the SUM all-reduce gives the same update; a missing 1/2 would
    # double it (relative difference 1.0).
    assert report["worst_relative_update_difference"] < 1e-3


def test_toy_identity_ignores_smooth_lighting_but_not_the_face(rng):
    faces = [toy_data.make_toy_sample(rng, 64, 64, max_yaw=0.0) for _ in range(2)]
    image = faces[0]["image"][None]
    ramp = np.linspace(0.6, 1.3, 64, dtype=np.float32)[None, None, :, None]  # a smooth lighting change
    embed = toy_data.toy_identity_embedding

    def cosine(a, b):
        a, b = embed(a).numpy()[0], embed(b).numpy()[0]
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(image, np.clip(image * ramp, 0, 1)) > 0.9
    assert cosine(image, faces[1]["image"][None]) < 0.5


def test_build_trainer_applies_weight_overrides_and_ablations():
    from tf_facetex.refinement.train import TrainConfig, build_trainer

    config = TrainConfig(net_preset="small", net_overrides={"base_filters": 4, "num_down": 2, "num_res_blocks": 1},
                         discriminator_ndf=4, discriminator_overrides={"n_layers": 1}, global_batch_size=2,
                         weight_overrides={"illumination": 7.0}, disabled_terms=("gan", "symmetry"))
    trainer = build_trainer(config, SIZE, np.ones([SIZE, SIZE, 1], np.float32), None, steps_per_epoch=5)
    weights = trainer.loss_weights
    assert weights.weight("illumination") == 7.0 and weights.weight("gan") == 0.0 and weights.weight("symmetry") == 0.0
    assert weights.weight("image") == 5.0 and trainer.generator.uv_size == SIZE
    ones = {name: tf.constant(1.0) for name in trainer.generator_term_names()}
    expected = sum(weights.weight(name, 0) for name in ones)  # gan and symmetry contribute nothing
    assert expected == pytest.approx(7.0 + 5 + 1 + 1 + 5)  # illumination, smoothness, prior L1, gradient, image
    assert float(trainer.weighted_total(ones)) == pytest.approx(expected)
    with pytest.raises(TrainingError, match="unknown loss terms"):
        build_trainer(dataclasses.replace(config, weight_overrides={"colour": 1.0}), SIZE,
                      np.ones([SIZE, SIZE, 1], np.float32), None, steps_per_epoch=5)


def test_white_prior_ablation_ignores_the_prior_input(batch):
    """--white_prior (paper Fig. 5): the generator sees a white map on the chart instead of the prior albedo."""
    generator = RefinementNet(uv_size=SIZE, base_filters=8, num_down=2, num_res_blocks=1, white_prior=True)
    trainer = FaceTexTrainer(generator, AlbedoDiscriminator(ndf=8, n_layers=2), toy_data.toy_uv_mask(SIZE))
    other_prior = dict(batch, prior_albedo_uv=tf.reverse(batch["prior_albedo_uv"], axis=[0]))
    first = trainer.forward(batch, training=False)
    second = trainer.forward(other_prior, training=False)
    np.testing.assert_allclose(first["albedo"].numpy(), second["albedo"].numpy(), atol=1e-6)
    normal = RefinementNet(uv_size=SIZE, base_filters=8, num_down=2, num_res_blocks=1)
    trainer = FaceTexTrainer(normal, AlbedoDiscriminator(ndf=8, n_layers=2), toy_data.toy_uv_mask(SIZE))
    assert not np.allclose(trainer.forward(batch, training=False)["albedo"].numpy(),
                           trainer.forward(other_prior, training=False)["albedo"].numpy(), atol=1e-6)


def test_untrained_unwrapped_residual_generator_starts_at_the_fits_starting_point(batch):
    """albedo_base='unwrapped': before training, A' is the per-image fit's starting albedo (the photo over the coarse
    shading where seen, the prior elsewhere) and L' the coarse gamma, in training and evaluation mode."""
    from tf_facetex.refinement.level import anchor_to_coarse_light
    from tf_facetex.refinement.uv_solver import initial_albedo

    trainer = tiny_trainer(outputs="residual", albedo_base="unwrapped")
    expected = (initial_albedo(batch) * trainer.uv_mask).numpy()
    assert np.abs(expected - (batch["prior_albedo_uv"] * trainer.uv_mask).numpy()).max() > 0.05
    gamma_map = np.broadcast_to(batch["gamma"].numpy()[:, None, None, :], expected.shape[:3] + (27,))
    out = trainer.forward(batch, training=True)
    np.testing.assert_allclose(out["albedo"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(out["light"].numpy(), gamma_map, atol=1e-6)
    # Evaluation mode is inference's: the same start, its level anchored to the coarse light (`refinement.level`).
    albedo, light = anchor_to_coarse_light(expected, gamma_map * trainer.uv_mask, batch["texture_uv"],
                                           batch["visibility_uv"], batch["normals_uv"], batch["gamma"], trainer.uv_mask)
    out = trainer.forward(batch, training=False)
    np.testing.assert_allclose(out["albedo"].numpy(), albedo.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["light"].numpy(), light.numpy(), atol=1e-5)


@pytest.mark.parametrize("outputs, albedo_base", [("absolute", "prior"), ("residual", "prior"),
                                                  ("residual", "unwrapped")])
def test_evaluation_fills_unseen_texels_as_the_product_does(batch, outputs, albedo_base):
    # What the trainer evaluates is what `NetworkRefiner` (pipeline, evaluation, exports) computes at inference.
    from tf_facetex.refinement.network import refine_with_network, unseen_noise

    trainer = tiny_trainer(outputs=outputs, albedo_base=albedo_base)
    if outputs == "residual":   # move the zero-initialised output convolutions: the outputs then differ from the prior
        for layer in (trainer.generator.albedo_decoder.layers[-1], trainer.generator.light_decoder.layers[-1]):
            layer.kernel.assign(tf.random.stateless_normal(layer.kernel.shape, [3, 4], stddev=0.05))
    outputs = trainer.forward(batch, training=False)
    albedo, light = refine_with_network(trainer.generator, batch["texture_uv"], batch["visibility_uv"],
                                        batch["prior_albedo_uv"], batch["gamma"], batch["normals_uv"], trainer.uv_mask,
                                        unseen_noise(SIZE))
    np.testing.assert_allclose((outputs["albedo"] * trainer.uv_mask).numpy(), albedo.numpy(), atol=1e-6)
    np.testing.assert_allclose((outputs["light"] * trainer.uv_mask).numpy(), light.numpy(), atol=1e-5)
    # ... and training still draws fresh noise on the unseen texels.
    first = trainer.generator_inputs(batch, training=True)["texture_uv"]
    second = trainer.generator_inputs(batch, training=True)["texture_uv"]
    unseen = (1.0 - batch["visibility_uv"]) * trainer.uv_mask
    assert float(tf.reduce_max(tf.abs(first - second) * unseen)) > 0.1
