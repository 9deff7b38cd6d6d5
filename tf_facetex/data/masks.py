"""Face masks: which pixels of a photo show the face (the paper's face-parsing mask M_parsing).

The paper multiplies a face-parsing network's mask by the projected-face mask. No parsing weights
are reachable here, so ``LandmarkSkinMasker`` stands in for the parser behind the ``FaceMasker``
interface (any callable image + landmarks -> mask; a real parser plugs in by subclassing):

1. region: the 68-landmark face outline (jaw 0-16) closed over the forehead by lifting the
   brows (17-26) along the face's up direction by a fraction of the chin-to-brow height;
2. colour: a per-image skin model, a Gaussian in Lab fitted to pixels sampled where skin is
   almost certain (cheeks under the eyes, nose; robustly trimmed), thresholded on its Mahalanobis
   distance (lightness down-weighted so shading matters less than chroma). In the forehead
   extension and outside the core hull it decides (drops hair fringes, hats, background); inside the
   landmark hull a much looser threshold only drops what is clearly not skin, because CelebAMask-HQ
   (like the parsers trained on it) labels beards and moustaches as skin;
3. facial features (eyes, brows, lips) are added back from their landmark polygons (brows are
   hair-coloured); flags remove the eyes / the inner mouth instead;
4. clean-up: morphological opening and closing, the largest component kept, holes filled.
Known misses: blond fringes (skin-like chroma), glasses lenses (the labels exclude them), badly
fitted landmarks on profiles. Measured in the aligned 224 crop against CelebAMask-HQ labels
(images 100-299 by name, none used for tuning; 3 without a HOG detection): mean IoU 0.895
(median 0.919) for ``LandmarkSkinMasker``, 0.842 for the landmark region alone.

``mask_iou`` measures it; `tf_facetex.evaluation.mask_iou.evaluate_on_celebamask` against CelebAMask-HQ labels
(``python -m tf_facetex.evaluation.mask_iou --celebamask_dir DIR --num_images 40``).
"""
import abc

import cv2
import numpy as np

JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
LEFT_EYE = np.arange(36, 42)    # image left
RIGHT_EYE = np.arange(42, 48)   # image right
OUTER_LIPS = np.arange(48, 60)
INNER_MOUTH = np.arange(60, 68)

# CelebAMask-HQ label ids that count as face for the paper's mask (skin, nose, eyes, brows, mouth, lips);
# glasses (3), ears (8, 9), earrings (15), neck (16, 17), hair (13), hat (14), cloth (18) do not.
CELEBAMASK_FACE_CLASSES = (1, 2, 4, 5, 6, 7, 10, 11, 12)


class FaceMasker(abc.ABC):
    """Interface: ``masker(image_uint8 [H, W, 3], landmarks68 [68, 2]) -> float32 [H, W] in [0, 1]``.

    Face is ``> 0.5``; 0 elsewhere. A masker may return its confidence (in (0.5, 1]) on face pixels instead of
    1 (the parsing network does); the fit uses the mask binary, the unwrap keeps only confident pixels.
    """

    @abc.abstractmethod
    def __call__(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def soft_mask_uint8(mask: np.ndarray) -> np.ndarray:
    """A (soft) face mask as uint8 for PNG storage: 0 where <= 0.5, else round(255 x value) but >= 128.

    [H, W] float in [0, 1] -> uint8 [H, W]; binary masks store 0 / 255 (``soft_mask_float`` reads both back).
    """
    mask = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
    return np.where(mask > 0.5, np.maximum(np.round(mask * 255.0), 128.0), 0.0).astype(np.uint8)


def soft_mask_float(mask_uint8):
    """Inverse of ``soft_mask_uint8`` in TensorFlow: uint8 [..] -> float32 [..] (0, or value / 255 > 0.5)."""
    import tensorflow as tf

    value = tf.cast(mask_uint8, tf.float32) / 255.0
    return tf.where(value > 0.5, value, tf.zeros_like(value))


def polygon_mask(shape, points: np.ndarray) -> np.ndarray:
    """uint8 [H, W] with the convex hull of ``points`` [N, 2] filled with 1 (sub-pixel precise)."""
    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points, np.float64) * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _face_frame(landmarks68: np.ndarray):
    """(up unit vector [2], face height in px) from the landmarks; up is image-up for a frontal face."""
    lm = np.asarray(landmarks68, np.float64)
    eye_left, eye_right = lm[LEFT_EYE].mean(axis=0), lm[RIGHT_EYE].mean(axis=0)
    across = eye_right - eye_left
    up = np.array([across[1], -across[0]])  # across rotated by -90 degrees (y down)
    up /= max(np.linalg.norm(up), 1e-6)
    chin = lm[8]
    brow_centre = lm[BROWS].mean(axis=0)
    height = max(float(np.dot(brow_centre - chin, up)), 1.0)
    return up, height


def face_region(shape, landmarks68: np.ndarray, forehead: float = 0.4, jaw_margin: float = 0.0) -> np.ndarray:
    """The landmark hull of the face extended over the forehead.

    Args:
      shape: (H, W, ...) of the image.
      landmarks68: [68, 2].
      forehead: how far above the brows the region reaches, as a fraction of the chin-to-brow
        height (0: the hull of jaw and brows).
      jaw_margin: push the jaw outline outwards from the nose by this fraction (dlib's jaw points sit
        slightly inside the visible face edge).
    Returns:
      uint8 [H, W] in {0, 1}.
    """
    lm = np.asarray(landmarks68, np.float64)
    up, height = _face_frame(lm)
    jaw = lm[JAW] + jaw_margin * (lm[JAW] - lm[30])
    # lift the brows, and the jaw's top ends (temples), with a rounded profile: full lift in the
    # middle of the brows, less towards the temples, as a forehead is
    brows = lm[BROWS]
    across = np.array([up[1], -up[0]])
    centre = brows.mean(axis=0)
    offsets = (brows - centre) @ across
    offsets = offsets / max(np.abs(offsets).max(), 1.0)  # -1 .. 1 across
    lift = forehead * height * np.sqrt(np.clip(1.0 - 0.5 * offsets ** 2, 0.0, 1.0))
    top = brows + lift[:, None] * up
    temples = jaw[[0, 16]] + 0.5 * forehead * height * up
    return polygon_mask(shape, np.concatenate([jaw, top, temples]))


def _feature_polygons(shape, landmarks68: np.ndarray, brow_thickness: float) -> np.ndarray:
    """Eyes, brows (thickened polylines) and lips as one uint8 [H, W] mask."""
    lm = np.asarray(landmarks68, np.float64)
    mask = polygon_mask(shape, lm[LEFT_EYE]) | polygon_mask(shape, lm[RIGHT_EYE]) | polygon_mask(shape, lm[OUTER_LIPS])
    thickness = max(int(round(brow_thickness)), 1)
    for brow in (lm[17:22], lm[22:27]):
        cv2.polylines(mask, [np.round(brow * 16).astype(np.int32)], False, 1, thickness, cv2.LINE_8, shift=4)
    return mask


def _skin_samples(image_lab: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Lab pixels where skin is almost certain: under-eye cheeks and the nose. [N, 3] float64."""
    lm = np.asarray(landmarks68, np.float64)
    shape = image_lab.shape
    regions = [
        polygon_mask(shape, lm[[1, 2, 3, 31, 40, 41]]),   # cheek, image left
        polygon_mask(shape, lm[[15, 14, 13, 35, 47, 46]]),  # cheek, image right
        polygon_mask(shape, lm[[27, 31, 33, 35]]),          # nose
    ]
    # shrink towards the centre of each polygon: its edges touch eyes, nostrils, beard lines
    sample = np.zeros(shape[:2], np.uint8)
    for region in regions:
        sample |= cv2.erode(region, np.ones((3, 3), np.uint8), iterations=max(1, int(region.sum() ** 0.5 / 8)))
    pixels = image_lab[sample.astype(bool)].astype(np.float64)
    if len(pixels) < 20:  # tiny faces: use the raw polygons
        union = regions[0] | regions[1] | regions[2]
        pixels = image_lab[union.astype(bool)].astype(np.float64)
    return pixels


def _fit_gaussian(samples: np.ndarray, trim: float = 0.8, iterations: int = 2):
    """Robust Gaussian: refit on the ``trim`` fraction closest to the current fit. -> (mean [3], cov [3, 3])."""
    kept = samples
    for _ in range(iterations + 1):
        mean = kept.mean(axis=0)
        cov = np.cov(kept, rowvar=False) + np.eye(3) * 1.0
        dist = _mahalanobis2(samples, mean, cov)
        kept = samples[dist <= np.quantile(dist, trim)]
    return mean, cov


def _mahalanobis2(values: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    diff = values - mean
    return np.einsum("...i,ij,...j->...", diff, np.linalg.inv(cov), diff)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if count <= 2:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fills background regions not connected to the image border."""
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return mask | holes.astype(np.uint8)


class LandmarkHullMasker(FaceMasker):
    """The landmark region only (``face_region``), no colour model: a fast, hair-blind baseline."""

    def __init__(self, forehead: float = 0.4):
        self.forehead = forehead

    def __call__(self, image, landmarks68):
        return face_region(image.shape, landmarks68, self.forehead).astype(np.float32)


class LandmarkSkinMasker(FaceMasker):
    """Landmark region ∩ per-image skin colour model, features added back (see module doc).

    Args:
      forehead: region height above the brows, fraction of the chin-to-brow height.
      core_forehead: the part of the region kept whatever its colour (beards and moustaches count as
        face in CelebAMask-HQ; shadows and make-up must not punch holes).
      threshold: Mahalanobis distance² (Lab, lightness down-weighted) below which a pixel is skin,
        applied outside the core.
      core_threshold: a much looser threshold applied inside the core, which only drops what is
        clearly not skin there (strands of hair, dark frames); None keeps the core whole.
      lightness_weight: std multiplier on L* (> 1 makes shading/highlights matter less).
      jaw_margin: see ``face_region``; dlib's jaw points lie slightly outside the parser's face edge
        on average, hence the small negative default.
      core_shrink: shrink the core towards the nose by this fraction (colour decides in the band).
    Defaults were tuned on CelebAMask-HQ images 0-59 (sorted by name) and checked on images 500-559.
      exclude_eyes: remove the eye polygons (slightly dilated) from the final mask.
      exclude_mouth: remove the inner-mouth polygon (teeth, tongue) from the final mask.
    """

    def __init__(self, forehead: float = 0.5, core_forehead: float = 0.0, threshold: float = 20.0,
                 core_threshold: float = 150.0, lightness_weight: float = 2.0, jaw_margin: float = -0.02,
                 core_shrink: float = 0.0, exclude_eyes: bool = False, exclude_mouth: bool = False):
        self.core_shrink = core_shrink
        self.forehead = forehead
        self.core_forehead = core_forehead
        self.threshold = threshold
        self.core_threshold = core_threshold
        self.lightness_weight = lightness_weight
        self.jaw_margin = jaw_margin
        self.exclude_eyes = exclude_eyes
        self.exclude_mouth = exclude_mouth

    def __call__(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3], [68, 2] -> float32 [H, W] in {0, 1}."""
        lm = np.asarray(landmarks68, np.float64)
        region = face_region(image.shape, lm, self.forehead, self.jaw_margin)
        core = face_region(image.shape, lm, self.core_forehead, self.jaw_margin - self.core_shrink)
        _, height = _face_frame(lm)
        lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
        distance = self._skin_distance(lab, lm)
        skin = (distance <= self.threshold).astype(np.uint8) & region
        kernel_size = max(3, int(round(height * 0.04)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
        skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, kernel)
        if self.core_threshold is None:
            skin |= core
        else:
            skin |= core & (distance <= self.core_threshold).astype(np.uint8)
        skin |= _feature_polygons(image.shape, lm, brow_thickness=height * 0.06) & region
        skin = cv2.morphologyEx(skin, cv2.MORPH_CLOSE, kernel) & region
        skin = _fill_holes(_largest_component(skin))
        if self.exclude_eyes:
            eyes = polygon_mask(image.shape, lm[LEFT_EYE]) | polygon_mask(image.shape, lm[RIGHT_EYE])
            skin &= 1 - cv2.dilate(eyes, np.ones((3, 3), np.uint8))
        if self.exclude_mouth:
            skin &= 1 - polygon_mask(image.shape, lm[INNER_MOUTH])
        return skin.astype(np.float32)

    def _skin_distance(self, lab: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """Mahalanobis distance² of every pixel to the image's skin colour: float64 [H, W]."""
        mean, cov = _fit_gaussian(_skin_samples(lab, lm))
        scale = np.diag([self.lightness_weight, 1.0, 1.0])  # inflate lightness variance: shading is not colour
        cov = scale @ cov @ scale
        return _mahalanobis2(lab.reshape(-1, 3).astype(np.float64), mean, cov).reshape(lab.shape[:2])


def mask_iou(predicted: np.ndarray, target: np.ndarray, valid: np.ndarray = None) -> float:
    """Intersection over union of two binary masks [H, W] (optionally only where valid > 0)."""
    pred = np.asarray(predicted) > 0.5
    true = np.asarray(target) > 0.5
    if valid is not None:
        keep = np.asarray(valid) > 0.5
        pred, true = pred & keep, true & keep
    union = np.logical_or(pred, true).sum()
    return float(np.logical_and(pred, true).sum() / union) if union else 1.0


def celebamask_face_mask(labels: np.ndarray) -> np.ndarray:
    """CelebAMask-HQ label map [H, W] (class ids) -> uint8 face mask [H, W] (``CELEBAMASK_FACE_CLASSES``)."""
    return np.isin(labels, CELEBAMASK_FACE_CLASSES).astype(np.uint8)
