"""Clean-albedo metrics (occluder leak, coverage, region re-render scores) and the unwrap's mask gate."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.evaluation import clean_albedo, clean_report


def _labels():
    labels = np.full((20, 20), 1, np.uint8)     # skin
    labels[:, 10:] = 13                          # right half hair
    labels[0, :] = 0                             # top row background
    return labels


def test_occluder_leak_against_brute_force():
    rng = np.random.default_rng(0)
    labels = _labels()
    pixels = rng.uniform(0.0, 19.0, size=(8, 8, 2))
    visibility = (rng.uniform(size=(8, 8)) > 0.3).astype(np.float32)
    leak = clean_albedo.occluder_leak(visibility, pixels, labels)
    seen = visibility > 0.5
    occluder = np.isin(labels, clean_albedo.OCCLUDER_CLASSES)
    nearest, any_tap, weighted = [], [], []
    for (x, y) in pixels[seen]:
        nearest.append(occluder[int(round(y)), int(round(x))])
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        taps = [((y0, x0), (1 - fx) * (1 - fy)), ((y0, x0 + 1), fx * (1 - fy)), ((y0 + 1, x0), (1 - fx) * fy),
                ((y0 + 1, x0 + 1), fx * fy)]
        any_tap.append(any(occluder[p] for p, w in taps if w > 0))
        weighted.append(sum(w * occluder[p] for p, w in taps))
    assert leak["seen_texels"] == seen.sum()
    assert leak["leak_nearest"] == pytest.approx(np.mean(nearest))
    assert leak["leak_any_tap"] == pytest.approx(np.mean(any_tap))
    assert leak["leak_weighted"] == pytest.approx(np.mean(weighted))
    assert leak["leak_nearest"] <= leak["leak_any_tap"]


def test_occluder_leak_is_zero_inside_the_face_and_one_on_hair():
    labels = _labels()
    on_skin = np.stack(np.meshgrid(np.linspace(1, 8, 4), np.linspace(2, 18, 4)), -1)   # x in skin half
    on_hair = on_skin + np.array([10.0, 0.0])
    ones = np.ones((4, 4))
    assert clean_albedo.occluder_leak(ones, on_skin, labels)["leak_any_tap"] == 0.0
    assert clean_albedo.occluder_leak(ones, on_hair, labels)["leak_nearest"] == 1.0
    assert clean_albedo.occluder_leak(np.zeros((4, 4)), on_hair, labels)["seen_texels"] == 0


def test_labels_in_crop_marks_outside_photo():
    labels = _labels()
    shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]])       # photo moved 5 px right in the crop
    crop = clean_albedo.labels_in_crop(labels, shift, 20)
    assert (crop[:, :5] == clean_albedo.OUTSIDE_PHOTO).all()
    np.testing.assert_array_equal(crop[:, 5:], labels[:, :15])


def test_coverage_and_region_metrics():
    labels = np.zeros((32, 32), np.uint8)
    labels[8:24, 8:24] = 1
    labels[10:12, 10:14] = 4          # an eye
    labels[18:20, 12:20] = 11         # a lip
    render_mask = np.zeros((32, 32), np.float32)
    render_mask[8:24, 8:24] = 1.0
    render_mask[10:12, 10:14] = 0.0   # a hole at the eye
    cov = clean_albedo.coverage(render_mask, labels)
    assert cov["coverage_eyes"] == 0.0 and cov["coverage_mouth"] == 1.0
    assert cov["coverage_face"] == pytest.approx(1.0 - 8.0 / 256.0)
    image = np.full((32, 32, 3), 0.5, np.float32)
    render = image * render_mask[..., None]            # black in the hole, as the user sees it
    scores = clean_albedo.region_image_metrics(render, image, {
        "face": labels > 0, "eyes_psnr_only": labels == 4, "mouth_psnr_only": labels == 11})
    assert scores["mouth_psnr_db"] == pytest.approx(100.0)          # identical: the cap
    assert scores["eyes_psnr_db"] == pytest.approx(10 * np.log10(1 / 0.25), abs=1e-3)
    assert scores["face_l1"] == pytest.approx(0.5 * 8 / 256, abs=1e-6)
    assert "eyes_ssim" not in scores and scores["face_pixels"] == 256


def test_landmark_hull_contains_the_points():
    points = np.array([[5.0, 5.0], [25.0, 5.0], [25.0, 20.0], [5.0, 20.0]] * 17)
    hull = clean_albedo.landmark_hull((32, 32), points)
    assert hull[12, 15] and not hull[2, 2] and abs(hull.sum() - 21 * 16) < 45


def test_min_bilinear_taps_against_brute_force():
    from tf_facetex.rendering import uv
    rng = np.random.default_rng(1)
    values = rng.uniform(size=(2, 9, 11)).astype(np.float32)
    coords = rng.uniform(-1.0, 12.0, size=(2, 5, 7, 2)).astype(np.float32)
    coords[0, 0, 0] = [3.0, 4.0]              # an integer point: only one tap has weight
    got = uv.min_bilinear_taps(tf.constant(values), tf.constant(coords)).numpy()
    for b in range(2):
        for idx in np.ndindex(5, 7):
            x, y = np.clip(coords[b][idx], 0, [10, 8])
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - x0, y - y0
            taps = [(y0, x0, (1 - fx) * (1 - fy)), (y0, min(x0 + 1, 10), fx * (1 - fy)),
                    (min(y0 + 1, 8), x0, (1 - fx) * fy), (min(y0 + 1, 8), min(x0 + 1, 10), fx * fy)]
            assert got[b][idx] == pytest.approx(min(values[b, r, c] for r, c, w in taps if w > 0))
    assert got[0, 0, 0] == pytest.approx(values[0, 4, 3])


def test_soft_mask_png_round_trip():
    from tf_facetex.data import masks
    soft = np.array([[0.0, 0.3, 0.5, 0.5001, 0.93, 1.0]], np.float32)
    stored = masks.soft_mask_uint8(soft)
    np.testing.assert_array_equal(stored, [[0, 0, 0, 128, 237, 255]])
    back = masks.soft_mask_float(tf.constant(stored)).numpy()
    np.testing.assert_array_equal(back > 0.5, soft > 0.5)
    np.testing.assert_allclose(back[0, 4:], soft[0, 4:], atol=1 / 255)
    # binary masks keep their old encoding
    np.testing.assert_array_equal(masks.soft_mask_uint8(np.array([0.0, 1.0])), [0, 255])


@pytest.mark.slow
def test_unwrap_gate_drops_texels_next_to_unsure_mask_pixels(tiny_model):
    """PriorModule: the fit uses the mask binary (> 0.5); a texel is seen only if every bilinear tap of its
    source pixel has a mask value >= unwrap_mask_threshold."""
    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.prior.module import PriorConfig, PriorModule
    from tf_facetex.rendering import FaceRenderer
    renderer = FaceRenderer(tiny_model, 96, 32)
    config = SyntheticConfig(image_size=96, uv_size=32, directional_prob=0.0, occluder_prob=0.0, noise_std=0.0,
                             detail=0.0, max_yaw=0)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(3), 1)
    prior = PriorModule(tiny_model, PriorConfig(image_size=96, uv_size=32), renderer=renderer)
    images = faces["image"].astype(np.float32) / 255.0
    binary = (faces["face_mask"] > 0).astype(np.float32)
    soft = binary.copy()
    soft[:, :, 48:] *= 0.7                     # image-right half: face, but unsure
    out_binary = prior(images, faces["landmarks"], binary)
    out_soft = prior(images, faces["landmarks"], soft)
    np.testing.assert_allclose(out_soft["coeffs"].numpy(), out_binary["coeffs"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(out_soft["face_mask"].numpy(), out_binary["face_mask"].numpy())
    seen_binary = out_binary["visibility_uv"].numpy()[0, ..., 0] > 0.5
    seen_soft = out_soft["visibility_uv"].numpy()[0, ..., 0] > 0.5
    lookup = prior.renderer.unwrap(tf.constant(images), out_binary["posed_vertices"]).pixels.numpy()[0]
    assert seen_binary.sum() > 50
    assert not (seen_soft & (lookup[..., 0] >= 47.0)).any()           # no texel reads the unsure half
    left = lookup[..., 0] < 46.0
    np.testing.assert_array_equal(seen_soft[left], seen_binary[left])  # the confident half is untouched


def test_comparison_table_lists_every_run():
    entry = {"mean": 0.5, "median": 0.25, "count": 2}
    run = {"summary": {key: entry for _, key in clean_report.CLEAN_TABLE_ROWS}, "num_faces": 2,
           "leak_pooled_over_texels": {"leak_nearest": 0.0123}}
    table = clean_albedo.comparison_table([("before", run), ("after", run)])
    assert "| metric | before | after |" in table and "0.5 (0.25)" in table and "0.0123" in table
    assert len(table.strip().split("\n")) == 2 + len(clean_report.CLEAN_TABLE_ROWS) + 2


@pytest.mark.slow
def test_eval_script_end_to_end_on_one_photo(faces_dir, tmp_path):
    """scripts/eval_clean_albedo.py through the product on one held-out photo, then its --compare table."""
    import json
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parent.parent
    out = tmp_path / "clean.json"
    run = subprocess.run([sys.executable, str(repo / "scripts" / "eval_clean_albedo.py"), "--num_images", "1",
                          "--fit_steps", "3", "--landmark_steps", "30", "--json", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=repo)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["num_faces"] == 1 and result["masker"]["name"] == "parsing"
    (values,) = result["per_image"].values()
    assert 0.0 <= values["leak_nearest"] <= 1.0 and values["seen_texels"] > 1000
    assert 0.5 < values["coverage_face"] <= 1.0 and np.isfinite(values["labelled_face_psnr_db"])
    table = tmp_path / "table.md"
    run = subprocess.run([sys.executable, str(repo / "scripts" / "eval_clean_albedo.py"), "--compare",
                          f"one={out}", "--table_md", str(table)], capture_output=True, text=True, timeout=300, cwd=repo)
    assert run.returncode == 0 and "| metric | one |" in table.read_text(), run.stderr[-2000:]


def _upright_landmarks():
    """68 points of an upright face in a 100 x 100 crop: brows (17-26) on row 40 from x 30 to 70, chin at row 90."""
    lm = np.zeros((68, 2))
    lm[:, 0], lm[:, 1] = 50.0, 70.0
    lm[17:27, 0] = np.linspace(30, 70, 10)
    lm[17:27, 1] = 40.0
    lm[8] = (50.0, 90.0)
    return lm


def test_forehead_region_is_the_band_above_the_brows():
    region = clean_albedo.forehead_region((100, 100), _upright_landmarks(), height=0.4)   # rise 0.4 x 50 = 20 px
    rows, cols = np.nonzero(region)
    assert rows.min() == 20 and rows.max() == 40 and cols.min() == 30 and cols.max() == 70
    labels = np.full((100, 100), 1, np.uint8)
    assert clean_albedo.forehead_hair_share(labels, _upright_landmarks()) == 0.0
    labels[:30] = 13                                   # hair down to row 29: the upper part of the forehead
    share = clean_albedo.forehead_hair_share(labels, _upright_landmarks())
    band = clean_albedo.forehead_region(labels.shape, _upright_landmarks())
    assert share == pytest.approx((band & (np.arange(100)[:, None] < 30)).sum() / band.sum())
    assert 0.2 < share < 0.8
    labels[:] = 14                                     # a hat counts as hair
    assert clean_albedo.forehead_hair_share(labels, _upright_landmarks()) == 1.0


def test_pick_forehead_examples_takes_the_first_of_each_group_in_order():
    shares = {"a": 0.5, "b": 0.0, "c": 0.1, "d": 0.9, "e": 0.01, "f": 0.31, "g": 0.0}
    assert clean_albedo.pick_forehead_examples(shares, 2) == (["a", "d"], ["b", "e"])
    assert clean_albedo.pick_forehead_examples(shares, 5) == (["a", "d", "f"], ["b", "e", "g"])


def test_pooled_leak_weighs_faces_by_their_seen_texels():
    per_image = {"x": {"seen_texels": 300, "leak_nearest": 0.0, "leak_any_tap": 0.1, "leak_weighted": 0.0,
                       "nonface_nearest": 0.0},
                 "y": {"seen_texels": 100, "leak_nearest": 0.4, "leak_any_tap": 0.5, "leak_weighted": 0.2,
                       "nonface_nearest": 1.0}}
    pooled = clean_albedo.pooled_leak(per_image)
    assert pooled["leak_nearest"] == pytest.approx(0.1) and pooled["nonface_nearest"] == pytest.approx(0.25)
    assert pooled["leak_any_tap"] == pytest.approx((30 + 50) / 400)


def test_before_after_figure_layout():
    albedo = np.full((32, 32, 3), 0.5, np.float32)
    figure = clean_albedo.before_after_figure([[("a", albedo, albedo), ("b", albedo, albedo)]] * 3, cell=48)
    assert figure.dtype == np.uint8 and figure.shape[2] == 3
    assert 4 * 48 <= figure.shape[1] < 4 * 48 + 20 and 3 * 48 <= figure.shape[0] < 3 * 48 + 20


def test_baseline_summaries_copy_the_summary(tmp_path):
    import json
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"label": "old", "summary": {"leak_nearest": {"mean": 0.1}}, "num_faces": 3,
                                "leak_pooled_over_texels": {"leak_nearest": 0.09}, "per_image": {"x": {}}}))
    out = clean_albedo.baseline_summaries([f"before={path}"])
    assert out["before"]["summary"] == {"leak_nearest": {"mean": 0.1}} and "per_image" not in out["before"]
    assert out["before"]["num_faces"] == 3 and out["before"]["file"] == str(path)
    with pytest.raises(ValueError):
        clean_albedo.baseline_summaries([str(path)])
