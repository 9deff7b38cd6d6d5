"""The build: lights in numpy, the unwrapped photos, light refits and `build_from_photos` (steps 1-5 together)."""
import dataclasses

import numpy as np

from tf_facetex import sh
from tf_facetex.albedo_model.delight import (DelightConfig, delight, outlier_mask, reference_albedo,
                                             symmetry_complete, view_cosine)
from tf_facetex.albedo_model.pca import fit_coefficients, weighted_pca
from tf_facetex.albedo_model.uv_model import UVAlbedoModel, region_features, uv_model_from_pca
from tf_facetex.errors import FaceTexError


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
