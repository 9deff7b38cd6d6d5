"""Metrics for what a user sees: is the albedo clean (no hair or occluders baked in) and is the render complete?

Re-render PSNR on the method's own face mask cannot see either failure: an albedo with the photo's hair in it
re-renders the photo very well, and a mask that leaves the eyes out scores well by not looking at them. These
metrics use human labels (CelebAMask-HQ parsing maps, warped into the aligned crop) instead:

- **occluder leak**: of the albedo texels the reconstruction marks as seen (``visibility_uv``; the texels
  whose colour comes from the photo), the share whose source pixel (the image-from-UV lookup of the unwrap)
  is labelled hair, hat, glasses, earring, cloth or background (``OCCLUDER_CLASSES``). Three readings:
  ``leak_nearest`` (the nearest source pixel's label), ``leak_any_tap`` (any of the four bilinear taps the
  unwrap samples, with a non-zero weight, is an occluder), ``leak_weighted`` (the share of the seen texels'
  colour that comes from occluder pixels, bilinear weights). ``nonface_nearest`` counts every label that is
  not face (also ears, neck, necklace).
- **holes**: the share of the labelled face (skin, nose, eyes, brows, lips, inner mouth) that the render
  covers (``render_mask``), and the same for the eyes and the mouth (lips + inner mouth) alone;
- **re-render** L1 / PSNR / SSIM of R(A', L') against the photo on three regions: the labelled face, the
  convex hull of the 68 detected landmarks (neither depends on the method's mask; pixels the render leaves
  empty count as black, as the user sees them) and the method's own ``face_mask``; plus PSNR inside the
  labelled eyes and the labelled mouth separately.

Everything is measured on the outputs of the product's ``Reconstructor`` (and its renderer's unwrap for the
texel -> pixel lookup), never on a copy of the pipeline.
"""
import cv2
import numpy as np

from tf_facetex.data.masks import CELEBAMASK_FACE_CLASSES, polygon_mask

# CelebAMask-HQ-mini label ids (0 background, 1 skin, 2 nose, 3 glasses, 4/5 eyes, 6/7 brows, 8/9 ears,
# 10 inner mouth, 11/12 lips, 13 hair, 14 hat, 15 earring, 16 necklace, 17 neck, 18 cloth)
OCCLUDER_CLASSES = (0, 3, 13, 14, 15, 18)
EYE_CLASSES = (4, 5)
MOUTH_CLASSES = (10, 11, 12)
OUTSIDE_PHOTO = 255     # label of crop pixels the photo does not cover (black padding)


def labels_in_crop(labels: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """A label map warped into the aligned crop: uint8 [H, W] ids, [2, 3] photo -> crop -> uint8 [S, S].

    Nearest-neighbour (ids are not averaged); crop pixels outside the photo get ``OUTSIDE_PHOTO``.
    """
    return cv2.warpAffine(np.ascontiguousarray(labels, np.uint8), np.asarray(transform, np.float64),
                          (crop_size, crop_size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=OUTSIDE_PHOTO)


def class_mask(labels: np.ndarray, classes) -> np.ndarray:
    """bool [H, W]: pixels whose label is one of ``classes``."""
    return np.isin(labels, np.asarray(classes, labels.dtype))


def landmark_hull(shape, landmarks68: np.ndarray) -> np.ndarray:
    """bool [H, W]: the convex hull of the 68 landmarks (jaw, brows: the face below the forehead)."""
    return polygon_mask(shape, landmarks68).astype(bool)


def _bilinear_taps(pixels_uv: np.ndarray, height: int, width: int):
    """The unwrap's four bilinear taps of each texel (as `interpolate.bilinear_sample`: clamped to the image).

    pixels_uv [..., 2] (x, y) -> (rows [4, ...], cols [4, ...], weights [4, ...]).
    """
    x = np.clip(pixels_uv[..., 0], 0.0, width - 1.0)
    y = np.clip(pixels_uv[..., 1], 0.0, height - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    rows = np.stack([y0, y0, y1, y1])
    cols = np.stack([x0, x1, x0, x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return rows, cols, weights


def occluder_leak(visibility_uv: np.ndarray, pixels_uv: np.ndarray, labels: np.ndarray) -> dict:
    """Share of the seen texels whose source pixel is an occluder.

    Args:
      visibility_uv: [S, S] or [S, S, 1] in {0, 1}: the texels the albedo takes from the photo.
      pixels_uv: [S, S, 2] (x, y) crop-pixel coordinates of every texel (the unwrap's lookup).
      labels: uint8 [H, W] label ids in the crop (``labels_in_crop``).
    Returns:
      dict(seen_texels, leak_nearest, leak_any_tap, leak_weighted, nonface_nearest); shares in [0, 1]
      (0 when no texel is seen).
    """
    seen = np.asarray(visibility_uv).reshape(pixels_uv.shape[:2]) > 0.5
    height, width = labels.shape
    pixels = np.asarray(pixels_uv, np.float64)[seen]                        # [K, 2]
    occluder = class_mask(labels, OCCLUDER_CLASSES) | (labels == OUTSIDE_PHOTO)
    nonface = ~class_mask(labels, CELEBAMASK_FACE_CLASSES)
    count = int(seen.sum())
    if count == 0:
        return {"seen_texels": 0, "leak_nearest": 0.0, "leak_any_tap": 0.0, "leak_weighted": 0.0,
                "nonface_nearest": 0.0}
    col = np.clip(np.round(pixels[:, 0]).astype(np.int64), 0, width - 1)
    row = np.clip(np.round(pixels[:, 1]).astype(np.int64), 0, height - 1)
    rows, cols, weights = _bilinear_taps(pixels, height, width)
    tap_occluder = occluder[rows, cols]                                     # [4, K]
    return {"seen_texels": count,
            "leak_nearest": float(occluder[row, col].mean()),
            "leak_any_tap": float(np.any(tap_occluder & (weights > 0), axis=0).mean()),
            "leak_weighted": float((tap_occluder * weights).sum(axis=0).mean()),
            "nonface_nearest": float(nonface[row, col].mean())}


def coverage(render_mask: np.ndarray, labels: np.ndarray, valid: np.ndarray = None) -> dict:
    """Share of the labelled face / eyes / mouth the render covers: [H, W(, 1)] masks, uint8 [H, W] labels.

    A region with no labelled pixel gives NaN (counted apart by ``summarise``).
    """
    covered = np.asarray(render_mask).reshape(labels.shape) > 0.5
    inside = np.ones(labels.shape, bool) if valid is None else np.asarray(valid).reshape(labels.shape) > 0.5
    out = {}
    for name, classes in (("face", CELEBAMASK_FACE_CLASSES), ("eyes", EYE_CLASSES), ("mouth", MOUTH_CLASSES)):
        region = class_mask(labels, classes) & inside
        out[f"coverage_{name}"] = float(covered[region].mean()) if region.any() else float("nan")
    return out


def region_image_metrics(render: np.ndarray, image: np.ndarray, regions: dict) -> dict:
    """L1 / PSNR / SSIM of a render against the photo on named regions.

    Args:
      render, image: [H, W, 3] float in [0, 1] (the render's empty pixels stay black: what a user sees).
      regions: {name: bool [H, W]}; SSIM only for regions named without an ``_psnr_only`` suffix.
    Returns:
      {f"{name}_l1", f"{name}_psnr_db", f"{name}_ssim", f"{name}_pixels"}.
    """
    import tensorflow as tf

    from tf_facetex import metrics

    render = tf.constant(np.clip(render, 0.0, 1.0)[None], tf.float32)
    image = tf.constant(np.asarray(image, np.float32)[None])
    out = {}
    for name, region in regions.items():
        psnr_only = name.endswith("_psnr_only")
        key = name[:-len("_psnr_only")] if psnr_only else name
        mask = tf.constant(np.asarray(region, np.float32)[None, ..., None])
        out[f"{key}_pixels"] = int(np.asarray(region).sum())
        if out[f"{key}_pixels"] == 0:
            out[f"{key}_psnr_db"] = float("nan")
            continue
        out[f"{key}_psnr_db"] = float(metrics.masked_psnr(render, image, mask)[0])
        if not psnr_only:
            out[f"{key}_l1"] = float(metrics.masked_l1(render, image, mask)[0])
            out[f"{key}_ssim"] = float(metrics.masked_ssim(render, image, mask)[0])
    return out


def texel_lookup(renderer, result) -> np.ndarray:
    """The unwrap's texel -> crop-pixel lookup [S, S, 2] of a `FaceResult` (the product renderer's ``unwrap``)."""
    import tensorflow as tf

    posed = tf.constant(result.posed_vertices[None], tf.float32)
    image = tf.constant(result.face.image[None], tf.float32)
    return renderer.unwrap(image, posed).pixels.numpy()[0]


def evaluate_result(renderer, result, labels: np.ndarray) -> dict:
    """All clean-albedo metrics of one reconstructed face (`FaceResult`) against its crop labels."""
    face = result.face
    valid = np.asarray(face.valid).reshape(labels.shape) > 0.5
    image = face.image.astype(np.float32) / 255.0
    out = occluder_leak(result.visibility_uv, texel_lookup(renderer, result), labels)
    out.update(coverage(result.render_mask, labels, valid))
    regions = {"labelled_face": class_mask(labels, CELEBAMASK_FACE_CLASSES) & valid,
               "landmark_hull": landmark_hull(labels.shape, face.landmarks) & valid,
               "own_mask": (np.asarray(result.face_mask).reshape(labels.shape) > 0.5) & valid,
               "eyes_psnr_only": class_mask(labels, EYE_CLASSES) & valid,
               "mouth_psnr_only": class_mask(labels, MOUTH_CLASSES) & valid}
    out.update(region_image_metrics(result.render_detailed, image, regions))
    return out


def summarise(per_image: dict) -> dict:
    """{stem: metrics} -> {metric: dict(mean, median, count)} over the finite values (NaN: region absent)."""
    keys = sorted({key for values in per_image.values() for key in values})
    out = {}
    for key in keys:
        values = np.array([v[key] for v in per_image.values() if key in v], np.float64)
        finite = values[np.isfinite(values)]
        out[key] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                    "median": float(np.median(finite)) if finite.size else float("nan"),
                    "count": int(finite.size)}
    return out


TABLE_ROWS = (
    ("occluder leak, nearest pixel (share of seen texels) ↓", "leak_nearest"),
    ("occluder leak, bilinear-weighted ↓", "leak_weighted"),
    ("seen texels per face", "seen_texels"),
    ("coverage of the labelled face ↑", "coverage_face"),
    ("coverage of the labelled eyes ↑", "coverage_eyes"),
    ("coverage of the labelled mouth ↑", "coverage_mouth"),
    ("PSNR labelled face (dB) ↑", "labelled_face_psnr_db"),
    ("L1 labelled face ↓", "labelled_face_l1"),
    ("SSIM labelled face ↑", "labelled_face_ssim"),
    ("PSNR landmark hull (dB) ↑", "landmark_hull_psnr_db"),
    ("SSIM landmark hull ↑", "landmark_hull_ssim"),
    ("PSNR own face mask (dB)", "own_mask_psnr_db"),
    ("PSNR eyes (dB) ↑", "eyes_psnr_db"),
    ("PSNR mouth (dB) ↑", "mouth_psnr_db"),
)


def comparison_table(runs) -> str:
    """Markdown table of ``scripts/eval_clean_albedo.py`` results side by side: [(name, result dict)] -> str.

    Per-image means (medians in brackets); the pooled leak (all seen texels of all faces together) below.
    """
    header = "| metric | " + " | ".join(name for name, _ in runs) + " |"
    lines = [header, "|---" * (len(runs) + 1) + "|"]
    for label, key in TABLE_ROWS:
        cells = []
        for _, result in runs:
            entry = result["summary"].get(key)
            cells.append("–" if entry is None else f"{entry['mean']:.4g} ({entry['median']:.4g})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| occluder leak pooled over texels ↓ | " + " | ".join(
        f"{result['leak_pooled_over_texels']['leak_nearest']:.4f}" for _, result in runs) + " |")
    lines.append("| faces | " + " | ".join(str(result["num_faces"]) for _, result in runs) + " |")
    return "\n".join(lines) + "\n"
