"""De-lighting unwrapped photos: albedo = T / shading where trustworthy, outliers against a robust reference,
symmetry completion (steps 1-3 of `tf_facetex.albedo_model`)."""
import dataclasses
import warnings

import numpy as np
from scipy import ndimage

from tf_facetex import camera


@dataclasses.dataclass
class DelightConfig:
    """Thresholds of the de-lighting masks (colour values of the photo in [0, 1])."""

    min_shading: float = 0.4        # drop texels with shading below this x the photo's median shading
    saturation: float = 0.98        # drop texels with any channel at or above this (clipped highlights)
    min_value: float = 0.02         # drop texels darker than this (crushed blacks: no albedo left)
    min_view_cosine: float = 0.3    # drop texels seen at more than ~72 degrees from their normal (smeared)
    shadow_ratio: float = 0.7       # outlier: ratio to the reference below this x its local median (cast shadow)
    highlight_ratio: float = 1.35   # outlier: above this x its local median (specular highlight)
    gross_low: float = 0.5          # outlier: below this x the photo's median ratio (large shadow, occluder)
    gross_high: float = 1.8         # outlier: above this x the photo's median ratio
    window_fraction: float = 0.12   # local median window, as a fraction of the UV size
    erode_fraction: float = 1 / 128  # seen-area border dropped (texels x UV size): they mix in hair, background
    mirror_weight: float = 0.5      # weight of texels filled from their mirror (symmetry is approximate)


def luminance(rgb):
    """[..., 3] -> [...] mean of the channels (albedo and shading are linear-ish, so no perceptual weights)."""
    return np.mean(rgb, axis=-1)


def view_cosine(normals_uv, positions_uv):
    """Cosine between each texel's normal and its direction to the camera.

    Args:
      normals_uv: [..., S, S, 3] camera-frame unit normals; positions_uv: [..., S, S, 3] posed positions.
    Returns:
      [..., S, S] cosine (negative when the texel faces away).
    """
    to_camera = np.array([0.0, 0.0, camera.CAMERA_DISTANCE]) - positions_uv
    to_camera = to_camera / np.maximum(np.linalg.norm(to_camera, axis=-1, keepdims=True), 1e-9)
    return np.sum(normals_uv * to_camera, axis=-1)


def delight(texture_uv, visibility_uv, shading_uv, view_cosine_uv=None, region=None,
            config: DelightConfig = DelightConfig()):
    """Removes the fitted lighting from one unwrapped photo, keeping only texels where that is trustworthy.

    Args:
      texture_uv: [S, S, 3] unwrapped photo (0 where unseen); visibility_uv: [S, S] or [S, S, 1] in {0, 1}.
      shading_uv: [S, S, 3] SH shading of the fitted light at the texel normals (`FaceRenderer.shading_uv`).
      view_cosine_uv: [S, S] `view_cosine` of the fitted pose, or None (no grazing-angle test).
      region: [S, S] bool texels that matter (the medians are taken there), or None (the visible texels).
      config: `DelightConfig`.
    Returns:
      (albedo_uv [S, S, 3] float32, 0 where invalid; valid [S, S] bool).
    """
    texture = np.asarray(texture_uv, np.float32)
    shading = np.asarray(shading_uv, np.float32)
    seen = np.asarray(visibility_uv).reshape(texture.shape[:2]) > 0.5
    border = int(round(config.erode_fraction * texture.shape[0]))
    if border > 0:
        seen = ndimage.binary_erosion(seen, iterations=border)
    if region is not None:
        seen &= np.asarray(region, bool)
    shade = luminance(shading)
    valid = seen & (np.min(shading, axis=-1) > 1e-3)
    if valid.any():
        # Attached shadow: the division by a small shading amplifies noise, unmodelled bounce light and fit error.
        valid &= shade >= config.min_shading * np.median(shade[valid])
    valid &= np.max(texture, axis=-1) < config.saturation
    valid &= luminance(texture) > config.min_value
    if view_cosine_uv is not None:
        valid &= np.asarray(view_cosine_uv) >= config.min_view_cosine
    albedo = np.where(valid[..., None], texture / np.maximum(shading, 1e-3), 0.0)
    return albedo.astype(np.float32), valid


def _masked_local_median(values, valid, window):
    """Median of ``values`` over a ``window`` x ``window`` neighbourhood, ignoring invalid texels.

    Invalid texels are first filled with a Gaussian-weighted mean of the valid ones around them (normalised
    convolution), so that they neither pull the median down (zeros) nor need a slow masked median.
    [S, S], [S, S] bool -> [S, S].
    """
    weight = valid.astype(np.float64)
    sigma = window / 2.0
    blurred = ndimage.gaussian_filter(values * weight, sigma)
    norm = ndimage.gaussian_filter(weight, sigma)
    fallback = np.median(values[valid]) if valid.any() else 0.0
    filled = np.where(valid, values, np.where(norm > 1e-6, blurred / np.maximum(norm, 1e-6), fallback))
    return ndimage.median_filter(filled, size=window, mode="nearest")


def outlier_mask(albedo_uv, valid, reference_uv=None, config: DelightConfig = DelightConfig()):
    """Texels of a de-lit photo that the SH model cannot explain: cast shadows, occluders, highlights.

    The test is on the luminance ratio to a reference albedo (eyebrows and lips are dark or red in the reference
    too, so they are kept), compared with the ratio's local median (local shadows and highlights) and with its
    median over the photo (large ones).

    Args:
      albedo_uv: [S, S, 3] from `delight`; valid: [S, S] bool.
      reference_uv: [S, S, 3] reference albedo (`reference_albedo`), or None (a constant reference: then it is
        the raw luminance against its local median).
      config: `DelightConfig`.
    Returns:
      [S, S] bool: valid and not an outlier.
    """
    valid = np.asarray(valid, bool)
    if not valid.any():
        return valid
    lum = luminance(np.asarray(albedo_uv, np.float64))
    ref = np.ones_like(lum) if reference_uv is None else luminance(np.asarray(reference_uv, np.float64))
    keep = valid & (ref > 1e-3)
    if not keep.any():
        return keep
    ratio = np.where(keep, lum / np.maximum(ref, 1e-3), 0.0)
    level = np.median(ratio[keep])
    window = max(3, int(round(config.window_fraction * albedo_uv.shape[0])) | 1)
    local = _masked_local_median(ratio, keep, window)
    keep &= (ratio >= config.shadow_ratio * local) & (ratio <= config.highlight_ratio * local)
    keep &= (ratio >= config.gross_low * level) & (ratio <= config.gross_high * level)
    return keep


def reference_albedo(albedos, valids, region):
    """A robust per-texel reference: the median over photos of each photo's albedo divided by its brightness,
    times the median brightness. Brightness = median luminance over the photo's valid region texels.

    Args:
      albedos: [M, S, S, 3]; valids: [M, S, S] bool; region: [S, S] bool.
    Returns:
      (reference [S, S, 3] float32, 0 where no photo saw the texel; count [S, S] photos that saw it).
    """
    albedos = np.asarray(albedos, np.float32)
    valids = np.asarray(valids, bool) & np.asarray(region, bool)[None]
    levels = np.array([np.median(luminance(a[v])) if v.any() else np.nan for a, v in zip(albedos, valids)])
    usable = np.isfinite(levels) & (levels > 0)
    rows, cols = np.nonzero(region)
    reference = np.zeros(albedos.shape[1:], np.float32)
    count = valids[usable].sum(0)
    if not usable.any():
        return reference, count
    values = albedos[usable][:, rows, cols] / levels[usable, None, None]          # [M', R, 3]
    values = np.where(valids[usable][:, rows, cols, None], values, np.nan)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN texels: nobody saw them
            median = np.nanmedian(values, axis=0) * np.median(levels[usable])
    reference[rows, cols] = np.nan_to_num(median)
    return reference, count


def symmetry_complete(albedo_uv, weight_uv, symmetry_index, mirror_weight: float = 0.5):
    """Fills texels without data from their left-right mirror texel, at ``mirror_weight`` x the mirror's weight.

    Args:
      albedo_uv: [..., S, S, C]; weight_uv: [..., S, S] in [0, 1] (0 = no data).
      symmetry_index: [S * S] flat index of each texel's mirror (`FaceRenderer.uv_symmetry_index`).
    Returns:
      (albedo [..., S, S, C], weight [..., S, S]); texels with data keep their value and weight; texels whose
      mirror has no data either stay at weight 0.
    """
    albedo = np.asarray(albedo_uv, np.float32)
    weight = np.asarray(weight_uv, np.float32)
    size = albedo.shape[-2]
    flat_albedo = albedo.reshape(albedo.shape[:-3] + (size * size, albedo.shape[-1]))
    flat_weight = weight.reshape(weight.shape[:-2] + (size * size,))
    index = np.asarray(symmetry_index)
    mirrored_albedo = np.take(flat_albedo, index, axis=-2)
    mirrored_weight = np.take(flat_weight, index, axis=-1)
    use_mirror = (flat_weight <= 0) & (mirrored_weight > 0)
    out_albedo = np.where(use_mirror[..., None], mirrored_albedo, flat_albedo)
    out_weight = np.where(use_mirror, mirror_weight * mirrored_weight, flat_weight)
    return out_albedo.reshape(albedo.shape), out_weight.reshape(weight.shape)
