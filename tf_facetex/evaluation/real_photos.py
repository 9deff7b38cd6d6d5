"""Shared evaluation code for real photos: face-mask metrics against CelebAMask-HQ parsing labels, and
68-point landmark / head-pose errors against AFLW2000-3D.

Masks are compared in the aligned 224 crop (the space where the project computes them): the label map is
warped with the same alignment transform (nearest neighbour) and only the crop's valid area (the part that
shows the photo, not the black padding) counts.

Landmark NME follows the AFLW2000-3D protocol of 3DDFA: the mean point-to-point distance over the 68
points (x, y of ``pt3d_68``), divided by the size sqrt(w * h) of the ground-truth points' bounding box;
the 51 inner points (17-67) use the same 68-point box. Faces are binned by |yaw| of ``Pose_Para``.

No TensorFlow or dlib import at module level: the metric functions are pure numpy.
"""
import pathlib

import cv2
import numpy as np
from PIL import Image

from tf_facetex import visualize
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data.align import align_face
from tf_facetex.data.images import load_image
from tf_facetex.data.masks import CELEBAMASK_FACE_CLASSES, celebamask_face_mask  # noqa: F401 (re-exported)
from tf_facetex.errors import NoFaceError

NUM_HELDOUT = 200                   # the last 200 of CelebAMask-HQ-mini's 1,000 (sorted by name) are held out
INNER_POINTS = np.arange(17, 68)    # brows, nose, eyes, mouth: no jaw contour
YAW_BINS_DEG = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))  # the last bin also takes |yaw| > 90 (counted apart)
PERCENTILES = (5, 10, 25, 50, 75, 90, 95)


# ---------------------------------------------------------------------------------------------- masks
def mask_counts(predicted: np.ndarray, target: np.ndarray, valid: np.ndarray = None) -> dict:
    """Pixel counts of a binary prediction against a binary target.

    Args:
      predicted, target: [H, W] masks (> 0.5 is inside).
      valid: optional [H, W]; pixels with valid <= 0.5 are ignored.
    Returns:
      dict(tp, fp, fn) of ints.
    """
    pred = np.asarray(predicted) > 0.5
    true = np.asarray(target) > 0.5
    if valid is not None:
        keep = np.asarray(valid) > 0.5
        pred, true = pred & keep, true & keep
    return {"tp": int(np.sum(pred & true)), "fp": int(np.sum(pred & ~true)), "fn": int(np.sum(~pred & true))}


def scores_from_counts(counts: dict) -> dict:
    """dict(tp, fp, fn) -> dict(iou, precision, recall) in [0, 1].

    Empty denominators: an empty prediction of an empty target is perfect (1.0); otherwise an empty
    prediction has precision 1 (it claimed nothing wrong) and recall 0, and vice versa.
    """
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    union = tp + fp + fn
    iou = tp / union if union else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"iou": float(iou), "precision": float(precision), "recall": float(recall)}


def mask_scores(predicted: np.ndarray, target: np.ndarray, valid: np.ndarray = None) -> dict:
    """[H, W], [H, W], optional [H, W] -> dict(iou, precision, recall, tp, fp, fn)."""
    counts = mask_counts(predicted, target, valid)
    return {**scores_from_counts(counts), **counts}


def error_overlay(predicted: np.ndarray, target: np.ndarray, valid: np.ndarray = None) -> np.ndarray:
    """uint8 [H, W, 3] picture of a mask's errors (no photo pixels in it).

    White: both face; red: predicted face, labelled not face (false positive); blue: missed face
    (false negative); grey: both background; black: outside the valid area.
    """
    pred = np.asarray(predicted) > 0.5
    true = np.asarray(target) > 0.5
    out = np.full(pred.shape + (3,), 96, np.uint8)
    out[pred & true] = (235, 235, 235)
    out[pred & ~true] = (230, 40, 40)
    out[~pred & true] = (40, 90, 240)
    if valid is not None:
        out[np.asarray(valid) <= 0.5] = 0
    return out


# ---------------------------------------------------------------------------------------------- statistics
def distribution(values) -> dict:
    """Summary of a 1-D sample: dict(count, mean, std, min, max, p5 ... p95 (incl. median = p50)).

    Empty samples give count 0 and NaN statistics (JSON-serialised as NaN; callers report the count).
    """
    values = np.asarray(list(values), np.float64)
    if values.size == 0:
        nan = float("nan")
        return {"count": 0, "mean": nan, "std": nan, "min": nan, "max": nan, "median": nan,
                **{f"p{p}": nan for p in PERCENTILES}}
    out = {"count": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
           "min": float(values.min()), "max": float(values.max()), "median": float(np.median(values))}
    out.update({f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES})
    return out


def histogram(values, edges) -> dict:
    """Counts of ``values`` in the bins given by ``edges`` [K + 1] -> dict(edges [K + 1], counts [K])."""
    counts, edges = np.histogram(np.asarray(list(values), np.float64), bins=np.asarray(edges, np.float64))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


# ---------------------------------------------------------------------------------------------- CelebAMask-HQ
def celebamask_files(folder) -> list:
    """Sorted image paths of a CelebAMask-HQ folder with ``images/*.jpg`` and ``masks/*.png``."""
    files = sorted(pathlib.Path(folder, "images").glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"{folder}: no images/*.jpg (expected images/ and masks/ inside)")
    return files


def heldout_split(files, num_heldout: int = NUM_HELDOUT):
    """(train, held_out): the last ``num_heldout`` files (by sorted name) are held out."""
    files = sorted(files)
    cut = max(len(files) - num_heldout, 0)
    return files[:cut], files[cut:]


def load_celebamask_labels(image_path, shape=None) -> np.ndarray:
    """The class-id label map of an image (``../masks/<stem>.png``): uint8 [H, W], resized (nearest) to shape."""

    image_path = pathlib.Path(image_path)
    labels = np.asarray(Image.open(image_path.parent.parent / "masks" / f"{image_path.stem}.png"))
    if shape is not None and labels.shape[:2] != tuple(shape[:2]):
        labels = cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return labels


def aligned_target(labels: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """Face mask of a label map warped into the aligned crop: [H, W] ids, [2, 3] -> uint8 [S, S] in {0, 1}."""
    return cv2.warpAffine(celebamask_face_mask(labels), np.asarray(transform, np.float64), (crop_size, crop_size),
                          flags=cv2.INTER_NEAREST, borderValue=0)


def celebamask_crop(path, detector, crop_size: int = CROP_SIZE):
    """One CelebAMask-HQ image as (AlignedFace, target uint8 [S, S]) or None when no face is detected."""

    image = load_image(path)
    try:
        face = detector.detect(image, name=str(path))[0]
    except NoFaceError:
        return None
    aligned = align_face(image, face.landmarks, crop_size)
    return aligned, aligned_target(load_celebamask_labels(path, image.shape), aligned.transform, crop_size)


def summarise_masks(per_image: dict) -> dict:
    """{stem: dict(iou, precision, recall, ...)} -> {metric: distribution} plus an IoU histogram."""
    out = {metric: distribution(r[metric] for r in per_image.values()) for metric in ("iou", "precision", "recall")}
    out["iou_histogram"] = histogram((r["iou"] for r in per_image.values()), np.linspace(0.0, 1.0, 21))
    return out


def worst_cases_grid(rows, cell: int = 112) -> np.ndarray:
    """Figure of worst cases: rows of (title, image, target, [(name, predicted, valid), ...]).

    Each row: image | GT | per masker: its mask | its error overlay (``error_overlay``). Returns uint8 RGB.
    """

    def small(picture, interpolation=cv2.INTER_AREA):
        return cv2.resize(np.ascontiguousarray(picture), (cell, cell), interpolation=interpolation)

    def as_rgb(mask):
        return np.repeat((np.asarray(mask) > 0.5).astype(np.uint8)[..., None] * 255, 3, axis=-1)

    out_rows = []
    for title, image, target, predictions in rows:
        cells = [visualize.label(small(image), title, 0.3),
                 visualize.label(small(as_rgb(target), cv2.INTER_NEAREST), "GT", 0.3)]
        for name, predicted, valid in predictions:
            score = mask_scores(predicted, target, valid)["iou"]
            cells.append(visualize.label(small(as_rgb(predicted), cv2.INTER_NEAREST), f"{name} {score:.2f}", 0.3))
            cells.append(visualize.label(small(error_overlay(predicted, target, valid), cv2.INTER_NEAREST),
                                         "FP red FN blue", 0.3))
        out_rows.append(cells)
    return visualize.grid(out_rows)


# ---------------------------------------------------------------------------------------------- landmarks
def landmark_box_size(landmarks: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of the landmarks' bounding box: [..., N, 2] -> [...]."""
    points = np.asarray(landmarks, np.float64)
    extent = points.max(axis=-2) - points.min(axis=-2)
    return np.sqrt(extent[..., 0] * extent[..., 1])


def nme(predicted: np.ndarray, target: np.ndarray, points=None, box_size=None) -> np.ndarray:
    """Normalised mean error: mean L2 distance over ``points`` / ``box_size``.

    Args:
      predicted, target: [..., 68, 2].
      points: indices of the points averaged (default all).
      box_size: [...] normaliser; default ``landmark_box_size(target)`` over *all* target points.
    Returns:
      [...] NME (a fraction; x100 for percent).
    """
    predicted = np.asarray(predicted, np.float64)
    target = np.asarray(target, np.float64)
    if box_size is None:
        box_size = landmark_box_size(target)
    distance = np.linalg.norm(predicted - target, axis=-1)
    if points is not None:
        distance = distance[..., points]
    return distance.mean(axis=-1) / np.asarray(box_size, np.float64)


def yaw_bin(yaw_radians: float) -> str:
    """'0-30', '30-60' or '60-90' for |yaw| in degrees (beyond 90 goes to '60-90')."""
    degrees = round(abs(float(np.degrees(yaw_radians))), 9)  # 30 deg stays 30 through radians and back
    for low, high in YAW_BINS_DEG:
        if degrees < high:
            return f"{low:g}-{high:g}"
    low, high = YAW_BINS_DEG[-1]
    return f"{low:g}-{high:g}"


def yaw_bin_names() -> list:
    return [f"{low:g}-{high:g}" for low, high in YAW_BINS_DEG]


def load_aflw2000(mat_path) -> dict:
    """An AFLW2000-3D annotation: dict(landmarks float64 [68, 2] (x, y px, y down), pose [3] (pitch, yaw, roll) rad)."""
    import scipy.io

    mat = scipy.io.loadmat(str(mat_path))
    return {"landmarks": np.asarray(mat["pt3d_68"], np.float64)[:2].T,
            "pose": np.asarray(mat["Pose_Para"], np.float64).reshape(-1)[:3]}


# ---------------------------------------------------------------------------------------------- head pose
def rotation_from_euler(angles: np.ndarray) -> np.ndarray:
    """[..., 3] (pitch, yaw, roll) -> [..., 3, 3] ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (``tf_facetex.camera``'s)."""
    a = np.asarray(angles, np.float64)
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(a.shape[:-1] + (3, 3))
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(a.shape[:-1] + (3, 3))
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(a.shape[:-1] + (3, 3))
    return rz @ ry @ rx


def crop_roll(transform: np.ndarray) -> float:
    """Rotation (radians, about the camera's view axis, world y up) that the alignment applied to the photo."""
    linear = np.asarray(transform, np.float64)[:, :2]
    flip = np.diag([1.0, -1.0])  # image y down -> world y up
    world = flip @ linear @ flip
    return float(np.arctan2(world[1, 0], world[0, 0]))


def pose_in_photo(angles_in_crop: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Undoes the alignment's in-plane rotation: (pitch, yaw, roll) fitted in the crop -> in the photo. [3] -> [3].

    The crop is the photo rotated by ``crop_roll`` about the view axis, so R_crop = Rz(phi) R_photo
    (exact for a rotation about the principal point, a close approximation elsewhere).
    """
    # Lazy: pose_init imports TensorFlow (via camera); the metric functions of this module stay numpy-only.
    from tf_facetex.prior.pose_init import euler_from_rotation

    phi = crop_roll(transform)
    undo = rotation_from_euler(np.array([0.0, 0.0, -phi]))
    return euler_from_rotation(undo @ rotation_from_euler(angles_in_crop))


def wrap_angle(radians: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(radians, np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def pose_sign_convention(fitted: np.ndarray, reference: np.ndarray) -> dict:
    """Per angle, the sign s in {+1, -1} for which s * fitted best matches the reference.

    Args:
      fitted, reference: [N, 3] (pitch, yaw, roll) radians.
    Returns:
      dict(signs [3], mae_plus [3], mae_minus [3], correlation [3]) with the MAE (radians) of each choice.
    """
    fitted = np.asarray(fitted, np.float64)
    reference = np.asarray(reference, np.float64)
    mae_plus = np.abs(wrap_angle(fitted - reference)).mean(axis=0)
    mae_minus = np.abs(wrap_angle(-fitted - reference)).mean(axis=0)
    correlation = [float(np.corrcoef(fitted[:, k], reference[:, k])[0, 1]) if len(fitted) > 1 else float("nan")
                   for k in range(3)]
    return {"signs": [1 if p <= m else -1 for p, m in zip(mae_plus, mae_minus)],
            "mae_plus": mae_plus.tolist(), "mae_minus": mae_minus.tolist(), "correlation": correlation}
