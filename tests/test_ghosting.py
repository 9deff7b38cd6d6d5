"""Ghosting / completion metrics (tf_facetex.evaluation.ghosting) on hand-made maps, against brute force."""
import numpy as np
import pytest

from tf_facetex.evaluation import ghosting


def test_occluded_texels_marks_the_texels_of_hidden_face_pixels():
    # 4 x 6 image; pixel (r, c) looks up texel (col = c, row = r) of a 4 x 6 UV map (S = 6, rows 0-3 used).
    rows, cols = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    pixel_uv = np.stack([cols, rows], -1)[None].astype(np.float32) + 0.2           # rounding: same texel
    occluder = np.zeros((1, 4, 6, 1), np.float32)
    occluder[0, 1:3, 1] = 1.0
    occluder[0, 0, 5] = 1.0                                                        # off the face: ignored
    face = np.ones((1, 4, 6, 1), np.float32)
    face[0, 0, 5] = 0.0
    got = ghosting.occluded_texels(occluder, pixel_uv, face, uv_size=6, dilation=0)[0, ..., 0]
    expected = np.zeros((6, 6))
    expected[1:3, 1] = 1.0
    np.testing.assert_array_equal(got, expected)
    dilated = ghosting.occluded_texels(occluder, pixel_uv, face, uv_size=6, dilation=1)[0, ..., 0]
    assert dilated[0:4, 0:3].all() and dilated.sum() == 12


def test_ghost_region_is_the_seen_clean_mirror_of_the_occluder():
    size = 6
    occluded = np.zeros((1, size, size, 1), np.float32)
    occluded[0, 2, 1] = 1.0          # one-sided: mirror texel (2, 4)
    occluded[0, 4, 2] = occluded[0, 4, 3] = 1.0   # symmetric pair: each other's mirror, no ghost
    visibility = np.ones((1, size, size, 1), np.float32)
    chart = np.ones((size, size, 1), np.float32)
    got = ghosting.ghost_region(occluded, visibility, chart)[0, ..., 0]
    expected = np.zeros((size, size))
    expected[2, 4] = 1.0
    np.testing.assert_array_equal(got, expected)
    visibility[0, 2, 4] = 0.0        # the mirror is not seen: nothing for a ghost to overwrite
    assert ghosting.ghost_region(occluded, visibility, chart).sum() == 0.0
    # With an explicit symmetry index (the flip), the same region.
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    index = (r * size + (size - 1 - c)).reshape(-1)
    visibility[0, 2, 4] = 1.0
    np.testing.assert_array_equal(ghosting.ghost_region(occluded, visibility, chart, index)[0, ..., 0], expected)


def test_region_rmse_against_brute_force():
    rng = np.random.default_rng(3)
    albedo = rng.uniform(0.2, 0.8, (2, 5, 5, 3))
    truth = rng.uniform(0.2, 0.8, (2, 5, 5, 3))
    align = np.ones((2, 5, 5, 1))
    region = (rng.uniform(size=(2, 5, 5, 1)) > 0.5).astype(np.float64)
    region[1] = 0.0
    got = ghosting.region_rmse(albedo, truth, region, align)
    scale = (albedo * truth).sum(axis=(1, 2)) / (albedo * albedo).sum(axis=(1, 2))       # [2, 3]
    aligned = albedo[0] * scale[0]
    inside = region[0, ..., 0] > 0.5
    expected = np.sqrt(np.mean(np.square(aligned[inside] - truth[0][inside])))
    assert got[0] == pytest.approx(expected, rel=1e-5)
    assert np.isnan(got[1])                           # empty region
    # A scaled copy of the truth has no error (the scale comes from align_region).
    assert ghosting.region_rmse(truth * 0.7, truth, region, align)[0] == pytest.approx(0.0, abs=1e-6)


def test_mirror_metrics_see_a_mirrored_ghost():
    size = 8
    truth = np.full((1, size, size, 3), 0.5, np.float32)
    occluded = np.zeros((1, size, size, 1), np.float32)
    occluded[0, 2:5, 1:3] = 1.0
    visibility = np.ones((1, size, size, 1), np.float32)
    visibility[0, 6:, :] = 0.0
    batch = {"albedo_gt_uv": truth, "visibility_uv": visibility}
    chart = np.ones((size, size, 1), np.float32)
    clean = truth.copy()
    ghosted = truth.copy()
    ghosted[0, 2:5, 5:7] = 0.1                          # the occluder's colour copied onto its mirror
    good = ghosting.mirror_metrics(batch, clean, chart, occluded)
    bad = ghosting.mirror_metrics(batch, ghosted, chart, occluded)
    assert good["ghost_rmse"][0] == pytest.approx(0.0, abs=1e-6)
    assert bad["ghost_rmse"][0] > 0.2 and bad["ghost_excess"][0] > 0.2
    assert bad["ghost_texels"][0] == 6 and bad["completion_texels"][0] == 16
    summary = ghosting.summarise({k: np.asarray(v) for k, v in bad.items()}, min_texels=7)
    assert summary["ghost_rmse"]["count"] == 0 and summary["completion_rmse"]["count"] == 1
