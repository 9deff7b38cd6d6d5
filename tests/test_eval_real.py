"""Evaluation on real photos: metric code on hand-made masks / landmarks, the parsing-net masker, and the
eval scripts end to end on a few images of ../shared/faces (skipped with a reason when it is absent)."""
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_facetex.evaluation import real_photos

REPO = pathlib.Path(__file__).resolve().parent.parent


def _square(shape, x0, y0, size):
    mask = np.zeros(shape, np.float32)
    mask[y0:y0 + size, x0:x0 + size] = 1.0
    return mask


# ------------------------------------------------------------------------------------------ mask metrics
def test_mask_scores_of_shifted_squares():
    # two 10 x 10 squares, shifted by 5 px: intersection 50, union 150
    pred, true = _square((40, 40), 5, 5, 10), _square((40, 40), 10, 5, 10)
    scores = real_photos.mask_scores(pred, true)
    assert scores["iou"] == pytest.approx(1.0 / 3.0)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (50, 50, 50)


def test_mask_scores_nested_and_valid_area():
    inner, outer = _square((40, 40), 10, 10, 10), _square((40, 40), 5, 5, 20)
    scores = real_photos.mask_scores(inner, outer)  # prediction inside the target: all precise, 1/4 recalled
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["recall"] == pytest.approx(0.25)
    assert scores["iou"] == pytest.approx(0.25)
    valid = np.zeros((40, 40), np.float32)
    valid[:, :20] = 1.0  # only the left half counts: inner 10 x 10 vs outer 15 x 20
    assert real_photos.mask_scores(inner, outer, valid)["iou"] == pytest.approx(100.0 / 300.0)


def test_mask_scores_empty_conventions():
    empty, square = np.zeros((8, 8)), _square((8, 8), 2, 2, 3)
    assert real_photos.mask_scores(empty, empty)["iou"] == 1.0
    missed = real_photos.mask_scores(empty, square)
    assert (missed["iou"], missed["precision"], missed["recall"]) == (0.0, 1.0, 0.0)
    invented = real_photos.mask_scores(square, empty)
    assert (invented["iou"], invented["precision"], invented["recall"]) == (0.0, 0.0, 1.0)


def test_error_overlay_colours():
    pred, true = _square((20, 20), 0, 0, 10), _square((20, 20), 5, 0, 10)
    valid = np.ones((20, 20))
    valid[19] = 0
    overlay = real_photos.error_overlay(pred, true, valid)
    assert overlay.shape == (20, 20, 3) and overlay.dtype == np.uint8
    assert tuple(overlay[0, 7]) == (235, 235, 235)   # both
    assert tuple(overlay[0, 2]) == (230, 40, 40)     # false positive: red
    assert tuple(overlay[0, 12]) == (40, 90, 240)    # false negative: blue
    assert tuple(overlay[19, 7]) == (0, 0, 0)        # outside the valid area


def test_distribution_and_histogram():
    stats = real_photos.distribution([0.5, 1.0, 0.0, 0.75])
    assert stats["count"] == 4 and stats["mean"] == pytest.approx(0.5625) and stats["median"] == pytest.approx(0.625)
    assert stats["min"] == 0.0 and stats["max"] == 1.0
    assert real_photos.distribution([])["count"] == 0
    hist = real_photos.histogram([0.1, 0.15, 0.9], [0.0, 0.5, 1.0])
    assert hist["counts"] == [2, 1]


def test_heldout_split_is_last_by_name():
    files = [f"{k:03d}.jpg" for k in range(10)][::-1]
    train, test = real_photos.heldout_split(files, 3)
    assert test == ["007.jpg", "008.jpg", "009.jpg"] and len(train) == 7 and "006.jpg" in train


# ------------------------------------------------------------------------------------------ landmarks, pose
def test_nme_of_known_offset_is_offset_over_box_size():
    rng = np.random.default_rng(0)
    truth = rng.uniform([0, 0], [100, 64], size=(68, 2))
    truth[0], truth[1] = [0, 0], [100, 64]          # box exactly 100 x 64: sqrt(w h) = 80
    predicted = truth + np.array([3.0, 4.0])        # every point 5 px off
    assert real_photos.landmark_box_size(truth) == pytest.approx(80.0)
    assert real_photos.nme(predicted, truth) == pytest.approx(5.0 / 80.0)
    # inner points: same normaliser (the 68-point box), only those points averaged
    predicted_inner = truth.copy()
    predicted_inner[17:] += np.array([6.0, 8.0])
    assert real_photos.nme(predicted_inner, truth, points=real_photos.INNER_POINTS) == pytest.approx(10.0 / 80.0)
    assert real_photos.nme(predicted_inner, truth) == pytest.approx(10.0 * 51 / 68 / 80.0)
    batch = real_photos.nme(np.stack([predicted, truth]), np.stack([truth, truth]))
    assert batch.shape == (2,) and batch[1] == 0.0


@pytest.mark.parametrize("degrees,expected", [(0.0, "0-30"), (29.9, "0-30"), (-30.0, "30-60"), (59.0, "30-60"),
                                              (-75.0, "60-90"), (120.0, "60-90")])
def test_yaw_bins(degrees, expected):
    assert real_photos.yaw_bin(math.radians(degrees)) == expected


def test_rotation_from_euler_matches_camera():
    from tf_facetex import camera
    angles = np.array([[0.3, -0.5, 0.2], [-0.1, 1.2, -0.7]])
    np.testing.assert_allclose(real_photos.rotation_from_euler(angles), camera.rotation_matrix(angles).numpy(),
                               atol=1e-6)


def test_pose_in_photo_restores_the_roll_removed_by_alignment():
    from tf_facetex.data.align import estimate_similarity
    roll = math.radians(20.0)
    frontal = np.array([[80.0, 80.0], [144.0, 80.0], [112.0, 116.0], [85.0, 151.0], [137.0, 151.0]])
    # the head rolled by +roll (counter-clockwise on screen, camera convention, world y up)
    world = np.stack([frontal[:, 0] - 112.0, 112.0 - frontal[:, 1]], axis=1)
    c, s = math.cos(roll), math.sin(roll)
    rolled = world @ np.array([[c, -s], [s, c]]).T
    photo = np.stack([rolled[:, 0] + 300.0, 200.0 - rolled[:, 1]], axis=1)
    transform = estimate_similarity(photo, frontal)    # the alignment undoes the roll
    assert real_photos.crop_roll(transform) == pytest.approx(-roll, abs=1e-6)
    pose = real_photos.pose_in_photo(np.array([0.1, 0.2, 0.0]), transform)
    assert pose[2] == pytest.approx(roll, abs=1e-3)
    np.testing.assert_allclose(real_photos.pose_in_photo(np.array([0.1, 0.2, 0.3]), np.eye(2, 3)), [0.1, 0.2, 0.3],
                               atol=1e-9)


def test_pose_sign_convention_finds_flipped_angles():
    rng = np.random.default_rng(1)
    reference = rng.uniform(-1.0, 1.0, size=(50, 3))
    fitted = reference * np.array([1.0, -1.0, -1.0]) + rng.normal(0.0, 0.02, size=(50, 3))
    convention = real_photos.pose_sign_convention(fitted, reference)
    assert convention["signs"] == [1, -1, -1]
    assert convention["correlation"][1] < -0.9


# ------------------------------------------------------------------------------------------ parsing net
@pytest.fixture(scope="module")
def tiny_parsing_weights(tmp_path_factory):
    """An untrained, tiny U-Net saved like the training script saves it."""
    from tf_facetex.data import parsing_net
    path = tmp_path_factory.mktemp("parsing") / "tiny.keras"
    parsing_net.build_parsing_unet(input_size=32, base_filters=4, depth=2).save(path)
    return path


def test_parsing_masker_shapes_and_values(tiny_parsing_weights):
    from tf_facetex.data import parsing_net
    masker = parsing_net.ParsingNetMasker(tiny_parsing_weights)
    assert masker.input_size == 32
    crop = np.random.default_rng(0).integers(0, 255, size=(224, 224, 3), dtype=np.uint8)
    mask = masker(crop, np.zeros((68, 2)))
    assert mask.shape == (224, 224) and mask.dtype == np.float32
    probs = masker.probabilities(np.stack([crop, crop]))
    assert probs.shape == (2, 224, 224) and np.all((probs >= 0) & (probs <= 1))
    # the soft mask: the probability where it exceeds the threshold, 0 elsewhere; binary on request
    np.testing.assert_allclose(mask, np.where(probs[0] > 0.5, probs[0], 0.0), atol=1e-6)
    binary = parsing_net.ParsingNetMasker(tiny_parsing_weights, soft=False)(crop)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    np.testing.assert_array_equal(binary > 0.5, mask > 0.5)


def test_resample_crops_resize_keeps_constant_and_centres():
    from tf_facetex.data import parsing_net
    image = np.full((1, 224, 224, 1), 7.0, np.float32)
    small = parsing_net.resample_crops(image, parsing_net.base_transform(224, 128)[None], 128).numpy()
    np.testing.assert_allclose(small, 7.0, atol=1e-4)  # no black border leaks in from outside
    ramp = np.tile(np.arange(224, dtype=np.float32)[None, :, None], (224, 1, 1))[None]
    small = parsing_net.resample_crops(ramp, parsing_net.base_transform(224, 112)[None], 112).numpy()
    np.testing.assert_allclose(small[0, 0, :5, 0], [0.5, 2.5, 4.5, 6.5, 8.5], atol=1e-4)  # (x + 0.5) * 2 - 0.5


def test_masker_from_name_falls_back_without_default_weights(tmp_path, monkeypatch):
    from tf_facetex.data import masks, parsing_net
    monkeypatch.delenv("TF_FACETEX_PARSING_NET", raising=False)
    monkeypatch.setattr(parsing_net, "default_weights_path", lambda: tmp_path / "missing.keras")
    monkeypatch.setattr(parsing_net.paths, "parsing_net_weights", lambda: tmp_path / "missing.keras")
    lines = []
    masker = parsing_net.masker_from_name("parsing", log=lines.append)
    assert isinstance(masker, masks.LandmarkSkinMasker)
    assert len(lines) == 1 and "WARNING" in lines[0] and "not found" in lines[0] and "LandmarkSkinMasker" in lines[0]
    # a path asked for explicitly is an error, not a silent substitute
    from tf_facetex.errors import AssetError
    with pytest.raises(AssetError, match="not found"):
        parsing_net.masker_from_name("parsing", tmp_path / "other.keras", log=lines.append)
    assert isinstance(parsing_net.masker_from_name("hull"), masks.LandmarkHullMasker)
    with pytest.raises(ValueError):
        parsing_net.masker_from_name("bogus")


def test_parsing_masker_missing_file_is_asset_error(tmp_path):
    from tf_facetex.data import parsing_net
    from tf_facetex.errors import AssetError
    with pytest.raises(AssetError, match="not found"):
        parsing_net.ParsingNetMasker(tmp_path / "none.keras")


# ------------------------------------------------------------------------------------------ real photos
def test_celebamask_crops_and_skin_masker(faces_dir):
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.masks import LandmarkSkinMasker
    files = real_photos.celebamask_files(faces_dir / "celebamask_hq_mini" / "train")
    assert len(files) == 1000
    detector, masker = FaceDetector(), LandmarkSkinMasker()
    ious = []
    for path in real_photos.heldout_split(files)[1][:5]:
        result = real_photos.celebamask_crop(path, detector)
        if result is None:
            continue
        aligned, target = result
        assert target.shape == (224, 224) and set(np.unique(target)) <= {0, 1}
        # the warped labels cover the face around the nose tip (template point (112, 116))
        assert target[116, 112] == 1
        ious.append(real_photos.mask_scores(masker(aligned.image, aligned.landmarks), target, aligned.valid)["iou"])
    assert len(ious) >= 4 and np.mean(ious) > 0.75


def test_aflw2000_annotations_and_dlib_nme(faces_dir):
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import NoFaceError
    files = sorted((faces_dir / "aflw2000_3d").glob("*.jpg"))[:5]
    detector, nmes = FaceDetector(), []
    for path in files:
        truth = real_photos.load_aflw2000(path.with_suffix(".mat"))
        assert truth["landmarks"].shape == (68, 2) and truth["pose"].shape == (3,)
        assert np.all(truth["landmarks"] > -50) and np.all(truth["landmarks"] < 500)  # pixels of a 450 px image
        if abs(math.degrees(truth["pose"][1])) > 30:
            continue
        try:
            face = detector.detect(load_image(path))[0]
        except NoFaceError:
            continue
        nmes.append(real_photos.nme(face.landmarks, truth["landmarks"], points=real_photos.INNER_POINTS))
    assert nmes and max(nmes) < 0.08  # near-frontal faces: dlib's inner points within a few percent


def _run_script(name, *args):
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args, "--noprogress"],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_eval_masks_script_end_to_end(faces_dir, tmp_path, tiny_parsing_weights):
    out, png = tmp_path / "masks.json", tmp_path / "worst.png"
    _run_script("eval_masks.py", "--json", str(out), "--num_images", "3", "--parsing_weights",
                str(tiny_parsing_weights), "--worst_png", str(png), "--num_worst", "1")
    result = json.loads(out.read_text())
    assert result["num_files"] == 3
    assert set(result["maskers"]) == {"skin", "hull", "parsing"}
    skin = result["maskers"]["skin"]
    for key in ("iou", "precision", "recall"):
        assert {"mean", "median", "p10", "p90", "min", "count"} <= set(skin[key])
    assert skin["num_images"] + len(result["no_face"]) == 3
    assert len(skin["per_image"]) == skin["num_images"] and "iou_histogram" in skin
    assert "vs_skin" in result["maskers"]["parsing"]
    assert png.is_file() and png.stat().st_size < 1_000_000


def test_eval_landmarks_script_end_to_end(faces_dir, ict_model, tmp_path):
    out = tmp_path / "landmarks.json"
    _run_script("eval_landmarks.py", "--json", str(out), "--num_images", "3", "--fit_steps", "20")
    result = json.loads(out.read_text())
    assert set(result["by_abs_yaw_deg"]) == {"0-30", "30-60", "60-90"}
    assert result["overall"]["num_images"] == 3
    for stats in result["by_abs_yaw_deg"].values():
        assert {"num_images", "num_failures", "failure_rate", "dlib", "fit", "pose"} <= set(stats)
        assert {"nme68", "nme51"} <= set(stats["dlib"])
    assert {"signs", "mae_plus", "mae_minus"} <= set(result["pose_sign_convention"])
    assert {"pitch", "yaw", "roll"} <= set(result["overall"]["pose"]["mae_deg"])
    assert len(result["per_image"]) == 3


# ------------------------------------------------------------------------------------------ slow: full runs
@pytest.mark.slow
def test_train_parsing_net_smoke(faces_dir, tmp_path):
    out = tmp_path / "net.keras"
    _run_script("train_parsing_net.py", "--output", str(out), "--cache", str(tmp_path / "crops.npz"),
                "--num_train", "12", "--num_val", "4", "--epochs", "1", "--input_size", "32", "--base_filters", "4",
                "--depth", "2", "--batch_size", "4", "--curves_png", str(tmp_path / "curves.png"))
    assert out.is_file() and (tmp_path / "curves.png").is_file()
    history = json.loads((tmp_path / "net.history.json").read_text())
    assert history["epochs_run"] == 1 and history["num_val"] == 4


@pytest.mark.slow
def test_substitute_mask_meets_target_on_heldout(faces_dir, tmp_path):
    out = tmp_path / "masks.json"
    _run_script("eval_masks.py", "--json", str(out), "--maskers", "skin")
    result = json.loads(out.read_text())
    assert result["maskers"]["skin"]["iou"]["mean"] >= 0.85
