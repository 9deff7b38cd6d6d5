"""A statistical albedo prior for a face model without albedo modes (ICT-FaceKit), stored apart from the model.

ICT-FaceKit has shape and expression bases but no reflectance: converted, its ``albedo_mean`` is one uniform skin
tone (``albedo_source='uniform'``), so every texel the photo does not show would be completed with a flat colour.
`tf_facetex.albedo_model` builds a linear albedo model from photos (mean + K components); this module is its
shipped form: the per-vertex mean [N, 3] and basis [K, N, 3] (components x their standard deviations, so the
coefficients are ~N(0, 1), like BFM's), plus a fingerprint of the mesh they were sampled on, so that the file is
never attached to another model. `load_face_model` attaches the shipped file by default (see `attach`).

File (``.npz``, written atomically): ``albedo_mean`` float32 [N, 3], ``albedo_basis`` float32 [K, N, 3] and ``meta``
(JSON: ``mesh_fingerprint``, ``model_name``, ``description``, free build facts).
"""
import dataclasses
import hashlib
import json
import os
import pathlib
import zipfile

import numpy as np

from tf_facetex.errors import AssetError

UNIFORM = "uniform"


def mesh_fingerprint(model) -> str:
    """Hex sha256 over what the per-vertex albedo depends on: vertex count, triangles, UVs and UV triangles."""
    digest = hashlib.sha256(str(model.num_vertices).encode())
    for array in (model.triangles, model.uv_coords, model.uv_triangles):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class AlbedoPrior:
    """Per-vertex albedo mean [N, 3] and basis [K, N, 3] of one mesh (``fingerprint``: `mesh_fingerprint`)."""

    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    fingerprint: str
    meta: dict
    path: pathlib.Path = None

    @property
    def num_components(self) -> int:
        return int(self.albedo_basis.shape[0])

    def save(self, path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, mesh_fingerprint=self.fingerprint)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps(meta)),
                                albedo_mean=self.albedo_mean.astype(np.float32),
                                albedo_basis=self.albedo_basis.astype(np.float32))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "AlbedoPrior":
        """Reads a file written by `save`; AssetError naming the file and what is wrong."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise AssetError(f"{path}: albedo prior file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {key: data[key] for key in data.files}
            meta = json.loads(str(contents["meta"]))
            mean, basis = contents["albedo_mean"], contents["albedo_basis"]
        except KeyError as err:
            raise AssetError(f"{path}: field {err} missing; not a tf_facetex albedo prior") from err
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            raise AssetError(f"{path}: not a readable albedo prior (truncated or corrupt: {err})") from err
        if mean.ndim != 2 or mean.shape[1] != 3 or basis.ndim != 3 or basis.shape[1:] != mean.shape:
            raise AssetError(f"{path}: albedo_mean {mean.shape} / albedo_basis {basis.shape}: expected [N, 3] / "
                             "[K, N, 3]")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(basis))):
            raise AssetError(f"{path}: the albedo prior holds non-finite values")
        if "mesh_fingerprint" not in meta:
            raise AssetError(f"{path}: meta has no mesh_fingerprint")
        return cls(mean.astype(np.float32), basis.astype(np.float32), meta["mesh_fingerprint"], meta, path)


def from_model(model, **meta) -> AlbedoPrior:
    """The albedo prior carried by a face model that has albedo modes (e.g. one built by
    `tf_facetex.albedo_model.face_model_with_albedo`), for shipping apart from the model."""
    if model.num_tex == 0:
        raise AssetError(f"{model.name}: the model has no albedo modes to ship")
    return AlbedoPrior(model.albedo_mean, model.albedo_basis, mesh_fingerprint(model),
                       dict(meta, model_name=model.name))


def attach(model, prior: AlbedoPrior, label: str = ""):
    """The model with the prior's albedo mean and basis (``albedo_source='photos'``).

    Raises AssetError when the prior was sampled on another mesh (fingerprint or vertex count differ)."""
    if prior.fingerprint != mesh_fingerprint(model) or prior.albedo_mean.shape[0] != model.num_vertices:
        raise AssetError(f"{prior.path or 'albedo prior'}: made for another mesh "
                         f"({prior.meta.get('model_name', '?')}, {prior.albedo_mean.shape[0]} vertices) than "
                         f"{model.name} ({model.num_vertices} vertices)")
    source = model.source + (f"; albedo prior: {label}" if label else "")
    return model.replace(albedo_mean=prior.albedo_mean, albedo_basis=prior.albedo_basis, albedo_source="photos",
                         source=source)
