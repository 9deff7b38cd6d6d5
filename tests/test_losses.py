"""Refinement losses (tf_facetex.losses) on hand-made inputs with hand-computed values, plus gradient checks."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import losses
from tf_facetex.losses import refinement as lr


def _const(x, dtype=tf.float32):
    return tf.constant(np.asarray(x), dtype)


def _ones_mask(b, h, w):
    return tf.ones([b, h, w, 1])


# --------------------------------------------------------------------------------------------------------------
# masked mean and empty masks
# --------------------------------------------------------------------------------------------------------------

def test_masked_mean_hand_computed_and_broadcast(rng):
    values = rng.random((2, 3, 4, 2)).astype(np.float32)
    mask = np.zeros((3, 4, 1), np.float32)
    mask[0, :2] = 1.0
    mask[2, 3] = 1.0
    got = losses.masked_mean(values, mask)  # [H, W, 1] mask broadcast over the batch
    m = mask[None, ..., 0].astype(bool)
    expected = np.mean([values[b][m[0]].mean() for b in range(2)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(values, np.broadcast_to(mask, (2, 3, 4, 1))).numpy(), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(values, mask[..., 0]).numpy(), expected, rtol=1e-6)


def test_per_sample_normalisation_then_batch_mean():
    # Sample 0 has 1 texel at value 1, sample 1 has 3 texels at value 3: mean_b of per-sample means = (1 + 3) / 2.
    values = np.zeros((2, 2, 2, 1), np.float32)
    mask = np.zeros((2, 2, 2, 1), np.float32)
    values[0, 0, 0] = 1.0
    mask[0, 0, 0] = 1.0
    values[1, :, :] = 3.0
    mask[1, 0, :] = 1.0
    mask[1, 1, 0] = 1.0
    assert losses.masked_mean(values, mask).numpy() == pytest.approx(2.0)


def _all_generator_losses(albedo, prior, light, gamma, uv_mask, rendered, image, face_mask):
    return {
        "illumination": losses.illumination_regularization(light, gamma, uv_mask, rgb_consistency=1.0),
        "illumination_l1": losses.illumination_regularization(light, gamma, uv_mask, norm="l1", rgb_consistency=1.0),
        "symmetry": losses.symmetry_loss(albedo, uv_mask),
        "symmetry_l2_norm": losses.symmetry_loss(albedo, uv_mask, norm="l2_norm"),
        "smoothness": losses.edge_aware_smoothness(albedo, prior, uv_mask),
        "smoothness_authors": losses.edge_aware_smoothness(albedo, prior, uv_mask, variant="authors"),
        "prior_l1": losses.prior_l1_loss(albedo, prior, uv_mask),
        "prior_l2_norm": losses.prior_l1_loss(albedo, prior, uv_mask, norm="l2_norm"),
        "image_gradient": losses.image_gradient_loss(rendered, image, face_mask),
        "image": losses.image_loss(rendered, image, face_mask),
        "image_l2_norm": losses.image_loss(rendered, image, face_mask, form="l2_norm"),
    }


def test_empty_masks_give_finite_zero_and_zero_gradients(rng):
    albedo = tf.Variable(rng.random((2, 6, 6, 3)), dtype=tf.float32)
    light = tf.Variable(rng.standard_normal((2, 6, 6, 27)), dtype=tf.float32)
    rendered = tf.Variable(rng.random((2, 5, 5, 3)), dtype=tf.float32)
    prior = _const(rng.random((2, 6, 6, 3)))
    gamma = _const(rng.standard_normal((2, 27)))
    image = _const(rng.random((2, 5, 5, 3)))
    with tf.GradientTape(persistent=True) as tape:
        terms = _all_generator_losses(albedo, prior, light, gamma, tf.zeros([6, 6, 1]), rendered, image,
                                      tf.zeros([2, 5, 5, 1]))
    for name, value in terms.items():
        assert value.numpy() == 0.0, name
        for grad in tape.gradient(value, [albedo, light, rendered]):
            if grad is not None:
                assert np.all(np.isfinite(grad.numpy())) and not np.any(grad.numpy()), name


def test_one_empty_sample_does_not_dilute_the_other(rng):
    # Per-sample normalisation: an empty sample contributes 0 to the batch mean (documented behaviour).
    albedo = np.zeros((2, 4, 4, 3), np.float32)
    prior = np.full((2, 4, 4, 3), 0.1, np.float32)
    mask = np.zeros((2, 4, 4, 1), np.float32)
    mask[0] = 1.0
    assert losses.prior_l1_loss(albedo, prior, mask).numpy() == pytest.approx(0.05)


# --------------------------------------------------------------------------------------------------------------
# Illumination regularisation (eq. 1)
# --------------------------------------------------------------------------------------------------------------

def _light_setup(rng):
    gamma = rng.standard_normal((1, 27)).astype(np.float32)
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, :2] = 1.0  # 8 texels
    light = np.broadcast_to(gamma[:, None, None, :], (1, 4, 4, 27)).copy()
    light[..., 0] += 0.5
    light[0, 3, :] += 100.0  # outside the mask: must not count
    return light, gamma, mask


def test_illumination_mse_and_l1_hand_computed(rng):
    light, gamma, mask = _light_setup(rng)
    assert losses.illumination_regularization(light, gamma, mask).numpy() == pytest.approx(0.25 / 27, rel=1e-5)
    assert losses.illumination_regularization(light, gamma, mask, norm="l1").numpy() == pytest.approx(
        0.5 / 27, rel=1e-5)
    # gamma given as the expanded coarse map L gives the same value.
    gamma_map = np.broadcast_to(gamma[:, None, None, :], light.shape)
    assert losses.illumination_regularization(light, gamma_map, mask).numpy() == pytest.approx(0.25 / 27, rel=1e-5)


def test_illumination_rgb_consistency_term():
    # Light = gamma (first term 0), R coefficients 1, G and B 0: deviation from the RGB mean is 2/3, -1/3, -1/3.
    light = np.zeros((1, 2, 2, 27), np.float32)
    light[..., 0:9] = 1.0
    gamma = light[:, 0, 0, :]
    mask = np.ones((1, 2, 2, 1), np.float32)
    assert losses.illumination_regularization(light, gamma, mask).numpy() == pytest.approx(0.0, abs=1e-7)
    mse = 9 * (4 / 9 + 1 / 9 + 1 / 9) / 27
    l1 = 9 * (2 / 3 + 1 / 3 + 1 / 3) / 27
    assert losses.illumination_regularization(light, gamma, mask, rgb_consistency=2.0).numpy() == pytest.approx(
        2.0 * mse, rel=1e-5)
    assert losses.illumination_regularization(light, gamma, mask, norm="l1", rgb_consistency=1.0).numpy() == \
        pytest.approx(l1, rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Cross perceptual (eq. 2)
# --------------------------------------------------------------------------------------------------------------

def _mean_colour_embedding(images):
    return tf.reduce_mean(images, axis=[1, 2])


def test_roll_batch_pairs():
    np.testing.assert_array_equal(losses.roll_batch(tf.constant([0, 1, 2])).numpy(), [2, 0, 1])
    np.testing.assert_array_equal(losses.roll_batch(tf.constant([0, 1, 2]), shift=-1).numpy(), [1, 2, 0])


def test_cross_perceptual_values():
    red = np.zeros((1, 4, 4, 3), np.float32)
    red[..., 0] = 1.0
    green = np.zeros((1, 4, 4, 3), np.float32)
    green[..., 1] = 1.0
    images = np.concatenate([red, green])
    assert losses.cross_perceptual_loss(_mean_colour_embedding, images, images).numpy() == pytest.approx(0.0,
                                                                                                        abs=1e-6)
    swapped = images[::-1]
    assert losses.cross_perceptual_loss(_mean_colour_embedding, swapped, images).numpy() == pytest.approx(1.0)
    # 45 degrees between the embeddings: 1 - cos(pi/4).
    yellow = red + green
    assert losses.cross_perceptual_loss(_mean_colour_embedding, yellow, red).numpy() == pytest.approx(
        1.0 - math.cos(math.pi / 4), rel=1e-5)
    # A face mask of zeros composites the photo everywhere: the loss is 0 whatever the render.
    assert losses.cross_perceptual_loss(_mean_colour_embedding, swapped, images,
                                        face_mask=np.zeros((2, 4, 4, 1))).numpy() == pytest.approx(0.0, abs=1e-6)


def test_cross_perceptual_renders_with_rolled_light_and_detaches_the_photo():
    albedo = tf.ones([3, 4, 4, 3])
    light = tf.reshape(tf.range(3, dtype=tf.float32), [3, 1, 1, 1]) * tf.ones([3, 4, 4, 27])
    seen = {}

    def render_fn(albedo_uv, light_uv):
        seen["light"] = light_uv[:, 0, 0, 0].numpy()
        return albedo_uv[:, :4, :4] * 0.5

    images = tf.Variable(tf.random.uniform([3, 4, 4, 3], seed=1))
    with tf.GradientTape() as tape:
        loss = losses.cross_perceptual_loss(_mean_colour_embedding, render_fn, images, albedo_uv=albedo,
                                            light_uv=light)
    np.testing.assert_array_equal(seen["light"], [2.0, 0.0, 1.0])
    assert np.isfinite(loss.numpy())
    assert tape.gradient(loss, images) is None  # the real-image embedding is a constant
    with pytest.raises(ValueError):
        losses.cross_perceptual_loss(_mean_colour_embedding, render_fn, images)


# --------------------------------------------------------------------------------------------------------------
# Symmetry (eq. 4)
# --------------------------------------------------------------------------------------------------------------

def test_symmetry_exact_mirror_is_zero(rng):
    half = rng.random((2, 5, 6, 3)).astype(np.float32)
    symmetric = half + half[:, :, ::-1]
    mask = np.ones((5, 6, 1), np.float32)
    assert losses.symmetry_loss(symmetric, mask).numpy() == pytest.approx(0.0, abs=1e-7)
    assert losses.symmetry_loss(half, mask).numpy() > 0.01


def test_symmetry_hand_computed_and_mask_intersection():
    row = np.array([0.1, 0.2, 0.6, 0.9], np.float32)
    albedo = np.tile(row[None, None, :, None], (1, 1, 1, 3))  # [1, 1, 4, 3]
    full = np.ones((1, 1, 4, 1), np.float32)
    expected = (2 * abs(0.1 - 0.9) + 2 * abs(0.2 - 0.6)) / 4
    assert losses.symmetry_loss(albedo, full).numpy() == pytest.approx(expected, rel=1e-5)
    assert losses.symmetry_loss(albedo, full, norm="l2").numpy() == pytest.approx(
        (2 * 0.8 ** 2 + 2 * 0.4 ** 2) / 4, rel=1e-5)
    # Texel 3 off the chart: texel 0 loses its mirror too; only the pair (1, 2) counts.
    partial = np.array([1, 1, 1, 0], np.float32).reshape(1, 1, 4, 1)
    assert losses.symmetry_loss(albedo, partial).numpy() == pytest.approx(0.4, rel=1e-5)


def test_symmetry_index_matches_flip_and_handles_missing(rng):
    s = 6
    albedo = rng.random((2, s, s, 3)).astype(np.float32)
    mask = (rng.random((s, s, 1)) > 0.2).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    flip_index = (rows * s + (s - 1 - cols)).reshape(-1)
    np.testing.assert_allclose(losses.mirror_uv(albedo, flip_index).numpy(), albedo[:, :, ::-1])
    np.testing.assert_allclose(losses.symmetry_loss(albedo, mask, flip_index).numpy(),
                               losses.symmetry_loss(albedo, mask).numpy(), rtol=1e-6)
    # No mirror for the first row: it drops out of the loss, as if masked.
    index = flip_index.copy()
    index[:s] = -1
    masked = mask.copy()
    masked[0] = 0.0
    np.testing.assert_allclose(losses.symmetry_loss(albedo, mask, index).numpy(),
                               losses.symmetry_loss(albedo, masked).numpy(), rtol=1e-6)


def test_symmetry_mirror_is_detached():
    row = np.array([0.1, 0.2, 0.6, 0.9], np.float32)
    albedo = tf.Variable(np.tile(row[None, None, :, None], (1, 1, 1, 3)))
    with tf.GradientTape() as tape:
        loss = losses.symmetry_loss(albedo, np.ones((1, 1, 4, 1)))
    grad = tape.gradient(loss, albedo).numpy()[0, 0, :, 0]
    # d/dA_t |A_t - sg(A_mirror)| / (4 texels * 3 channels); not doubled through the mirror.
    np.testing.assert_allclose(grad, np.array([-1, -1, 1, 1]) / 12.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Edge-aware smoothness (eq. 5-6)
# --------------------------------------------------------------------------------------------------------------

def test_smoothness_constant_map_is_zero(rng):
    albedo = np.full((2, 5, 5, 3), 0.4, np.float32)
    prior = rng.random((2, 5, 5, 3)).astype(np.float32)
    mask = np.ones((5, 5, 1), np.float32)
    for variant in ("paper", "authors"):
        assert losses.edge_aware_smoothness(albedo, prior, mask, variant=variant).numpy() == pytest.approx(0.0)


def test_smoothness_ramp_hand_computed():
    h, w, d = 3, 5, 0.05
    albedo = np.tile((d * np.arange(w, dtype=np.float32))[None, None, :, None], (1, h, 1, 3))
    prior = np.full_like(albedo, 0.5)
    mask = np.ones((1, h, w, 1), np.float32)
    # H (W-1) x-pairs, each with ||dA||^2 = 3 d^2, normalised by 3 H W.
    assert losses.edge_aware_smoothness(albedo, prior, mask).numpy() == pytest.approx(d * d * (w - 1) / w, rel=1e-5)
    # Authors: g_x = sqrt(3) |3 d| on W-1 of the W columns, w = 1, divided by H W.
    assert losses.edge_aware_smoothness(albedo, prior, mask, variant="authors").numpy() == pytest.approx(
        math.sqrt(3) * 3 * d * (w - 1) / w, rel=1e-5)


def test_smoothness_prior_edge_scales_penalty_by_exp_weight():
    h, w, step, d = 4, 4, 0.3, 0.1
    albedo = np.zeros((1, h, w, 3), np.float32)
    albedo[:, :, 2:] = step  # step edge between columns 1 and 2, all channels
    flat_prior = np.full_like(albedo, 0.5)
    edged_prior = flat_prior.copy()
    edged_prior[:, :, 2:, 0] += d  # the prior has an edge of d (one channel) at the same place
    mask = np.ones((1, h, w, 1), np.float32)
    flat = losses.edge_aware_smoothness(albedo, flat_prior, mask).numpy()
    edged = losses.edge_aware_smoothness(albedo, edged_prior, mask).numpy()
    assert flat == pytest.approx(h * 3 * step ** 2 / (3 * h * w), rel=1e-5)
    assert edged / flat == pytest.approx(math.exp(-80.0 * d * d), rel=1e-5)
    # alpha is honoured.
    assert losses.edge_aware_smoothness(albedo, edged_prior, mask, alpha=10.0).numpy() / flat == pytest.approx(
        math.exp(-10.0 * d * d), rel=1e-5)
    # Authors: w = exp(-80 sqrt(3) |d|) on the channel-summed prior edge.
    flat_a = losses.edge_aware_smoothness(albedo, flat_prior, mask, variant="authors").numpy()
    edged_a = losses.edge_aware_smoothness(albedo, edged_prior, mask, variant="authors").numpy()
    assert edged_a / flat_a == pytest.approx(math.exp(-80.0 * math.sqrt(3) * d), rel=1e-4)


def test_smoothness_authors_assigns_y_differences_to_the_lower_texel():
    # The authors' ChromaSmoothLoss: d_y f(i) = f(i-1) - f(i), replication-padded, so the edge between rows 0 and 1 belongs
    # to row 1 and the masked mean sees it only where row 1 is in the mask.
    albedo = np.zeros((1, 3, 2, 3), np.float32)
    albedo[:, 0] = 1.0
    prior = np.zeros_like(albedo)
    row_mask = lambda r: np.eye(3, dtype=np.float32)[r][None, :, None, None] * np.ones((1, 3, 2, 1), np.float32)
    authors = lambda m: losses.edge_aware_smoothness(albedo, prior, m, variant="authors").numpy()
    assert authors(row_mask(1)) == pytest.approx(3.0 * math.sqrt(3), rel=1e-5)
    assert authors(row_mask(0)) == pytest.approx(0.0)


def test_smoothness_pairs_need_both_texels_in_mask_and_weights_are_constant():
    albedo = np.zeros((1, 1, 4, 3), np.float32)
    albedo[..., 0, :] = 1.0  # only the pair (0, 1) differs
    prior = tf.Variable(tf.fill([1, 1, 4, 3], 0.5))
    mask = np.array([0, 1, 1, 1], np.float32).reshape(1, 1, 4, 1)
    assert losses.edge_aware_smoothness(albedo, prior, mask).numpy() == pytest.approx(0.0)
    assert losses.edge_aware_smoothness(albedo, prior, np.ones_like(mask)).numpy() == pytest.approx(3.0 / 12)
    with tf.GradientTape() as tape:
        loss = losses.edge_aware_smoothness(albedo + 0.1 * np.arange(4, dtype=np.float32)[None, None, :, None],
                                            prior, np.ones_like(mask))
    assert tape.gradient(loss, prior) is None


# --------------------------------------------------------------------------------------------------------------
# Prior L1 (eq. 7), GAN (eq. 8-9)
# --------------------------------------------------------------------------------------------------------------

def test_prior_l1_hand_computed():
    prior = np.full((1, 3, 3, 3), 0.4, np.float32)
    albedo = prior + 0.1
    albedo[0, 2] = 5.0  # outside the mask
    mask = np.ones((1, 3, 3, 1), np.float32)
    mask[0, 2] = 0.0
    assert losses.prior_l1_loss(albedo, prior, mask).numpy() == pytest.approx(0.1, rel=1e-5)
    assert losses.prior_l1_loss(albedo, prior, mask, norm="l2_norm").numpy() == pytest.approx(
        math.sqrt(3 * 0.01 + lr.L2_NORM_EPS), rel=1e-5)


def test_gan_losses_at_known_logits():
    ones, zeros = tf.ones([2, 3, 3, 1]), tf.zeros([2, 3, 3, 1])
    assert losses.gan_discriminator_loss(ones, zeros, "lsgan").numpy() == pytest.approx(0.0)
    assert losses.gan_discriminator_loss(zeros, ones, "lsgan").numpy() == pytest.approx(1.0)
    assert losses.gan_generator_loss(zeros, "lsgan").numpy() == pytest.approx(1.0)
    assert losses.gan_generator_loss(ones, "lsgan").numpy() == pytest.approx(0.0)
    assert losses.gan_discriminator_loss(zeros, zeros, "vanilla").numpy() == pytest.approx(math.log(2.0))
    assert losses.gan_generator_loss(zeros, "vanilla").numpy() == pytest.approx(math.log(2.0))
    real, fake = 2.0 * ones, -1.0 * ones
    expected = 0.5 * (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)))
    assert losses.gan_discriminator_loss(real, fake, "vanilla").numpy() == pytest.approx(expected, rel=1e-5)
    assert losses.gan_generator_loss(fake, "vanilla").numpy() == pytest.approx(math.log1p(math.e), rel=1e-5)
    # Saturated logits stay finite (softplus, not log(sigmoid)).
    assert np.isfinite(losses.gan_discriminator_loss(-200.0 * ones, 200.0 * ones, "vanilla").numpy())
    assert losses.gan_generator_loss(zeros).numpy() == losses.gan_generator_loss(zeros, "lsgan").numpy()
    with pytest.raises(ValueError):
        losses.gan_generator_loss(zeros, "wgan")


# --------------------------------------------------------------------------------------------------------------
# Image gradient and image losses (eq. 13-14)
# --------------------------------------------------------------------------------------------------------------

def test_image_gradient_hand_computed():
    image = np.zeros((1, 5, 5, 3), np.float32)
    rendered = image.copy()
    v = 0.5
    rendered[0, 2, 2] = v  # a bright pixel: 4 neighbour pairs each differ by v
    mask = np.ones((1, 5, 5, 1), np.float32)
    assert losses.image_gradient_loss(rendered, image, mask).numpy() == pytest.approx(4 * v * v / 25, rel=1e-5)
    assert losses.image_gradient_loss(rendered, image, mask, norm="l1").numpy() == pytest.approx(4 * v / 25,
                                                                                                 rel=1e-5)
    # Masking any one neighbour removes its pair (both ends must be in the mask); the area drops by one pixel.
    for row, col in [(2, 1), (2, 3), (1, 2), (3, 2)]:
        one_out = mask.copy()
        one_out[0, row, col] = 0.0
        assert losses.image_gradient_loss(rendered, image, one_out).numpy() == pytest.approx(3 * v * v / 24,
                                                                                             rel=1e-5)
    # Gradients ignore a constant offset; the image loss does not.
    assert losses.image_gradient_loss(image + 0.3, image, mask).numpy() == pytest.approx(0.0, abs=1e-7)
    assert losses.image_loss(image + 0.3, image, mask).numpy() == pytest.approx(0.09, rel=1e-5)


def test_image_loss_forms(rng):
    image = rng.random((2, 4, 4, 3)).astype(np.float32)
    diff = np.zeros_like(image)
    diff[..., 0] = 0.3
    diff[..., 1] = 0.4
    mask = np.ones((2, 4, 4, 1), np.float32)
    mask[1, :2] = 0.0
    assert losses.image_loss(image + diff, image, mask).numpy() == pytest.approx((0.09 + 0.16) / 3, rel=1e-5)
    assert losses.image_loss(image + diff, image, mask, form="l2_norm").numpy() == pytest.approx(0.5, rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Gradient checks: analytic (tape) gradients against finite differences, float64, small tensors
# --------------------------------------------------------------------------------------------------------------

def _check_gradient(fn, x):
    # tf.function: the finite differences evaluate fn twice per input element; a graph keeps that fast.
    theoretical, numerical = tf.test.compute_gradient(tf.function(fn), [x], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6, rtol=1e-4)
    assert np.abs(theoretical[0]).max() > 0  # the check is not vacuous


@pytest.fixture
def small_maps(rng):
    mask = (rng.random((2, 4, 4, 1)) > 0.3).astype(np.float64)
    light_mask = np.array([1.0, 0.0, 1.0, 1.0]).reshape(1, 2, 2, 1)
    return dict(
        albedo=tf.constant(rng.random((2, 4, 4, 3))),
        prior=tf.constant(rng.random((2, 4, 4, 3)) * 0.1),
        light=tf.constant(rng.standard_normal((1, 2, 2, 27))),
        gamma=tf.constant(rng.standard_normal((1, 27))),
        light_mask=tf.constant(light_mask),
        mask=tf.constant(mask),
        image=tf.constant(rng.random((2, 4, 4, 3))),
    )


@pytest.mark.parametrize("name", ["illumination_mse", "illumination_l1_rgb", "symmetry_l2", "symmetry_l1",
                                  "smoothness_paper", "smoothness_authors", "prior_l1", "image_gradient",
                                  "image_gradient_l1", "image_mse", "image_l2_norm"])
def test_gradients_match_finite_differences(small_maps, name):
    m = small_maps
    fns = {
        "illumination_mse": (lambda x: losses.illumination_regularization(x, m["gamma"], m["light_mask"]),
                             m["light"]),
        "illumination_l1_rgb": (lambda x: losses.illumination_regularization(
            x, m["gamma"], m["light_mask"], norm="l1", rgb_consistency=0.5), m["light"]),
        "symmetry_l2": (lambda x: losses.symmetry_loss(x, m["mask"], norm="l2", stop_gradient_mirror=False),
                        m["albedo"]),
        "symmetry_l1": (lambda x: losses.symmetry_loss(x, m["mask"], stop_gradient_mirror=False), m["albedo"]),
        "smoothness_paper": (lambda x: losses.edge_aware_smoothness(x, m["prior"], m["mask"]), m["albedo"]),
        "smoothness_authors": (lambda x: losses.edge_aware_smoothness(x, m["prior"], m["mask"], variant="authors"),
                               m["albedo"]),
        "prior_l1": (lambda x: losses.prior_l1_loss(x, m["prior"], m["mask"]), m["albedo"]),
        "image_gradient": (lambda x: losses.image_gradient_loss(x, m["image"], m["mask"]), m["albedo"]),
        "image_gradient_l1": (lambda x: losses.image_gradient_loss(x, m["image"], m["mask"], norm="l1"),
                              m["albedo"]),
        "image_mse": (lambda x: losses.image_loss(x, m["image"], m["mask"]), m["albedo"]),
        "image_l2_norm": (lambda x: losses.image_loss(x, m["image"], m["mask"], form="l2_norm"), m["albedo"]),
    }
    fn, x = fns[name]
    _check_gradient(fn, x)


def test_cross_perceptual_gradient_matches_finite_differences(rng):
    images = tf.constant(rng.random((2, 3, 3, 3)))
    rendered = tf.constant(rng.random((2, 3, 3, 3)))
    _check_gradient(lambda x: losses.cross_perceptual_loss(_mean_colour_embedding, x, images), rendered)


# --------------------------------------------------------------------------------------------------------------
# Weights and the total
# --------------------------------------------------------------------------------------------------------------

def test_weight_presets():
    paper = losses.LossWeights.preset("paper")
    assert paper.at_epoch(0) == {"illumination": 1.0, "cross_perceptual": 0.5, "symmetry": 5.0, "smoothness": 5.0,
                                 "prior_l1": 1.0, "extra": 0.0, "gan": 0.001, "image_gradient": 1.0, "image": 5.0}
    assert paper.weight("prior_l1", epoch=1) == 0.0
    authors = losses.LossWeights.preset("authors")
    assert authors.at_epoch(7) == {"illumination": 1.0, "cross_perceptual": 0.2, "symmetry": 0.1, "smoothness": 0.1,
                                   "prior_l1": 1.0, "extra": 0.0, "gan": 0.001, "image_gradient": 1.0, "image": 1.0}
    ablated = paper.without("symmetry", "gan")
    assert ablated.weight("symmetry") == 0.0 and ablated.weight("gan") == 0.0 and ablated.weight("image") == 5.0
    assert paper.weight("symmetry") == 5.0  # presets are not mutated
    with pytest.raises(ValueError):
        paper.without("symmetri")
    with pytest.raises(ValueError):
        losses.LossWeights.preset("nope")
    assert losses.LossOptions.preset("authors").smoothness_variant == "authors"
    assert losses.LossOptions.preset("paper").gan_kind == "lsgan"


def test_total_generator_loss_applies_weights_and_schedule():
    terms = {name: tf.constant(float(k + 1)) for k, name in enumerate(losses.TERMS)}
    total, weighted = losses.total_generator_loss(terms, "paper", epoch=0)
    expected = {"illumination": 1.0 * 1, "cross_perceptual": 0.5 * 2, "symmetry": 5.0 * 3, "smoothness": 5.0 * 4,
                "prior_l1": 1.0 * 5, "extra": 0.0, "gan": 0.001 * 7, "image_gradient": 1.0 * 8, "image": 5.0 * 9}
    assert {k: pytest.approx(v.numpy()) for k, v in weighted.items()} == expected
    assert total.numpy() == pytest.approx(sum(expected.values()))
    total_1, weighted_1 = losses.total_generator_loss(terms, losses.LossWeights(), epoch=1)
    assert weighted_1["prior_l1"].numpy() == 0.0
    assert total_1.numpy() == pytest.approx(sum(expected.values()) - 5.0)
    # Mapping weights, missing terms allowed, unknown terms rejected.
    total_m, _ = losses.total_generator_loss({"image": 2.0}, {"image": 3.0})
    assert total_m.numpy() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        losses.total_generator_loss({"imag": 1.0})


def test_total_generator_loss_zero_weight_blocks_nan():
    terms = {"image": tf.constant(1.0), "symmetry": tf.constant(float("nan")), "prior_l1": tf.constant(float("inf"))}
    total, weighted = losses.total_generator_loss(terms, losses.LossWeights().without("symmetry"), epoch=3)
    assert total.numpy() == pytest.approx(5.0)
    assert weighted["symmetry"].numpy() == 0.0 and weighted["prior_l1"].numpy() == 0.0


def test_total_generator_loss_gradient_flows():
    x = tf.Variable(2.0)
    with tf.GradientTape() as tape:
        total, _ = losses.total_generator_loss({"image": x * x, "smoothness": 3.0 * x}, "paper")
    assert tape.gradient(total, x).numpy() == pytest.approx(5.0 * 4.0 + 5.0 * 3.0)


# --------------------------------------------------------------------------------------------------------------
# confidence-weighted symmetry (the mirror fills what the photo did not show)
# --------------------------------------------------------------------------------------------------------------

def _brute_weighted_symmetry(albedo, mask, confidence, mirror_of, seen_weight, norm, unseen_mirror_weight=0.0,
                             seen_scale=0.0):
    """Loops over samples and texels: sum_t w(t) pen(A_t - A_m(t)) / (C * sum_t M_sym(t)), mean over the batch."""
    batch, h, w, c = albedo.shape
    losses_per_sample = []
    for b in range(batch):
        total, area = 0.0, 0.0
        for i in range(h):
            for j in range(w):
                mirror = mirror_of(i, j)
                if mirror is None:
                    continue
                mi, mj = mirror
                m_sym = mask[i, j, 0] * mask[mi, mj, 0]
                conf, conf_m = confidence[b, i, j, 0], confidence[b, mi, mj, 0]
                fill = m_sym * ((1.0 - conf) + unseen_mirror_weight * conf * (1.0 - conf_m))
                seen = m_sym * seen_weight * conf * conf_m
                diff = albedo[b, i, j] - albedo[b, mi, mj]
                penalty = np.abs(diff).sum() if norm == "l1" else np.square(diff).sum()
                seen_penalty = (seen_scale * np.abs(diff) / (seen_scale + np.abs(diff))).sum() if seen_scale else penalty
                total += fill * penalty + seen * seen_penalty
                area += m_sym
        losses_per_sample.append(total / (c * area) if area else 0.0)
    return float(np.mean(losses_per_sample))


@pytest.mark.parametrize("norm,seen_weight,seen_scale,unseen_mirror_weight",
                         [("l1", 0.0, 0.0, 0.0), ("l1", 0.3, 0.0, 0.0), ("l2", 0.0, 0.0, 0.0), ("l1", 1.0, 0.05, 1.0),
                          ("l2", 0.5, 0.1, 0.4)])
def test_weighted_symmetry_matches_brute_force_flip(rng, norm, seen_weight, seen_scale, unseen_mirror_weight):
    albedo = rng.random((2, 4, 6, 3))
    mask = (rng.random((4, 6, 1)) > 0.2).astype(np.float64)
    confidence = rng.random((2, 4, 6, 1))
    confidence[0, 1, :3] = 0.0
    confidence[1, 2, 3:] = 1.0
    got = losses.symmetry_loss(tf.constant(albedo), mask, norm=norm, confidence_uv=confidence,
                               seen_weight=seen_weight, seen_scale=seen_scale,
                               unseen_mirror_weight=unseen_mirror_weight).numpy()
    expected = _brute_weighted_symmetry(albedo, mask, confidence, lambda i, j: (i, 5 - j), seen_weight, norm,
                                        unseen_mirror_weight, seen_scale)
    assert got == pytest.approx(expected, rel=1e-9)


def test_weighted_symmetry_matches_brute_force_index(rng):
    s = 5
    albedo = rng.random((1, s, s, 3))
    mask = np.ones((s, s, 1))
    confidence = (rng.random((1, s, s, 1)) > 0.5).astype(np.float64)
    # An arbitrary mirror map (a permutation, row 0 without mirror).
    permutation = rng.permutation(s * s)
    index = permutation.copy()
    index[:s] = -1

    def mirror_of(i, j):
        k = index[i * s + j]
        return None if k < 0 else divmod(int(k), s)

    got = losses.symmetry_loss(tf.constant(albedo), mask, index, confidence_uv=confidence, seen_weight=0.5).numpy()
    # Texels without a mirror drop out of both the sum and the area (mirror_uv gives M = 0 there).
    assert got == pytest.approx(_brute_weighted_symmetry(albedo, mask, confidence, mirror_of, 0.5, "l1"), rel=1e-9)


def test_weighted_symmetry_reduces_to_the_uniform_term(rng):
    albedo = rng.random((2, 5, 6, 3)).astype(np.float32)
    mask = (rng.random((5, 6, 1)) > 0.3).astype(np.float32)
    uniform = losses.symmetry_loss(albedo, mask).numpy()
    # Nothing seen: every texel is filled from its mirror, exactly today's term.
    unseen = losses.symmetry_loss(albedo, mask, confidence_uv=np.zeros((2, 5, 6, 1)), seen_weight=0.0).numpy()
    # Everything seen with the full pull between seen texels: today's term too.
    seen = losses.symmetry_loss(albedo, mask, confidence_uv=np.ones((2, 5, 6, 1)), seen_weight=1.0).numpy()
    assert unseen == pytest.approx(uniform, rel=1e-6)
    assert seen == pytest.approx(uniform, rel=1e-6)
    # Any confidence, both pulls of seen texels at 1: the weights sum to M_sym, today's term again.
    anything = losses.symmetry_loss(albedo, mask, confidence_uv=rng.random((2, 5, 6, 1)), seen_weight=1.0,
                                    unseen_mirror_weight=1.0).numpy()
    assert anything == pytest.approx(uniform, rel=1e-6)
    # Everything seen, no pull between seen texels: no symmetry at all.
    assert losses.symmetry_loss(albedo, mask, confidence_uv=np.ones((2, 5, 6, 1))).numpy() == 0.0


def test_weighted_symmetry_gradient_seen_texel_keeps_its_colour_unseen_texel_is_filled():
    # One row of 4 texels: texel 0 seen (a strand the photo shows), its mirror texel 3 unseen; texels 1 and 2
    # both seen (seen_weight 0: neither pulled).
    row = np.array([0.9, 0.2, 0.6, 0.3])
    albedo = tf.Variable(np.tile(row[None, None, :, None], (1, 1, 1, 3)))
    confidence = np.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 4, 1)
    mask = np.ones((1, 1, 4, 1))
    with tf.GradientTape() as tape:
        loss = losses.symmetry_loss(albedo, mask, confidence_uv=confidence)
    grad = tape.gradient(loss, albedo).numpy()[0, 0, :, 0]
    assert grad[0] == 0.0 and grad[1] == 0.0 and grad[2] == 0.0       # the photo wins on seen texels
    assert grad[3] == pytest.approx(-1.0 / 12.0)                     # the unseen texel is pulled up towards 0.9
    # The uniform term pulls the seen texel towards its unseen mirror (the ghost).
    with tf.GradientTape() as tape:
        uniform = losses.symmetry_loss(albedo, mask)
    assert tape.gradient(uniform, albedo).numpy()[0, 0, 0, 0] == pytest.approx(1.0 / 12.0)
    # Descent on the weighted term fills the unseen texel with its seen mirror and leaves the rest alone.
    for _ in range(400):
        with tf.GradientTape() as tape:
            loss = losses.symmetry_loss(albedo, mask, confidence_uv=confidence, norm="l2")
        albedo.assign_sub(2.0 * tape.gradient(loss, albedo))
    np.testing.assert_allclose(albedo.numpy()[0, 0, :, 0], [0.9, 0.2, 0.6, 0.9], atol=1e-4)


def test_weighted_symmetry_soft_confidence_scales_the_pull():
    row = np.array([0.9, 0.1])
    albedo = tf.Variable(np.tile(row[None, None, :, None], (1, 1, 1, 3)))
    grads = []
    for conf in (0.0, 0.5, 1.0):
        confidence = np.array([1.0, conf]).reshape(1, 1, 2, 1)
        with tf.GradientTape() as tape:
            loss = losses.symmetry_loss(albedo, np.ones((1, 1, 2, 1)), confidence_uv=confidence)
        grads.append(tape.gradient(loss, albedo).numpy()[0, 0, 1, 0])
    # d/dA_1 of (1 - c_1) |A_1 - A_0| / (2 texels * 3 channels): -(1 - c_1) / 6.
    np.testing.assert_allclose(grads, [-1.0 / 6.0, -0.5 / 6.0, 0.0], atol=1e-12)


def test_view_confidence_hand_computed():
    n_z = np.array([1.0, 0.35, 0.225, 0.1, -0.5])
    normals = np.stack([np.sqrt(1 - n_z ** 2), np.zeros(5), n_z], -1).reshape(1, 1, 5, 3)
    visibility = np.array([1.0, 1.0, 1.0, 1.0, 1.0]).reshape(1, 1, 5, 1)
    got = losses.view_confidence(visibility, normals).numpy().reshape(-1)
    np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    assert losses.view_confidence(np.zeros((1, 1, 5, 1)), normals).numpy().max() == 0.0


def test_loss_options_reject_an_unknown_symmetry_weighting():
    with pytest.raises(ValueError, match="symmetry_weighting"):
        losses.LossOptions(symmetry_weighting="mirror")
    assert losses.LossOptions.preset("paper").symmetry_weighting == "uniform"     # the trainer's default
    assert losses.LossOptions.preset("authors").symmetry_weighting == "uniform"


def test_saturating_seen_pull_fades_for_large_differences():
    # Two seen texels: a strand (0.9) against skin (0.3) barely pulls with the saturating penalty, a small
    # shading difference (0.32 vs 0.3) pulls as L1 does.
    scale = 0.05
    for a, b, slope in ((0.9, 0.3, scale ** 2 / (scale + 0.6) ** 2), (0.32, 0.3, scale ** 2 / (scale + 0.02) ** 2)):
        albedo = tf.Variable(np.tile(np.array([a, b])[None, None, :, None], (1, 1, 1, 3)))
        with tf.GradientTape() as tape:
            loss = losses.symmetry_loss(albedo, np.ones((1, 1, 2, 1)), confidence_uv=np.ones((1, 1, 2, 1)),
                                        seen_weight=1.0, seen_scale=scale)
        grad = tape.gradient(loss, albedo).numpy()[0, 0, 0, 0]
        assert grad == pytest.approx(slope / 6.0, rel=1e-6)       # / (2 texels * 3 channels)
    assert scale ** 2 / (scale + 0.6) ** 2 < 0.01
