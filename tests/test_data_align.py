"""Detection, 68 landmarks, the Deng 224 alignment (transform, inverse, paste-back) and face masks."""
import cv2
import numpy as np
import pytest
import skimage.data

from tf_facetex.data import align, masks
from tf_facetex.errors import NoFaceError


@pytest.fixture(scope="module")
def detector():
    from tf_facetex.data.detect import FaceDetector
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(detector, astronaut):
    return detector.detect(astronaut, name="astronaut")[0]


# ----------------------------------------------------------------------------------- pure geometry

def test_template_is_deng_mean_face_through_project_camera():
    projected = align.project_template()
    np.testing.assert_allclose(align.ALIGN_TEMPLATE_224, projected, atol=0.006)
    # Deng's orthographic 112 + 102 X (with his half-pixel offset) agrees to within a pixel
    deng = np.stack([112 + 102 * align.DENG_LM3D_5[:, 0], 112 - 102 * align.DENG_LM3D_5[:, 1]], axis=1)
    assert np.abs(deng - 0.5 - align.ALIGN_TEMPLATE_224).max() < 1.0
    # eyes level and symmetric about the centre column, mouth below nose below eyes
    t = align.ALIGN_TEMPLATE_224
    assert abs(t[0, 1] - t[1, 1]) < 0.5 and abs((t[0, 0] + t[1, 0]) / 2 - 111.5) < 0.5
    assert t[0, 1] < t[2, 1] < t[3, 1]


def test_five_points_indices():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30] = [20, 30]
    lm[48] = [12, 40]
    lm[54] = [28, 40]
    np.testing.assert_allclose(align.five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def _similarity(scale, angle, tx, ty):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def test_estimate_similarity_recovers_known_transform(rng):
    for _ in range(5):
        truth = _similarity(rng.uniform(0.2, 3), rng.uniform(-np.pi, np.pi), *rng.uniform(-300, 300, 2))
        src = rng.uniform(0, 500, (5, 2))
        estimate = align.estimate_similarity(src, align.apply_affine(truth, src))
        np.testing.assert_allclose(estimate, truth, atol=1e-3)
    # a mirrored point set is not fitted with a reflection
    src = rng.uniform(0, 100, (5, 2))
    mirrored = align.estimate_similarity(src, src * [-1, 1])
    assert np.linalg.det(mirrored[:, :2]) > 0


def test_no_rotation_variant_is_scale_and_translation(rng):
    truth = _similarity(1.7, 0.0, 12.0, -5.0)
    src = rng.uniform(0, 200, (5, 2))
    estimate = align.estimate_similarity(src, align.apply_affine(truth, src), allow_rotation=False)
    np.testing.assert_allclose(estimate, truth, atol=1e-4)
    rotated = align.estimate_similarity(src, align.apply_affine(_similarity(1.0, 0.3, 0, 0), src), allow_rotation=False)
    assert rotated[0, 1] == 0 and rotated[1, 0] == 0 and rotated[0, 0] == rotated[1, 1]


def test_inverse_round_trip_of_points(rng):
    transform = _similarity(0.31, 0.2, -40.0, 17.0)
    points = rng.uniform(-100, 2000, (100, 2))
    back = align.apply_affine(align.invert_affine(transform), align.apply_affine(transform, points))
    assert np.abs(back - points).max() < 1e-3  # well within 1 px
    np.testing.assert_allclose(align.compose_affine(transform, align.invert_affine(transform)),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def _blob_image(shape, points, radius):
    image = np.zeros(shape, np.uint8)
    for x, y in points:
        cv2.circle(image, (int(round(x * 16)), int(round(y * 16))), int(radius * 16), (255, 255, 255), -1,
                   cv2.LINE_AA, shift=4)
    return image


def _centroid(gray, centre, half=8):
    x0, y0 = int(round(centre[0])) - half, int(round(centre[1])) - half
    window = gray[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1].astype(float)
    yy, xx = np.mgrid[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1]
    return np.array([(window * xx).sum() / window.sum(), (window * yy).sum() / window.sum()])


@pytest.mark.parametrize("size,radius", [((600, 500, 3), 3.0), ((2400, 2000, 3), 14.0)])  # plain and pre-shrunk warp
def test_warp_matches_transform_and_paste_back_inverts_it(size, radius):
    """Bright dots at known points land where the transform says (pixel-centre convention), and
    pasting the crop back puts them at the original positions, both within a fraction of a pixel."""
    height, width = size[:2]
    points = np.array([[0.3, 0.35], [0.62, 0.36], [0.47, 0.52], [0.35, 0.66], [0.6, 0.67]]) * [width, height] + 0.3
    image = _blob_image(size, points, radius)
    transform = align.estimate_similarity(points, align.ALIGN_TEMPLATE_224)
    crop = align.warp_image(image, transform, (224, 224))
    for expected in align.apply_affine(transform, points):
        assert np.linalg.norm(_centroid(crop[..., 0], expected) - expected) < 0.25
    pasted = align.paste_back(crop, transform, image.shape)
    assert pasted.shape == (height, width, 4) and pasted.dtype == np.uint8
    half = int(3 * radius)
    for expected in points:
        assert np.linalg.norm(_centroid(pasted[..., 0], expected, half) - expected) < 1.0


def test_paste_back_composites_with_mask(astronaut, astronaut_face):
    aligned = align.align_face(astronaut, astronaut_face.landmarks)
    mask = np.zeros((224, 224), np.float32)
    mask[60:170, 60:170] = 1.0
    red = np.zeros_like(aligned.image)
    red[..., 0] = 255
    composite = align.paste_back(red, aligned.transform, astronaut.shape, mask=mask, background=astronaut)
    assert composite.shape == astronaut.shape and composite.dtype == np.uint8
    centre = align.apply_affine(aligned.inverse, [[115, 115]])[0].round().astype(int)
    assert tuple(composite[centre[1], centre[0]]) == (255, 0, 0)
    corner = (5, 5)  # far outside the crop: the photo untouched
    assert np.array_equal(composite[corner], astronaut[corner])
    # the unmodified crop pasted back reproduces the photo inside the face
    same = align.paste_back(aligned.image, aligned.transform, astronaut.shape, mask=mask, background=astronaut)
    inside = align.paste_back(np.full((224, 224, 3), 255, np.uint8), aligned.transform, astronaut.shape, mask=mask)[..., 3] == 255
    assert inside.sum() > 2000
    assert np.abs(same[inside].astype(float) - astronaut[inside]).mean() < 6.0


# ---------------------------------------------------------------------------------- detection + align

def test_astronaut_landmarks_inside_face_box(astronaut, astronaut_face):
    box, lm = astronaut_face.box, astronaut_face.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert 0 <= box[0] < box[2] < 512 and 0 <= box[1] < box[3] < 512
    size = box[2] - box[0]
    margin = 0.15 * size  # dlib's box is tight: the jaw may poke out a little
    assert np.all(lm[:, 0] > box[0] - margin) and np.all(lm[:, 0] < box[2] + margin)
    assert np.all(lm[:, 1] > box[1] - margin) and np.all(lm[:, 1] < box[3] + margin)
    eyes = align.five_points(lm)
    assert eyes[0, 0] < eyes[1, 0] and eyes[2, 1] > eyes[0, 1] and eyes[3, 1] > eyes[2, 1]


def test_crop_contains_face_and_round_trips(detector, astronaut, astronaut_face):
    aligned = align.align_face(astronaut, astronaut_face.landmarks)
    assert aligned.image.shape == (224, 224, 3) and aligned.image.dtype == np.uint8
    assert np.all(aligned.landmarks >= 0) and np.all(aligned.landmarks <= 223)
    assert np.abs(align.five_points(aligned.landmarks) - align.ALIGN_TEMPLATE_224).max() < 15
    assert aligned.valid.min() == 1.0  # the astronaut's face is far from the photo border
    # landmark positions: crop -> photo with the inverse, within 1 px (numerically exact)
    back = align.apply_affine(aligned.inverse, aligned.landmarks)
    assert np.abs(back - astronaut_face.landmarks).max() < 1e-3
    # and the crop really shows the face: landmarks detected again IN the crop map back onto the
    # photo's landmarks (dlib's own noise is about half a pixel)
    redetected = detector.detect(aligned.image, name="crop")[0]
    error = np.linalg.norm(align.apply_affine(aligned.inverse, redetected.landmarks) - astronaut_face.landmarks, axis=1)
    assert error.mean() < 1.0 and error.max() < 3.0


def test_deng_variant_keeps_roll(astronaut):
    from tf_facetex.data.detect import FaceDetector
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((255.5, 255.5), 20, 1.0), (512, 512))
    face = FaceDetector().detect(rotated, name="rotated")[0]
    with_rotation = align.align_face(rotated, face.landmarks)
    deng = align.align_face(rotated, face.landmarks, allow_rotation=False)

    def roll(aligned):
        eyes = align.five_points(aligned.landmarks)
        return np.degrees(np.arctan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
    assert abs(roll(with_rotation)) < 3.0
    assert abs(roll(deng)) > 12.0


def test_large_image_is_downscaled_for_detection_and_mapped_back(detector, astronaut, astronaut_face):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    face = detector.detect(big, name="big")[0]
    in_original = (face.landmarks + 0.5) / 4.0 - 0.5
    assert np.linalg.norm(in_original - astronaut_face.landmarks, axis=1).mean() < 1.5
    assert np.all(face.box >= 0) and np.all(face.box < 2048)


def test_small_image_is_upsampled_for_detection(detector, astronaut, astronaut_face):
    small = cv2.resize(astronaut, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
    rects, _, _ = detector._detector.run(small, 0, 0.0)
    assert len(rects) == 0  # too small for dlib without upsampling ...
    face = detector.detect(small, name="small")[0]  # ... found with it
    in_original = (face.landmarks + 0.5) / (small.shape[0] / 512) - 0.5
    assert np.linalg.norm(in_original - astronaut_face.landmarks, axis=1).mean() < 3.0


def test_no_face_is_a_clear_per_image_error(detector, rng):
    noise = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match=r"^noise.png: no face found \(300x300 px"):
        detector.detect(noise, name="noise.png")


def test_many_faces_largest_first_or_all(detector, astronaut):
    big = astronaut[20:320, 100:350]
    small = cv2.resize(big, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 450, 3), 255, np.uint8)
    canvas[:, :250] = big
    canvas[60:60 + small.shape[0], 280:280 + small.shape[1]] = small
    faces = detector.detect(canvas, all_faces=True)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area and faces[0].box[0] < 250 <= faces[1].box[0]
    only = detector.detect(canvas)  # the largest only (found without upsampling, so boxes differ a little)
    assert len(only) == 1 and np.abs(only[0].box - faces[0].box).max() < 12


def test_face_preprocessor_from_bytes(astronaut):
    from tf_facetex.data.images import encode_jpeg
    preprocessor = align.FacePreprocessor()
    faces = preprocessor.from_bytes(encode_jpeg(astronaut), name="astronaut.jpg")
    assert len(faces) == 1
    face = faces[0]
    # the default (parsing-net) mask is soft: 0 off the face, the network's confidence (> 0.5) on it
    values = np.unique(face.mask)
    assert face.mask.shape == (224, 224) and values.min() >= 0.0 and values.max() <= 1.0
    assert not np.any((values > 0.0) & (values <= 0.5)) and (face.mask > 0.5).mean() > 0.1
    assert face.original_shape == (512, 512) and face.face_index == 0 and face.box is not None


# ---------------------------------------------------------------------------------------------- masks

@pytest.fixture(scope="module")
def astronaut_crop(astronaut, astronaut_face):
    return align.align_face(astronaut, astronaut_face.landmarks)


def test_skin_mask_covers_face_not_background(astronaut_crop):
    mask = masks.LandmarkSkinMasker()(astronaut_crop.image, astronaut_crop.landmarks)
    assert mask.shape == (224, 224) and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    lm = astronaut_crop.landmarks
    for index in (30, 33, 8, 2, 14, 36, 45, 62):  # nose, chin, cheeks, eyes, mouth
        x, y = np.round(lm[index]).astype(int)
        if index in (2, 8, 14):  # chin, cheeks: a little inside the jaw line
            x, y = np.round(lm[index] + 0.25 * (lm[30] - lm[index])).astype(int)
        assert mask[y, x] == 1.0, f"landmark {index} not in mask"
    assert mask[:10].sum() == 0 and mask[:, :10].sum() == 0 and mask[:, -10:].sum() == 0
    assert 0.2 < mask.mean() < 0.6
    # the mask is inside the landmark region, and drops some of it (hair / hat / background)
    region = masks.face_region(astronaut_crop.image.shape, lm, 0.5, -0.02)
    assert np.all(mask <= region)


def test_mask_flags_exclude_eyes_and_mouth(astronaut_crop):
    image, lm = astronaut_crop.image, astronaut_crop.landmarks
    full = masks.LandmarkSkinMasker()(image, lm)
    no_eyes = masks.LandmarkSkinMasker(exclude_eyes=True)(image, lm)
    no_mouth = masks.LandmarkSkinMasker(exclude_mouth=True)(image, lm)
    eye = np.round(lm[36:42].mean(axis=0)).astype(int)
    mouth = np.round(lm[60:68].mean(axis=0)).astype(int)
    assert full[eye[1], eye[0]] == 1 and no_eyes[eye[1], eye[0]] == 0
    assert no_eyes.sum() < full.sum() and no_mouth.sum() <= full.sum()
    assert no_mouth[mouth[1], mouth[0]] == 0 or masks.polygon_mask((224, 224), lm[60:68]).sum() == 0


def test_skin_colour_removes_non_skin(astronaut_crop):
    """Paint a saturated blue 'hat' over the forehead: the skin model must drop it, the hull must not."""
    image = astronaut_crop.image.copy()
    lm = astronaut_crop.landmarks
    top = int(lm[17:27, 1].min()) - 8
    image[:top] = (20, 40, 200)
    skin = masks.LandmarkSkinMasker()(image, lm)
    hull = masks.LandmarkHullMasker(forehead=0.5)(image, lm)
    assert hull[:top].sum() > 200
    assert skin[:top].sum() < 0.05 * hull[:top].sum()


def test_masker_interface_is_pluggable(astronaut_crop):
    class Everything(masks.FaceMasker):
        def __call__(self, image, landmarks68):
            return np.ones(image.shape[:2], np.float32)
    preprocessor = align.FacePreprocessor(masker=Everything())
    face = preprocessor.from_image(skimage.data.astronaut())[0]
    np.testing.assert_array_equal(face.mask, face.valid)
    with pytest.raises(TypeError):
        masks.FaceMasker()


def test_mask_iou():
    a = np.zeros((10, 10))
    a[:5] = 1
    b = np.zeros((10, 10))
    b[:, :5] = 1
    assert masks.mask_iou(a, a) == 1.0
    assert masks.mask_iou(a, b) == pytest.approx(25 / 75)
    assert masks.mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert masks.celebamask_face_mask(np.array([[0, 1, 2, 3], [13, 14, 17, 12]])).tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]


# ------------------------------------------------------------------------------------------ real photos

def test_real_photos_landmarks_and_crops(faces_dir, detector):
    """A few shared photos of different kinds: landmarks inside the face box, crop contains the face."""
    from tf_facetex.data.images import load_image
    names = ["deca_examples/IMG_0392_inputs.jpg", "deepface_unit/img1.jpg", "dlib_faces/2008_002470.jpg",
             "ffhq_thumbs128/images/00000.png"]
    checked = 0
    for name in names:
        path = faces_dir / name
        if not path.exists():
            continue
        image = load_image(path)
        face = detector.detect(image, name=name)[0]
        size = face.box[2] - face.box[0]
        inside = ((face.landmarks[:, 0] > face.box[0] - 0.2 * size) & (face.landmarks[:, 0] < face.box[2] + 0.2 * size)
                  & (face.landmarks[:, 1] > face.box[1] - 0.3 * size) & (face.landmarks[:, 1] < face.box[3] + 0.2 * size))
        assert inside.mean() > 0.95, name
        aligned = align.align_face(image, face.landmarks)
        assert np.abs(align.five_points(aligned.landmarks) - align.ALIGN_TEMPLATE_224).max() < 20, name
        back = align.apply_affine(aligned.inverse, aligned.landmarks)
        assert np.abs(back - face.landmarks).max() < 1e-2, name
        checked += 1
    assert checked >= 2


def test_aflw2000_landmarks_match_ground_truth(faces_dir, detector):
    """dlib's 68 points against AFLW2000-3D's annotated pt3d_68 on a few near-frontal images."""
    import scipy.io
    from tf_facetex.data.images import load_image
    folder = faces_dir / "aflw2000_3d"
    errors = []
    for path in sorted(folder.glob("image*.jpg"))[:12]:
        truth = scipy.io.loadmat(str(path.with_suffix(".mat")))["pt3d_68"][:2].T
        try:
            face = detector.detect(load_image(path), name=path.name)[0]
        except NoFaceError:
            continue
        interocular = np.linalg.norm(truth[36:42].mean(0) - truth[42:48].mean(0))
        errors.append(np.linalg.norm(face.landmarks - truth, axis=1).mean() / max(interocular, 1.0))
    assert len(errors) >= 6
    assert np.median(errors) < 0.15  # normalised mean error (AFLW2000 contour points are 3D-projected)
