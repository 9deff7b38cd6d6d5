"""BFM 2009 -> Deng's BFM_model_front.mat -> MorphableModel, on small synthetic files in the real layouts.

The Basel Face Model is licensed and not available here. `write_synthetic_bfm` writes every input with
the real files' keys, dtypes, shape pattern, 1-based indices and units (micrometres, 0-255 colours):
a height-field "face" on a 21 x 21 grid, symmetric about x = 0, looking at +z, with a nose bump under
the template's nose tip. The BFM, expression and front vertex orders are shuffled, so an index mix-up
cannot pass by accident.
"""
import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from tf_facetex.errors import AssetError
from tf_facetex.face_model import bfm
from tf_facetex.face_model.model import MorphableModel
from tf_facetex.face_model.procedural import _landmark_template

GRID = 21                                    # full "BFM": 21 x 21 vertices
NUM_ID_MODES, NUM_TEX_MODES, EXP_DIM = 12, 11, 9
KEEP_ID, KEEP_EXP, KEEP_TEX = 10, 6, 8       # Deng keeps 80 / 64 / 80 of 199 / 79 / 199
LANDMARK_SCALE = 0.85                        # template (s, t) -> grid (s, t)
OFFSET_DM = np.array([0.3, -0.2, 0.5])       # BFM's mean face is not centred: recentring must remove it
MIRROR_LANDMARK_PAIRS = ((0, 16), (36, 45), (48, 54))  # jaw ends, outer eye corners, mouth corners


@dataclasses.dataclass
class SyntheticBfm:
    folder: pathlib.Path
    bfm_mat: pathlib.Path
    exp_pca: pathlib.Path
    front_mat: pathlib.Path       # where tests write BFM_model_front.mat (next to the UV files)
    front_positions: np.ndarray   # [N, 3] dm, ground-truth front vertices (not recentred)
    mirror: np.ndarray            # [N] ground-truth left-right mirror of each front vertex
    nose_tip: int                 # front vertex under landmark 30


def _orthonormal_columns(rng, rows, cols):
    q, _ = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q


def write_synthetic_bfm(folder, seed=0, num_id_modes=NUM_ID_MODES, num_tex_modes=NUM_TEX_MODES,
                        exp_dim=EXP_DIM) -> SyntheticBfm:
    """Writes 01_MorphableModel.mat, Exp_Pca.bin, std_exp.txt, BFM_front_idx.mat, BFM_exp_idx.mat,
    facemodel_info.mat, BFM_UV.mat and select_vertex_id.mat into ``folder``."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coords = np.linspace(-1.0, 1.0, GRID)
    cell_i, cell_j = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    cell_i, cell_j = cell_i.reshape(-1), cell_j.reshape(-1)      # cell g = i * GRID + j; j right, i up
    s, t = coords[cell_j], coords[cell_i]

    def cell(i, j):
        return i * GRID + j

    # Vertex sets: BFM = every cell (shuffled), expression topology = inner ring removed, front = two rings.
    cell_of_bfm = rng.permutation(GRID * GRID)
    bfm_of_cell = np.argsort(cell_of_bfm)
    inner = (cell_i >= 1) & (cell_i <= GRID - 2) & (cell_j >= 1) & (cell_j <= GRID - 2)
    cell_of_exp = rng.permutation(np.flatnonzero(inner))
    exp_of_cell = np.full(GRID * GRID, -1)
    exp_of_cell[cell_of_exp] = np.arange(cell_of_exp.size)
    front = (cell_i >= 2) & (cell_i <= GRID - 3) & (cell_j >= 2) & (cell_j <= GRID - 3)
    cell_of_front = rng.permutation(np.flatnonzero(front))
    front_of_cell = np.full(GRID * GRID, -1)
    front_of_cell[cell_of_front] = np.arange(cell_of_front.size)
    n = cell_of_front.size

    # Landmarks: nearest front cell to the scaled template; the nose bump sits on landmark 30's cell.
    template = _landmark_template() * LANDMARK_SCALE
    front_st = np.stack([s[cell_of_front], t[cell_of_front]], 1)
    keypoints = np.argmin(((template[:, None] - front_st[None]) ** 2).sum(-1), axis=1)
    nose_s, nose_t = front_st[keypoints[30]]
    height = (0.5 * np.sqrt(np.clip(1 - 0.4 * s ** 2 - 0.3 * t ** 2, 0.05, None))
              + 0.25 * np.exp(-((s - nose_s) ** 2 + (t - nose_t) ** 2) / 0.02))
    positions = np.stack([0.8 * s, t, height], 1) + OFFSET_DM             # [cells, 3] dm

    # 01_MorphableModel.mat (single precision, micrometres, vertex-major interleaved xyz).
    v = GRID * GRID
    savemat(folder / "01_MorphableModel.mat", {
        "shapeMU": (positions[cell_of_bfm] / bfm.UM_TO_DM).reshape(-1, 1).astype(np.float32),
        "shapePC": _orthonormal_columns(rng, 3 * v, num_id_modes).astype(np.float32),
        "shapeEV": (2e4 * 0.95 ** np.arange(num_id_modes)).reshape(-1, 1).astype(np.float32),
        "texMU": rng.uniform(100, 200, (3 * v, 1)).astype(np.float32),
        "texPC": _orthonormal_columns(rng, 3 * v, num_tex_modes).astype(np.float32),
        "texEV": (300 * 0.95 ** np.arange(num_tex_modes)).reshape(-1, 1).astype(np.float32),
        "segbin": np.zeros((v, 4), np.uint8),  # present in the real file, unused
    })
    # Exp_Pca.bin: int32 exp_dim, float32 expMU [3 V_exp], float32 expPC [exp_dim, 3 V_exp] row-major.
    v_exp = cell_of_exp.size
    exp_pc_rows = _orthonormal_columns(rng, 3 * v_exp, exp_dim).T
    with open(folder / "Exp_Pca.bin", "wb") as handle:
        handle.write(np.array([exp_dim], "<i4").tobytes())
        handle.write(rng.standard_normal(3 * v_exp).astype("<f4").tobytes())
        handle.write(exp_pc_rows.astype("<f4").tobytes())
    np.savetxt(folder / "std_exp.txt", 3e4 * 0.95 ** np.arange(exp_dim))
    savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (bfm_of_cell[cell_of_exp] + 1).reshape(-1, 1)
                                         .astype(np.float64)})
    savemat(folder / "BFM_front_idx.mat", {"idx": (exp_of_cell[cell_of_front] + 1).reshape(-1, 1)
                                           .astype(np.float64)})

    # facemodel_info.mat: quads -> two triangles, counter-clockwise seen from +z (x right, y up).
    corner_i, corner_j = np.meshgrid(np.arange(2, GRID - 3), np.arange(2, GRID - 3), indexing="ij")
    corner_i, corner_j = corner_i.reshape(-1), corner_j.reshape(-1)
    a, b = front_of_cell[cell(corner_i, corner_j)], front_of_cell[cell(corner_i, corner_j + 1)]
    c, d = front_of_cell[cell(corner_i + 1, corner_j + 1)], front_of_cell[cell(corner_i + 1, corner_j)]
    tri = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    f = len(tri)
    point_buf = np.full((n, 8), f + 1)
    fill = np.zeros(n, int)
    for face, corners in enumerate(tri):
        for vertex in corners:
            point_buf[vertex, fill[vertex]] = face + 1
            fill[vertex] += 1
    small = (front_st[:, 0] / 0.65) ** 2 + (front_st[:, 1] / 0.7) ** 2 < 1
    small_idx = np.flatnonzero(small)
    small_of_front = np.full(n, -1)
    small_of_front[small_idx] = np.arange(small_idx.size)
    tri_small = tri[small[tri].all(axis=1)]
    skin = small & (np.abs(front_st[:, 1] - 0.2) > 0.12) & (np.abs(front_st[:, 1] + 0.45) > 0.12)
    savemat(folder / "facemodel_info.mat", {
        "tri": (tri + 1).astype(np.float32),
        "point_buf": point_buf.astype(np.float64),
        "tri_mask2": (small_of_front[tri_small] + 1).astype(np.float64),
        "keypoints": (keypoints + 1).reshape(1, -1).astype(np.float64),
        "frontmask2_idx": (small_idx + 1).reshape(-1, 1).astype(np.float64),
        "frontmask2": small.reshape(1, -1).astype(np.float64),  # present in the real file, not copied
        "skinmask": skin.reshape(1, -1).astype(np.float64),
    })
    # 3DMMasSTN UVs for every BFM vertex (v up), and Deng's select_vertex_id (uint16, 1-based).
    uv_cells = np.stack([0.05 + 0.9 * (s + 1) / 2, 0.05 + 0.9 * (t + 1) / 2], 1)
    savemat(folder / "BFM_UV.mat", {"UV": uv_cells[cell_of_bfm]})
    savemat(folder / "select_vertex_id.mat", {"select_id": (bfm_of_cell[cell_of_front] + 1).reshape(-1, 1)
                                              .astype(np.uint16)})

    mirror_cell = cell(cell_i, GRID - 1 - cell_j)
    return SyntheticBfm(folder=folder, bfm_mat=folder / "01_MorphableModel.mat", exp_pca=folder / "Exp_Pca.bin",
                        front_mat=folder / bfm.FRONT_MAT_NAME, front_positions=positions[cell_of_front],
                        mirror=front_of_cell[mirror_cell[cell_of_front]], nose_tip=int(keypoints[30]))


def convert(syn: SyntheticBfm, out=None, **kwargs):
    kwargs = {"num_id": KEEP_ID, "num_exp": KEEP_EXP, "num_tex": KEEP_TEX, **kwargs}
    return bfm.convert_bfm09(syn.bfm_mat, syn.exp_pca, syn.folder, out or syn.front_mat, **kwargs)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    syn = write_synthetic_bfm(tmp_path_factory.mktemp("bfm"))
    convert(syn)
    return syn


@pytest.fixture(scope="module")
def model(synthetic):
    return bfm.load_bfm_front(synthetic.front_mat)


@pytest.fixture
def scratch(synthetic, tmp_path):
    """A private copy of the synthetic folder that a test may break."""
    folder = tmp_path / "bfm"
    shutil.copytree(synthetic.folder, folder)
    return dataclasses.replace(synthetic, folder=folder, bfm_mat=folder / synthetic.bfm_mat.name,
                               exp_pca=folder / synthetic.exp_pca.name, front_mat=folder / synthetic.front_mat.name)


def _mat(path):
    return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}


def _edit_mat(path, **changes):
    """Rewrites a .mat with some variables replaced (a callable gets the old value) or removed (None)."""
    contents = _mat(path)
    for key, change in changes.items():
        if change is None:
            contents.pop(key)
        else:
            contents[key] = change(contents[key]) if callable(change) else change
    savemat(path, contents)


def _source_terms(syn):
    """Per front vertex k: its BFM 2009 vertex and its expression-topology vertex (0-based)."""
    trim = _mat(syn.folder / "BFM_exp_idx.mat")["trimIndex"].reshape(-1).astype(int) - 1
    idx = _mat(syn.folder / "BFM_front_idx.mat")["idx"].reshape(-1).astype(int) - 1
    return trim[idx], idx


# ------------------------------------------------------------------------------------------- converter
def test_convert_writes_deng_layout_and_formulas(synthetic):
    out = _mat(synthetic.front_mat)
    assert set(bfm.FRONT_KEYS) <= set(out)
    src = _mat(synthetic.bfm_mat)
    bfm_vertex, exp_vertex = _source_terms(synthetic)
    n = bfm_vertex.size
    assert out["meanshape"].shape == (1, 3 * n) and out["meantex"].shape == (1, 3 * n)
    assert out["idBase"].shape == (3 * n, KEEP_ID)
    assert out["exBase"].shape == (3 * n, KEEP_EXP)
    assert out["texBase"].shape == (3 * n, KEEP_TEX)

    # Deng's formulas, written per vertex and coordinate from the source arrays.
    raw = np.fromfile(synthetic.exp_pca, "<f4", offset=4)
    v_exp = raw.size // 3 // (1 + EXP_DIM)
    exp_pc = raw[3 * v_exp:].reshape(EXP_DIM, v_exp, 3)                 # [mode, vertex, xyz]
    std_exp = np.loadtxt(synthetic.folder / "std_exp.txt")
    shape_pc = src["shapePC"].reshape(-1, 3, NUM_ID_MODES)              # [vertex, xyz, mode]
    tex_pc = src["texPC"].reshape(-1, 3, NUM_TEX_MODES)
    expected_id = shape_pc[bfm_vertex][..., :KEEP_ID] * src["shapeEV"].reshape(-1)[:KEEP_ID] / 1e5
    expected_exp = exp_pc[:KEEP_EXP, exp_vertex].transpose(1, 2, 0) * std_exp[:KEEP_EXP] / 1e5
    expected_tex = tex_pc[bfm_vertex][..., :KEEP_TEX] * src["texEV"].reshape(-1)[:KEEP_TEX]
    np.testing.assert_allclose(out["idBase"].reshape(n, 3, KEEP_ID), expected_id, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out["exBase"].reshape(n, 3, KEEP_EXP), expected_exp, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(out["texBase"].reshape(n, 3, KEEP_TEX), expected_tex, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["meanshape"].reshape(n, 3), src["shapeMU"].reshape(-1, 3)[bfm_vertex] / 1e5,
                               rtol=1e-6)
    np.testing.assert_allclose(out["meanshape"].reshape(n, 3), synthetic.front_positions, atol=1e-5)
    np.testing.assert_allclose(out["meantex"].reshape(n, 3), src["texMU"].reshape(-1, 3)[bfm_vertex], rtol=1e-6)
    info = _mat(synthetic.folder / "facemodel_info.mat")
    for key in bfm.FACEMODEL_INFO_KEYS:
        np.testing.assert_array_equal(out[key], info[key], err_msg=key)
    assert "frontmask2" not in out


def test_convert_is_atomic_and_leaves_no_temporary(scratch):
    out = scratch.folder / "sub" / "front.mat"
    assert convert(scratch, out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["front.mat"]
    with pytest.raises(AssetError):
        convert(scratch, out, num_id=NUM_ID_MODES + 1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["front.mat"]  # old file kept, no .tmp


# ------------------------------------------------------------------------------------------- loader
def test_load_matches_source_arrays(synthetic, model):
    src = _mat(synthetic.bfm_mat)
    front = _mat(synthetic.front_mat)
    bfm_vertex, _ = _source_terms(synthetic)
    n = bfm_vertex.size
    assert (model.num_vertices, model.num_id, model.num_exp, model.num_tex) == (n, KEEP_ID, KEEP_EXP, KEEP_TEX)
    expected_mean = synthetic.front_positions - synthetic.front_positions.mean(axis=0)
    np.testing.assert_allclose(model.mean_shape, expected_mean, atol=1e-5)
    np.testing.assert_allclose(model.mean_shape.mean(axis=0), 0, atol=1e-6)
    for mode in (0, KEEP_ID - 1):  # basis column m -> offsets [N, 3] in decimetres per unit coefficient
        expected = src["shapePC"][:, mode].reshape(-1, 3)[bfm_vertex] * src["shapeEV"][mode, 0] * 1e-5
        np.testing.assert_allclose(model.id_basis[mode], expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(model.exp_basis, front["exBase"].reshape(n, 3, -1).transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(model.albedo_mean, src["texMU"].reshape(-1, 3)[bfm_vertex] / 255, rtol=1e-6)
    np.testing.assert_allclose(model.albedo_basis[2], src["texPC"][:, 2].reshape(-1, 3)[bfm_vertex]
                               * src["texEV"][2, 0] / 255, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(model.triangles, front["tri"].astype(int) - 1)
    np.testing.assert_array_equal(model.uv_triangles, model.triangles)
    assert model.textured_triangles.all()
    np.testing.assert_array_equal(model.landmark_indices, front["keypoints"].reshape(-1).astype(int) - 1)
    uv = _mat(synthetic.folder / "BFM_UV.mat")["UV"]
    select = _mat(synthetic.folder / "select_vertex_id.mat")["select_id"].reshape(-1).astype(int) - 1
    np.testing.assert_allclose(model.uv_coords, uv[select], atol=1e-7)
    region = np.zeros(n, bool)
    region[front["frontmask2_idx"].reshape(-1).astype(int) - 1] = True
    np.testing.assert_array_equal(model.face_region_mask, region)
    np.testing.assert_array_equal(model.skin_mask, front["skinmask"].reshape(-1) > 0)
    assert 0 < model.skin_mask.sum() < model.face_region_mask.sum()
    assert model.exp_names == tuple(f"exp_{k:02d}" for k in range(KEEP_EXP))
    assert model.albedo_source == "model"
    assert "reversed" not in model.source and "frontal" not in model.source


def test_orientation_landmarks_and_symmetry(synthetic, model):
    v = model.mean_shape
    a, b, c = (v[model.triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    assert (normals[:, 2] > 0).all(), "triangles must be counter-clockwise seen from outside (+z)"
    # Deng's normal (v1 - v2) x (v2 - v3) is the same vector: his code implies no flip either.
    np.testing.assert_allclose(np.cross(a - b, b - c), normals, atol=1e-6)
    assert model.landmark_indices[30] == synthetic.nose_tip == int(np.argmax(v[:, 2]))
    landmarks = model.mean_landmarks()
    assert landmarks[0, 0] < 0 < landmarks[16, 0], "landmark 0 is on the subject's right (-x)"
    assert landmarks[8, 1] < landmarks[30, 1] < landmarks[27, 1], "chin below nose tip below nose bridge"
    sym = model.symmetry_indices
    np.testing.assert_array_equal(sym[sym], np.arange(model.num_vertices))
    np.testing.assert_array_equal(sym, synthetic.mirror)
    for left, right in MIRROR_LANDMARK_PAIRS:
        assert sym[model.landmark_indices[left]] == model.landmark_indices[right]


def test_reversed_winding_is_flipped_and_reported(scratch, model):
    _edit_mat(scratch.front_mat, tri=lambda tri: tri[:, [0, 2, 1]])
    flipped = bfm.load_bfm_front(scratch.front_mat)
    np.testing.assert_array_equal(flipped.triangles, model.triangles)
    assert "reversed" in flipped.source


def test_npz_round_trip(model, tmp_path):
    path = tmp_path / "bfm.npz"
    model.save(path)
    again = MorphableModel.load(path)
    for field in ("mean_shape", "id_basis", "exp_basis", "albedo_mean", "albedo_basis", "triangles", "uv_coords",
                  "uv_triangles", "textured_triangles", "landmark_indices", "symmetry_indices",
                  "face_region_mask", "skin_mask"):
        np.testing.assert_array_equal(getattr(again, field), getattr(model, field), err_msg=field)
    assert (again.name, again.exp_names, again.albedo_source) == (model.name, model.exp_names, model.albedo_source)


def test_load_face_model_dispatches_mat(synthetic, model):
    from tf_facetex.face_model import load_face_model
    loaded = load_face_model(synthetic.front_mat, log=lambda *_: None)
    np.testing.assert_array_equal(loaded.mean_shape, model.mean_shape)


def test_missing_uv_files(synthetic, scratch, model):
    (scratch.folder / bfm.UV_MAT_NAME).unlink()
    with pytest.raises(AssetError, match="BFM_UV.mat") as err:
        bfm.load_bfm_front(scratch.front_mat)
    assert "UV" in str(err.value) and "select_vertex_id" not in str(err.value)
    fallback = bfm.load_bfm_front(scratch.front_mat, allow_missing_uv=True)
    assert "frontal" in fallback.source and "BFM_UV.mat" in fallback.source
    uv = fallback.uv_coords
    assert uv.min() >= 0.02 - 1e-6 and uv.max() <= 0.98 + 1e-6
    assert np.isclose(uv.min(axis=0), 0.02, atol=1e-6).any() and np.isclose(uv.max(axis=0), 0.98, atol=1e-6).any()
    np.testing.assert_allclose(uv[model.symmetry_indices, 0], 1 - uv[:, 0], atol=1e-5)  # mirror-symmetric layout
    np.testing.assert_array_equal(fallback.mean_shape, model.mean_shape)
    # Explicit paths win over the (missing) files next to the .mat.
    explicit = bfm.load_bfm_front(scratch.front_mat, uv_path=synthetic.folder / bfm.UV_MAT_NAME)
    np.testing.assert_array_equal(explicit.uv_coords, model.uv_coords)


def test_v73_mat_file_is_explained(scratch):
    h5py = pytest.importorskip("h5py")
    path = scratch.folder / bfm.UV_MAT_NAME
    path.unlink()
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle["UV"] = np.zeros((2, 10))
    header = b"MATLAB 7.3 MAT-file, synthetic".ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)
    with pytest.raises(AssetError, match=r"BFM_UV\.mat.*v7\.3"):
        bfm.load_bfm_front(scratch.front_mat)


# ------------------------------------------------------------------------------------------- bad inputs
def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


CONVERT_BREAKS = {
    "bfm_missing": (lambda f: (f / "01_MorphableModel.mat").unlink(), "01_MorphableModel.mat", "not found"),
    "bfm_truncated": (lambda f: _truncate(f / "01_MorphableModel.mat"), "01_MorphableModel.mat", ""),
    "bfm_garbage": (lambda f: (f / "01_MorphableModel.mat").write_bytes(b"not a mat file" * 20),
                    "01_MorphableModel.mat", "corrupt"),
    "shapePC_missing": (lambda f: _edit_mat(f / "01_MorphableModel.mat", shapePC=None),
                        "01_MorphableModel.mat", "'shapePC' missing"),
    "shapePC_rows": (lambda f: _edit_mat(f / "01_MorphableModel.mat", shapePC=lambda x: x[:-3]),
                     "01_MorphableModel.mat", "'shapePC'"),
    "shapePC_nan": (lambda f: _edit_mat(f / "01_MorphableModel.mat", shapePC=lambda x: x * np.nan),
                    "01_MorphableModel.mat", "'shapePC' contains NaN"),
    "shapeEV_size": (lambda f: _edit_mat(f / "01_MorphableModel.mat", shapeEV=lambda x: x[:-1]),
                     "01_MorphableModel.mat", "'shapeEV'"),
    "texMU_size": (lambda f: _edit_mat(f / "01_MorphableModel.mat", texMU=lambda x: x[:-3]),
                   "01_MorphableModel.mat", "'texMU'"),
    "shapeMU_not_xyz": (lambda f: _edit_mat(f / "01_MorphableModel.mat", shapeMU=lambda x: x[:-1]),
                        "01_MorphableModel.mat", "'shapeMU'"),
    "exp_pca_short": (lambda f: _truncate(f / "Exp_Pca.bin", keep=0.99), "Exp_Pca.bin", "'expPC'"),
    "exp_pca_empty": (lambda f: (f / "Exp_Pca.bin").write_bytes(b""), "Exp_Pca.bin", "'exp_dim'"),
    "exp_pca_missing": (lambda f: (f / "Exp_Pca.bin").unlink(), "Exp_Pca.bin", "not found"),
    "std_exp_count": (lambda f: np.savetxt(f / "std_exp.txt", np.ones(EXP_DIM - 1)), "std_exp.txt", "exp_dim"),
    "idx_out_of_range": (lambda f: _edit_mat(f / "BFM_front_idx.mat", idx=lambda x: x + x.max()),
                         "BFM_front_idx.mat", "'idx'"),
    "idx_not_integer": (lambda f: _edit_mat(f / "BFM_front_idx.mat", idx=lambda x: x + 0.5),
                        "BFM_front_idx.mat", "'idx'"),
    "trimIndex_zero": (lambda f: _edit_mat(f / "BFM_exp_idx.mat", trimIndex=lambda x: x - 1),
                       "BFM_exp_idx.mat", "'trimIndex'"),
    "trimIndex_missing": (lambda f: _edit_mat(f / "BFM_exp_idx.mat", trimIndex=None),
                          "BFM_exp_idx.mat", "'trimIndex' missing"),
    "info_missing": (lambda f: (f / "facemodel_info.mat").unlink(), "facemodel_info.mat", "not found"),
    "tri_missing": (lambda f: _edit_mat(f / "facemodel_info.mat", tri=None), "facemodel_info.mat", "'tri' missing"),
    "tri_out_of_range": (lambda f: _edit_mat(f / "facemodel_info.mat", tri=lambda x: x * 2),
                         "facemodel_info.mat", "'tri'"),
    "keypoints_out_of_range": (lambda f: _edit_mat(f / "facemodel_info.mat", keypoints=lambda x: x + 10 ** 6),
                               "facemodel_info.mat", "'keypoints'"),
    "keypoints_count": (lambda f: _edit_mat(f / "facemodel_info.mat", keypoints=lambda x: x[:, :67]),
                        "facemodel_info.mat", "'keypoints'"),
    "point_buf_out_of_range": (lambda f: _edit_mat(f / "facemodel_info.mat", point_buf=lambda x: x + 1),
                               "facemodel_info.mat", "'point_buf'"),
    "skinmask_size": (lambda f: _edit_mat(f / "facemodel_info.mat", skinmask=lambda x: x[:, 1:]),
                      "facemodel_info.mat", "'skinmask'"),
}


@pytest.mark.parametrize("case", sorted(CONVERT_BREAKS))
def test_convert_bad_input_names_file_and_field(scratch, case):
    breaker, filename, phrase = CONVERT_BREAKS[case]
    breaker(scratch.folder)
    out = scratch.folder / "out" / "front.mat"
    with pytest.raises(AssetError) as err:
        convert(scratch, out)
    message = str(err.value)
    assert filename in message and phrase in message, message
    assert "\n" not in message
    assert not out.exists()


def test_convert_too_many_modes_requested(scratch):
    with pytest.raises(AssetError, match=r"01_MorphableModel\.mat: field 'shapePC' has 12 modes, 13 requested"):
        convert(scratch, num_id=NUM_ID_MODES + 1)
    with pytest.raises(AssetError, match=r"Exp_Pca\.bin: field 'expPC' has 9 modes, 10 requested"):
        convert(scratch, num_exp=EXP_DIM + 1)


LOAD_BREAKS = {
    "front_missing": (lambda f: (f / bfm.FRONT_MAT_NAME).unlink(), bfm.FRONT_MAT_NAME, "not found"),
    "front_truncated": (lambda f: _truncate(f / bfm.FRONT_MAT_NAME, keep=0.3), bfm.FRONT_MAT_NAME, ""),
    "idBase_missing": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, idBase=None), bfm.FRONT_MAT_NAME,
                       "'idBase' missing"),
    "idBase_rows": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, idBase=lambda x: x[3:]), bfm.FRONT_MAT_NAME,
                    "'idBase'"),
    "meantex_size": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, meantex=lambda x: x[:, 3:]), bfm.FRONT_MAT_NAME,
                     "'meantex'"),
    "tri_out_of_range": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, tri=lambda x: x + 10 ** 6),
                         bfm.FRONT_MAT_NAME, "'tri'"),
    "keypoints_out_of_range": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, keypoints=lambda x: x - x.min()),
                               bfm.FRONT_MAT_NAME, "'keypoints'"),
    "frontmask_out_of_range": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, frontmask2_idx=lambda x: x + 10 ** 6),
                               bfm.FRONT_MAT_NAME, "'frontmask2_idx'"),
    "skinmask_size": (lambda f: _edit_mat(f / bfm.FRONT_MAT_NAME, skinmask=lambda x: x[:, 1:]),
                      bfm.FRONT_MAT_NAME, "'skinmask'"),
    "select_id_out_of_range": (lambda f: _edit_mat(f / bfm.SELECT_ID_MAT_NAME, select_id=lambda x: x + 10000),
                               bfm.SELECT_ID_MAT_NAME, "'select_id'"),
    "select_id_count": (lambda f: _edit_mat(f / bfm.SELECT_ID_MAT_NAME, select_id=lambda x: x[1:]),
                        bfm.SELECT_ID_MAT_NAME, "'select_id'"),
    "select_id_missing_file": (lambda f: (f / bfm.SELECT_ID_MAT_NAME).unlink(), bfm.SELECT_ID_MAT_NAME,
                               "UV coordinates"),
    "uv_key_missing": (lambda f: _edit_mat(f / bfm.UV_MAT_NAME, UV=None, other=np.zeros(2)), bfm.UV_MAT_NAME,
                       "'UV' missing"),
    "uv_shape": (lambda f: _edit_mat(f / bfm.UV_MAT_NAME, UV=lambda x: x[:, :1]), bfm.UV_MAT_NAME, "'UV'"),
    "uv_range": (lambda f: _edit_mat(f / bfm.UV_MAT_NAME, UV=lambda x: x * 3), bfm.UV_MAT_NAME, "'UV'"),
}


@pytest.mark.parametrize("case", sorted(LOAD_BREAKS))
def test_load_bad_input_names_file_and_field(scratch, case):
    breaker, filename, phrase = LOAD_BREAKS[case]
    breaker(scratch.folder)
    with pytest.raises(AssetError) as err:
        bfm.load_bfm_front(scratch.front_mat)
    message = str(err.value)
    assert filename in message and phrase in message, message
    assert "\n" not in message
