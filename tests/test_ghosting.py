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


def test_ghost_against_the_unoccluded_reference():
    size = 8
    truth = np.full((1, size, size, 3), 0.5, np.float32)
    occluded = np.zeros((1, size, size, 1), np.float32)
    occluded[0, 2:5, 1:3] = 1.0
    batch = {"albedo_gt_uv": truth, "visibility_uv": np.ones((1, size, size, 1), np.float32)}
    chart = np.ones((size, size, 1), np.float32)
    reference = truth * 0.9                                 # the unoccluded photo's fit: off by a tone only
    ghosted = reference.copy()
    ghosted[0, 2:5, 5:7] = 0.1                              # the occluder's colour copied onto its mirror
    same = ghosting.mirror_metrics(batch, reference, chart, occluded, reference_uv=reference)
    bad = ghosting.mirror_metrics(batch, ghosted, chart, occluded, reference_uv=reference)
    assert same["ghost_vs_clean_rmse"][0] == pytest.approx(0.0, abs=1e-6)
    assert same["clean_ghost_rmse"][0] == pytest.approx(0.0, abs=1e-6)     # a scaled truth: no error
    assert bad["ghost_vs_clean_rmse"][0] > 0.2
    # The summary filters these by the ghost region's size (6 texels here).
    summary = ghosting.summarise({k: np.asarray(v) for k, v in bad.items()}, min_texels=7)
    assert summary["ghost_vs_clean_rmse"]["count"] == 0 and summary["clean_ghost_rmse"]["count"] == 0
    assert ghosting.summarise({k: np.asarray(v) for k, v in bad.items()}, min_texels=6)[
        "ghost_vs_clean_rmse"]["count"] == 1


def _fake_faces(size=16, count=2):
    """Synthetic-face dicts whose image is the albedo itself, one occluder on the left half."""
    rng = np.random.default_rng(1)
    faces = []
    for _ in range(count):
        truth = rng.uniform(0.4, 0.6, (size, size, 3)).astype(np.float32)
        clean = (truth * 255 + 0.5).astype(np.uint8)
        occluder = np.zeros((size, size, 1), np.float32)
        occluder[4:9, 2:5] = 1.0
        image = clean.copy()
        image[occluder[..., 0] > 0] = 10
        ones = np.ones((size, size, 1), np.float32)
        faces.append({"image": image, "image_clean": clean, "albedo_gt_uv": truth, "occluder_mask": occluder,
                      "proj_mask": ones, "face_mask": ones * (1 - occluder),
                      "landmarks": np.zeros((68, 2), np.float32)})
    return faces


def _fake_prior(images, landmarks, masks):
    """The identity unwrap: pixel (r, c) is texel (r, c); what the mask shows is seen."""
    import tensorflow as tf

    batch, size = images.shape[0], images.shape[1]
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    pixel_uv = np.broadcast_to(np.stack([cols, rows], -1), (batch, size, size, 2)).astype(np.float32)
    seen = tf.ones([batch, size, size, 1]) if masks is None else tf.convert_to_tensor(masks)
    return {"pixel_uv": tf.constant(pixel_uv), "proj_mask": tf.ones([batch, size, size, 1]), "visibility_uv": seen,
            "texture_uv": tf.convert_to_tensor(images), "prior_albedo_uv": tf.fill([batch, size, size, 3], 0.5)}


def _photo_variant(batch):
    seen = batch["visibility_uv"]
    return {"albedo_uv": batch["texture_uv"] * seen + batch["prior_albedo_uv"] * (1 - seen)}


def _ghosting_variant(batch):
    """Every texel takes the darker of itself and its mirror: an occluder comes back mirrored."""
    albedo = _photo_variant(batch)["albedo_uv"].numpy()
    return {"albedo_uv": np.minimum(albedo, albedo[:, :, ::-1])}


def test_evaluate_ghosting_tells_a_ghosting_method_from_a_clean_one():
    size = 16
    chart = np.ones((size, size, 1), np.float32)
    variants = {"photo": _photo_variant, "ghosting": _ghosting_variant}
    for mode in ("true", "none"):
        values, first = ghosting.evaluate_ghosting([_fake_faces(size)], _fake_prior, variants, chart, None, mode,
                                                   log=lambda *_: None)
        photo, ghost = values["photo"], values["ghosting"]
        assert len(photo["ghost_vs_clean_rmse"]) == 2 and first["image_clean"].shape == (2, size, size, 3)
        # The clean method's ghost region equals its unoccluded fit (up to the whole-chart scale alignment); the
        # ghosting method's does not when the occluder is taken as seen (with the true mask there is nothing dark
        # to mirror).
        assert max(photo["ghost_vs_clean_rmse"]) < 0.005
        if mode == "none":
            assert min(ghost["ghost_vs_clean_rmse"]) > 0.2
        else:
            assert max(ghost["ghost_vs_clean_rmse"]) < 0.05
        # The occluder's texels (rows 4-8, cols 2-4) dilated by one (rows 3-9, cols 1-5), mirrored: cols 10-14.
        assert photo["ghost_texels"] == [35.0, 35.0]


def test_mask_modes_give_the_prior_the_mask_a_masker_would():
    # 'true': the occluder masked out; 'leak': the projected face as the mask (the product's gate then runs on it,
    # as on a real photo whose parser missed the occluder); 'none': no mask at all.
    given = []

    def recording_prior(images, landmarks, masks):
        given.append(None if masks is None else np.asarray(masks))
        return _fake_prior(images, landmarks, masks)

    faces = _fake_faces()
    for mode in ("true", "leak", "none"):
        ghosting.prior_samples(recording_prior, faces, mode)
    true, leak, none = given
    np.testing.assert_array_equal(true, np.stack([f["face_mask"] for f in faces]))
    np.testing.assert_array_equal(leak, np.stack([f["proj_mask"] for f in faces]))
    assert none is None and float(leak.sum()) > float(true.sum())


def test_prior_samples_refuses_faces_without_a_clean_render():
    faces = _fake_faces()
    del faces[0]["image_clean"]
    with pytest.raises(ValueError, match="image_clean"):
        ghosting.prior_samples(_fake_prior, faces, "true", clean=True)
    with pytest.raises(ValueError, match="mask_mode"):
        ghosting.prior_samples(_fake_prior, faces, "sometimes")


@pytest.mark.slow
def test_evaluate_ghosting_protocol_end_to_end(tiny_model, tmp_path):
    """scripts/evaluate.py --protocol=ghosting through the product's prior and fit on two tiny synthetic faces."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    from tf_facetex.data.synthetic import SyntheticConfig, write_synthetic_dataset
    from tf_facetex.rendering import FaceRenderer

    config = SyntheticConfig(uv_size=64, occluder_prob=1.0, specular_prob=0.0)
    model_path = tmp_path / "tiny.npz"
    tiny_model.save(model_path)
    write_synthetic_dataset(tiny_model, config, tmp_path / "synth", 2, seed=3, batch_size=2, progress=False,
                            renderer=FaceRenderer(tiny_model, config.image_size, config.uv_size))
    out = tmp_path / "ghost.json"
    repo = pathlib.Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, str(repo / "scripts" / "evaluate.py"), "--protocol=ghosting",
                          f"--data={tmp_path / 'synth'}", f"--face_model={model_path}", "--fit_steps=3",
                          "--batch_size=2", f"--json={out}", f"--figure={tmp_path / 'ghost.png'}"],
                         capture_output=True, text=True, timeout=1200, cwd=repo,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"true", "none"} and result["num_faces"] == 2
    assert set(result["runs"]["none"]["summary"]) == {"prior", "uniform", "fit"}
    assert len(result["runs"]["true"]["per_image"]["fit"]["ghost_vs_clean_rmse"]) == 2
    assert result["command"].startswith("python") and (tmp_path / "ghost.png").stat().st_size > 1000
    assert "| variant |" in out.with_suffix(".md").read_text()


def test_protocol_names_are_checked_before_anything_runs():
    from tf_facetex.evaluation import variants

    ghosting.check_protocol_names(["prior", "fit", "net", "net+fit", "uniform", "visibility@1/0.02/1"],
                                  ["true", "none"])
    assert variants.parse_symmetry_variant("net+fit") == "net+fit"       # the shipped network, with its short fit
    assert variants.parse_symmetry_variant("visibility@1/0.02") == {
        "symmetry_weighting": "visibility", "symmetry_seen_weight": 1.0, "symmetry_seen_scale": 0.02,
        "symmetry_unseen_mirror_weight": 0.0}
    assert variants.parse_symmetry_variant("uniform")["symmetry_seen_weight"] == 0.0   # the paper's term
    for names, masks, match in ((["mirror"], ["true"], "unknown variant"), (["visibility@a"], ["true"], "numbers"),
                                (["fit"], ["maybe"], "mask modes")):
        with pytest.raises(ValueError, match=match):
            ghosting.check_protocol_names(names, masks)


def test_network_variants_refuse_data_of_another_uv_size():
    from tf_facetex.evaluation import variants

    with pytest.raises(ValueError, match="works at 128"):        # the shipped network is UV 128
        variants.symmetry_variant("net+fit", np.ones((64, 64, 1), np.float32), None)
