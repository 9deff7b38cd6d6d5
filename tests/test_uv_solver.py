"""The compiled UV-fit solver: the same objective and Adam as `refinement.fit`, one trace per shape, and the fit's
quality on synthetic faces with ground truth (tiny model)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import losses, metrics, sh
from tf_facetex.refinement import objective, uv_solver
from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
from tf_facetex.prior.module import PriorConfig, PriorModule
from tf_facetex.prior.photometric_fit import PhotometricFitConfig
from tf_facetex.refinement.fit import UVFitConfig, UVFitRefiner
from tf_facetex.rendering import FaceRenderer
from tf_facetex.trace_counter import count_traces

WEIGHTS = uv_solver.term_weights(losses.LossWeights.preset("paper"))


@pytest.fixture(scope="module")
def prior_out(tiny_model):
    renderer = FaceRenderer(tiny_model, 96, 64)
    config = SyntheticConfig(image_size=96, uv_size=64, occluder_prob=0.0, noise_std=0.0, max_yaw=20)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(7), 2)
    prior = PriorModule(tiny_model, PriorConfig(image_size=96, uv_size=64,
                                                photometric=PhotometricFitConfig(num_pixels=1024)),
                        renderer=renderer)
    out = prior(faces["image"].astype(np.float32) / 255.0, faces["landmarks"], faces["face_mask"])
    return renderer, faces, {key: tf.convert_to_tensor(out[key], tf.float32) for key in uv_solver.SAMPLE_KEYS}


def half(sample, index):
    return {key: value[index:index + 1] for key, value in sample.items()}


def test_upsampled_light_equals_tf_image_resize():
    residual = tf.random.stateless_normal([2, 8, 8, 27], [1, 2])
    gamma = tf.random.stateless_normal([2, 27], [3, 4])
    expected = gamma[:, None, None, :] + tf.image.resize(residual, [64, 64], method="bilinear")
    np.testing.assert_allclose(uv_solver.upsampled_light(gamma, residual, 64).numpy(), expected.numpy(), atol=1e-6)


def test_adam_update_matches_keras_adam():
    target = tf.constant([[0.3, -2.0, 5.0]])
    variable = tf.Variable(tf.zeros([1, 3]))
    optimizer = tf.keras.optimizers.Adam(0.1)
    value, m, v = tf.zeros([1, 3]), tf.zeros([1, 3]), tf.zeros([1, 3])
    for step in range(1, 6):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((variable - target) ** 2 * [[1.0, 3.0, 0.1]])
        gradient = tape.gradient(loss, variable)
        optimizer.apply_gradients([(gradient, variable)])
        value, m, v = uv_solver._adam_update(value, 2.0 * (value - target) * [[1.0, 3.0, 0.1]], m, v,
                                             float(step), 0.1)
        np.testing.assert_allclose(value.numpy(), variable.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["uniform", "visibility", "confidence"])
def test_fit_terms_equal_the_refiner_terms(prior_out, weighting):
    renderer, _, sample = prior_out
    config = UVFitConfig(symmetry_weighting=weighting, symmetry_seen_weight=0.25, symmetry_seen_scale=0.0,
                         symmetry_unseen_mirror_weight=0.0)
    albedo = uv_solver.initial_albedo(sample) * 0.9 + 0.05
    light = tf.broadcast_to(sample["gamma"][:, None, None, :], [2, 64, 64, 27]) + 0.01
    # the shared objective, written out (what the training step computes)
    expected = objective.uv_terms(albedo, light, objective.render_lit(sample, albedo, light), sample, renderer.uv_mask,
                                  sample["visibility_uv"] * renderer.uv_mask, renderer.uv_symmetry_index,
                                  uv_solver.loss_options(config.symmetry()))
    terms = uv_solver.fit_terms(albedo, light, sample, renderer.uv_mask, renderer.uv_symmetry_index,
                                uv_solver.symmetry_form(weighting, 0.25))
    for name in uv_solver.TERM_NAMES:
        np.testing.assert_allclose(float(terms[name]), float(expected[name]), rtol=1e-6)
    assert float(terms["image"]) > 0.0
    # The weighted term is the loss function's with the batch's confidence, not the uniform one.
    confidence = {"uniform": None, "visibility": sample["visibility_uv"],
                  "confidence": losses.view_confidence(sample["visibility_uv"], sample["normals_uv"])}[weighting]
    direct = losses.symmetry_loss(albedo, renderer.uv_mask, renderer.uv_symmetry_index, confidence_uv=confidence,
                                  seen_weight=0.25)
    np.testing.assert_allclose(float(terms["symmetry"]), float(direct), rtol=1e-6)
    if weighting != "uniform":
        uniform = losses.symmetry_loss(albedo, renderer.uv_mask, renderer.uv_symmetry_index)
        assert abs(float(terms["symmetry"]) - float(uniform)) > 1e-4 * float(uniform)


def test_photo_terms_move_only_the_seen_albedo(prior_out):
    """photo_albedo='seen': the same values; the photo terms' gradient is zero on unseen texels (with 'all', face-mask
    pixels at the border reach unseen texels through the bilinear lookup) and unchanged on seen ones."""
    renderer, _, sample = prior_out
    albedo = tf.Variable(uv_solver.initial_albedo(sample) * 0.9 + 0.05)
    light = tf.broadcast_to(sample["gamma"][:, None, None, :], [2, 64, 64, 27]) + 0.01
    symmetry = uv_solver.symmetry_form("visibility", 1.0, 0.02, 1.0)
    terms, gradients = {}, {}
    for mode in uv_solver.PHOTO_ALBEDO:
        with tf.GradientTape() as tape:
            terms[mode] = uv_solver.fit_terms(albedo, light, sample, renderer.uv_mask, renderer.uv_symmetry_index,
                                              symmetry, photo_albedo=mode)
            photo = terms[mode]["image"] + terms[mode]["image_gradient"]
        gradients[mode] = tape.gradient(photo, albedo).numpy()
    for name in uv_solver.TERM_NAMES:
        assert float(terms["seen"][name]) == float(terms["all"][name])
    seen = np.broadcast_to(sample["visibility_uv"].numpy() > 0.5, gradients["all"].shape)
    unseen_chart = ~seen & np.broadcast_to(renderer.uv_mask.numpy() > 0.5, seen.shape)
    assert np.abs(gradients["all"][unseen_chart]).max() > 0          # the border effect exists here
    assert np.abs(gradients["seen"][~seen]).max() == 0.0
    np.testing.assert_allclose(gradients["seen"][seen], gradients["all"][seen], rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="photo_albedo"):
        uv_solver.fit_terms(albedo, light, sample, renderer.uv_mask, None, photo_albedo="some")


def test_constant_rate_solver_reproduces_the_previous_adam_loop(prior_out):
    renderer, _, sample = prior_out
    sample = half(sample, 0)
    previous = UVFitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, UVFitConfig(steps=10))(sample)
    ours = uv_solver.fit_uv_maps(sample, renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS, steps=10,
                                 jit_compile=False, symmetry=UVFitConfig().symmetry())
    np.testing.assert_allclose(float(ours["loss_first"]), previous["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(float(ours["loss_last"]), previous["loss"][-1], rtol=1e-3)
    np.testing.assert_allclose(ours["albedo_uv"].numpy(), previous["albedo_uv"].numpy(), atol=2e-3)
    np.testing.assert_allclose(ours["light_uv"].numpy(), previous["light_uv"].numpy(), atol=2e-4)


def test_weighted_symmetry_reaches_both_solvers(prior_out):
    renderer, _, sample = prior_out
    sample = half(sample, 0)
    config = UVFitConfig(steps=10, solver="adam", symmetry_weighting="visibility", symmetry_seen_weight=1.0,
                         symmetry_seen_scale=0.05)
    previous = UVFitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, config)(sample)
    ours = uv_solver.fit_uv_maps(sample, renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS, steps=10,
                                 jit_compile=False, symmetry=config.symmetry())
    np.testing.assert_allclose(float(ours["loss_first"]), previous["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(ours["albedo_uv"].numpy(), previous["albedo_uv"].numpy(), atol=2e-3)
    uniform = uv_solver.fit_uv_maps(sample, renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS, steps=10,
                                    jit_compile=False)
    assert float(ours["terms"]["symmetry"]) != pytest.approx(float(uniform["terms"]["symmetry"]), rel=1e-3)
    with pytest.raises(ValueError, match="symmetry_weighting"):
        uv_solver.symmetry_form("mirror")


def test_compiled_solver_traces_once_and_recovers_the_albedo(prior_out):
    renderer, faces, sample = prior_out
    options = dict(steps=40, learning_rate=0.02, decay=0.05)
    first = uv_solver.fit_uv_maps(half(sample, 0), renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS, **options)
    with count_traces() as traces:
        second = uv_solver.fit_uv_maps(half(sample, 1), renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS,
                                       steps=30, learning_rate=0.015, decay=0.1)
    assert traces.by_name.get("_adam_loop", 0) == 0, traces.as_dict()        # other photos, steps, rates
    for index, result in enumerate((first, second)):
        assert float(result["loss_last"]) < 0.5 * float(result["loss_first"])
        part = half(sample, index)
        seen = part["visibility_uv"]
        truth = faces["albedo_gt_uv"][index:index + 1]
        fit_error = metrics.scale_invariant_rmse(result["albedo_uv"], truth, seen).numpy()
        unwrapped_error = metrics.scale_invariant_rmse(part["texture_uv"], truth, seen).numpy()
        assert (fit_error < unwrapped_error).all(), (fit_error, unwrapped_error)
    # XLA and the plain graph run the same loop.
    graph = uv_solver.fit_uv_maps(half(sample, 0), renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS,
                                  jit_compile=False, **options)
    np.testing.assert_allclose(first["albedo_uv"].numpy(), graph["albedo_uv"].numpy(), atol=5e-3)
    np.testing.assert_allclose(float(first["loss_last"]), float(graph["loss_last"]), rtol=2e-2)


def test_batched_fit_equals_one_at_a_time(prior_out):
    renderer, _, sample = prior_out
    options = dict(steps=20, jit_compile=False)
    batched = uv_solver.fit_uv_maps(sample, renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS, **options)
    for index in range(2):
        alone = uv_solver.fit_uv_maps(half(sample, index), renderer.uv_mask, renderer.uv_symmetry_index, WEIGHTS,
                                      **options)
        np.testing.assert_allclose(batched["albedo_uv"].numpy()[index], alone["albedo_uv"].numpy()[0], atol=1e-4)
        np.testing.assert_allclose(batched["light_uv"].numpy()[index], alone["light_uv"].numpy()[0], atol=1e-5)


def test_refiner_switch(prior_out):
    renderer, _, sample = prior_out
    result = UVFitRefiner(renderer.uv_mask, renderer.uv_symmetry_index,
                          UVFitConfig(steps=5, solver="xla", decay=0.1))(half(sample, 0))
    assert result["albedo_uv"].shape == (1, 64, 64, 3) and result["light_uv"].shape == (1, 64, 64, 27)
    assert len(result["loss"]) == 2 and set(result["terms"]) == set(uv_solver.TERM_NAMES)
    with pytest.raises(ValueError, match="solver"):
        UVFitRefiner(renderer.uv_mask, None, UVFitConfig(solver="newton"))(half(sample, 0))


def test_trace_counter_sees_new_functions_and_not_cached_ones():
    function = tf.function(lambda x: x * 2.0)
    with count_traces() as traces:
        function(tf.constant(1.0))
        function(tf.constant(2.0))
        tf.function(lambda x: x + 1.0)(tf.constant(1.0))              # a function made and dropped in the block
    assert traces.total == 2
    with count_traces() as traces:
        function(tf.constant(3.0))
    assert traces.total == 0


def test_luminance_quantile_and_exposure_weight_against_numpy(rng):
    image = rng.uniform(0, 1, (2, 6, 5, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, 6, 5, 1)) > 0.4).astype(np.float32)
    mask[1] = 0.0                                                   # an empty mask gives 0
    values = np.sort(image[0].mean(-1)[mask[0, ..., 0] > 0.5])
    for quantile in (0.5, 0.9, 1.0):
        level = uv_solver.luminance_quantile(tf.constant(image), tf.constant(mask), quantile).numpy()
        assert level[0] == pytest.approx(values[min(int(quantile * len(values)), len(values) - 1)])
        assert level[1] == 0.0
    colours = np.array([[[0.05, 0.05, 0.05], [0.1, 0.1, 0.1], [0.3, 0.3, 0.3], [0.5, 0.5, 1.0], [0.5, 0.5, 0.975]]],
                       np.float32)
    weight = uv_solver.exposure_weight(tf.constant(colours), tf.constant([0.5]), 0.1, 0.99).numpy()[0, :, 0]
    # luminance / median: 0.1 (shadow edge: 0), 0.2 ((0.2 - 0.1) / 0.15), 0.6 (1); clipped blue: 0; 0.015 below: 1/2
    np.testing.assert_allclose(weight, [0.0, 2.0 / 3.0, 1.0, 0.0, 0.5], atol=1e-5)
    off = uv_solver.exposure_weight(tf.constant(colours), tf.constant([0.5]), 0.0, 1.01).numpy()
    np.testing.assert_array_equal(off, np.ones_like(off))


def test_exposure_weighting_takes_shadows_out_of_the_fit(prior_out):
    renderer, _, sample = prior_out
    assert uv_solver.exposure_weighted(sample, 0.0, 1.01) is sample
    shadowed = dict(sample, image=sample["image"] * tf.concat([tf.fill([2, 96, 48, 1], 0.02),
                                                               tf.ones([2, 96, 48, 1])], axis=2))
    weighted = uv_solver.exposure_weighted(shadowed, 0.1, 0.99)
    face = sample["face_mask"].numpy() > 0.5
    kept = weighted["face_mask"].numpy()
    assert kept[:, :, :48][face[:, :, :48]].max() == 0.0            # the darkened half leaves the image terms
    assert kept[:, :, 48:][face[:, :, 48:]].mean() > 0.9
    assert weighted["visibility_uv"].numpy().sum() < sample["visibility_uv"].numpy().sum()


def test_shadow_weight_follows_the_coarse_shading(prior_out):
    renderer, _, sample = prior_out
    side = np.zeros((2, 3, 9), np.float32)
    side[:, :, 3] = -0.9                                   # light from one side (Deng's x term), ambient kept
    lit = dict(sample, gamma=tf.constant(side.reshape(2, 27)))
    weight = uv_solver.shadow_weight(lit, 0.25).numpy()[..., 0]
    shading = tf.reduce_mean(sh.shading(lit["normals_uv"], lit["gamma"][:, None, None, :]), -1).numpy()
    seen = lit["visibility_uv"].numpy()[..., 0] > 0.5
    for b in range(2):
        level = np.sort(shading[b][seen[b]])[int(0.9 * seen[b].sum())]
        relative = shading[b] / level
        np.testing.assert_allclose(weight[b], np.clip((relative - 0.25) / 0.375, 0, 1), atol=1e-5)
        assert (weight[b][seen[b]] == 0).any() and (weight[b][seen[b]] == 1).any()   # one side in shadow
    weighted = uv_solver.exposure_weighted(lit, 0.0, 1.01, 0.25)
    assert weighted["face_mask"].numpy().sum() < 0.9 * lit["face_mask"].numpy().sum()
