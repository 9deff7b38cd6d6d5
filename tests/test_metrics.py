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


def test_flat_colour_rmse_is_the_best_constant_by_brute_force(rng):
    target = rng.uniform(0.1, 0.9, (2, 6, 5, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, 6, 5, 1)) > 0.4).astype(np.float32)
    got = metrics.flat_colour_rmse(target, mask).numpy()
    grid = np.linspace(0.0, 1.0, 201)
    for b in range(2):
        inside = mask[b, ..., 0] > 0.5
        # Per channel the squared error of every candidate constant; the channels add up independently.
        best = sum(np.min([np.sum((k - target[b][inside][:, c]) ** 2) for k in grid]) for c in range(3))
        brute = np.sqrt(best / (3 * inside.sum()))
        assert abs(got[b] - brute) < 2e-3, (got[b], brute)
    # Any flat colour, scaled per channel, scores exactly this under scale_invariant_rmse.
    flat = np.broadcast_to(np.array([0.3, 0.5, 0.7], np.float32), target.shape)
    np.testing.assert_allclose(metrics.scale_invariant_rmse(flat, target, mask).numpy(), got, rtol=1e-5)


def test_scale_invariant_rmse_against_brute_force_scales(rng):
    target = rng.uniform(0.1, 0.9, (1, 5, 4, 3)).astype(np.float32)
    prediction = (target * np.array([0.8, 1.1, 0.6]) + rng.normal(0, 0.05, target.shape)).astype(np.float32)
    mask = np.ones((1, 5, 4, 1), np.float32)
    scales = np.linspace(0.5, 2.5, 2001)
    best = sum(np.min([np.sum((s * prediction[0, ..., c] - target[0, ..., c]) ** 2) for s in scales])
               for c in range(3))
    brute = np.sqrt(best / target[0].size)
    assert abs(metrics.scale_invariant_rmse(prediction, target, mask).numpy()[0] - brute) < 1e-4


def test_aligned_region_rmse_against_brute_force(rng):
    albedo = rng.uniform(0.2, 0.8, (2, 5, 5, 3))
    truth = rng.uniform(0.2, 0.8, (2, 5, 5, 3))
    align = np.ones((2, 5, 5, 1))
    region = (rng.uniform(size=(2, 5, 5, 1)) > 0.5).astype(np.float64)
    region[1] = 0.0
    got = metrics.aligned_region_rmse(albedo, truth, region, align).numpy()
    scale = (albedo * truth).sum(axis=(1, 2)) / (albedo * albedo).sum(axis=(1, 2))       # [2, 3]
    aligned = albedo[0] * scale[0]
    inside = region[0, ..., 0] > 0.5
    expected = np.sqrt(np.mean(np.square(aligned[inside] - truth[0][inside])))
    assert got[0] == pytest.approx(expected, rel=1e-5)
    assert np.isnan(got[1])                           # empty region
    # A scaled copy of the truth has no error (the scale comes from align_region, here the whole map) ...
    assert metrics.aligned_region_rmse(truth * 0.7, truth, region, align).numpy()[0] == pytest.approx(0.0, abs=1e-6)
    # ... and a tone shift confined to the region is not hidden by the alignment (a region's own scale would).
    shifted = truth.copy()
    shifted[0][inside] *= 1.3
    assert metrics.aligned_region_rmse(shifted, truth, region, align).numpy()[0] > 0.02
