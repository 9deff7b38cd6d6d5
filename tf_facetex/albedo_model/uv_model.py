"""UV maps <-> vertices, the UV albedo model and the face model with its albedo basis (step 6)."""
import dataclasses

import numpy as np
from scipy import ndimage

from tf_facetex import io_utils
from tf_facetex.albedo_model.pca import PCAResult


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
