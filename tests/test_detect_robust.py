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


# ------------------------------------------------------------------- second landmark model and shape check
from tf_facetex.data import landmark_net as lnet          # noqa: E402
from tf_facetex.data import landmarks                     # noqa: E402


def _similarity(points, angle_deg, scale, shift):
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return (np.asarray(points, np.float64) @ (scale * np.array([[c, -s], [s, c]])).T + shift).astype(np.float32)


def test_flip_order_is_a_mirror_involution():
    order = lnet.FLIP_ORDER
    assert sorted(order) == list(range(68)) and np.array_equal(order[order], np.arange(68))
    # a symmetric shape (mean of a set and its mirror image) is its own mirror image
    points = np.random.default_rng(0).uniform(0.2, 0.8, (68, 2)).astype(np.float32)
    symmetric = 0.5 * (points + lnet.flip_points(points))
    np.testing.assert_allclose(lnet.flip_points(symmetric), symmetric, atol=1e-6)
    np.testing.assert_allclose(lnet.flip_points(lnet.flip_points(points)), points, atol=1e-6)
    # the eye on the image left (36-41) becomes the eye on the image right (42-47)
    flipped = lnet.flip_points(points)
    np.testing.assert_allclose(flipped[42:48].mean(0)[0], 1 - points[36:42].mean(0)[0], atol=1e-6)


def test_crop_transform_geometry_round_trip():
    box = [40.0, 60.0, 140.0, 170.0]          # centre (90, 115), mean side 105
    transform = lnet.crop_transform(box, 112, 1.6)
    centre = lnet.to_crop_units([[90.0, 115.0]], transform, 112)[0]
    np.testing.assert_allclose(centre, [0.5, 0.5], atol=1e-6)               # the box centre is the crop centre
    np.testing.assert_allclose(transform[0, 0], 112 / (1.6 * 105), rtol=1e-9)
    points = np.random.default_rng(1).uniform(0, 200, (68, 2))
    back = lnet.from_crop_units(lnet.to_crop_units(points, transform, 112), transform, 112)
    np.testing.assert_allclose(back, points, atol=1e-3)
    with pytest.raises(ValueError, match="empty"):
        lnet.crop_transform([5, 5, 5, 5])


def test_grey_crop_samples_exact_pixels_and_standardises():
    image = np.zeros((64, 64, 3), np.uint8)
    image[30, 20] = 255                                         # one bright pixel at x = 20, y = 30
    box = [20 - 10.5, 30 - 10.5, 20 + 10.5, 30 + 10.5]          # centred on it, side 21
    crop = lnet.grey_crop(image, lnet.crop_transform(box, 21, 1.0), 21)   # scale 1: pixels sampled exactly
    assert np.unravel_index(np.argmax(crop), crop.shape) == (10, 10)
    assert len(np.unique(np.round(crop, 4))) == 2                          # one bright pixel, the rest equal
    assert abs(crop.mean()) < 1e-5 and abs(crop.std() - 1.0) < 1e-4        # standardised per crop
    np.testing.assert_allclose(lnet.standardise(np.full((8, 8), 7.0)), 0.0)


def test_box_from_landmarks_is_similarity_equivariant():
    points = np.random.default_rng(2).uniform(50, 150, (68, 2)).astype(np.float32)
    box = lnet.box_from_landmarks(points)
    moved = lnet.box_from_landmarks(points * 2.0 + [10.0, -5.0])
    np.testing.assert_allclose(moved, box * 2.0 + [10.0, -5.0, 10.0, -5.0], rtol=1e-5, atol=1e-3)
    _, dy, sw, sh = lnet.DEFAULT_INNER_TO_BOX
    inner = points[17:]
    np.testing.assert_allclose(box[2] - box[0], sw * np.ptp(inner[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(box[3] - box[1], sh * np.ptp(inner[:, 1]), rtol=1e-5)


def test_five_point_distance_is_similarity_invariant_and_counts_a_lost_eye():
    points = np.random.default_rng(3).uniform(50, 150, (68, 2)).astype(np.float32)
    points[36:42] -= [40, 0]
    points[42:48] += [40, 0]                                         # eye centres well apart
    assert landmarks.five_point_distance(points, points) == 0.0
    moved = _similarity(points, 25.0, 1.7, [30.0, -12.0])
    assert landmarks.five_point_distance(moved, moved.copy()) < 1e-6
    iod = np.linalg.norm(landmarks.five_points(points)[0] - landmarks.five_points(points)[1])
    lost = points.copy()
    lost[36:42] += [0.0, 0.5 * iod]                                  # one eye 0.5 IOD down: 1 of 5 points moved
    np.testing.assert_allclose(landmarks.five_point_distance(lost, points), 0.5 / 5, rtol=1e-4)
    np.testing.assert_allclose(landmarks.five_point_distance(_similarity(lost, 25.0, 1.7, [30.0, -12.0]), moved),
                               0.5 / 5, rtol=1e-4)                  # the same in any frame


def test_missing_landmark_net_is_a_clear_error_and_optional(tmp_path):
    from tf_facetex.errors import AssetError
    with pytest.raises(AssetError, match="landmark-net files not found"):
        lnet.LandmarkNet(tmp_path)
    assert lnet.load_shipped(tmp_path) is None
    detector = detect.FaceDetector("hog", landmark_net=None)
    assert detector.landmark_net is None and "landmark network" not in detector.describe()
    with pytest.raises(ValueError, match="landmark_net"):
        detect.FaceDetector("hog", landmark_net="other")


def test_unmirror_maps_a_box_back():
    face = detect.Face(box=np.array([10, 20, 50, 70], np.float32), landmarks=np.zeros((68, 2), np.float32), score=1.0)
    np.testing.assert_allclose(detect._unmirror(face, 100).box, [49, 20, 89, 70])


def test_make_synthetic_command_lists_only_changed_knobs():
    import dataclasses

    from tf_facetex.data.synthetic import SyntheticConfig
    from tf_facetex.evaluation import detection
    config = dataclasses.asdict(SyntheticConfig())
    config["directional_prob"] = 1.0
    command = detection.make_synthetic_command({"count": 100, "seed": 7, "config": config})
    assert command == "scripts/make_synthetic.py --out FOLDER --n 100 --seed 7 --directional_prob 1"
    assert detection.make_synthetic_command({}) is None


# ------------------------------------------------------------ the shipped landmark network inside the detector
@pytest.fixture(scope="module")
def shipped_net():
    net = lnet.load_shipped()
    assert net is not None, f"the landmark network must ship in {lnet.default_dir()}"
    return net


def _five_point_error(points, reference):
    from tf_facetex.evaluation.detection import five_point_nme
    from tf_facetex.data.align import five_points
    return five_point_nme(points, five_points(reference))


def test_shipped_landmark_net_agrees_with_dlib_on_an_ordinary_photo(astronaut, reference, shipped_net):
    points, probability = shipped_net.predict_with_score(astronaut, reference.box)
    assert probability > 0.9
    assert _five_point_error(points, reference.landmarks) < 0.08
    # a box 15 % off still converges (the cascade re-crops around the first pass's points)
    side = reference.box[2] - reference.box[0]
    shifted = reference.box + np.array([0.15, -0.1, 0.15, -0.1], np.float32) * side
    assert _five_point_error(shipped_net.predict(astronaut, shifted), reference.landmarks) < 0.1


def test_ordinary_photo_keeps_dlibs_points(astronaut, reference, monkeypatch):
    detector = detect.FaceDetector("auto")
    calls = []
    original = detector.landmark_net.predict_with_score
    monkeypatch.setattr(detector.landmark_net, "predict_with_score",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    face = detector.detect(astronaut, name="astronaut")[0]
    assert face.detector == "hog" and len(calls) == 1                 # one check by the network, dlib's points kept
    np.testing.assert_allclose(face.landmarks, reference.landmarks)


def test_implausible_dlib_points_are_replaced_by_the_network(astronaut, reference, monkeypatch):
    detector = detect.FaceDetector("auto")
    iod = np.linalg.norm(reference.landmarks[36:42].mean(0) - reference.landmarks[42:48].mean(0))

    def lost_eye(image, box):
        points = detect.FaceDetector.landmarks_in_box(detector, image, box)
        points[36:42] += [0.0, 0.7 * iod]            # dlib's eye on the cheek (a hat brim's shadow): 0.14 IOD
        return points

    monkeypatch.setattr(detector, "landmarks_in_box", lost_eye)
    face = detector.detect(astronaut, name="astronaut")[0]
    assert face.detector == "hog+net"
    assert _five_point_error(face.landmarks, reference.landmarks) < 0.1


@pytest.mark.parametrize("kind", ["flat", "noise", "gradient"])
def test_images_without_a_face_still_have_none(kind):
    """The last resorts (low-threshold HOG, the centred guess) must not invent a face."""
    rng = np.random.default_rng(5)
    image = {"flat": np.full((200, 200, 3), 120, np.uint8),
             "noise": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
             "gradient": np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (192, 1, 3))}[kind]
    with pytest.raises(NoFaceError, match="no face found"):
        detect.FaceDetector("auto").detect(np.ascontiguousarray(image), name=kind)


def test_centre_guess_finds_a_face_that_fills_a_tight_crop(astronaut, reference):
    detector = detect.FaceDetector("auto")
    x0, y0, x1, y1 = reference.box.astype(int)
    margin = int(0.1 * (x1 - x0))
    tight = np.ascontiguousarray(astronaut[y0 - margin:y1 + 2 * margin, x0 - margin:x1 + margin])
    faces = detector._centre_guess(tight)
    # the network's crop around a face that fills the image is mostly made up: dlib's points in its box
    assert len(faces) == 1 and faces[0].detector == "retry:centre+dlib"
    assert _five_point_error(faces[0].landmarks + [x0 - margin, y0 - margin], reference.landmarks) < 0.1


def test_training_crops_carry_their_points():
    """augment_batch's targets are where the points are in its crops: a bright dot painted at each true point
    of a source crop lands under the target (un-augmented), and mirrors with it."""
    from tf_facetex.data import landmark_net_train as lt
    rng = np.random.default_rng(6)
    image = np.zeros((240, 240, 3), np.uint8)
    points = rng.uniform(70, 170, (68, 2)).astype(np.float32)
    points[[36, 45]] = [[90, 100], [150, 100]]
    box = [80.0, 80.0, 160.0, 170.0]
    crop, mapped, source_box = lt.make_sample(image, box, points)
    for index in (36, 45):
        cv2.circle(crop, tuple(int(round(v)) for v in mapped[index]), 3, 255, -1)
    samples = lt.Samples(crop[None], mapped[None], source_box[None], np.array(["synthetic"]))
    inputs, targets = lt.augment_batch(samples, [0], rng, augment=False)
    size = inputs.shape[1]
    for index in (36, 45):
        x, y = np.round(targets[0, 2 * index:2 * index + 2] * (size - 1)).astype(int)
        assert inputs[0, y, x, 0] > 1.0                   # a painted dot (the crop is standardised)
    assert targets[0, -1] == 1.0 and targets.shape == (1, 137)
    negatives = lt.Samples(crop[None], mapped[None], source_box[None], np.array(["negative"]))
    _, negative_targets = lt.augment_batch(negatives, [0], rng, augment=True)
    assert np.all(negative_targets == 0.0)                  # no points, no face


def test_draw_indices_mixes_kinds_by_weight():
    from tf_facetex.data import landmark_net_train as lt
    kinds = np.array(["synthetic"] * 90 + ["celebamask"] * 5 + ["negative"] * 5)
    samples = lt.Samples(np.zeros((100, 4, 4), np.uint8), np.zeros((100, 68, 2), np.float32),
                         np.zeros((100, 4), np.float32), kinds)
    drawn = kinds[lt.draw_indices(samples, 20000, np.random.default_rng(7))]
    for kind, share in lt.KIND_WEIGHTS.items():
        assert abs(np.mean(drawn == kind) - share) < 0.02


def test_summary_and_the_group_free_view_of_records():
    from tf_facetex.evaluation import detection
    records = [{"name": "a.png", "stage": "hog", "error": 0.05, "seconds": 1.0},
               {"name": "b.png", "stage": "cnn+net", "error": 0.2, "seconds": 2.0},      # found, not aligned
               {"name": "c.png", "stage": "group:a.png:landmarks", "error": 0.1, "seconds": 3.0},
               {"name": "d.png", "stage": None, "error": None, "seconds": 2.0}]
    report = detection.summarise(records)
    assert (report["found_count"], report["aligned_count"]) == (3, 2)
    assert report["stages"] == {"hog": 1, "cnn+net": 1, "group": 1} and report["seconds_per_photo"] == 2.0
    assert report["failed_paths"] == ["b.png", "d.png"]
    plain = detection.summarise(detection.without_group_fallback(records))
    assert (plain["found_count"], plain["aligned_count"]) == (2, 1) and "group" not in plain["stages"]
    assert detection.ALIGNED_NME == 0.15


# ---------------------------------------------------------------- the cascade: dlib first, the network where it can see
def test_made_up_fraction_is_the_crop_area_outside_the_photo():
    margin = lnet.CROP_MARGIN
    side = 40.0 / margin                                # the crop is 40 px wide
    image_shape = (101, 101, 3)                         # pixels cover [-0.5, 100.5]

    def box_at(cx, cy):
        return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]

    assert lnet.made_up_fraction(box_at(50, 50), image_shape) == pytest.approx(0.0)
    assert lnet.made_up_fraction(box_at(-0.5, 50), image_shape) == pytest.approx(0.5)      # half beyond the left edge
    assert lnet.made_up_fraction(box_at(-0.5, -0.5), image_shape) == pytest.approx(0.75)   # a quarter inside
    assert lnet.made_up_fraction(box_at(130.5, 50), image_shape) == pytest.approx(1.0)     # wholly outside
    # a tall box: the crop side is the mean side, the crop centred on the box
    assert lnet.made_up_fraction([40, 30, 60, 70], (101, 101)) == pytest.approx(0.0)
    assert lnet.made_up_fraction([40, 30, 60, 70], (60, 101)) == pytest.approx(1 - (59.5 - 26) / 48.0)   # crop y 26..74


def test_landmark_source_decision_rule(reference):
    dlib_points = reference.landmarks
    iod = np.linalg.norm(dlib_points[36:42].mean(0) - dlib_points[42:48].mean(0))
    close = dlib_points + [0.05 * iod, 0.0]              # 0.05 inter-ocular distances away: they agree
    far = dlib_points + [0.0, 0.4 * iod]                 # 0.4 away: they disagree
    source = detect.landmark_source
    assert source(dlib_points, close, made_up=0.1, dlib_trusted=True) == "dlib"
    assert source(dlib_points, far, made_up=0.1, dlib_trusted=True) == "net"
    assert source(dlib_points, close, made_up=0.1, dlib_trusted=False) == "net"      # a CNN box: dlib does badly
    assert source(None, close, made_up=0.1, dlib_trusted=False) == "net"             # a last-resort find
    # the network's crop mostly made up (a tight crop): dlib, whatever the network says
    for dlib, net, trusted in ((dlib_points, far, True), (dlib_points, far, False), (None, far, False)):
        assert source(dlib, net, made_up=0.7, dlib_trusted=trusted) == "dlib"
    assert source(dlib_points, far, made_up=0.5, dlib_trusted=True, max_made_up=0.5) == "net"   # strictly above
    assert source(dlib_points, far, made_up=0.2, dlib_trusted=True, disagreement=0.5) == "dlib"


def _tight_grey_crop(astronaut, reference):
    """A Yale B-like frame: grey, brows to chin, as wide as the face (most of the network's crop is made up)."""
    points = reference.landmarks
    x0, x1 = int(points[:, 0].min()), int(points[:, 0].max())
    y0, y1 = int(points[17:27, 1].min()), int(points[:, 1].max())
    grey = cv2.cvtColor(np.ascontiguousarray(astronaut[y0:y1 + 1, x0:x1 + 1]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)), np.array([x0, y0], np.float32)


def test_tight_crop_keeps_dlibs_points_against_a_wrong_network(astronaut, reference, monkeypatch):
    """On a tight crop the network's points are not used even when they disagree (rule 1); on the whole photo
    the same disagreement switches to them (rule 3) - so a detector without the rule fails one of the two."""
    tight, offset = _tight_grey_crop(astronaut, reference)
    detector = detect.FaceDetector("auto")
    honest = detector.landmark_net.predict_with_score
    iod = np.linalg.norm(reference.landmarks[36:42].mean(0) - reference.landmarks[42:48].mean(0))

    def wrong(image, box, passes=None):                  # the network's points 0.3 inter-ocular distances low
        points, probability = honest(image, box, passes=passes)
        return points + [0.0, 0.3 * iod], probability

    monkeypatch.setattr(detector.landmark_net, "predict_with_score", wrong)
    face = detector.detect(tight, name="tight")[0]
    assert detector.landmark_net.made_up_fraction(tight.shape, face.landmarks) > detect.MAX_MADE_UP
    assert "+net" not in face.detector
    assert _five_point_error(face.landmarks + offset, reference.landmarks) < 0.1
    whole = detector.detect(astronaut, name="astronaut")[0]
    assert whole.detector == "hog+net"                   # the ordinary photo: the network is believed
    assert _five_point_error(whole.landmarks, reference.landmarks) > 0.2


def test_last_resort_find_on_a_tight_crop_gets_dlibs_points_in_the_networks_box(astronaut, reference):
    tight, offset = _tight_grey_crop(astronaut, reference)
    detector = detect.FaceDetector("auto")
    box = reference.box - np.tile(offset, 2)
    points, _ = detector.landmark_net.predict_with_score(tight, box)
    face = detect.Face(box=box, landmarks=np.zeros_like(points), score=0.0, detector="retry:grey")
    face = detector._with_chosen_points(tight, face, points, trust_dlib=False, has_dlib_points=False)
    assert face.detector == "retry:grey+dlib"
    expected = detector.landmarks_in_box(tight, lnet.box_from_landmarks(points, detector.landmark_net.inner_to_box))
    np.testing.assert_allclose(face.landmarks, expected)
    assert _five_point_error(face.landmarks + offset, reference.landmarks) < 0.1


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    """lt.train(init_weights=...) starts at those weights (no mean-target head init): at learning rate 0 they come
    back unchanged; and the fine-tuning mix draws the AFLW2000-3D kind by its share."""
    from tf_facetex.data import landmark_net as lnet
    from tf_facetex.data import landmark_net_train as lt
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (6, lt.SOURCE_SIZE, lt.SOURCE_SIZE), dtype=np.uint8)
    points = rng.uniform(70, 120, (6, 68, 2)).astype(np.float32)
    boxes = np.tile(np.array([[60.0, 60.0, 130.0, 130.0]], np.float32), (6, 1))
    kinds = np.array(["synthetic", "aflw", "celebamask", "negative", "aflw", "synthetic"])
    samples = lt.Samples(crops, points, boxes, kinds)
    channels, hidden = (4, 4, 4, 4, 4), 8
    start = lnet.build_landmark_cnn(lnet.INPUT_SIZE, channels, hidden)
    path = tmp_path / "start.weights.h5"
    start.save_weights(str(path))
    model, _ = lt.train(samples, 1, batch_size=4, learning_rate=0.0, input_size=lnet.INPUT_SIZE, channels=channels,
                        hidden=hidden, log=lambda *_: None, init_weights=path,
                        kind_weights=lt.FINE_TUNE_KIND_WEIGHTS)
    # the trainable weights (batch-norm statistics move in a training step whatever the rate)
    for trained, given in zip(model.trainable_weights, start.trainable_weights):
        np.testing.assert_array_equal(trained.numpy(), given.numpy())
    fresh, _ = lt.train(samples, 1, batch_size=4, learning_rate=0.0, input_size=lnet.INPUT_SIZE, channels=channels,
                        hidden=hidden, log=lambda *_: None)
    assert any(np.any(a.numpy() != b.numpy()) for a, b in zip(fresh.trainable_weights, start.trainable_weights))
    drawn = kinds[lt.draw_indices(samples, 20000, rng, lt.FINE_TUNE_KIND_WEIGHTS)]
    assert abs(np.mean(drawn == "aflw") - lt.FINE_TUNE_KIND_WEIGHTS["aflw"]) < 0.02
