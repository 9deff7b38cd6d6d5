"""Relighting metrics (tf_facetex/evaluation/relight.py) and detection-rate helpers (evaluation/detection.py)."""
import numpy as np
import pytest

from tf_facetex.evaluation import detection, relight


def test_texel_cv_ignores_a_global_gain_and_matches_two_map_formula():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, (8, 8, 3))
    mask = np.ones((8, 8), bool)
    # the same map under three exposures: no variation once each is normalised by its mean
    assert relight.texel_cv(np.stack([base, 2 * base, 0.5 * base]), mask) == pytest.approx(0.0, abs=1e-12)
    # two maps with equal means: per texel cv = |a - b| / (a + b) (population std over K = 2)
    a = np.full((8, 8, 3), 1.0)
    b = np.full((8, 8, 3), 1.0)
    a[:4] = 1.5
    b[:4] = 0.5
    a[4:] = 0.5
    b[4:] = 1.5
    assert relight.texel_cv(np.stack([a, b]), mask) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        relight.texel_cv(base[None], mask)


def test_albedo_consistency_ratio_of_a_perfect_and_a_light_baked_albedo():
    rng = np.random.default_rng(1)
    size = 16
    albedo = rng.uniform(0.3, 0.9, (size, size, 3))
    shading = np.stack([np.broadcast_to(np.linspace(0.2, 1.5, size)[None, :, None] ** k, (size, size, 3))
                        for k in (0.5, 1.0, 2.0)])
    visibility = np.ones((3, size, size, 1))
    visibility[0, :, :3] = 0                                   # a texel column unseen in one photo
    uv_mask = np.ones((size, size, 1))
    perfect = relight.albedo_consistency(np.stack([albedo] * 3), shading, visibility, uv_mask)
    assert perfect["cv_albedo"] == pytest.approx(0.0, abs=1e-12) and perfect["ratio"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["common_texels"] == size * (size - 3)
    baked = relight.albedo_consistency(albedo[None] * shading, np.ones_like(shading), visibility, uv_mask)
    assert baked["ratio"] == pytest.approx(1.0)                # the light left entirely in the albedo


def test_masked_psnr_known_value():
    target = np.zeros((4, 4, 3))
    prediction = np.full((4, 4, 3), 0.1)
    prediction[0] = 0.9                                        # outside the mask: ignored
    mask = np.ones((4, 4))
    mask[0] = 0
    assert relight.masked_psnr(prediction, target, mask) == pytest.approx(20.0)


def test_five_point_nme_and_eye_nme():
    rng = np.random.default_rng(2)
    landmarks = rng.uniform(50, 150, (68, 2)).astype(np.float32)
    from tf_facetex.data.align import five_points
    reference = five_points(landmarks)
    iod = np.linalg.norm(reference[0] - reference[1])
    shifted = landmarks + np.array([3.0, 4.0], np.float32)
    assert detection.five_point_nme(shifted, reference) == pytest.approx(5 / iod, rel=1e-5)
    eyes = reference[:2]
    assert detection.eye_nme(landmarks, eyes[::-1]) == pytest.approx(0.0, abs=1e-6)   # either label order


def test_evaluate_items_counts_found_aligned_and_stages():
    from tf_facetex.data.detect import Face
    from tf_facetex.errors import NoFaceError

    class Fake:
        def detect(self, image, name=""):
            if name == "missing":
                raise NoFaceError("none")
            return [Face(np.zeros(4, np.float32), np.zeros((68, 2), np.float32), 1.0,
                         "cnn" if name == "far" else "group:x.png:landmarks")]

    errors = {"near": 0.05, "far": 0.5, "unref": None}
    report = detection.evaluate_items(Fake(), ["near", "far", "missing", "unref"], lambda name: np.zeros((4, 4, 3)),
                                      lambda name, face: errors[name])
    assert report["found_count"] == 3 and report["aligned_count"] == 2
    assert report["stages"] == {"group": 2, "cnn": 1}
    assert set(report["failed_paths"]) == {"far", "missing"}


def test_relight_report_tables_single_multi_and_baselines():
    from tf_facetex.evaluation import relight_report

    single = {"ratio": 0.31, "cv_albedo": 0.15, "cv_lit": 0.48, "relit_psnr_mean": 19.9, "baseline_psnr_mean": 12.4,
              "gain_db": 7.5, "seconds_per_photo": 8.0}
    multi = {"ratio_single_pairs": 0.4, "ratio_multi": 0.2, "cv_albedo_single_pairs": 0.1, "cv_albedo_multi": 0.05,
             "cv_lit_pairs": 0.25, "single_relit_psnr_mean": 18.0, "relit_psnr_mean": 21.0, "baseline_psnr_mean": 12.0,
             "gain_db": 9.0, "single_gain_db": 6.0, "pairs": 18}
    data = {"summary": single, "protocol": {"subjects": ["s1"], "lights": ["A", "B"], "multi_halves": [["A"], ["B"]]},
            "baselines": {"today": {"summary": dict(single, ratio=0.43), "code": "git HEAD abc (x)"}},
            "subjects": {"s1": {"ratio": 0.31, "gain_db": 7.5, "detectors": ["hog", "cnn", "hog"]}},
            "multi": {"summary": multi, "subjects": {"s1": multi}}}
    text = "\n".join(relight_report.relight_lines(data))
    assert "| today (git HEAD abc) | 0.430 |" in text and "| **this run** | 0.310 |" in text
    assert "| gain over photo i, dB ↑ | +6.00 | +9.00 | multi |" in text
    assert "| s1 | 0.310 | +7.50 | 0.400 | 0.200 | +6.00 | +9.00 | cnn, hog |" in text
    del data["multi"]
    assert "Multi-photo" not in "\n".join(relight_report.relight_lines(data))


def test_lit_texture_clips_the_dark_side_so_a_pair_cv_stays_bounded():
    from tf_facetex.evaluation import relight

    albedo = np.full((2, 4, 4, 3), 0.5)
    shading = np.ones((2, 4, 4, 3))
    shading[0, :2], shading[1, :2] = 0.3, -0.3        # half the texels: lit, then on the light's dark side
    mask = np.ones((4, 4), bool)
    lit = relight.lit_texture(albedo, shading)
    assert lit.min() == 0.0 and lit.max() == 0.5
    # two non-negative maps: per texel |a - b| / (a + b) <= 1; the negative shading gave a huge CV
    assert 0.0 < relight.texel_cv(lit, mask) <= 1.0
    assert relight.texel_cv(albedo * shading, mask) > 1e3
