"""An albedo model built from photos (docs/METHOD.md, "Albedo model from photos"): de-light unwrapped photos, complete them by symmetry,
then a weighted (missing-data) PCA in UV space, sampled at the vertices into the face model's albedo basis.

Pipeline (scripts/build_albedo_model.py runs it; the steps are numpy functions here):
1. The fitting path (`PriorModule`) gives each photo's unwrapped texture T, visibility, normals and SH light
   (`UnwrappedPhotos`). `delight` divides T by the shading, ``albedo = T / shading``, valid where the texel was
   seen (depth test, face mask; its border eroded) and where the division is trustworthy: not in attached shadow
   (shading far below the photo's median: noise is amplified), not saturated or black, not at a grazing angle.
2. `reference_albedo` pools the photos into a robust per-texel reference (median of brightness-normalised
   albedos), and `outlier_mask` then drops what the SH model cannot explain: cast shadows and dark occluders
   (luminance ratio to the reference far below its local median) and specular highlights (far above). Measuring
   the ratio to a reference, not the raw luminance, keeps eyebrows and lips, which are dark or red everywhere.
3. `symmetry_complete` fills each unseen texel from its mirror texel (the UV symmetry map), at a lower weight.
4. `weighted_pca` finds the mean and K components with per-texel weights (alternating weighted least squares,
   so texels missing on both sides are missing, not zeros); stds make coefficients ~N(0, 1).
5. `refit_lights` fits every photo's light again with that model in place of the fitting path's uniform albedo
   (whose regional colour otherwise leaks into the light), and steps 1-4 run again (`build_from_photos`).
6. `face_model_with_albedo` samples the UV mean and components at each vertex's UV (`vertex_uv`) and returns the
   face model with ``albedo_basis`` = components x stds and ``albedo_source = 'photos'``.

Light/albedo scale. One photo fixes only the product of albedo and light, per colour channel. Every light is
brought to one reference level before de-lighting (`light_level_gains`: its mean shading on the frontal mean face
equals the ambient-only light's, 0.709), so a de-lit albedo is the true albedo times that photo's exposure and
light colour relative to the reference. We keep this spread: no per-photo brightness normalisation, so exposure
and white balance are part of the population's variation and land in the first components (the build reports
the cosine between the first component and the mean: near 1 means a pure brightness mode). A model fitted to a
new photo can then take its brightness either from these coefficients or from its light.

Shapes: S = UV size, M = photos, R = texels of the PCA region, D = 3 R features (texel-major, RGB interleaved),
K = components, N = vertices.
"""
import dataclasses
import warnings

import cv2
import numpy as np
import tensorflow as tf
from scipy import ndimage

from tf_facetex import camera, sh
from tf_facetex import io_utils
from tf_facetex import visualize
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.errors import FaceTexError
from tf_facetex.rendering import FaceRenderer


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


# ------------------------------------------------------------------------------------------- weighted PCA
@dataclasses.dataclass
class PCAResult:
    """A linear model x ~ mean + coefficients @ components, components orthonormal, sorted by variance."""

    mean: np.ndarray             # [D]
    components: np.ndarray       # [K, D] orthonormal rows
    stds: np.ndarray             # [K] standard deviation of each coefficient over the data
    coefficients: np.ndarray     # [M, K] of the data (not scaled by stds)
    noise_variance: float        # weighted mean squared residual per entry
    history: list                # weighted mean squared residual per iteration
    data_variance: float         # weighted mean squared deviation from the mean per entry

    @property
    def explained_fraction(self) -> float:
        """Share of the data's (weighted) variance about the mean that the K components explain."""
        return 1.0 - self.noise_variance / max(self.data_variance, 1e-30)


def _solve_batched(matrices, rhs):
    """[B, P, P], [B, P] -> [B, P] (symmetric positive definite systems)."""
    return np.linalg.solve(matrices, rhs[..., None])[..., 0]


def _orthonormalize(mean, components, coefficients):
    """Re-parameterises the same reconstruction with centred coefficients and orthonormal components sorted by
    the variance of their coefficients. Returns (mean, components, coefficients, stds)."""
    centre = coefficients.mean(axis=0)
    mean = mean + centre @ components
    coefficients = coefficients - centre
    q, r = np.linalg.qr(components.T)                             # components = (q r)^T
    u, s, vt = np.linalg.svd(coefficients @ r.T, full_matrices=False)
    components = (q @ vt.T).T
    coefficients = u * s
    count = max(coefficients.shape[0] - 1, 1)
    return mean, components, coefficients, s / np.sqrt(count)


def weighted_pca(data, weights, num_components: int, iterations: int = 60, ridge: float = 1e-2,
                 tolerance: float = 1e-4, initial_components=None, progress=None) -> PCAResult:
    """Mean and principal components of data with per-entry weights (0 = missing), by alternating weighted
    least squares (weighted low-rank approximation):

        minimise  sum_md w_md (x_md - mean_d - sum_k c_mk v_kd)^2 + lambda_c |c|^2 + lambda_v |v|^2

    alternating the per-photo coefficients c_m (K x K systems) and the per-feature (mean_d, v_d) ((K+1) x (K+1)
    systems), each in closed form, starting from PCA of the mean-filled data (or ``initial_components``). Unlike
    PCA on filled data, an entry missing in a photo neither counts as the mean nor shrinks the variance. The ridges
    are ``ridge`` x the mean over photos (features) of the systems' diagonals, the same for all photos (features):
    photos (features) with few data are pulled towards 0 (no variation), well-observed ones shrink by about
    ``ridge``. The mean is free. The big products run in float32, the small systems in float64.

    Args:
      data: [M, D]; weights: [M, D] >= 0 (same shape; entries with weight 0 may hold anything finite).
      num_components: K (<= min(M - 1, D)).
      iterations: maximum alternations; stops early when the weighted residual improves by less than
        ``tolerance`` (relative) in one alternation.
      initial_components: [K, D] to start from (e.g. a previous build's), or None.
      progress: optional callable(iteration, residual).
    Returns:
      `PCAResult`. Features nobody observed get mean 0 and zero components.
    """
    x = np.asarray(data, np.float32)
    w = np.asarray(weights, np.float32)
    if x.shape != w.shape or x.ndim != 2:
        raise ValueError(f"data {x.shape} and weights {w.shape} must be the same [M, D]")
    m, d = x.shape
    k = int(num_components)
    if not 0 < k <= min(m - 1, d):
        raise ValueError(f"num_components must be in [1, {min(m - 1, d)}] for {m} samples of {d} features")
    x = np.where(w > 0, x, np.float32(0.0))
    wx = w * x
    feature_weight = w.sum(axis=0, dtype=np.float64)
    observed = feature_weight > 0
    mean = np.where(observed, wx.sum(0, dtype=np.float64) / np.maximum(feature_weight, 1e-12), 0.0)
    if initial_components is None:
        filled = np.where(w > 0, x - mean.astype(np.float32), np.float32(0.0))
        # Top eigenvectors of the [M, M] Gram matrix: the same as an SVD of the filled data, faster when M < D.
        _, vectors = np.linalg.eigh((filled @ filled.T).astype(np.float64))
        components = vectors[:, ::-1][:, :k].T @ filled
        del filled
    else:
        components = np.asarray(initial_components, np.float64)
    components = np.linalg.qr(components.T)[0].T
    history = []
    eye_k = np.eye(k)
    for iteration in range(iterations):
        # Coefficients: (V W_m V^T + lambda_c) c_m = V W_m (x_m - mean).
        outer = (components[:, None, :] * components[None, :, :]).reshape(k * k, d).astype(np.float32)
        gram = (w @ outer.T).astype(np.float64).reshape(m, k, k)
        scale = np.mean(np.trace(gram, axis1=1, axis2=2)) / k
        rhs = (wx @ components.T.astype(np.float32)).astype(np.float64) - (w @ (components * mean).T.astype(
            np.float32)).astype(np.float64)
        coefficients = _solve_batched(gram + (ridge * scale + 1e-12) * eye_k, rhs)
        # Mean and components per feature: design [1, c_m].
        design = np.concatenate([np.ones((m, 1)), coefficients], axis=1)                       # [M, K+1]
        outer = (design[:, :, None] * design[:, None, :]).reshape(m, (k + 1) ** 2).astype(np.float32)
        normal = (w.T @ outer).astype(np.float64).reshape(d, k + 1, k + 1)
        # Per component, so that small components are not shrunk more than large ones.
        scale = np.mean(np.diagonal(normal, axis1=1, axis2=2), axis=0) + 1e-12                 # [K+1]
        penalty = np.diag(np.concatenate([[1e-9 * scale[0]], ridge * scale[1:]]))             # the mean is free
        solution = _solve_batched(normal + penalty, (wx.T @ design.astype(np.float32)).astype(np.float64))
        mean = np.where(observed, solution[:, 0], 0.0)
        components = np.where(observed[None], solution[:, 1:].T, 0.0)
        mean, components, coefficients, _ = _orthonormalize(mean, components, coefficients)
        residual = x - (mean + coefficients @ components).astype(np.float32)
        history.append(float(np.sum(w * residual * residual, dtype=np.float64) / max(feature_weight.sum(), 1e-12)))
        del residual
        if progress is not None:
            progress(iteration, history[-1])
        if len(history) > 1 and history[-2] - history[-1] <= tolerance * history[-2]:
            break
    mean, components, coefficients, stds = _orthonormalize(mean, components, coefficients)
    centred = np.where(w > 0, x - mean.astype(np.float32), np.float32(0.0))
    data_variance = float(np.sum(w * centred * centred, dtype=np.float64) / max(feature_weight.sum(), 1e-12))
    return PCAResult(mean=mean, components=components, coefficients=coefficients, stds=stds,
                     noise_variance=history[-1] if history else data_variance, history=history,
                     data_variance=data_variance)


def fit_coefficients(data, weights, mean, basis, noise_variance: float):
    """MAP coefficients of samples under a linear model with N(0, 1) coefficients and isotropic noise.

    Args:
      data, weights: [M, D]; mean: [D]; basis: [K, D] components scaled by their stds.
      noise_variance: per-feature noise variance (the prior's weight against the data).
    Returns:
      [M, K].
    """
    x = np.asarray(data, np.float64)
    w = np.asarray(weights, np.float64)
    basis = np.asarray(basis, np.float64)
    k = basis.shape[0]
    if k == 0:
        return np.zeros((x.shape[0], 0))
    outer = (basis[:, None, :] * basis[None, :, :]).reshape(k * k, -1)
    gram = (w @ outer.T).reshape(-1, k, k) + noise_variance * np.eye(k)
    rhs = (w * np.where(w > 0, x - mean, 0.0)) @ basis.T
    return _solve_batched(gram, rhs)


def subspace_angles_degrees(a, b):
    """Principal angles between the row spaces of a [K1, D] and b [K2, D], in degrees, smallest first."""
    from scipy.linalg import subspace_angles
    return np.sort(np.degrees(subspace_angles(np.asarray(a, np.float64).T, np.asarray(b, np.float64).T)))


# ------------------------------------------------------------------------------------------- UV <-> vertices
def region_features(maps_uv, region):
    """UV maps [..., S, S, C] -> features [..., R * C] of the region texels (texel-major, channels inner)."""
    maps_uv = np.asarray(maps_uv)
    rows, cols = np.nonzero(region)
    values = maps_uv[..., rows, cols, :]
    return values.reshape(values.shape[:-2] + (-1,))


def region_maps(features, region, channels: int = 3):
    """Inverse of `region_features`: [..., R * C] -> [..., S, S, C], zero outside the region."""
    features = np.asarray(features)
    rows, cols = np.nonzero(region)
    size = region.shape[0]
    out = np.zeros(features.shape[:-1] + (size, size, channels), features.dtype)
    out[..., rows, cols, :] = features.reshape(features.shape[:-1] + (rows.size, channels))
    return out


def extend_uv_maps(maps_uv, known, falloff: float = 4.0):
    """Fills the texels outside ``known``: the nearest known texel's value, blended into the known texels' average
    with the distance (Gaussian, ``falloff`` texels), so that vertices and bilinear lookups outside the known area
    (ears, neck) get the average skin and the global modes (brightness, colour) rather than a smear of the
    boundary's noisiest texels. [..., S, S, C], [S, S] bool -> [..., S, S, C]."""
    known = np.asarray(known, bool)
    maps_uv = np.asarray(maps_uv)
    if known.all() or not known.any():
        return maps_uv
    distance, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
    nearest = maps_uv[..., rows, cols, :]
    average = maps_uv[..., known, :].mean(axis=-2)[..., None, None, :]
    blend = np.exp(-(distance / max(falloff, 1e-6)) ** 2)[..., None]
    return np.where(known[..., None], maps_uv, blend * nearest + (1.0 - blend) * average)


def vertex_uv(model):
    """One UV per geometry vertex and whether it lies on a textured triangle.

    Returns:
      (uv [N, 2] float64, (u, v) with v up; textured [N] bool). Vertices shared by textured triangles take the
      UV of a textured triangle (the atlas), others that of any triangle.
    """
    uv = np.zeros((model.num_vertices, 2), np.float64)
    order = np.argsort(model.textured_triangles, kind="stable")    # textured last: they win the assignment
    uv[model.triangles[order].reshape(-1)] = model.uv_coords[model.uv_triangles[order].reshape(-1)]
    textured = np.zeros(model.num_vertices, bool)
    textured[model.triangles[model.textured_triangles].reshape(-1)] = True
    return uv, textured


def sample_uv_maps(maps_uv, uv):
    """Bilinear samples of UV maps at UV coordinates (the project's UV convention, `rendering.uv`).

    Args:
      maps_uv: [..., S, S, C]; uv: [N, 2] (u, v) with v up, in [0, 1].
    Returns:
      [..., N, C].
    """
    maps_uv = np.asarray(maps_uv)
    size = maps_uv.shape[-2]
    scale = float(size - 1)
    x = np.clip(np.asarray(uv)[:, 0] * scale, 0, scale)
    y = np.clip((1.0 - np.asarray(uv)[:, 1]) * scale, 0, scale)
    x0, y0 = np.minimum(np.floor(x).astype(int), size - 2), np.minimum(np.floor(y).astype(int), size - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = maps_uv[..., y0, x0, :] * (1 - fx) + maps_uv[..., y0, x0 + 1, :] * fx
    bottom = maps_uv[..., y0 + 1, x0, :] * (1 - fx) + maps_uv[..., y0 + 1, x0 + 1, :] * fx
    return top * (1 - fy) + bottom * fy


def uv_maps_to_vertices(model, maps_uv, known):
    """Per-vertex values of UV maps: bilinear at each textured vertex's UV (the maps first extended past the
    ``known`` texels by `extend_uv_maps`); vertices off the atlas (ICT's scalp, mouth interior) take the average of
    the known texels.

    Args:
      model: `MorphableModel`; maps_uv: [..., S, S, C]; known: [S, S] bool texels holding data.
    Returns:
      [..., N, C] float32.
    """
    uv, textured = vertex_uv(model)
    maps_uv = np.asarray(maps_uv)
    values = sample_uv_maps(extend_uv_maps(maps_uv, known, falloff=0.03 * maps_uv.shape[-2]), uv)
    if not textured.all() and np.any(known):
        values[..., ~textured, :] = maps_uv[..., np.asarray(known, bool), :].mean(axis=-2)[..., None, :]
    return values.astype(np.float32)


def uv_region(renderer, model, threshold: float = 0.5):
    """[S, S] bool: UV texels of the model's face region (its ``face_region_mask`` interpolated >= threshold)."""
    region = renderer.rasterize_to_uv(model.face_region_mask.astype(np.float32)[None, :, None]).numpy()[0, ..., 0]
    return (region >= threshold) & renderer.uv_raster.mask


@dataclasses.dataclass
class UVAlbedoModel:
    """The UV-resolution model (the side file ``FILE.uv.npz``)."""

    mean_uv: np.ndarray          # [S, S, 3], 0 outside the region
    components_uv: np.ndarray    # [K, S, S, 3] orthonormal over the region features, unscaled
    stds: np.ndarray             # [K]
    region: np.ndarray           # [S, S] bool, texels of the PCA
    coverage: np.ndarray         # [S, S] float32 summed weight of the photos at each texel
    noise_variance: float        # weighted mean squared residual per feature (the model's noise)
    data_variance: float         # weighted mean squared deviation from the mean per feature
    num_photos: int

    @property
    def num_components(self) -> int:
        return int(self.stds.shape[0])

    def known(self, min_share: float = 0.02):
        """[S, S] bool: region texels seen (summed weight) in at least ``min_share`` of the photos (and >= 2)."""
        return self.region & (self.coverage >= max(2.0, min_share * self.num_photos))

    @property
    def explained_fraction(self) -> float:
        """Share of the photos' (weighted) albedo variance that the K components explain."""
        return 1.0 - self.noise_variance / max(self.data_variance, 1e-30)

    def save(self, path):
        """Writes a compressed .npz atomically."""
        with io_utils.atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **{k: np.asarray(v) for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def load(cls, path) -> "UVAlbedoModel":
        with np.load(path, allow_pickle=False) as data:
            values = {key: data[key] for key in data.files}
        for key in ("noise_variance", "data_variance"):
            values[key] = float(values[key])
        values["num_photos"] = int(values["num_photos"])
        return cls(**values)


def uv_model_from_pca(result: PCAResult, region, coverage, num_photos: int) -> UVAlbedoModel:
    """Packs a `weighted_pca` result over `region_features` into UV maps."""
    return UVAlbedoModel(mean_uv=region_maps(result.mean.astype(np.float32), region),
                         components_uv=region_maps(result.components.astype(np.float32), region),
                         stds=result.stds.astype(np.float32), region=np.asarray(region, bool),
                         coverage=np.asarray(coverage, np.float32), noise_variance=float(result.noise_variance),
                         data_variance=float(result.data_variance), num_photos=int(num_photos))


def face_model_with_albedo(model, uv_model: UVAlbedoModel, source_note: str = ""):
    """The face model with the photo-built albedo: ``albedo_mean`` [N, 3] (clipped to [0, 1]) and
    ``albedo_basis`` [K, N, 3] = vertex samples of the components x their stds (coefficients ~N(0, 1)),
    ``albedo_source = 'photos'``. Texels seen in too few photos (`UVAlbedoModel.known`) are filled first."""
    known = uv_model.known()
    mean = np.clip(uv_maps_to_vertices(model, uv_model.mean_uv, known), 0.0, 1.0)
    basis = uv_maps_to_vertices(model, uv_model.components_uv, known) * uv_model.stds[:, None, None]
    source = model.source + (f"; albedo: {source_note}" if source_note else "")
    return model.replace(albedo_mean=mean, albedo_basis=basis.astype(np.float32), albedo_source="photos",
                         source=source)


# ------------------------------------------------------------------------------------------- the build
REFERENCE_SHADING = sh.AMBIENT_DC * float(sh.LAMBERTIAN_FACTORS[0])   # the ambient-only light's shading, 0.709


# ------------------------------------------------------------------------------------------- lighting (numpy)
def sh_basis(normals):
    """`tf_facetex.sh.sh_basis` on numpy arrays (Deng's Lambertian-folded basis): [..., 3] -> float64 [..., 9]."""
    return np.asarray(sh.sh_basis(np.asarray(normals, np.float32)), np.float64)


def sh_shading(normals, gamma):
    """`tf_facetex.sh.shading` on numpy arrays: normals [..., 3], gamma [..., 27] broadcastable against
    ``normals[..., :1]`` (Deng's layout, ambient not included) -> float64 [..., 3] shading (ambient 0.8 on DC)."""
    return np.asarray(sh.shading(np.asarray(normals, np.float32), np.asarray(gamma, np.float32)), np.float64)


def frontal_normals_uv(renderer, model):
    """[S, S, 3] unit normals of the model's mean shape facing the camera (unposed), in UV."""
    return renderer.normals_uv(model.mean_shape[None]).numpy()[0]


def light_level_gains(gamma, frontal_normals, region):
    """Per-channel gains that bring lights to the reference level.

    The level of a light is its mean shading over the mean face seen from the front (``frontal_normals`` on the
    ``region`` texels); the reference is the ambient-only light's. Unlike the fitting path's own convention (the
    DC term at the reference), this does not move when a fit trades the DC term for the frontal z and 3z^2 - 1
    terms, which look alike on the normals of a face (measured on synthetic faces: the de-lit albedo error drops
    from 0.030 to 0.008). Multiply a light's shading by the gains and divide the albedo by them: the image is
    unchanged.

    Args:
      gamma: [B, 27]; frontal_normals: [S, S, 3] (`frontal_normals_uv`); region: [S, S] bool.
    Returns:
      [B, 3] float32.
    """
    normals = np.asarray(frontal_normals)[np.asarray(region, bool)]                         # [R, 3]
    shading = sh_shading(normals[None], np.asarray(gamma)[:, None, :])                      # [B, R, 3]
    return (REFERENCE_SHADING / np.maximum(shading.mean(axis=1), 1e-3)).astype(np.float32)


# ------------------------------------------------------------------------------------------- the photos
@dataclasses.dataclass
class UnwrappedPhotos:
    """What the build keeps of each photo from the fitting path: UV maps at size S (float16 to save memory)."""

    texture_uv: np.ndarray      # [M, S, S, 3] the unwrapped photo, 0 where unseen
    visibility: np.ndarray      # [M, S, S] bool, seen (depth test and face mask)
    normals_uv: np.ndarray      # [M, S, S, 3] camera-frame unit normals of the fitted geometry
    view_cosine: np.ndarray     # [M, S, S] `view_cosine`
    gamma: np.ndarray           # [M, 27] float32, the fitted light (ambient not included)

    def __len__(self):
        return int(self.gamma.shape[0])

    @classmethod
    def from_prior_outputs(cls, renderer, outputs) -> "UnwrappedPhotos":
        """From a batch of `PriorModule` outputs (texture_uv, visibility_uv, normals_uv, gamma, posed_vertices)."""
        normals = np.asarray(outputs["normals_uv"], np.float32)
        positions = renderer.rasterize_to_uv(outputs["posed_vertices"]).numpy()
        return cls(texture_uv=np.asarray(outputs["texture_uv"]).astype(np.float16),
                   visibility=np.asarray(outputs["visibility_uv"])[..., 0] > 0.5,
                   normals_uv=normals.astype(np.float16),
                   view_cosine=view_cosine(normals, positions).astype(np.float16),
                   gamma=np.asarray(outputs["gamma"], np.float32))

    @classmethod
    def concatenate(cls, parts) -> "UnwrappedPhotos":
        return cls(**{field.name: np.concatenate([getattr(p, field.name) for p in parts])
                      for field in dataclasses.fields(cls)})

    def select(self, index) -> "UnwrappedPhotos":
        return UnwrappedPhotos(**{field.name: getattr(self, field.name)[index] for field in dataclasses.fields(self)})

    def arrays(self, prefix: str = "") -> dict:
        """{prefix + field: array}, e.g. for one `np.savez` holding several sets."""
        return {prefix + field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "UnwrappedPhotos":
        return cls(**{field.name: np.asarray(arrays[prefix + field.name]) for field in dataclasses.fields(cls)})


def delight_photos(photos: UnwrappedPhotos, region, gamma=None, frontal_normals=None,
                   config: DelightConfig = DelightConfig(), chunk: int = 64):
    """`delight` for every photo, with its fitted light (or ``gamma`` [M, 27]) brought to the reference level by
    `light_level_gains` when ``frontal_normals`` is given.

    Returns:
      (albedo [M, S, S, 3] float32, valid [M, S, S] bool).
    """
    gamma = photos.gamma if gamma is None else np.asarray(gamma, np.float32)
    albedos = np.zeros(photos.texture_uv.shape, np.float32)
    valids = np.zeros(photos.visibility.shape, bool)
    for start in range(0, len(photos), chunk):
        part = slice(start, start + chunk)
        shading = sh_shading(photos.normals_uv[part].astype(np.float32), gamma[part, None, None, :])
        if frontal_normals is not None:
            shading = shading * light_level_gains(gamma[part], frontal_normals, region)[:, None, None, :]
        for i, m in enumerate(range(start, min(start + chunk, len(photos)))):
            albedos[m], valids[m] = delight(photos.texture_uv[m].astype(np.float32), photos.visibility[m],
                                            shading[i], photos.view_cosine[m].astype(np.float32), region, config)
    return albedos, valids


def _fit_light(texture, albedo, y, w, light_ridge, ambient, white_shape):
    """SH light [3, 9] (ambient included) explaining texture [n, 3] = albedo [n, 3] * (y [n, 9] @ light.T), with
    weights w [n] and a ridge towards the ambient-only light. ``white_shape``: one shape for all channels times a
    per-channel colour (rank 1), else 3 independent shapes."""
    light = np.zeros((3, sh.NUM_BASIS))
    for ch in range(3):
        design = albedo[:, ch:ch + 1] * y
        normal = design.T @ (w[:, None] * design)
        ridge = light_ridge * np.trace(normal) / sh.NUM_BASIS
        light[ch] = np.linalg.solve(normal + ridge * np.eye(sh.NUM_BASIS), design.T @ (w * texture[:, ch]) + ridge * ambient)
    if not white_shape:
        return light
    colour = np.maximum(light[:, 0], 1e-3) / max(np.mean(light[:, 0]), 1e-3)
    for _ in range(3):
        # The shape given the colours (all channels stacked), then each colour given the shape.
        design = np.concatenate([colour[ch] * albedo[:, ch:ch + 1] * y for ch in range(3)])         # [3n, 9]
        wide = np.tile(w, 3)
        normal = design.T @ (wide[:, None] * design)
        ridge = light_ridge * np.trace(normal) / sh.NUM_BASIS
        shape = np.linalg.solve(normal + ridge * np.eye(sh.NUM_BASIS),
                                design.T @ (wide * texture.T.reshape(-1)) + ridge * ambient)
        shaded = y @ shape
        for ch in range(3):
            base = albedo[:, ch] * shaded
            colour[ch] = np.sum(w * base * texture[:, ch]) / max(np.sum(w * base * base), 1e-12)
        level = max(np.mean(colour), 1e-6)                   # the shape carries the level, the colour averages 1
        colour, shape = colour / level, shape * level
    return colour[:, None] * shape[None]


def refit_lights(photos: UnwrappedPhotos, weights, uv_model: "UVAlbedoModel", rounds: int = 5,
                 light_ridge: float = 1e-3, min_texels: int = 50, white_shape: bool = False):
    """Fits each photo's light again in UV space, now with the albedo model instead of a uniform albedo.

    The fitting path explains a photo with a uniform albedo times a tone, so the albedo's own regional variation
    (redder cheeks, darker brows) leaks into its light. With a first albedo model, alternate per photo: the 27 SH
    coefficients given the albedo (3 ridge least squares), the albedo coefficients given the light (MAP with the
    model's N(0, 1) prior and noise), on the photo's trustworthy texels.

    Args:
      photos: `UnwrappedPhotos`; weights: [M, S, S] texels to use (seen, not outliers; no symmetry fill).
      uv_model: the current `UVAlbedoModel`.
      rounds: alternations; light_ridge: pull towards the ambient-only light, relative to the data.
      min_texels: photos with fewer usable texels keep their light.
    Returns:
      [M, 27] float32 lights (Deng's layout, ambient not included).
    """
    region = uv_model.region
    mean = uv_model.mean_uv[region].astype(np.float64)                                       # [R, 3]
    basis = (uv_model.components_uv * uv_model.stds[:, None, None, None])[:, region].astype(np.float64)  # [K, R, 3]
    ambient = np.zeros(sh.NUM_BASIS)
    ambient[0] = sh.AMBIENT_DC
    out = np.array(photos.gamma, np.float32)
    for m in range(len(photos)):
        w = np.asarray(weights[m])[region].astype(np.float64)
        use = w > 0
        if use.sum() < min_texels:
            continue
        w = w[use]
        texture = photos.texture_uv[m][region][use].astype(np.float64)                        # [n, 3]
        y = sh_basis(photos.normals_uv[m][region][use].astype(np.float64))                  # [n, 9]
        mean_m, basis_m = mean[use], basis[:, use]
        coefficients = np.zeros(basis.shape[0])
        for _ in range(rounds):
            albedo = mean_m + np.tensordot(coefficients, basis_m, 1)
            light = _fit_light(texture, albedo, y, w, light_ridge, ambient, white_shape)
            shading = y @ light.T                                                             # [n, 3]
            if basis_m.shape[0]:
                design = (shading[None] * basis_m).reshape(basis_m.shape[0], -1).T            # [3n, K]
                w3 = np.repeat(w, 3)
                noise = uv_model.noise_variance * np.mean(shading ** 2)
                normal = design.T @ (w3[:, None] * design) + noise * np.eye(design.shape[1])
                coefficients = np.linalg.solve(normal, design.T @ (w3 * (texture - shading * mean_m).reshape(-1)))
        out[m] = (light - ambient).reshape(-1)
    return out


def robust_weights(albedos, valids, reference_uv, region, config: DelightConfig = DelightConfig()):
    """Per-texel weights [M, S, S] float32 in {0, 1}: valid, inside the region, and not an `outlier_mask`."""
    region = np.asarray(region, bool)
    return np.stack([outlier_mask(a, v & region, reference_uv, config)
                     for a, v in zip(albedos, valids)]).astype(np.float32)


def build_uv_albedo_model(albedos, valids, region, symmetry_index, num_components: int,
                          config: DelightConfig = DelightConfig(), iterations: int = 60, initial_components=None,
                          progress=None):
    """De-lit photos -> `UVAlbedoModel`: robust reference, outlier masks, symmetry completion, weighted PCA.

    Args:
      albedos: [M, S, S, 3] and valids [M, S, S] from `delight` (or `delight_photos`).
      region: [S, S] bool PCA texels (`uv_region`); symmetry_index: [S * S] (`FaceRenderer.uv_symmetry_index`).
      num_components: K; iterations, initial_components: see `weighted_pca`.
    Returns:
      (UVAlbedoModel, PCAResult, observed [M, S, S] robust weights before the symmetry completion).
    """
    region = np.asarray(region, bool)
    reference, _ = reference_albedo(albedos, valids, region)
    observed = robust_weights(albedos, valids, reference, region, config)
    filled, weights = symmetry_complete(albedos, observed, symmetry_index, config.mirror_weight)
    weights = weights * region[None]
    data = region_features(filled, region)
    del filled
    feature_weights = np.repeat(region_features(weights[..., None], region), 3, axis=-1)
    result = weighted_pca(data, feature_weights, num_components, iterations=iterations,
                          initial_components=initial_components, progress=progress)
    uv_model = uv_model_from_pca(result, region, weights.sum(0), len(albedos))
    return uv_model, result, observed


def coverage_fractions(valids, region):
    """[M] share of the region's texels each photo shows validly: [M, S, S] bool, [S, S] bool -> [M]."""
    region = np.asarray(region, bool)
    return np.asarray(valids)[:, region].mean(axis=1)


def implausible_lights(gamma, frontal_normals, region, min_relative: float = -0.1):
    """[M] bool: lights whose shading of the frontal mean face dips below ``min_relative`` x its mean in some
    channel (2nd percentile over the region). Second-order SH can undershoot a little under a strong side light;
    far below zero, the fit extrapolated (too few or wrong pixels) and its de-lit albedo is meaningless.

    Args:
      gamma: [M, 27]; frontal_normals: [S, S, 3]; region: [S, S] bool.
    """
    normals = np.asarray(frontal_normals)[np.asarray(region, bool)]
    shading = sh_shading(normals[None], np.asarray(gamma)[:, None, :])                      # [M, R, 3]
    low = np.percentile(shading, 2, axis=1)
    return np.any(low < min_relative * np.maximum(shading.mean(axis=1), 1e-6), axis=1)


def atypical_photos(albedos, valids, region, max_deviation: float = 5.0):
    """[M] bool: photos whose median de-lit albedo is far from the population's: in log brightness per channel or in
    log chromaticity (R/G, B/G), more than ``max_deviation`` robust standard deviations (1.4826 MAD) away. Catches
    what is not a colour photo of a face (a label map, a false detection, a failed fit, an extreme colour cast),
    which would otherwise dominate a least-squares PCA.

    Args:
      albedos: [M, S, S, 3]; valids: [M, S, S] bool; region: [S, S] bool.
    """
    region = np.asarray(region, bool)
    medians = np.array([np.median(a[v & region], axis=0) if np.any(v & region) else np.full(3, np.nan)
                        for a, v in zip(albedos, valids)])
    logs = np.log(np.maximum(medians, 1e-4))
    features = np.concatenate([logs, logs[:, [0]] - logs[:, [1]], logs[:, [2]] - logs[:, [1]]], axis=1)
    finite = np.all(np.isfinite(features), axis=1)
    if finite.sum() < 3:
        return ~finite
    centre = np.median(features[finite], axis=0)
    spread = 1.4826 * np.median(np.abs(features[finite] - centre), axis=0) + 1e-6
    deviation = np.abs(np.where(finite[:, None], features, centre) - centre) / spread
    return ~finite | np.any(deviation > max_deviation, axis=1)


def build_from_photos(photos: UnwrappedPhotos, region, symmetry_index, frontal_normals, num_components: int,
                      config: DelightConfig = DelightConfig(), light_refits: int = 1, white_light: bool = True,
                      min_coverage: float = 0.0, iterations: int = 60, log=None):
    """The whole build: de-light with the fitted lights (brought to the reference level); drop photos showing less
    than ``min_coverage`` of the region validly, with an `implausible_lights` light or `atypical_photos`; build;
    then ``light_refits`` times: refit the lights with the model (`refit_lights`, white-shaped when
    ``white_light``), de-light again and rebuild.

    Returns:
      (UVAlbedoModel, info dict: 'used' [M'] indices of the photos used, 'gamma' [M', 27] their final lights,
      'observed' [M', S, S] final robust weights, 'passes': per pass {'explained_fraction', 'noise_variance',
      'iterations', 'kept_fraction', 'valid_fraction'}, 'dropped': reason -> indices of the photos left out).
    """
    region = np.asarray(region, bool)
    albedos, valids = delight_photos(photos, region, None, frontal_normals, config)
    dropped = {"low_coverage": coverage_fractions(valids, region) < min_coverage,
               "implausible_light": implausible_lights(photos.gamma, frontal_normals, region)}
    dropped["atypical_albedo"] = atypical_photos(albedos, valids, region) & ~dropped["low_coverage"]
    del albedos
    used = np.flatnonzero(~np.any(list(dropped.values()), axis=0))
    if log is not None:
        log(f"using {len(used)} of {len(photos)} photos (" + ", ".join(
            f"{int(v.sum())} {k.replace('_', ' ')}" for k, v in dropped.items()) + ")")
    if len(used) <= num_components:
        raise FaceTexError(f"only {len(used)} usable photos (showing at least {min_coverage:.0%} of the face, with a "
                           f"plausible light and albedo) for {num_components} components: add photos")
    photos = photos.select(used)
    gamma = photos.gamma
    passes = []
    result = None
    for step in range(light_refits + 1):
        albedos, valids = delight_photos(photos, region, gamma, frontal_normals, config)
        uv_model, result, observed = build_uv_albedo_model(
            albedos, valids, region, symmetry_index, num_components, config, iterations,
            initial_components=None if result is None else result.components)
        del albedos
        kept = float(observed.sum() / max((valids & region[None]).sum(), 1))
        passes.append({"explained_fraction": uv_model.explained_fraction, "noise_variance": uv_model.noise_variance,
                       "iterations": len(result.history), "kept_fraction": kept,
                       "valid_fraction": float(valids[:, region].mean())})
        if log is not None:
            log(f"pass {step + 1}: {num_components} components explain {uv_model.explained_fraction:.3f} of the "
                f"albedo variance ({len(result.history)} PCA iterations; the outlier masks kept {100 * kept:.1f}% "
                f"of the valid texels)")
        if step < light_refits:
            gamma = refit_lights(photos, observed, uv_model, white_shape=white_light)
    return uv_model, {"used": used, "gamma": gamma, "observed": observed, "passes": passes,
                      "dropped": {k: np.flatnonzero(v).tolist() for k, v in dropped.items()}}


def reconstruction_errors(uv_model: UVAlbedoModel, albedos, weights, mean_uv=None, basis_uv=None,
                          holdout_block: int = 8):
    """How well held-out albedos are explained: mean only, mean with a per-channel gain, and the basis.

    Errors are weighted mean absolute errors over each photo's valid texels (albedo units), averaged over photos.
    "fit=all": coefficients fitted and errors measured on the same texels (a projection error). "fit=half":
    coefficients fitted on a checkerboard of ``holdout_block``-texel blocks and errors measured on the other blocks,
    so the basis must predict texels it did not see (the mean and the gain models are scored the same way).

    Args:
      uv_model: the model; albedos: [M, S, S, 3]; weights: [M, S, S] (valid texels, e.g. `robust_weights`).
      mean_uv, basis_uv: [S, S, 3] and [K, S, S, 3] (scaled by the stds) to use instead of the model's (e.g. the
        per-vertex model rasterised back into UV, which is what the decoder uses); None = the UV model's.
    Returns:
      dict of name -> {'mae': mean over photos, 'per_photo': [M] list}.
    """
    region = uv_model.region
    mean = region_features(uv_model.mean_uv if mean_uv is None else mean_uv, region).astype(np.float64)
    if basis_uv is None:
        basis_uv = uv_model.components_uv * uv_model.stds[:, None, None, None]
    basis = region_features(basis_uv, region).astype(np.float64)
    data = region_features(albedos, region).astype(np.float64)
    w = np.repeat(region_features(np.asarray(weights)[..., None], region), 3, axis=-1).astype(np.float64)
    rows, cols = np.nonzero(region)
    checker = ((rows // holdout_block + cols // holdout_block) % 2 == 0)
    fit_half = np.repeat(checker, 3)[None]
    gain_basis = np.zeros((3, mean.size))
    for ch in range(3):
        gain_basis[ch, ch::3] = mean[ch::3]
    results = {}
    for split, fit_mask in (("all", np.ones_like(fit_half)), ("half", fit_half)):
        fit_w = w * fit_mask
        score_w = w * (np.ones_like(fit_half) if split == "all" else ~fit_half)
        predictions = {"mean": np.broadcast_to(mean, data.shape),
                       "mean_gain": mean + fit_coefficients(data, fit_w, mean, gain_basis, 1e-6) @ gain_basis,
                       "basis": mean + fit_coefficients(data, fit_w, mean, basis, uv_model.noise_variance) @ basis}
        for name, prediction in predictions.items():
            error = (score_w * np.abs(data - prediction)).sum(1) / np.maximum(score_w.sum(1), 1e-12)
            results[f"{name}/fit={split}"] = {"mae": float(error.mean()), "per_photo": error.tolist()}
    return results


# ------------------------------------------------------------------------------------------- figure
def brightness_cosine(uv_model: UVAlbedoModel, component: int = 0) -> float:
    """|cos| between a component and the mean over the region: 1 = the component only scales the mean's brightness."""
    mean = region_features(uv_model.mean_uv, uv_model.region).astype(np.float64)
    vector = region_features(uv_model.components_uv[component], uv_model.region).astype(np.float64)
    return float(abs(mean @ vector) / max(np.linalg.norm(mean) * np.linalg.norm(vector), 1e-12))


def figure_light(frontal_normals, region, level: float = 1.0):
    """[27] a soft white light from the upper front whose mean shading on the frontal face is ``level`` (so that a
    render shows about the albedo's own brightness)."""
    light = np.asarray(visualize.PREVIEW_LIGHT, np.float32)[None]
    gains = light_level_gains(light, frontal_normals, region)[0] * (level / REFERENCE_SHADING)
    with_ambient = light.reshape(3, sh.NUM_BASIS).astype(np.float64)
    with_ambient[:, 0] += sh.AMBIENT_DC
    with_ambient *= gains[:, None]
    with_ambient[:, 0] -= sh.AMBIENT_DC
    return with_ambient.reshape(-1).astype(np.float32)


def albedo_model_figure(face_model, uv_model: UVAlbedoModel, num_components: int = 3, sigma: float = 3.0,
                        image_size: int = CROP_SIZE):
    """Mean albedo and mean +/- sigma x std of the first components: a row of UV maps (the UV model) over a row of
    renders of the mean shape, frontal, under a soft white light (the per-vertex model, as the decoder gives it).

    Returns:
      uint8 [2 * (image_size + 2) + 2, (1 + 2 * components) * (image_size + 2) + 2, 3].
    """

    count = min(num_components, uv_model.num_components)
    renderer = FaceRenderer(face_model, image_size, uv_model.mean_uv.shape[0])
    posed = tf.constant(face_model.mean_shape[None])
    raster = renderer.rasterize(posed)
    normals_uv = renderer.normals_uv(posed)
    light = figure_light(frontal_normals_uv(renderer, face_model), uv_model.region)[None]
    steps = [(None, 0.0)] + [(k, sign * sigma) for k in range(count) for sign in (-1.0, 1.0)]
    uv_row, render_row = [], []
    for k, step in steps:
        name = "mean" if k is None else f"c{k + 1} {step:+g}sd"
        uv_map = uv_model.mean_uv if k is None else uv_model.mean_uv + step * uv_model.stds[k] * uv_model.components_uv[k]
        uv_map = np.where(uv_model.known()[..., None], np.clip(uv_map, 0, 1), 1.0)
        uv_image = cv2.resize(uv_map.astype(np.float32), (image_size, image_size), interpolation=cv2.INTER_NEAREST)
        uv_row.append(visualize.label(uv_image, f"UV {name}"))
        albedo = face_model.albedo_mean + (0.0 if k is None else step * face_model.albedo_basis[k])
        albedo_uv = renderer.rasterize_to_uv(np.clip(albedo, 0, 1)[None])
        image, _ = renderer.render(albedo_uv, light, raster, normals_uv, background=1.0)
        render_row.append(visualize.label(np.clip(image.numpy()[0], 0, 1), f"render {name}"))
    return visualize.grid([uv_row, render_row])
