"""What the symmetry term does to the albedo: mirrored ghosts of occluders, and the completion of unseen texels.

The symmetry term copies one side of the UV chart onto the other. Where the photo did not show a texel that is
the point (the mirror is the best guess), where it did it can paint the other side's occluder over a seen,
clean texel: a strand over one eyebrow comes back over the other. Re-render metrics cannot see either (the ghost
sits where the photo agrees well enough, the unseen part is never rendered), so these use the synthetic faces'
true albedo (scripts/make_synthetic.py):

- **ghosting**: the albedo error on the *ghost region*, the texels the photo shows whose mirror is covered by
  an occluder (``ghost_region``): the mirror image of the occluded region, restricted to where it is seen and
  itself free of the occluder, against the true albedo there;
- **completion**: the albedo error on the chart texels the photo did not show (visibility_uv = 0);
- **occluded**: the error on the occluded texels themselves (what the completion made of the hidden part);
- **ghost excess**: the ghost region's error minus that of the face's other clean seen texels: when the occluder
  also misleads the light estimate (a masker that misses it), every texel's error rises, the ghost's on top.

All are RMSEs after the per-channel scale alignment of the albedo si-RMSE, with the scale fitted on the whole
chart (a region's own scale would hide a tone shift there): the numbers compare with `metrics.albedo_metrics`.
The albedos come from the product's refiners (`evaluation.variants`), never from a copy of the fit.
"""
import cv2
import numpy as np
import tensorflow as tf

from tf_facetex import metrics
from tf_facetex.losses import mirror_uv


def occluded_texels(occluder_mask, pixel_uv, proj_mask, uv_size, dilation=1):
    """The UV texels an image-space occluder covers: the texels of the face pixels it hides.

    Every face pixel (proj_mask) under the occluder marks its texel (the image-from-UV lookup, rounded); the
    image samples the chart more sparsely than one pixel per texel in places, so the marks are dilated by
    ``dilation`` texels (3 x 3 steps) to close the gaps between them.

    Args:
      occluder_mask: [B, H, W, 1] in {0, 1} (the generator's ``occluder_mask``).
      pixel_uv: [B, H, W, 2] (col, row) position of every pixel in the S x S UV map.
      proj_mask: [B, H, W, 1] pixels covered by the mesh.
      uv_size: S.
    Returns:
      float32 [B, S, S, 1] in {0, 1}.
    """
    occluder = np.asarray(occluder_mask, np.float32)[..., 0] > 0.5
    face = np.asarray(proj_mask, np.float32)[..., 0] > 0.5
    pixel_uv = np.asarray(pixel_uv, np.float32)
    out = np.zeros((occluder.shape[0], uv_size, uv_size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for b in range(occluder.shape[0]):
        hidden = pixel_uv[b][occluder[b] & face[b]]                           # [K, 2] (col, row)
        cols = np.clip(np.round(hidden[:, 0]).astype(np.int64), 0, uv_size - 1)
        rows = np.clip(np.round(hidden[:, 1]).astype(np.int64), 0, uv_size - 1)
        out[b, rows, cols] = 1
        if dilation > 0:
            out[b] = cv2.dilate(out[b], kernel, iterations=int(dilation))
    return out[..., None].astype(np.float32)


def ghost_region(occluded_uv, visibility_uv, uv_mask, symmetry_index=None):
    """Texels the photo shows, free of the occluder, whose mirror texel is occluded: the region a mirrored
    ghost of the occluder would land on.

    Args:
      occluded_uv: [B, S, S, 1] (`occluded_texels`); visibility_uv: [B, S, S, 1]; uv_mask: [S, S, 1];
      symmetry_index: None (flip along W) or [S * S] (`losses.mirror_uv`).
    Returns:
      float32 [B, S, S, 1] in {0, 1}.
    """
    occluded = tf.convert_to_tensor(occluded_uv, tf.float32)
    chart = tf.convert_to_tensor(uv_mask, tf.float32)[None] * tf.ones_like(occluded)
    on_chart = chart * mirror_uv(chart, symmetry_index)
    seen = tf.cast(tf.convert_to_tensor(visibility_uv, tf.float32) > 0.5, tf.float32)
    return (seen * (1.0 - occluded) * mirror_uv(occluded, symmetry_index) * on_chart).numpy()


def region_rmse(albedo_uv, truth_uv, region, align_region):
    """Per-image RMSE on ``region`` after the per-channel scale fitted on ``align_region``.

    Args:
      albedo_uv, truth_uv: [B, S, S, 3]; region, align_region: [B, S, S, 1].
    Returns:
      float64 [B]; NaN where a region is empty.
    """
    albedo_uv = tf.convert_to_tensor(albedo_uv, tf.float32)
    truth_uv = tf.convert_to_tensor(truth_uv, tf.float32)
    aligned = metrics.scale_alignment(albedo_uv, truth_uv, align_region) * albedo_uv
    region = np.asarray(region, np.float64)
    squared = np.sum(region * np.square(aligned.numpy() - truth_uv.numpy()), axis=(1, 2, 3))
    count = np.sum(region, axis=(1, 2, 3)) * truth_uv.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(squared / np.maximum(count, 1e-12)), np.nan)


def mirror_metrics(batch, albedo_uv, uv_mask, occluded_uv, symmetry_index=None):
    """Ghosting, completion and whole-chart albedo errors of one variant's albedo on a batch with ground truth.

    Args:
      batch: refinement samples with ``albedo_gt_uv`` and ``visibility_uv`` ([B, ...] tensors or arrays).
      albedo_uv: [B, S, S, 3] the variant's albedo; uv_mask: [S, S, 1];
      occluded_uv: [B, S, S, 1] (`occluded_texels`); symmetry_index: as `losses.mirror_uv`.
    Returns:
      dict of [B] float64: ghost_rmse, occluded_rmse, completion_rmse, seen_clean_rmse (seen texels neither
      occluded nor in the ghost region), ghost_excess (ghost_rmse - seen_clean_rmse), albedo_si_rmse (the whole
      chart), and the texel counts ghost_texels, occluded_texels, completion_texels, seen_clean_texels.
    """
    truth = tf.convert_to_tensor(batch["albedo_gt_uv"], tf.float32)
    chart = np.asarray(uv_mask, np.float32)[None] * np.ones(truth.shape[:3] + (1,), np.float32)
    visible = np.asarray(batch["visibility_uv"], np.float32) > 0.5
    ghost = ghost_region(occluded_uv, batch["visibility_uv"], uv_mask, symmetry_index)
    occluded = np.asarray(occluded_uv, np.float32) * chart
    regions = {"ghost": ghost, "occluded": occluded, "completion": chart * (~visible),
               "seen_clean": chart * visible * (1.0 - occluded) * (1.0 - ghost)}
    out = {"albedo_si_rmse": region_rmse(albedo_uv, truth, chart, chart)}
    for name, region in regions.items():
        out[f"{name}_rmse"] = region_rmse(albedo_uv, truth, region, chart)
        out[f"{name}_texels"] = region.sum(axis=(1, 2, 3))
    # What the ghost region has beyond the error of the other clean seen texels of the same face (a wrong
    # light or tone raises both alike).
    out["ghost_excess"] = out["ghost_rmse"] - out["seen_clean_rmse"]
    return out


def summarise(values, min_texels=20):
    """{metric: [N] per image} -> {metric: dict(mean, median, count)}; a region metric counts only the images
    whose region has at least ``min_texels`` texels (a handful of texels says nothing)."""
    out = {}
    for key, array in values.items():
        array = np.asarray(array, np.float64)
        region = key[:-len("_rmse")] if key.endswith("_rmse") else ("ghost" if key == "ghost_excess" else None)
        counts = values.get(f"{region}_texels") if region else None
        keep = np.isfinite(array)
        if counts is not None:
            keep &= np.asarray(counts) >= min_texels
        kept = array[keep]
        out[key] = {"mean": float(kept.mean()) if kept.size else float("nan"),
                    "median": float(np.median(kept)) if kept.size else float("nan"), "count": int(kept.size)}
    return out


# ------------------------------------------------------------------------------------------ the protocol
MASK_MODES = ("true", "none")


def prior_samples(prior, faces, mask_mode="true"):
    """Refinement samples of synthetic faces through the product's `PriorModule` (their true landmarks).

    Args:
      prior: `prior.PriorModule` at the faces' UV size.
      faces: list of `data.synthetic.load_synthetic_face` dicts.
      mask_mode: 'true' (the generator's face mask: the occluder is masked out, as a perfect parser would) or
        'none' (the projected face: the occluder is taken as seen, as a masker that misses it).
    Returns:
      (dict of [B, ...] tensors: the prior outputs + albedo_gt_uv, occluded_uv [B, S, S, 1] numpy).
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    images = np.stack([face["image"] for face in faces]).astype(np.float32) / 255.0
    landmarks = np.stack([face["landmarks"] for face in faces]).astype(np.float32)
    masks = np.stack([face["face_mask"] for face in faces]).astype(np.float32) if mask_mode == "true" else None
    out = prior(tf.constant(images), tf.constant(landmarks), None if masks is None else tf.constant(masks))
    out["albedo_gt_uv"] = tf.constant(np.stack([face["albedo_gt_uv"] for face in faces]), tf.float32)
    occluder = np.stack([face["occluder_mask"] for face in faces])
    occluded = occluded_texels(occluder, out["pixel_uv"].numpy(), out["proj_mask"].numpy(),
                               int(out["visibility_uv"].shape[1]))
    return out, occluded
