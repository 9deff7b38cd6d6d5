"""`MorphableModel`: one model-agnostic container for linear face models (BFM, ICT-FaceKit, procedural).

Conventions shared by every model (docs/METHOD.md, "Conventions"):
- units are decimetres, as in Deng et al. 2019, so that the camera (focal 1015 px at 224 px, camera at
  z = +10) frames a face the same way whatever the source model;
- the face looks towards +z, y is up, the subject's right side is at -x;
- bases are stored as per-mode vertex offsets, ``[K, N, 3]``, already scaled by each mode's standard
  deviation, so coefficients are roughly standard normal;
- albedo is linear RGB-like reflectance in [0, 1];
- UVs may have seams: ``uv_triangles`` index ``uv_coords`` the way ``triangles`` index vertices, so a
  geometry vertex can carry several UV vertices;
- named part groups: ``triangle_parts`` [F] gives each triangle's part (an index into ``part_names``; part 0,
  ``"skin"``, is the face and head, everything a model without parts has). Other parts (ICT-FaceKit's eyeballs,
  teeth, gums and tongue, mouth and eye sockets) are never in the UV albedo chart; they render with their own
  flat reflectance ``part_albedo`` [P, 3] (`tf_facetex.rendering.parts`) and export as their own groups.
"""
import dataclasses
import json
import os
import pathlib
import zipfile

import numpy as np

from tf_facetex.errors import AssetError

FORMAT_VERSION = 1
NUM_LANDMARKS = 68
NUM_SH_COEFFS = 27  # 9 SH basis functions x RGB

# name -> (dtype kind, shape pattern). Letters are sizes checked for consistency across fields:
# N vertices, F triangles, U uv vertices, I/E/T numbers of identity / expression / albedo modes.
_FIELDS = {
    "mean_shape": ("f", ("N", 3)),
    "id_basis": ("f", ("I", "N", 3)),
    "exp_basis": ("f", ("E", "N", 3)),
    "albedo_mean": ("f", ("N", 3)),
    "albedo_basis": ("f", ("T", "N", 3)),
    "triangles": ("i", ("F", 3)),
    "uv_coords": ("f", ("U", 2)),
    "uv_triangles": ("i", ("F", 3)),
    "textured_triangles": ("b", ("F",)),
    "landmark_indices": ("i", (NUM_LANDMARKS,)),
    "symmetry_indices": ("i", ("N",)),
    "face_region_mask": ("b", ("N",)),
    "skin_mask": ("b", ("N",)),
    "triangle_parts": ("i", ("F",)),
    "part_albedo": ("f", ("P", 3)),
}
# Fields that models saved before they existed may lack (filled with their defaults on load).
_OPTIONAL_FIELDS = ("triangle_parts", "part_albedo")
BASE_PART = "skin"


@dataclasses.dataclass
class MorphableModel:
    """A linear morphable face model. Shapes are in the field comments (see module docstring)."""

    name: str
    mean_shape: np.ndarray          # [N, 3] float32, decimetres
    id_basis: np.ndarray            # [I, N, 3] float32, per-mode offsets scaled by the mode's std
    exp_basis: np.ndarray           # [E, N, 3] float32
    albedo_mean: np.ndarray         # [N, 3] float32 in [0, 1]
    albedo_basis: np.ndarray        # [T, N, 3] float32 (T may be 0: the model has no albedo modes)
    triangles: np.ndarray           # [F, 3] int32, counter-clockwise seen from outside
    uv_coords: np.ndarray           # [U, 2] float32, (u, v) with v up, the texture atlas is [0,1]^2
    uv_triangles: np.ndarray        # [F, 3] int32 into uv_coords
    textured_triangles: np.ndarray  # [F] bool: triangles inside the [0,1]^2 atlas (the UV texture)
    landmark_indices: np.ndarray    # [68] int32, Multi-PIE 68-point order
    symmetry_indices: np.ndarray    # [N] int32, left-right mirror vertex (an involution)
    face_region_mask: np.ndarray    # [N] bool, the frontal face used for photometric losses
    skin_mask: np.ndarray           # [N] bool, skin region used for the reflectance loss
    exp_names: tuple = ()
    albedo_source: str = "none"     # 'model' (real albedo basis), 'photos' (built from photos), 'uniform'
    source: str = ""                # where the model came from, for reports
    triangle_parts: np.ndarray = None   # [F] int32 index into part_names (None: all 0, the skin)
    part_albedo: np.ndarray = None      # [P, 3] float32 flat reflectance per part (row 0 unused: the UV albedo)
    part_names: tuple = (BASE_PART,)

    def __post_init__(self):
        if self.triangle_parts is None:
            self.triangle_parts = np.zeros(len(self.triangles), np.int32)
        if self.part_albedo is None:
            self.part_albedo = np.zeros((len(self.part_names), 3), np.float32)
        self.part_names = tuple(str(n) for n in self.part_names)
        for name, (kind, _) in _FIELDS.items():
            value = np.asarray(getattr(self, name))
            dtype = {"f": np.float32, "i": np.int32, "b": bool}[kind]
            setattr(self, name, value.astype(dtype, copy=False))
        self.exp_names = tuple(str(n) for n in self.exp_names)
        self.validate(origin=self.source or self.name)

    # ---------------------------------------------------------------- sizes
    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def num_id(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def num_exp(self) -> int:
        return int(self.exp_basis.shape[0])

    @property
    def num_tex(self) -> int:
        return int(self.albedo_basis.shape[0])

    @property
    def has_albedo_basis(self) -> bool:
        return self.num_tex > 0

    # ---------------------------------------------------------------- validation
    def validate(self, origin="<memory>"):
        """Checks every field's dtype, shape and index ranges; raises AssetError naming field and origin."""
        sizes = {}
        for name, (kind, pattern) in _FIELDS.items():
            value = getattr(self, name)
            if value.ndim != len(pattern):
                raise AssetError(f"{origin}: field '{name}' has shape {value.shape}, expected rank {len(pattern)} "
                                 f"({'x'.join(map(str, pattern))})")
            for axis, want in enumerate(pattern):
                got = value.shape[axis]
                if isinstance(want, int):
                    ok = got == want
                else:
                    ok = sizes.setdefault(want, got) == got
                if not ok:
                    expect = want if isinstance(want, int) else f"{want}={sizes[want]}"
                    raise AssetError(f"{origin}: field '{name}' has shape {value.shape}; axis {axis} should be "
                                     f"{expect}")
            if kind == "f" and not np.all(np.isfinite(value)):
                raise AssetError(f"{origin}: field '{name}' contains NaN or Inf")
        n, u = sizes["N"], sizes["U"]
        for name, bound in (("triangles", n), ("uv_triangles", u), ("landmark_indices", n),
                            ("symmetry_indices", n)):
            value = getattr(self, name)
            if value.size and (value.min() < 0 or value.max() >= bound):
                raise AssetError(f"{origin}: field '{name}' has indices outside [0, {bound})")
        if len(self.part_names) != len(self.part_albedo) or self.part_names[0] != BASE_PART:
            raise AssetError(f"{origin}: {len(self.part_names)} part names (first must be '{BASE_PART}') for "
                             f"{len(self.part_albedo)} part albedos")
        if self.triangle_parts.size and (self.triangle_parts.min() < 0
                                         or self.triangle_parts.max() >= len(self.part_names)):
            raise AssetError(f"{origin}: field 'triangle_parts' has indices outside [0, {len(self.part_names)})")
        if np.any(self.textured_triangles & (self.triangle_parts != 0)):
            raise AssetError(f"{origin}: textured triangles must belong to part '{BASE_PART}'")
        if self.exp_names and len(self.exp_names) != self.num_exp:
            raise AssetError(f"{origin}: {len(self.exp_names)} expression names for {self.num_exp} expression modes")

    # ---------------------------------------------------------------- derived tables
    def vertex_triangles(self) -> np.ndarray:
        """[N, K] int32: the triangles around each vertex, padded with F (see `vertex_triangle_table`)."""
        cached = getattr(self, "_vertex_triangles", None)
        if cached is None:
            cached = self._vertex_triangles = vertex_triangle_table(self.triangles, self.num_vertices)
        return cached

    def uv_vertex_to_vertex(self) -> np.ndarray:
        """[U] int32: the geometry vertex each UV vertex belongs to (corners of the same triangles)."""
        mapping = np.full(self.uv_coords.shape[0], -1, dtype=np.int32)
        mapping[self.uv_triangles.reshape(-1)] = self.triangles.reshape(-1)
        return mapping

    @property
    def has_parts(self) -> bool:
        """Whether the model has part groups besides the skin (eyes, teeth, ...)."""
        return bool(np.any(self.triangle_parts != 0))

    def part_triangles(self, name) -> np.ndarray:
        """[K] int32 indices of the triangles of a named part (``part_names``); KeyError for an unknown one."""
        if name not in self.part_names:
            raise KeyError(f"{self.name} has no part {name!r} (parts: {', '.join(self.part_names)})")
        return np.flatnonzero(self.triangle_parts == self.part_names.index(name)).astype(np.int32)

    def part_vertices(self, name) -> np.ndarray:
        """[K] int32 sorted vertex indices used by a named part's triangles."""
        return np.unique(self.triangles[self.part_triangles(name)]).astype(np.int32)

    def mean_landmarks(self) -> np.ndarray:
        """[68, 3] float32: the landmarks of the mean face."""
        return self.mean_shape[self.landmark_indices]

    def summary(self) -> str:
        parts = f", parts: {', '.join(self.part_names[1:])}" if self.has_parts else ""
        return (f"{self.name}: {self.num_vertices} vertices, {self.num_triangles} triangles "
                f"({int(self.textured_triangles.sum())} textured{parts}), {self.num_id} identity / {self.num_exp} expression"
                f" / {self.num_tex} albedo modes, albedo: {self.albedo_source}; source: {self.source}")

    # ---------------------------------------------------------------- persistence
    def save(self, path):
        """Writes a compressed .npz atomically (temporary file, then rename)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "name": self.name, "exp_names": list(self.exp_names),
                "albedo_source": self.albedo_source, "source": self.source, "part_names": list(self.part_names)}
        arrays = {name: getattr(self, name) for name in _FIELDS}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")   # per process: two jobs may convert at once
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "MorphableModel":
        """Loads a model written by `save`; raises AssetError naming the file and the bad field."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise AssetError(f"{path}: face model file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                contents = {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            raise AssetError(f"{path}: not a readable .npz face model (truncated or corrupt: {err})") from err
        if "meta" not in contents:
            raise AssetError(f"{path}: field 'meta' missing; not a tf_facetex face model")
        meta = json.loads(str(contents.pop("meta")))
        if meta.get("format_version") != FORMAT_VERSION:
            raise AssetError(f"{path}: format_version {meta.get('format_version')} but this code reads "
                             f"{FORMAT_VERSION}; re-run scripts/prepare_face_model.py")
        missing = [name for name in _FIELDS if name not in contents and name not in _OPTIONAL_FIELDS]
        if missing:
            raise AssetError(f"{path}: field '{missing[0]}' missing")
        origin = meta.get("source") or ""
        source = str(path) if not origin or origin == str(path) else f"{path} (converted from {origin})"
        return cls(name=meta["name"], exp_names=tuple(meta.get("exp_names", ())),
                   albedo_source=meta.get("albedo_source", "none"), source=source,
                   part_names=tuple(meta.get("part_names", (BASE_PART,))),
                   **{name: contents[name] for name in _FIELDS if name in contents})

    def replace(self, **changes) -> "MorphableModel":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def mirror_correspondence(points: np.ndarray, axis: int = 0) -> np.ndarray:
    """[N] int32: for each point, the nearest point of the mirrored cloud (mirror across ``axis`` = 0).

    Made an exact involution by keeping mutual nearest pairs and resolving the rest greedily by distance,
    so ``sym[sym[i]] == i`` holds even where the mesh is only approximately symmetric.
    """
    from scipy.spatial import cKDTree

    mirrored = np.array(points, dtype=np.float64)
    mirrored[:, axis] *= -1
    tree = cKDTree(points)
    dist, nearest = tree.query(mirrored)
    sym = np.full(len(points), -1, dtype=np.int64)
    mutual = nearest[nearest] == np.arange(len(points))
    sym[mutual] = nearest[mutual]
    pending = np.flatnonzero(sym < 0)
    if pending.size:
        # Greedy matching among the unpaired points, shortest mirrored distances first.
        k = min(8, len(points))
        d_all, n_all = tree.query(mirrored[pending], k=k)
        candidates = sorted((d, i, j) for i, row_d, row_n in zip(pending, np.atleast_2d(d_all), np.atleast_2d(n_all))
                            for d, j in zip(row_d, row_n))
        for _, i, j in candidates:
            if sym[i] < 0 and sym[j] < 0:
                sym[i], sym[j] = j, i
        sym[sym < 0] = np.flatnonzero(sym < 0)  # unmatched points mirror to themselves
    return sym.astype(np.int32)


def vertex_triangle_table(triangles: np.ndarray, num_vertices: int) -> np.ndarray:
    """[N, K] int32: the triangles around each vertex, padded with F (a zero-normal sentinel).

    This is Deng's ``point_buf``: vertex normals become a gather + sum, which runs everywhere
    (XLA, TFLite) unlike scatter-based segment sums.
    """
    triangles = np.asarray(triangles)
    f = triangles.shape[0]
    flat_vertex = triangles.reshape(-1)
    flat_tri = np.repeat(np.arange(f, dtype=np.int32), 3)
    order = np.argsort(flat_vertex, kind="stable")
    flat_vertex, flat_tri = flat_vertex[order], flat_tri[order]
    counts = np.bincount(flat_vertex, minlength=num_vertices)
    width = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(flat_vertex.size) - starts[flat_vertex]
    table = np.full((num_vertices, width), f, dtype=np.int32)
    table[flat_vertex, slot] = flat_tri
    return table
