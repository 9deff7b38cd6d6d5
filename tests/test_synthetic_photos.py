"""The synthetic evaluation from image files (tf_facetex.evaluation.synthetic_photos) with stand-in finder and
reconstructor objects: what is counted, aligned and scored."""
import dataclasses

import numpy as np
import pytest

from tf_facetex.data.synthetic import SyntheticConfig, load_synthetic_face, write_synthetic_dataset
from tf_facetex.errors import NoFaceError
from tf_facetex.evaluation import synthetic_photos
from tf_facetex.rendering import FaceRenderer


@pytest.fixture(scope="module")
def synth_dir(tiny_model, tmp_path_factory):
    config = SyntheticConfig(image_size=96, uv_size=32, occluder_prob=0.0, specular_prob=0.0)
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(tiny_model, config, out, 3, seed=5, batch_size=3, progress=False,
                            renderer=FaceRenderer(tiny_model, 96, 32))
    return out


@dataclasses.dataclass
class _Result:
    albedo_uv: np.ndarray
    visibility_uv: np.ndarray
    metrics: dict


class _Reconstructor:
    """Returns each face's true albedo (looked up by its crop) scaled by 0.8: a perfect albedo up to scale."""

    def __init__(self, synth_dir, count):
        faces = [load_synthetic_face(synth_dir, i) for i in range(count)]
        self.truth = {face["image"].tobytes(): face["albedo_gt_uv"] for face in faces}
        self.uv_mask = np.ones((32, 32, 1), np.float32)
        self.calls = []

    def reconstruct(self, faces):
        self.calls.append(len(faces))
        return [_Result(0.8 * self.truth[face.image.tobytes()], np.ones((32, 32, 1), np.float32),
                        {"detailed_psnr_db": 30.0, "uv_seen_fraction": 0.5}) for face in faces]


class _Finder:
    """Finds every face but the second; its landmarks are the truth shifted by (3, 4) px through the inverse."""

    def __init__(self, synth_dir):
        self.synth_dir = synth_dir

    def from_image(self, image, name):
        index = int(name.rsplit("/", 1)[-1].split(".")[0])
        if index == 1:
            raise NoFaceError(f"{name}: no face")
        face = load_synthetic_face(self.synth_dir, index)
        inverse = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0]])   # crop -> file: a 3, 4 px shift
        return [dataclasses.make_dataclass("Face", ["image", "landmarks", "inverse", "detector"])(
            image=image, landmarks=face["landmarks"] - np.array([3.0, 4.0]), inverse=inverse, detector="hog")]


def test_both_paths_are_scored_and_a_missed_face_is_counted(synth_dir):
    reconstructor = _Reconstructor(synth_dir, 3)
    out = synthetic_photos.evaluate_from_images(synth_dir, _Finder(synth_dir), reconstructor, batch_size=2,
                                                log=lambda *_: None)
    assert out["found"] == [True, False, True] and out["no_face"] == ["000001"]
    assert out["num_reconstructed"] == {"true_landmarks": 3, "detected": 2}
    assert reconstructor.calls == [2, 1, 1, 1]           # batch 1: 2 true + 1 found; batch 2: 1 + 1
    true, detected = out["per_image"]["true_landmarks"], out["per_image"]["detected"]
    np.testing.assert_allclose(true["albedo_si_rmse"], 0.0, atol=1e-5)   # the scale is aligned away
    assert np.isnan(detected["albedo_si_rmse"][1]) and np.isfinite(detected["albedo_si_rmse"][2])
    assert detected["albedo_beats_flat"][0] == 1.0
    np.testing.assert_allclose(np.asarray(detected["landmark_error_px"])[[0, 2]], 0.0, atol=1e-5)
    summary = synthetic_photos.summarise(out["per_image"])
    assert summary["detected"]["albedo_si_rmse"]["count"] == 2 and summary["true_landmarks"]["albedo_si_rmse"][
        "count"] == 3
    assert summary["paired"]["true_landmarks"]["albedo_si_rmse"]["count"] == 2


def test_landmark_error_maps_back_through_the_inverse():
    face = dataclasses.make_dataclass("Face", ["landmarks", "inverse"])(
        landmarks=np.zeros((68, 2)), inverse=np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    truth = np.tile([1.0, 3.0], (68, 1))                 # back-mapped points are (1, 0): 3 px away
    assert synthetic_photos.landmark_error(face, truth) == pytest.approx(3.0)


def test_a_uv_size_mismatch_is_refused(synth_dir):
    face = load_synthetic_face(synth_dir, 0)
    result = _Result(np.zeros((16, 16, 3), np.float32), np.ones((16, 16, 1), np.float32),
                     {"detailed_psnr_db": 1.0, "uv_seen_fraction": 1.0})
    with pytest.raises(ValueError, match="uv_size"):
        synthetic_photos.score_results([result], [face["albedo_gt_uv"]], np.ones((16, 16, 1), np.float32))


def _aligned(transform, size=8):
    from tf_facetex.data.align import AlignedFace

    valid = np.ones((size, size), np.float32)
    valid[:, -1] = 0.0                                   # a padded column
    return AlignedFace(image=np.zeros((size, size, 3), np.uint8), landmarks=np.zeros((68, 2), np.float32),
                       transform=np.asarray(transform, np.float64), inverse=np.eye(2, 3), original_shape=(size, size),
                       valid=valid, mask=np.ones((size, size), np.float32))


def test_the_true_mask_is_warped_into_the_detected_crop_and_stays_binary():
    true_mask = np.zeros((8, 8), np.float32)
    true_mask[2:5, 1:4] = 1.0
    shifted = synthetic_photos.with_true_mask(_aligned([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]), true_mask)  # +2 x, +1 y
    expected = np.zeros((8, 8), np.float32)
    expected[3:6, 3:6] = 1.0
    np.testing.assert_array_equal(shifted.mask, expected)
    edge = np.zeros((8, 8), np.float32)
    edge[:, 5] = 1.0                                     # lands on the padded column
    assert synthetic_photos.with_true_mask(_aligned([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]), edge).mask.sum() == 0.0


def test_the_product_mask_replaces_the_true_one_within_the_valid_crop():
    calls = []

    def masker(image, landmarks):
        calls.append(image.shape)
        return np.full(image.shape[:2], 1.0, np.float32)

    out = synthetic_photos.with_product_mask(_aligned(np.eye(2, 3)), masker)
    assert calls == [(8, 8, 3)] and out.mask[:, :-1].min() == 1.0 and out.mask[:, -1].max() == 0.0


def test_the_crossed_paths_are_scored_when_asked(synth_dir, monkeypatch):
    monkeypatch.setattr(synthetic_photos, "with_true_mask", lambda face, mask: face)
    finder = _Finder(synth_dir)
    finder.face_masker = lambda: None
    monkeypatch.setattr(synthetic_photos, "with_product_mask", lambda face, masker: face)
    reconstructor = _Reconstructor(synth_dir, 3)
    out = synthetic_photos.evaluate_from_images(synth_dir, finder, reconstructor, batch_size=3,
                                                log=lambda *_: None, crossed=True)
    assert out["num_reconstructed"] == {"true_landmarks": 3, "detected": 2, "true_landmarks_product_mask": 3,
                                        "detected_true_mask": 2}
    assert reconstructor.calls == [3, 2, 3, 2]
    crossed = out["per_image"]["detected_true_mask"]
    assert np.isnan(crossed["albedo_si_rmse"][1]) and np.isfinite(crossed["albedo_si_rmse"][0])
    summary = synthetic_photos.summarise(out["per_image"])
    assert summary["paired"]["true_landmarks_product_mask"]["albedo_si_rmse"]["count"] == 2
