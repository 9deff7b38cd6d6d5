"""Robust detection: exposure retry, CNN fallback, padding, known boxes, box files, same-subject fallback,
grayscale input (detection side and the grey albedo / light)."""
import json

import cv2
import numpy as np
import pytest
import skimage.data

from tf_facetex.data import detect, known_faces
from tf_facetex.data.align import FacePreprocessor, is_grayscale
from tf_facetex.errors import FaceTexError, NoFaceError


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def reference(astronaut):
    return detect.FaceDetector("hog", exposure_retry=False).detect(astronaut, name="astronaut")[0]


def _side_lit_dark(image, gain=0.12):
    """The photo under a dim light from the right: black on the left, ``gain`` of the original on the right."""
    ramp = np.clip(np.linspace(-0.2, 1.0, image.shape[1]), 0, 1)[None, :, None]
    return np.clip(image * ramp * gain, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- pure helpers
def test_exposure_normalised_gamma():
    flat = np.full((8, 8, 3), 40, np.uint8)
    out = detect.exposure_normalised(flat)
    assert abs(out.mean() / 255.0 - detect.EXPOSURE_TARGET_MEAN) < 0.003   # a flat image lands exactly
    ramp = np.tile(np.arange(0, 100, dtype=np.uint8)[None, :, None], (4, 1, 3))
    brighter = detect.exposure_normalised(ramp).astype(int)
    assert np.all(np.diff(brighter[0, :, 0]) >= 0) and np.all(brighter >= ramp)    # monotone, brighter
    assert detect.exposure_normalised(np.full((8, 8, 3), 115, np.uint8)) is None    # already at the target


def test_cnn_box_mapping_arithmetic():
    dx, dy, sw, sh = detect.CNN_TO_HOG_BOX
    box = detect.cnn_box_to_hog_box([100, 200, 200, 300])    # width = height = 100, centre (150, 250)
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, [150 + 100 * dx, 250 + 100 * dy], atol=1e-3)
    np.testing.assert_allclose(box[2:] - box[:2], [100 * sw, 100 * sh], atol=1e-3)


def test_box_iou_and_parse_box():
    assert detect.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    assert detect.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert detect.box_iou([0, 0, 1, 1], [5, 5, 6, 6]) == 0.0
    np.testing.assert_array_equal(known_faces.parse_box("1,2,30,40"), [1, 2, 30, 40])
    for bad in ("1,2,3", "a,b,c,d", "10,0,5,20", [0, 0, 0, 0]):
        with pytest.raises(FaceTexError, match="x0,y0,x1,y1"):
            known_faces.parse_box(bad)


def test_lighting_quality_prefers_bright_even_light(astronaut, reference):
    even = known_faces.lighting_quality(astronaut, reference.box)
    assert known_faces.lighting_quality(_side_lit_dark(astronaut, 1.0), reference.box) < even
    assert known_faces.lighting_quality((astronaut * 0.3).astype(np.uint8), reference.box) < even


def test_is_grayscale_tolerates_jpeg_but_not_colour(astronaut):
    from tf_facetex.data.images import decode_image, encode_jpeg
    grey = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    assert is_grayscale(grey) and is_grayscale(decode_image(encode_jpeg(grey), name="grey.jpg"))
    assert not is_grayscale(astronaut)


# --------------------------------------------------------------------------------------------- detection
def test_dark_side_lit_face_found_on_exposure_normalised_copy(astronaut, reference):
    dark = _side_lit_dark(astronaut)
    with pytest.raises(NoFaceError):
        detect.FaceDetector("hog", exposure_retry=False, max_upsample=0).detect(dark, name="dark")
    face = detect.FaceDetector("auto", max_upsample=0).detect(dark, name="dark")[0]
    assert face.detector == "hog+exposure"
    assert np.linalg.norm(face.landmarks - reference.landmarks, axis=1).mean() < 3.0


@pytest.mark.parametrize("pad_mode", ["replicate", "reflect"])
def test_tight_crop_is_padded_and_mapped_back(astronaut, reference, pad_mode):
    x0, y0, x1, y1 = reference.box.astype(int)
    tight = np.ascontiguousarray(astronaut[y0 + 10:y1 + 5, x0:x1])
    with pytest.raises(NoFaceError):
        detect.FaceDetector("hog", pad_fraction=0.0, max_upsample=0, exposure_retry=False).detect(tight)
    face = detect.FaceDetector("hog", pad_mode=pad_mode, max_upsample=0, exposure_retry=False).detect(tight)[0]
    assert np.linalg.norm(face.landmarks + [x0, y0 + 10] - reference.landmarks, axis=1).mean() < 2.0


def test_face_in_given_box(astronaut, reference):
    detector = detect.FaceDetector("hog")
    loose = reference.box + np.array([-20, -25, 15, 30], np.float32)      # a user's box, drawn looser
    face = detector.face_in_box(astronaut, loose)
    assert face.detector == "box+hog"
    assert np.linalg.norm(face.landmarks - reference.landmarks, axis=1).mean() < 1.0
    # where the detector finds nothing (noise), the box itself is used
    noise = np.random.default_rng(0).integers(0, 255, astronaut.shape, dtype=np.uint8)
    face = detector.face_in_box(noise, reference.box)
    assert face.detector == "box" and face.landmarks.shape == (68, 2)
    with pytest.raises(FaceTexError, match="outside"):
        detector.face_in_box(astronaut, [600, 600, 700, 700])


def test_box_file_formats_and_lookup(tmp_path):
    (tmp_path / "photos").mkdir()
    json_file = tmp_path / "boxes.json"
    json_file.write_text(json.dumps({"photos/a.jpg": [1, 2, 30, 40], "b.png": [5, 5, 50, 50]}))
    tsv_file = tmp_path / "boxes.tsv"
    tsv_file.write_text("path\tx0\ty0\tx1\ty1\n# comment\nphotos/a.jpg\t1\t2\t30\t40\n")
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("photos/a.jpg,1,2,30,40\n")
    for path in (json_file, tsv_file, csv_file):
        lookup = known_faces.BoxLookup.from_file(path)
        np.testing.assert_array_equal(lookup.get(str(tmp_path / "photos" / "a.jpg")), [1, 2, 30, 40])  # resolved
        np.testing.assert_array_equal(lookup.get("elsewhere/a.jpg"), [1, 2, 30, 40])                  # by name
        assert lookup.get("c.jpg") is None
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.jpg\t1\t2\t30\t40\nb.jpg\t1\t2\n")
    with pytest.raises(FaceTexError, match=r"bad.tsv:2"):
        known_faces.load_box_file(bad)
    with pytest.raises(FaceTexError, match="cannot read"):
        known_faces.load_box_file(tmp_path / "missing.json")


def test_guided_detector_uses_the_given_box(astronaut, reference):
    guided = known_faces.build_detector("hog", face_box="179,83,266,170")
    face = guided.detect(astronaut, name="a.png")[0]
    assert face.detector.startswith("box")
    assert np.linalg.norm(face.landmarks - reference.landmarks, axis=1).mean() < 1.0


@pytest.mark.parametrize("mode", ["landmarks", "box"])
def test_group_fallback_borrows_from_the_best_lit_photo(tmp_path, astronaut, reference, mode):
    from tf_facetex.data.images import load_image
    from tf_facetex.io_utils import write_image
    write_image(tmp_path / "bright.png", astronaut)
    write_image(tmp_path / "dim.png", (astronaut * 0.6).astype(np.uint8))
    noise = np.random.default_rng(1).integers(0, 255, astronaut.shape, dtype=np.uint8)
    write_image(tmp_path / "lost.png", noise)
    guided = known_faces.build_detector("hog", group_fallback=mode)
    face = guided.detect(load_image(tmp_path / "lost.png"), name=str(tmp_path / "lost.png"))[0]
    assert face.detector == f"group:bright.png:{mode}"
    if mode == "landmarks":
        np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=1e-4)
    else:
        assert face.landmarks.shape == (68, 2)


def test_group_fallback_without_donor_is_a_clear_error(tmp_path):
    from tf_facetex.io_utils import write_image
    noise = np.random.default_rng(2).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", noise)
    write_image(tmp_path / "b.png", noise[::-1])
    guided = known_faces.build_detector("hog", group_fallback="landmarks")
    with pytest.raises(NoFaceError, match="no other photo of its set has one"):
        guided.detect(noise, name=str(tmp_path / "a.png"))


def test_preprocessor_records_detector_and_grayscale(astronaut):
    grey = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)
    preprocessor = FacePreprocessor(masker=None)
    colour_face = preprocessor.from_image(astronaut, name="a")[0]
    grey_face = preprocessor.from_image(_side_lit_dark(grey), name="g")[0]
    assert colour_face.detector == "hog" and not colour_face.grayscale
    assert grey_face.detector == "hog+exposure" and grey_face.grayscale


@pytest.mark.slow
def test_cnn_fallback_finds_a_strongly_rotated_face(astronaut, reference):
    """HOG's frontal model misses a face rolled by 55 degrees; the MMOD CNN (the fallback of 'auto') finds it."""
    rotation = cv2.getRotationMatrix2D((222, 126), 55, 1.0)
    rotated = cv2.warpAffine(astronaut, rotation, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    with pytest.raises(NoFaceError):
        detect.FaceDetector("hog").detect(rotated, name="rotated")
    face = detect.FaceDetector("auto").detect(rotated, name="rotated")[0]
    assert face.detector.startswith("cnn")
    # the box holds the rotated face (dlib's landmark model itself is not made for a 55 degree roll)
    expected = cv2.transform(reference.landmarks[None].astype(np.float64), rotation)[0]
    inside = (expected[:, 0] >= face.box[0]) & (expected[:, 0] <= face.box[2]) & \
             (expected[:, 1] >= face.box[1]) & (expected[:, 1] <= face.box[3])
    assert inside[27:68].all()   # nose, eyes, mouth


# ------------------------------------------------------------------------------------------ grey albedo
def test_grey_where_averages_albedo_and_light_channels_of_grey_items_only():
    from tf_facetex.grayscale import grey_where
    rng = np.random.default_rng(3)
    albedo = rng.uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    light = rng.normal(size=(2, 4, 4, 27)).astype(np.float32)
    gamma = rng.normal(size=(2, 27)).astype(np.float32)
    grey_albedo, grey_light, grey_gamma = [np.asarray(v) for v in grey_where([True, False], albedo, light, gamma)]
    np.testing.assert_allclose(grey_albedo[0], np.repeat(albedo[0].mean(-1, keepdims=True), 3, -1), atol=1e-6)
    np.testing.assert_allclose(grey_albedo[1], albedo[1])
    blocks = light[0].reshape(4, 4, 3, 9).mean(axis=2)
    for c in range(3):
        np.testing.assert_allclose(grey_light[0][..., 9 * c:9 * c + 9], blocks, atol=1e-6)
    np.testing.assert_allclose(grey_light[1], light[1])
    np.testing.assert_allclose(grey_gamma[0, :9], gamma[0].reshape(3, 9).mean(0), atol=1e-6)
    np.testing.assert_allclose(grey_gamma[1], gamma[1])


def test_group_fallback_reuses_the_donor_scan(tmp_path, astronaut, reference):
    from tf_facetex.data.images import load_image
    from tf_facetex.io_utils import write_image
    write_image(tmp_path / "a.png", astronaut)
    write_image(tmp_path / "b.png", np.zeros_like(astronaut))
    guided = known_faces.build_detector("hog", group_fallback="landmarks")
    calls = []
    original = guided.detector.detect
    guided.detector.detect = lambda image, all_faces=False, name="": calls.append(name) or original(image, all_faces, name)
    guided.detect(load_image(tmp_path / "b.png"), name=str(tmp_path / "b.png"))     # scans a.png for a donor
    face = guided.detect(load_image(tmp_path / "a.png"), name=str(tmp_path / "a.png"))[0]
    assert calls == [str(tmp_path / "b.png"), str(tmp_path / "a.png")]              # a.png detected once
    np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=1e-4)
