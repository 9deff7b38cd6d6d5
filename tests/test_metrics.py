"""Metrics against known values and against scikit-image."""
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tf_facetex import metrics


@pytest.fixture
def images(rng):
    image = rng.uniform(size=(2, 48, 48, 3)).astype(np.float32)
    mask = np.zeros((2, 48, 48, 1), np.float32)
    mask[:, 8:40, 10:38] = 1.0
    return image, mask


def test_identical_images(images):
    image, mask = images
    np.testing.assert_allclose(metrics.masked_l1(image, image, mask), 0.0)
    np.testing.assert_allclose(metrics.masked_psnr(image, image, mask), metrics.PSNR_CAP)
    np.testing.assert_allclose(metrics.masked_ssim(image, image, mask), 1.0, atol=1e-5)


def test_known_shift(images):
    image, mask = images
    shifted = image + 0.1
    np.testing.assert_allclose(metrics.masked_l1(shifted, image, mask), 0.1, atol=1e-6)
    np.testing.assert_allclose(metrics.masked_psnr(shifted, image, mask), 20.0, atol=1e-3)
    # Outside the mask differences do not count.
    noisy_outside = image.copy()
    noisy_outside[mask[..., 0] == 0] = 0.0
    np.testing.assert_allclose(metrics.masked_l1(noisy_outside, image, mask), 0.0)


def test_ssim_matches_scikit_image_on_full_mask(rng):
    a = rng.uniform(size=(1, 40, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
    ours = float(np.mean(metrics.ssim_map(a, b).numpy()))
    theirs = structural_similarity(a[0], b[0], channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False)
    # skimage crops the border of the full-size map the same way (valid windows).
    assert abs(ours - theirs) < 2e-3, (ours, theirs)


def test_scale_alignment_recovers_known_scale(images):
    image, mask = images
    scale = np.array([0.5, 2.0, 1.3], np.float32)
    target = image * scale
    np.testing.assert_allclose(metrics.scale_alignment(image, target, mask).numpy()[0, 0, 0], scale, rtol=1e-5)
    np.testing.assert_allclose(metrics.scale_invariant_rmse(image, target, mask), 0.0, atol=1e-6)
    # A single global scale cannot undo a coloured scale.
    assert float(metrics.scale_invariant_rmse(image, target, mask, per_channel=False)[0]) > 0.05
    out = metrics.albedo_metrics(image * 0.25, image, mask)
    np.testing.assert_allclose(out["si_rmse"], 0.0, atol=1e-6)


def test_empty_mask_is_finite(images):
    image, _ = images
    empty = np.zeros(image.shape[:-1] + (1,), np.float32)
    for value in (metrics.masked_l1(image, image * 0, empty), metrics.masked_ssim(image, image * 0, empty)):
        assert np.all(np.isfinite(value.numpy()))
