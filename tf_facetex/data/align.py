"""Alignment to the 224 x 224 crop of Deng et al. 2019, and pasting results back onto the photo.

The crop is defined by a 2D transform (original -> crop) that maps five points taken from the 68
landmarks (eye centres, nose tip, mouth corners) onto the fixed template ``ALIGN_TEMPLATE_224``.
The transform and its inverse are kept with every crop so that renders can be pasted back.

Template (how it was chosen). Deng et al. align with POS: they fit an affine camera from the five
points of their mean face ``similarity_Lm3D_all`` (BFM units, decimetres; values quoted in the
docstring of Deep3DFaceReconstruction's ``preprocess_img.py:align_img``) to the detected points, then
scale the photo by 102/s and crop 224 around the fitted translation, so that a 3D point (X, Y) lands
at about (112 + 102 X, 112 - 102 Y). 102 is their orthographic stand-in for the perspective camera
(focal 1015 px, camera at 10 dm: 1015 / 10 = 101.5). We project the same five 3D points through
the project's camera (focal 1015, depth 10 - Z, principal point 111.5 in the integer-pixel-centre
convention, see ``tf_facetex.camera``), so that the mean face at zero pose projects exactly onto
the template; the result differs from Deng's orthographic 112 + 102 X by < 1 px. The eyes sit at
row ~82 (37 % of the height), the mouth at row ~151: the face fills the crop as in Deng's crops.

Transform type. Default: full similarity (scale, rotation, translation; Umeyama least squares),
so in-plane head roll is removed and the 3D pose fit has less to do. ``allow_rotation=False`` gives
Deng's variant (scale + translation only; roll left in the crop).

Pixel convention: x right, y down, integer pixel centres (pixel (row i, col j) is centred at
x = j, y = i), as OpenCV's ``warpAffine`` uses, so ``warpAffine(image, transform)`` is exact.
"""
import dataclasses

import cv2
import numpy as np

from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data.landmarks import five_points  # noqa: F401 - re-exported: align.five_points is used widely


# Deng's five 3D alignment points (similarity_Lm3D_all; BFM units, y up, face towards +z), order:
# eye on the image left (subject's right), eye on the image right, nose tip, mouth corner image left,
# mouth corner image right.
DENG_LM3D_5 = np.array([
    [-0.31148657, 0.29036078, 0.13377953],
    [0.30979887, 0.28972036, 0.13179526],
    [0.0032535, -0.04617932, 0.55244243],
    [-0.25216928, -0.38133916, 0.22405732],
    [0.2484662, -0.38128236, 0.22235769],
], dtype=np.float64)

# DENG_LM3D_5 projected with focal 1015 px, camera at z = +10, principal point 111.5 (see module doc);
# tests recompute it from DENG_LM3D_5. [5, 2] (x, y) pixels, y down, integer pixel centres.
ALIGN_TEMPLATE_224 = np.array([
    [79.46, 81.63],    # eye centre, image left (landmarks 36-41)
    [143.36, 81.70],   # eye centre, image right (landmarks 42-47)
    [111.85, 116.46],  # nose tip (landmark 30)
    [85.32, 151.09],   # mouth corner, image left (landmark 48)
    [137.29, 151.08],  # mouth corner, image right (landmark 54)
], dtype=np.float32)


def project_template(points3d=DENG_LM3D_5, crop_size: int = CROP_SIZE, focal_at_224: float = 1015.0,
                     camera_distance: float = 10.0) -> np.ndarray:
    """Perspective projection of model-space points into a crop: [N, 3] -> [N, 2] (x, y down).

    x = c + f X / (d - Z), y = c - f Y / (d - Z), with f scaled to the crop size and c = (size - 1) / 2.
    """
    focal = focal_at_224 * crop_size / 224.0
    centre = (crop_size - 1) / 2.0
    depth = camera_distance - points3d[:, 2]
    return np.stack([centre + focal * points3d[:, 0] / depth, centre - focal * points3d[:, 1] / depth], axis=1)


def estimate_similarity(src: np.ndarray, dst: np.ndarray, allow_rotation: bool = True) -> np.ndarray:
    """Least-squares 2D similarity mapping src points onto dst points.

    Args:
      src, dst: [N, 2] corresponding points (N >= 2).
      allow_rotation: True: scale + rotation + translation (Umeyama 1991, no reflection);
        False: scale + translation only (Deng's alignment).
    Returns:
      float64 [2, 3] matrix M with dst ~= M[:, :2] @ src + M[:, 2].
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum()
    if src_var <= 1e-12:
        raise ValueError("degenerate source points (all equal)")
    if allow_rotation:
        cov = dst_c.T @ src_c  # [2, 2]
        u, sigma, vt = np.linalg.svd(cov)
        sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
        rotation = u @ sign @ vt
        scale = np.trace(np.diag(sigma) @ sign) / src_var
        linear = scale * rotation
    else:
        linear = np.eye(2) * ((src_c * dst_c).sum() / src_var)
    translation = dst_mean - linear @ src_mean
    return np.concatenate([linear, translation[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2D affine map: [2, 3] -> [2, 3]."""
    linear_inv = np.linalg.inv(np.asarray(matrix, np.float64)[:, :2])
    return np.concatenate([linear_inv, -(linear_inv @ matrix[:, 2])[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a [2, 3] affine map to points [..., 2] -> [..., 2] (float32)."""
    points = np.asarray(points, np.float64)
    matrix = np.asarray(matrix, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer after inner: [2, 3], [2, 3] -> [2, 3]."""
    outer3 = np.vstack([outer, [0.0, 0.0, 1.0]])
    inner3 = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (outer3 @ inner3)[:2]


def alignment_transform(landmarks68: np.ndarray, allow_rotation: bool = True, crop_size: int = CROP_SIZE,
                        template: np.ndarray = ALIGN_TEMPLATE_224) -> np.ndarray:
    """The original -> crop transform for a face: [68, 2] -> float64 [2, 3].

    The template is given for 224 px and scaled for other crop sizes (pixel centres: (t + 0.5) s - 0.5).
    """
    scale = crop_size / float(CROP_SIZE)
    target = (np.asarray(template, np.float64) + 0.5) * scale - 0.5
    return estimate_similarity(five_points(landmarks68), target, allow_rotation=allow_rotation)


def warp_image(image: np.ndarray, transform: np.ndarray, size, interpolation: int = cv2.INTER_LINEAR,
               border: str = "constant", border_value=0) -> np.ndarray:
    """Resamples ``image`` so that output pixel p shows input point transform^-1(p).

    Args:
      image: [H, W] or [H, W, C].
      transform: [2, 3] input -> output map.
      size: (width, height) of the output.
      border: "constant" (border_value) or "replicate".
    Large downscales (a 4000 px photo to a 224 crop) are pre-shrunk with area averaging, because a
    bilinear warp alone would alias.
    """
    transform = np.asarray(transform, np.float64)
    scale = np.sqrt(abs(np.linalg.det(transform[:, :2])))
    if scale < 0.5 and interpolation != cv2.INTER_NEAREST:
        # integer shrink factor n: INTER_AREA then averages n x n blocks, which maps pixel centres
        # exactly as x -> (x + 0.5) / n - 0.5; the final scale stays >= 0.5 for the bilinear warp.
        shrink = 1.0 / np.floor(1.0 / scale)
        small = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        resize = np.array([[shrink, 0.0, 0.5 * shrink - 0.5], [0.0, shrink, 0.5 * shrink - 0.5]])
        transform = compose_affine(transform, invert_affine(resize))
        image = small
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    return cv2.warpAffine(image, transform, tuple(int(v) for v in size), flags=interpolation, borderMode=mode,
                          borderValue=border_value)


@dataclasses.dataclass
class AlignedFace:
    """A face in the aligned crop.

    image: uint8 [S, S, 3] crop (S = crop size, 224).
    landmarks: float32 [68, 2] in crop pixels.
    transform: float64 [2, 3] original -> crop; inverse: float64 [2, 3] crop -> original.
    original_shape: (H, W) of the photo.
    valid: float32 [S, S] 1 where the crop shows the photo, 0 where it was padded.
    mask: float32 [S, S] face mask in {0, 1} (already multiplied by ``valid``), or None.
    box: float32 [4] detector box (x0, y0, x1, y1) in the photo, or None.
    score: detector score; face_index: 0 for the largest face of the photo, 1 for the next, ...
    detector: which detector stage found the face (`tf_facetex.data.detect.Face.detector`).
    grayscale: the photo is grey (R = G = B, `is_grayscale`): its albedo can only be grey.
    """
    image: np.ndarray
    landmarks: np.ndarray
    transform: np.ndarray
    inverse: np.ndarray
    original_shape: tuple
    valid: np.ndarray
    mask: np.ndarray = None
    box: np.ndarray = None
    score: float = 0.0
    face_index: int = 0
    detector: str = "hog"
    grayscale: bool = False


GRAYSCALE_TOLERANCE = 3   # grey levels: JPEG chroma noise in a grey photo stays below this


def is_grayscale(image: np.ndarray, tolerance: int = GRAYSCALE_TOLERANCE) -> bool:
    """True when the RGB channels agree everywhere (99.9th percentile of the channel spread <= tolerance):
    a grey photo decoded to RGB. uint8 [H, W, 3] (or [H, W]) -> bool."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        return True
    spread = image[..., :3].max(axis=-1).astype(np.int16) - image[..., :3].min(axis=-1).astype(np.int16)
    return bool(np.percentile(spread, 99.9) <= tolerance)


def align_face(image: np.ndarray, landmarks68: np.ndarray, crop_size: int = CROP_SIZE,
               allow_rotation: bool = True, border: str = "constant") -> AlignedFace:
    """Crops one face to the aligned crop.

    Args:
      image: uint8 [H, W, 3].
      landmarks68: [68, 2] in image pixels.
      allow_rotation: similarity with rotation (default) or Deng's scale + translation.
      border: "constant" pads with black like Deng's crops; "replicate" repeats the edge.
    Returns:
      AlignedFace (without mask).
    """
    transform = alignment_transform(landmarks68, allow_rotation=allow_rotation, crop_size=crop_size)
    crop = warp_image(image, transform, (crop_size, crop_size), border=border)
    ones = np.ones(image.shape[:2], np.uint8)
    valid = cv2.warpAffine(ones, transform, (crop_size, crop_size), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
    return AlignedFace(image=crop, landmarks=apply_affine(transform, landmarks68), transform=transform,
                       inverse=invert_affine(transform), original_shape=tuple(image.shape[:2]), valid=valid)


class FacePreprocessor:
    """Photo -> aligned faces with masks: decode, detect, 68 landmarks, align, mask.

    Args:
      detector: "auto" (HOG, then the CNN when HOG finds nothing) / "hog" / "cnn", or a ``FaceDetector`` /
        ``GuidedDetector`` (anything with ``detect(image, all_faces, name)``).
      face_box, box_file, group_fallback: known face boxes and the same-subject fallback
        (`tf_facetex.data.known_faces.build_detector`); only with a detector given by name.
      masker: a ``FaceMasker``, "parsing" (the parsing network, default; it beats the substitute on
        CelebAMask-HQ, IoU 0.938 vs 0.889; without trained weights it falls back to "skin" with a log line),
        "skin" (``LandmarkSkinMasker``), "hull", or None (no mask).
      parsing_weights: the parsing network's weights (default `tf_facetex.paths.parsing_net_weights()`).
      crop_size: side of the aligned crop (224 as in Deng et al.).
      allow_rotation: full similarity (default) or Deng's scale + translation.
      all_faces: every detected face (largest first) instead of only the largest.
      min_side, max_pixels: image validation limits (see ``tf_facetex.data.images``).
      max_detect_side: longer side above which photos are downscaled for detection.
    The mask is computed in the crop (cheap at 224 px) from the crop landmarks, then multiplied by
    the crop's valid area so that black padding never counts as face.
    """

    def __init__(self, detector="auto", masker="parsing", crop_size: int = CROP_SIZE, allow_rotation: bool = True,
                 all_faces: bool = False, min_side: int = None, max_pixels: int = None, max_detect_side: int = 1024,
                 parsing_weights=None, log=print, face_box=None, box_file=None, group_fallback: str = "none"):
        from tf_facetex import paths
        from tf_facetex.data import images as _images
        from tf_facetex.data.known_faces import build_detector
        from tf_facetex.data.parsing_net import masker_from_name
        self.detector = (build_detector(detector, face_box=face_box, box_file=box_file, group_fallback=group_fallback,
                                        max_side=max_detect_side) if isinstance(detector, str) else detector)
        if isinstance(masker, str):
            masker = masker_from_name(masker, parsing_weights or paths.parsing_net_weights(), log=log)
        self.masker = masker
        self.crop_size = crop_size
        self.allow_rotation = allow_rotation
        self.all_faces = all_faces
        self.min_side = _images.MIN_SIDE if min_side is None else min_side
        self.max_pixels = _images.MAX_PIXELS if max_pixels is None else max_pixels

    def from_image(self, image: np.ndarray, name: str = "<image>"):
        """uint8 [H, W, 3] -> list of AlignedFace (largest face first). Raises NoFaceError."""
        faces = self.detector.detect(image, all_faces=self.all_faces, name=name)
        grayscale = is_grayscale(image)
        out = []
        for index, face in enumerate(faces):
            aligned = align_face(image, face.landmarks, self.crop_size, self.allow_rotation)
            if self.masker is not None:
                aligned.mask = self.masker(aligned.image, aligned.landmarks) * aligned.valid
            aligned.box, aligned.score, aligned.face_index = face.box, face.score, index
            aligned.detector, aligned.grayscale = getattr(face, "detector", "hog"), grayscale
            out.append(aligned)
        return out

    def from_bytes(self, data: bytes, name: str = "<bytes>"):
        """Encoded image bytes -> list of AlignedFace. Raises ImageError / NoFaceError."""
        from tf_facetex.data.images import decode_image
        image = decode_image(data, name=name, min_side=self.min_side, max_pixels=self.max_pixels)
        return self.from_image(image, name=name)

    def from_file(self, path):
        """A photo file -> list of AlignedFace. Raises ImageError / NoFaceError."""
        from tf_facetex.data.images import read_bytes
        return self.from_bytes(read_bytes(path), name=str(path))


def paste_back(crop: np.ndarray, transform: np.ndarray, original_shape, mask: np.ndarray = None,
               background: np.ndarray = None) -> np.ndarray:
    """Warps a crop-space result (e.g. a re-render) back onto the photo's pixel grid.

    Args:
      crop: [S, S, 3] RGB or [S, S, 4] RGBA (uint8 or float) in the aligned crop.
      transform: [2, 3] original -> crop (the one that made the crop).
      original_shape: (H, W) (extra entries ignored) of the photo.
      mask: optional [S, S] or [S, S, 1] weights in [0, 1] (e.g. the face mask); multiplied with the
        crop's alpha when both are given.
      background: optional [H, W, 3] photo to composite onto.
    Returns:
      with background: [H, W, 3] composite in background's dtype;
      without: [H, W, 4] RGBA in crop's dtype (alpha 0 outside the crop / mask).
    """
    height, width = int(original_shape[0]), int(original_shape[1])
    crop = np.asarray(crop)
    is_int = np.issubdtype(crop.dtype, np.integer)
    full = 255.0 if is_int else 1.0
    colour = crop[..., :3].astype(np.float32)
    alpha = crop[..., 3].astype(np.float32) / full if crop.shape[-1] == 4 else np.ones(crop.shape[:2], np.float32)
    if mask is not None:
        alpha = alpha * np.asarray(mask, np.float32).reshape(crop.shape[:2])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # transform maps destination (photo) -> source (crop)
    colour_back = cv2.warpAffine(colour, np.asarray(transform, np.float64), (width, height), flags=flags,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha_back = cv2.warpAffine(alpha, np.asarray(transform, np.float64), (width, height), flags=flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    if background is not None:
        bg = np.asarray(background)
        bg_full = 255.0 if np.issubdtype(bg.dtype, np.integer) else 1.0
        out = bg.astype(np.float32) * (1.0 - alpha_back) + colour_back * (bg_full / full) * alpha_back
        return _cast(out, bg.dtype, bg_full)
    out = np.concatenate([colour_back, alpha_back * full], axis=-1)
    return _cast(out, crop.dtype, full)


def _cast(values: np.ndarray, dtype, full: float) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return np.clip(np.round(values), 0, full).astype(dtype)
    return values.astype(dtype)
