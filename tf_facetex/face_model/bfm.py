"""Basel Face Model 2009 in the Deng et al. 2019 "front face" layout -> `MorphableModel`.

Two steps, as in microsoft/Deep3DFaceReconstruction (``utils.py: transferBFM09``) and
sicxu/Deep3DFaceRecon_pytorch (``util/load_mats.py``, ``models/bfm.py``):

1. `convert_bfm09`: BFM 2009's ``01_MorphableModel.mat`` (53490 vertices, micrometres) + Guo et al.'s
   ``Exp_Pca.bin`` (53215 vertices) + Deng's index files -> ``BFM_model_front.mat`` (35709 vertices,
   decimetres), with Deng's keys and formulas.
2. `load_bfm_front`: ``BFM_model_front.mat`` (+ 3DMMasSTN's ``BFM_UV.mat`` and Deng's
   ``select_vertex_id.mat`` for the UVs the method needs) -> `MorphableModel`.

Source layouts (MATLAB v5 .mat files; indices are 1-based; vertex arrays are flattened vertex-major with
interleaved xyz, so row ``3 * v + c`` holds coordinate c of vertex v):

- ``01_MorphableModel.mat``: shapeMU [3V, 1], shapePC [3V, K], shapeEV [K, 1] (per-mode std, µm), texMU
  [3V, 1], texPC [3V, Kt], texEV [Kt, 1] (0-255 scale). V = 53490, K = Kt = 199 for the real model.
- ``Exp_Pca.bin`` (little-endian): int32 exp_dim; float32 expMU [3 V_exp]; float32 expPC [exp_dim, 3 V_exp]
  row-major (Deng transposes it to [3 V_exp, exp_dim]). V_exp = 53215 = len(trimIndex).
- ``std_exp.txt``: exp_dim per-mode stds of the expression basis.
- ``BFM_exp_idx.mat['trimIndex']`` [V_exp, 1]: the expression topology's vertices in BFM 2009 (1-based).
- ``BFM_front_idx.mat['idx']`` [N, 1]: the front-face vertices in the expression topology (1-based).
- ``facemodel_info.mat``: tri [F, 3], point_buf [N, 8] (F + 1 pads), tri_mask2 [F2, 3], keypoints [1, 68],
  frontmask2_idx [K2, 1], skinmask [1, N]; copied unchanged into ``BFM_model_front.mat``.
- ``BFM_UV.mat['UV']`` [V, 2] in [0, 1] with v up (3DMMasSTN); ``select_vertex_id.mat['select_id']`` [N, 1]
  (Deng), 1-based into the V BFM 2009 vertices: uv = UV[select_id - 1].

Sizes are read from the files, never hard-coded, so the same code runs on small synthetic files.
"""
import os
import pathlib

import numpy as np

from tf_facetex.errors import AssetError
from tf_facetex.face_model.model import NUM_LANDMARKS, MorphableModel, mirror_correspondence

UM_TO_DM = 1e-5  # BFM 2009 is in micrometres; Deng's "/1e5" makes it decimetres
FRONT_MAT_NAME = "BFM_model_front.mat"
UV_MAT_NAME = "BFM_UV.mat"
SELECT_ID_MAT_NAME = "select_vertex_id.mat"
MORPHABLE_MODEL_KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV")
FACEMODEL_INFO_KEYS = ("tri", "point_buf", "tri_mask2", "keypoints", "frontmask2_idx", "skinmask")
FRONT_KEYS = ("meanshape", "meantex", "idBase", "exBase", "texBase") + FACEMODEL_INFO_KEYS
# UVs further than this outside [0, 1] mean a wrong file, not rounding.
UV_RANGE_TOLERANCE = 1e-3
FALLBACK_UV_MARGIN = 0.02
UV_ORIGIN = "key 'UV', from anilbas/3DMMasSTN util/BFM_UV.mat"
SELECT_ID_ORIGIN = "key 'select_id', from Deng et al.'s BFM/select_vertex_id.mat"


# ------------------------------------------------------------------------------------------- readers
def read_mat(path, keys) -> dict:
    """Reads the variables ``keys`` of a MATLAB v5 .mat file; raises AssetError naming file and field."""
    from scipy.io import loadmat

    path = pathlib.Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found")
    try:
        contents = loadmat(path, variable_names=list(keys))
    except NotImplementedError as err:  # scipy's answer to v7.3 (HDF5) files
        raise AssetError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it as v7 (MATLAB: save(..., '-v7')) so "
                         f"scipy can read it ({err})") from err
    except Exception as err:  # noqa: BLE001 - a truncated or corrupt file fails in many ways inside scipy
        raise AssetError(f"{path}: not a readable MATLAB .mat file (truncated or corrupt: "
                         f"{type(err).__name__}: {err})") from err
    for key in keys:
        if key not in contents:
            raise AssetError(f"{path}: field '{key}' missing")
    return {key: contents[key] for key in keys}


def read_exp_pca(path, num_vertices: int):
    """Reads Guo et al.'s ``Exp_Pca.bin``.

    Args:
      path: the file.
      num_vertices: V_exp, the vertex count of the expression topology (53215 = len(trimIndex)).
    Returns:
      (exp_mean [3 V_exp] float32, exp_pc [3 V_exp, exp_dim] float32).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise AssetError(f"{path}: field 'exp_dim' missing (file has {len(raw)} bytes)")
    exp_dim = int(np.frombuffer(raw, "<i4", count=1)[0])
    if exp_dim <= 0:
        raise AssetError(f"{path}: field 'exp_dim' is {exp_dim}, expected a positive mode count")
    num_floats = 3 * num_vertices * (1 + exp_dim)
    need = 4 + 4 * num_floats
    # Like Deng's reader we ignore trailing bytes; a short file means a truncated download.
    if len(raw) < need:
        raise AssetError(f"{path}: field 'expPC' truncated: exp_dim={exp_dim} for {num_vertices} vertices needs "
                         f"{need} bytes, the file has {len(raw)}")
    floats = np.frombuffer(raw, "<f4", count=num_floats, offset=4)
    exp_mean = floats[:3 * num_vertices].copy()
    exp_pc = floats[3 * num_vertices:].reshape(exp_dim, 3 * num_vertices).T.copy()
    return exp_mean, exp_pc


def read_std_exp(path, exp_dim: int) -> np.ndarray:
    """[exp_dim] float64: the per-mode stds of the expression basis (``std_exp.txt``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: file not found")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).reshape(-1)
    except ValueError as err:
        raise AssetError(f"{path}: not a list of numbers ({err})") from err
    if values.size != exp_dim:
        raise AssetError(f"{path}: {values.size} stds, but Exp_Pca.bin declares exp_dim={exp_dim}")
    if not np.all(np.isfinite(values)):
        raise AssetError(f"{path}: contains NaN or Inf")
    return values


# ------------------------------------------------------------------------------------------- checks
def index_array(value, path, key, bound: int, count=None) -> np.ndarray:
    """[n] int64 0-based indices from a 1-based MATLAB index array; checks integrality and [1, bound]."""
    flat = np.asarray(value).reshape(-1)
    if flat.dtype.kind not in "iuf" or (flat.dtype.kind == "f" and not np.all(flat == np.round(flat))):
        raise AssetError(f"{path}: field '{key}' should hold integer indices (dtype {flat.dtype})")
    if count is not None and flat.size != count:
        raise AssetError(f"{path}: field '{key}' has {flat.size} entries, expected {count}")
    if flat.size and (flat.min() < 1 or flat.max() > bound):
        raise AssetError(f"{path}: field '{key}' has indices outside [1, {bound}] (min {flat.min():g}, "
                         f"max {flat.max():g}; 1-based)")
    return flat.astype(np.int64) - 1


def triangle_array(value, path, key, bound: int) -> np.ndarray:
    """[F, 3] int64 0-based triangles from a 1-based [F, 3] MATLAB array."""
    value = np.asarray(value)
    if value.ndim != 2 or value.shape[1] != 3:
        raise AssetError(f"{path}: field '{key}' has shape {value.shape}, expected [F, 3]")
    return index_array(value, path, key, bound).reshape(-1, 3)


def numeric_array(value, path, key, rows=None, cols=None, size=None) -> np.ndarray:
    """The array, unchanged, after checking it is numeric with [rows, cols] shape (or ``size`` values)."""
    value = np.asarray(value)
    if value.dtype.kind not in "iuf":
        raise AssetError(f"{path}: field '{key}' is not numeric (dtype {value.dtype})")
    if size is not None and value.size != size:
        raise AssetError(f"{path}: field '{key}' has {value.size} values ({value.shape}), expected {size}")
    if rows is not None or cols is not None:
        if value.ndim != 2:
            raise AssetError(f"{path}: field '{key}' has shape {value.shape}, expected a 2-D array")
        if rows is not None and value.shape[0] != rows:
            raise AssetError(f"{path}: field '{key}' has {value.shape[0]} rows, expected {rows} "
                             f"(3 x the vertex count)")
        if cols is not None and value.shape[1] != cols:
            raise AssetError(f"{path}: field '{key}' has {value.shape[1]} columns, expected {cols}")
    return value


def float_array(value, path, key, rows=None, cols=None, size=None) -> np.ndarray:
    """`numeric_array` as float64, also checked to be finite."""
    value = numeric_array(value, path, key, rows, cols, size).astype(np.float64, copy=False)
    if not np.all(np.isfinite(value)):
        raise AssetError(f"{path}: field '{key}' contains NaN or Inf")
    return value


def _modes(value, path, key, want: int) -> int:
    """Checks that ``want`` modes can be taken from the [rows, K] basis ``value``; returns K."""
    available = np.asarray(value).shape[1] if np.asarray(value).ndim == 2 else 0
    if want > available:
        raise AssetError(f"{path}: field '{key}' has {available} modes, {want} requested")
    return available


def _check_facemodel_info(info, path, num_vertices: int):
    """Checks Deng's facemodel_info arrays against the front vertex count N (raises AssetError)."""
    triangles = triangle_array(info["tri"], path, "tri", num_vertices)
    point_buf = np.asarray(info["point_buf"])
    if point_buf.ndim != 2 or point_buf.shape[0] != num_vertices:
        raise AssetError(f"{path}: field 'point_buf' has shape {point_buf.shape}, expected [{num_vertices}, K]")
    index_array(point_buf, path, "point_buf", len(triangles) + 1)  # F + 1 is the zero-normal pad
    # tri_mask2 indexes the frontmask2 subset; N is the safe bound whichever vertex set it uses.
    triangle_array(info["tri_mask2"], path, "tri_mask2", num_vertices)
    index_array(info["keypoints"], path, "keypoints", num_vertices, count=NUM_LANDMARKS)
    index_array(info["frontmask2_idx"], path, "frontmask2_idx", num_vertices)
    float_array(info["skinmask"], path, "skinmask", size=num_vertices)


def vertex_rows(vertices: np.ndarray) -> np.ndarray:
    """[3n] rows of a vertex-major interleaved-xyz array for the [n] 0-based vertices."""
    return (3 * np.asarray(vertices, np.int64)[:, None] + np.arange(3)).reshape(-1)


# ------------------------------------------------------------------------------------------- converter
def convert_bfm09(bfm_mat, exp_pca, aux_dir, out_mat, num_id=80, num_exp=64, num_tex=80) -> pathlib.Path:
    """Builds Deng's ``BFM_model_front.mat`` from BFM 2009 + the expression basis + Deng's index files.

    Same formulas and units as Deng's ``transferBFM09`` (N front vertices, 3N rows, xyz interleaved):
      idBase [3N, num_id]   = (shapePC * shapeEV)[sel_shape rows, :num_id] / 1e5   (decimetres per unit coeff)
      exBase [3N, num_exp]  = (expPC * std_exp)[sel_exp rows, :num_exp] / 1e5
      texBase [3N, num_tex] = (texPC * texEV)[sel_shape rows, :num_tex]             (0-255 per unit coeff)
      meanshape [1, 3N] = shapeMU[sel_shape rows] / 1e5 (not recentred, as in Deng's file)
      meantex [1, 3N]   = texMU[sel_shape rows] (0-255)
    with sel_exp = idx - 1 and sel_shape = trimIndex[idx - 1] - 1; the facemodel_info arrays are copied
    unchanged. Arrays are stored as float32 (what every reader casts them to).

    Args:
      bfm_mat: ``01_MorphableModel.mat``.
      exp_pca: ``Exp_Pca.bin``.
      aux_dir: folder with ``BFM_front_idx.mat``, ``BFM_exp_idx.mat``, ``facemodel_info.mat``, ``std_exp.txt``.
      out_mat: where to write ``BFM_model_front.mat`` (atomically: temporary file, then rename).
      num_id, num_exp, num_tex: how many leading modes to keep (Deng: 80, 64, 80).
    Returns:
      the path written.
    Raises:
      AssetError: naming the file and field of the first bad input.
    """
    from scipy.io import savemat

    bfm_mat, aux_dir, out_mat = pathlib.Path(bfm_mat), pathlib.Path(aux_dir), pathlib.Path(out_mat)
    bfm = read_mat(bfm_mat, MORPHABLE_MODEL_KEYS)
    shape_mean = float_array(bfm["shapeMU"], bfm_mat, "shapeMU")
    if shape_mean.size == 0 or shape_mean.size % 3:
        raise AssetError(f"{bfm_mat}: field 'shapeMU' has {shape_mean.size} values, expected 3 x the vertex count")
    num_bfm_vertices = shape_mean.size // 3
    rows = 3 * num_bfm_vertices
    for pc_key, ev_key, want in (("shapePC", "shapeEV", num_id), ("texPC", "texEV", num_tex)):
        # Shape only: a float64 copy of the full [160470, 199] basis is 255 MB; NaNs are caught after selection.
        numeric_array(bfm[pc_key], bfm_mat, pc_key, rows=rows)
        modes = _modes(bfm[pc_key], bfm_mat, pc_key, want)
        float_array(bfm[ev_key], bfm_mat, ev_key, size=modes)
    float_array(bfm["texMU"], bfm_mat, "texMU", size=rows)

    front_idx_path, exp_idx_path = aux_dir / "BFM_front_idx.mat", aux_dir / "BFM_exp_idx.mat"
    trim_index = np.asarray(read_mat(exp_idx_path, ["trimIndex"])["trimIndex"])
    exp_to_bfm = index_array(trim_index, exp_idx_path, "trimIndex", num_bfm_vertices)
    front_to_exp = index_array(read_mat(front_idx_path, ["idx"])["idx"], front_idx_path, "idx", exp_to_bfm.size)
    front_to_bfm = exp_to_bfm[front_to_exp]
    num_front = front_to_exp.size

    exp_mean, exp_pc = read_exp_pca(exp_pca, exp_to_bfm.size)
    del exp_mean  # Deng's model has no expression mean: the neutral face is BFM's shapeMU
    _modes(exp_pc, exp_pca, "expPC", num_exp)
    std_exp = read_std_exp(aux_dir / "std_exp.txt", exp_pc.shape[1])

    info_path = aux_dir / "facemodel_info.mat"
    info = read_mat(info_path, FACEMODEL_INFO_KEYS)
    _check_facemodel_info(info, info_path, num_front)

    # Select rows before scaling: the same numbers as Deng's scale-then-select, without a full-size copy.
    shape_rows, exp_rows = vertex_rows(front_to_bfm), vertex_rows(front_to_exp)
    id_sigma = float_array(bfm["shapeEV"], bfm_mat, "shapeEV").reshape(-1)[:num_id]
    tex_sigma = float_array(bfm["texEV"], bfm_mat, "texEV").reshape(-1)[:num_tex]
    front = {
        "meanshape": shape_mean.reshape(-1)[shape_rows][None, :] * UM_TO_DM,
        "meantex": np.asarray(bfm["texMU"], np.float64).reshape(-1)[shape_rows][None, :],
        "idBase": np.asarray(bfm["shapePC"][shape_rows, :num_id], np.float64) * id_sigma * UM_TO_DM,
        "exBase": np.asarray(exp_pc[exp_rows, :num_exp], np.float64) * std_exp[:num_exp] * UM_TO_DM,
        "texBase": np.asarray(bfm["texPC"][shape_rows, :num_tex], np.float64) * tex_sigma,
    }
    origins = {"meanshape": (bfm_mat, "shapeMU"), "meantex": (bfm_mat, "texMU"), "idBase": (bfm_mat, "shapePC"),
               "exBase": (exp_pca, "expPC"), "texBase": (bfm_mat, "texPC")}
    for name, value in front.items():
        if not np.all(np.isfinite(value)):
            origin, key = origins[name]
            raise AssetError(f"{origin}: field '{key}' contains NaN or Inf (in the selected front-face rows)")
        front[name] = value.astype(np.float32)
    front.update({key: info[key] for key in FACEMODEL_INFO_KEYS})

    out_mat.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_mat.with_name(out_mat.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:  # a file object: savemat would append ".mat" to a str path
            savemat(handle, front)
        os.replace(tmp, out_mat)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_mat


# ------------------------------------------------------------------------------------------- loader
def outward_triangles(vertices: np.ndarray, triangles: np.ndarray):
    """Returns (triangles [F, 3], flipped): the winding whose normals point out of the face (+z).

    Our convention is counter-clockwise seen from outside, i.e. (v1 - v0) x (v2 - v0) points outward.
    Deng's face normal (v1 - v2) x (v2 - v3) equals that same cross product, so Deng's code implies no
    flip; we still decide from the geometry, because the front face is an open surface looking at +z and
    the sum of its area vectors (twice its signed projected area) must then have z > 0.
    """
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    net_z = np.cross(b - a, c - a)[:, 2].sum()
    if net_z >= 0:
        return triangles, False
    return triangles[:, [0, 2, 1]], True


def frontal_uv(vertices: np.ndarray, margin: float = FALLBACK_UV_MARGIN) -> np.ndarray:
    """[N, 2] UVs from an orthographic front view (x, y), one scale for both axes (no distortion).

    The longer side spans [margin, 1 - margin]; the layout is centred, so it is left-right symmetric when
    the shape is.
    """
    xy = vertices[:, :2].astype(np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    scale = (1.0 - 2 * margin) / max(float((high - low).max()), 1e-12)
    return 0.5 + (xy - (low + high) / 2) * scale


def read_bfm_uv(uv_path, select_id_path, num_vertices: int) -> np.ndarray:
    """[N, 2] float64 UVs: 3DMMasSTN ``UV`` rows picked by Deng's 1-based ``select_id``."""
    uv_path, select_id_path = pathlib.Path(uv_path), pathlib.Path(select_id_path)
    uv = np.asarray(read_mat(uv_path, ["UV"])["UV"])
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise AssetError(f"{uv_path}: field 'UV' has shape {uv.shape}, expected [V, 2]")
    uv = float_array(uv, uv_path, "UV")
    select = index_array(read_mat(select_id_path, ["select_id"])["select_id"], select_id_path, "select_id",
                         uv.shape[0], count=num_vertices)
    uv = uv[select]
    if uv.min() < -UV_RANGE_TOLERANCE or uv.max() > 1 + UV_RANGE_TOLERANCE:
        raise AssetError(f"{uv_path}: field 'UV' has selected values in [{uv.min():.4f}, {uv.max():.4f}], "
                         f"expected [0, 1]")
    return np.clip(uv, 0.0, 1.0)


def load_bfm_front(path, uv_path=None, select_id_path=None, allow_missing_uv=False) -> MorphableModel:
    """Reads Deng's ``BFM_model_front.mat`` into a `MorphableModel` (decimetres, +z forward, y up).

    - mean_shape [N, 3] = meanshape recentred on its mean vertex (Deng recentres at run time);
    - id/exp/albedo bases [K, N, 3] from the [3N, K] columns, which Deng already scaled by each mode's std;
    - albedo_mean = meantex / 255, albedo_basis = texBase / 255;
    - triangles = tri - 1 (winding checked by `outward_triangles`); landmark_indices = keypoints - 1;
      face_region_mask from frontmask2_idx; skin_mask from skinmask; symmetry from the mean shape;
    - UVs = BFM_UV.mat['UV'][select_id - 1], one UV per vertex (no seams), every triangle textured.

    Args:
      path: ``BFM_model_front.mat``.
      uv_path, select_id_path: ``BFM_UV.mat`` and ``select_vertex_id.mat``; default: next to ``path``.
      allow_missing_uv: when those are missing, use `frontal_uv` of the mean shape (said in ``source``)
        instead of raising. The method needs real UVs: only for experiments.
    Raises:
      AssetError: naming the file and field of the first bad input, or the UV file that is missing.
    """
    path = pathlib.Path(path)
    needed = ("meanshape", "meantex", "idBase", "exBase", "texBase", "tri", "keypoints", "frontmask2_idx",
              "skinmask")
    front = read_mat(path, needed)
    mean = float_array(front["meanshape"], path, "meanshape").reshape(-1)
    if mean.size == 0 or mean.size % 3:
        raise AssetError(f"{path}: field 'meanshape' has {mean.size} values, expected 3 x the vertex count")
    n = mean.size // 3
    bases = {}
    for key in ("idBase", "exBase", "texBase"):
        basis = float_array(front[key], path, key, rows=3 * n)
        bases[key] = basis.reshape(n, 3, basis.shape[1]).transpose(2, 0, 1)  # [3N, K] -> [K, N, 3]
    mean_tex = float_array(front["meantex"], path, "meantex", size=3 * n).reshape(n, 3)
    triangles, flipped = outward_triangles(mean.reshape(n, 3), triangle_array(front["tri"], path, "tri", n))
    landmarks = index_array(front["keypoints"], path, "keypoints", n, count=NUM_LANDMARKS)
    region = np.zeros(n, bool)
    region[index_array(front["frontmask2_idx"], path, "frontmask2_idx", n)] = True
    skin = float_array(front["skinmask"], path, "skinmask", size=n).reshape(-1) > 0.5

    mean_shape = mean.reshape(n, 3)
    mean_shape = mean_shape - mean_shape.mean(axis=0)
    notes = ["BFM 2009, Deng et al. front layout"]
    if flipped:
        notes.append("triangle winding reversed to face outward")
    uv_path = pathlib.Path(uv_path) if uv_path else path.parent / UV_MAT_NAME
    select_id_path = pathlib.Path(select_id_path) if select_id_path else path.parent / SELECT_ID_MAT_NAME
    missing = [(p, origin) for p, origin in ((uv_path, UV_ORIGIN), (select_id_path, SELECT_ID_ORIGIN))
               if not p.is_file()]
    if not missing:
        uv = read_bfm_uv(uv_path, select_id_path, n)
        notes.append(f"UVs: {uv_path.name}[{select_id_path.name}]")
    elif allow_missing_uv:
        uv = frontal_uv(mean_shape)
        notes.append(f"UVs: frontal orthographic projection ({', '.join(p.name for p, _ in missing)} missing)")
    else:
        raise AssetError(f"{path}: the method needs UV coordinates: missing "
                         + " and ".join(f"{p} ({origin})" for p, origin in missing)
                         + "; pass uv_path/select_id_path (--bfm_uv/--bfm_select_id), or allow_missing_uv=True "
                           "(--allow_missing_uv) for a frontal projection")

    return MorphableModel(
        name="bfm09_front",
        mean_shape=mean_shape,
        id_basis=bases["idBase"],
        exp_basis=bases["exBase"],
        albedo_mean=mean_tex / 255.0,
        albedo_basis=bases["texBase"] / 255.0,
        triangles=triangles,
        uv_coords=uv,
        uv_triangles=triangles,  # one UV per vertex: no seams
        textured_triangles=np.ones(len(triangles), bool),
        landmark_indices=landmarks,
        symmetry_indices=mirror_correspondence(mean_shape),
        face_region_mask=region,
        skin_mask=skin,
        exp_names=tuple(f"exp_{k:02d}" for k in range(bases["exBase"].shape[0])),
        albedo_source="model",
        source=f"{path} ({'; '.join(notes)})",
    )
