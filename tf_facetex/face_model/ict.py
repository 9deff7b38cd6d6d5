"""ICT-FaceKit "Light" (MIT) -> `MorphableModel`.

The original folder (``FaceXModel/``) holds a generic neutral quad mesh, 100 identity PCA modes and 53
ARKit-named expression shapes as full OBJ meshes, plus ``vertex_indices.json``. We keep the face and the
head/neck geometry (vertices [0:11248], polygons [0:11144] per the kit's README), split quads into
triangles, turn every mode into an offset from the neutral mesh, and convert centimetres to decimetres.

The face polygons' UVs fill the [0,1]^2 tile and the head/neck polygons' UVs sit in the [1,2]x[0,1]
tile; only the first are ``textured_triangles`` (the UV albedo the method estimates covers the face).
The kit has no albedo modes: ``albedo_mean`` is a uniform skin tone and ``albedo_source='uniform'``
until an albedo model is built from photos (scripts/build_albedo_model.py).
"""
import json
import pathlib

import numpy as np

from tf_facetex.errors import AssetError
from tf_facetex.face_model.model import MorphableModel, mirror_correspondence

NUM_FACE_HEAD_VERTICES = 11248   # Face [0:9408] + Head and Neck [9409:11247]
NUM_FACE_HEAD_POLYGONS = 11144   # Face [0:9229] + Head and Neck [9230:11143]
NUM_FACE_VERTICES = 9409         # "Full face area"
NUM_NARROW_FACE_VERTICES = 6706  # "Narrow face area"
NUM_IDENTITY_MODES = 100
CM_TO_DM = 0.1
# A neutral skin reflectance used only while the kit has no albedo model (documented as such).
UNIFORM_ALBEDO = (0.70, 0.52, 0.44)
# Multi-PIE 68 landmark indices from the kit's README; vertex_indices.json carries the same list.
README_LANDMARKS = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443, 268,
    493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200,
    6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966)


def read_obj_vertices(path, count=None) -> np.ndarray:
    """[count, 3] float64 positions of the first ``count`` ``v`` lines of an OBJ file."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise AssetError(f"{path}: cannot read ({err})") from err
    lines = [line[2:] for line in text.split("\n") if line.startswith("v ")]
    if count is not None:
        if len(lines) < count:
            raise AssetError(f"{path}: {len(lines)} vertices, expected at least {count} (truncated file?)")
        lines = lines[:count]
    try:
        values = np.array(" ".join(lines).split(), dtype=np.float64)
        return values.reshape(len(lines), 3)
    except ValueError as err:
        raise AssetError(f"{path}: malformed vertex lines ({err})") from err


def read_obj_topology(path, num_polygons):
    """Returns (uv_coords [T,2], polygons: list of [(vertex, uv)] 0-based) of the first polygons."""
    path = pathlib.Path(path)
    uvs, polygons = [], []
    try:
        for line in path.read_text().split("\n"):
            if line.startswith("vt "):
                uvs.append(line.split()[1:3])
            elif line.startswith("f ") and len(polygons) < num_polygons:
                corners = []
                for token in line.split()[1:]:
                    parts = token.split("/")
                    if len(parts) < 2 or not parts[1]:
                        raise AssetError(f"{path}: face corner '{token}' has no UV index")
                    corners.append((int(parts[0]) - 1, int(parts[1]) - 1))
                polygons.append(corners)
    except (OSError, ValueError) as err:
        raise AssetError(f"{path}: cannot parse OBJ topology ({err})") from err
    if len(polygons) < num_polygons:
        raise AssetError(f"{path}: {len(polygons)} polygons, expected at least {num_polygons} (truncated file?)")
    return np.array(uvs, dtype=np.float64), polygons


def triangulate(polygons):
    """Fan-triangulates polygons: returns (triangles [F,3], uv_triangles [F,3], source polygon [F])."""
    tris, uv_tris, source = [], [], []
    for index, corners in enumerate(polygons):
        for k in range(1, len(corners) - 1):
            picked = (corners[0], corners[k], corners[k + 1])
            tris.append([c[0] for c in picked])
            uv_tris.append([c[1] for c in picked])
            source.append(index)
    return np.array(tris, np.int32), np.array(uv_tris, np.int32), np.array(source, np.int32)


def convert_ict(ict_dir, progress=None) -> MorphableModel:
    """Builds the face+head/neck `MorphableModel` from an ICT-FaceKit folder.

    Args:
      ict_dir: folder holding ``FaceXModel/`` (or ``FaceXModel/`` itself).
      progress: optional callable wrapping an iterable (e.g. tqdm) for the 153 mesh files.
    """
    root = pathlib.Path(ict_dir)
    model_dir = root / "FaceXModel" if (root / "FaceXModel").is_dir() else root
    neutral_path = model_dir / "generic_neutral_mesh.obj"
    index_path = model_dir / "vertex_indices.json"
    for needed in (neutral_path, index_path):
        if not needed.is_file():
            raise AssetError(f"{needed}: missing from the ICT-FaceKit folder")
    try:
        indices = json.loads(index_path.read_text())
    except (OSError, ValueError) as err:
        raise AssetError(f"{index_path}: not valid JSON ({err})") from err
    for key in ("expressions", "idx_to_landmark_verts"):
        if key not in indices:
            raise AssetError(f"{index_path}: field '{key}' missing")
    landmarks = np.array(indices["idx_to_landmark_verts"], np.int32)
    if landmarks.shape != (68,) or landmarks.max() >= NUM_FACE_VERTICES:
        raise AssetError(f"{index_path}: field 'idx_to_landmark_verts' should hold 68 face vertex indices")

    n = NUM_FACE_HEAD_VERTICES
    neutral = read_obj_vertices(neutral_path, n)
    uv_all, polygons = read_obj_topology(neutral_path, NUM_FACE_HEAD_POLYGONS)
    triangles, uv_triangles, source_polygon = triangulate(polygons)
    if triangles.max() >= n:
        raise AssetError(f"{neutral_path}: face/head polygons reference vertices beyond {n}")
    # Keep only the UV vertices used, re-indexed densely.
    used = np.unique(uv_triangles)
    remap = np.full(uv_all.shape[0], -1, np.int64)
    remap[used] = np.arange(used.size)
    uv_coords = uv_all[used]
    uv_triangles = remap[uv_triangles].astype(np.int32)
    textured = np.all(uv_coords[uv_triangles][..., 0] <= 1.0, axis=1) & (source_polygon < 9230)

    mesh_files = [("identity", f"identity{i:03d}.obj") for i in range(NUM_IDENTITY_MODES)]
    mesh_files += [("expression", f"{name}.obj") for name in indices["expressions"]]
    iterator = progress(mesh_files) if progress else mesh_files
    id_offsets, exp_offsets = [], []
    for kind, filename in iterator:
        path = model_dir / filename
        if not path.is_file():
            raise AssetError(f"{path}: missing from the ICT-FaceKit folder")
        offset = read_obj_vertices(path, n) - neutral
        (id_offsets if kind == "identity" else exp_offsets).append(offset)

    # Centre on the face region so that zero translation puts the face at the image centre.
    centre = neutral[:NUM_FACE_VERTICES].mean(axis=0)
    mean_shape = (neutral - centre) * CM_TO_DM
    region = np.zeros(n, bool)
    region[:NUM_NARROW_FACE_VERTICES] = True
    skin = region & _away_from_features(mean_shape, landmarks)
    return MorphableModel(
        name="ict_facekit_light",
        mean_shape=mean_shape,
        id_basis=np.stack(id_offsets) * CM_TO_DM,
        exp_basis=np.stack(exp_offsets) * CM_TO_DM,
        albedo_mean=np.tile(np.array(UNIFORM_ALBEDO, np.float32), (n, 1)),
        albedo_basis=np.zeros((0, n, 3), np.float32),
        triangles=triangles,
        uv_coords=uv_coords,
        uv_triangles=uv_triangles,
        textured_triangles=textured,
        landmark_indices=landmarks,
        symmetry_indices=mirror_correspondence(mean_shape),
        face_region_mask=region,
        skin_mask=skin,
        exp_names=tuple(indices["expressions"]),
        albedo_source="uniform",
        source=str(root),
    )


def _away_from_features(vertices, landmarks, eye_radius=0.22, mouth_radius=0.12):
    """[N] bool: vertices farther than a radius (dm) from the eye contours and the lips.

    The reflectance loss should see skin only: eyes, brows and lips have their own colours.
    """
    eyes = vertices[landmarks[36:48]]
    brows = vertices[landmarks[17:27]]
    lips = vertices[landmarks[48:68]]

    def far(points, radius):
        d = np.linalg.norm(vertices[:, None, :] - points[None, :, :], axis=-1).min(axis=1)
        return d > radius

    return far(eyes, eye_radius) & far(brows, 0.08) & far(lips, mouth_radius)
