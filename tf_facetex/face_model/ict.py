"""ICT-FaceKit "Light" (MIT) -> `MorphableModel`.

The original folder (``FaceXModel/``) holds a generic neutral quad mesh, 100 identity PCA modes and 53
ARKit-named expression shapes as full OBJ meshes, plus ``vertex_indices.json``. We keep the face and the
head/neck geometry (vertices [0:11248], polygons [0:11144] per the kit's README), split quads into
triangles, turn every mode into an offset from the neutral mesh, and convert centimetres to decimetres.

The face polygons' UVs fill the [0,1]^2 tile and the head/neck polygons' UVs sit in the [1,2]x[0,1]
tile; only the first are ``textured_triangles`` (the UV albedo the method estimates covers the face).
The kit has no albedo modes: ``albedo_mean`` is a uniform skin tone and ``albedo_source='uniform'``
until an albedo model is built from photos (scripts/build_albedo_model.py).

Parts (converter version 2): the kit's mouth socket, eye sockets, gums and tongue, teeth and eyeballs (sclera and
iris, left and right) are kept as named part groups (``MorphableModel.part_names`` / ``triangle_parts``), so
renders have no holes at the eyes or in an open mouth. They are the kit's geometries #2-#8, vertices
[11248:24590] and polygons [11144:24691] (contiguous after the face and head). The kit's identity and
expression OBJs hold all 26,719 vertices, so the parts follow identity and expression exactly as the kit
defines (jawOpen moves the lower teeth, eyeLook* turn the eyeballs); nothing is attached by hand. Left out: the
lacrimal fluid, eye blend, eye occlusion and eyelash meshes (transparent overlays for a game engine's shaders).
The kit's eyeball is two nested spheres for a game engine's eye shader; here the outer one is kept and split
into sclera and iris by angle (`_split_eyeballs`). The parts are not in the UV albedo chart; their reflectance is
``PART_ALBEDO`` (documented defaults; the iris is re-estimated per photo, `tf_facetex.rendering.parts`). Their
UVs are kept (they sit outside [0, 1]^2). The inner iris sphere's vertices stay in the model, unused.
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
# Converter output version: bump it when the converted model changes, so that caches are rebuilt (the cache
# file name carries it, `tf_facetex.face_model.ICT_CACHE_NAME`). 2: eyes, teeth, gums and sockets as parts.
CONVERTER_VERSION = 2
# Part groups after the face and head: (name, first polygon, end polygon) per the kit's README; each part's
# vertices are those its polygons use (the kit's vertex ranges #2-#8, [11248:24590]).
PARTS = (
    ("mouth_socket", 11144, 13226),
    ("eye_socket_left", 13226, 13630),
    ("eye_socket_right", 13630, 14034),
    ("gums_tongue", 14034, 17006),
    ("teeth", 17006, 21496),
    ("sclera_left", 21496, 22296),
    ("iris_left", 22296, 23094),
    ("sclera_right", 23094, 23894),
    ("iris_right", 23894, 24692),
)
NUM_WITH_PARTS_VERTICES = 24591
# Half-angle of the iris seen from the eyeball's bounding-box centre (the kit's eyeball is not a sphere about it):
# 22 degrees makes the rendered iris about 11-12 mm wide, the anatomical average, on the mean face.
IRIS_HALF_ANGLE_DEG = 22.0
NUM_WITH_PARTS_POLYGONS = 24692
# Flat reflectance of each part (same scale as the skin albedo, display-referred [0, 1]); documented defaults,
# chosen by eye from photographs of eyes and mouths (not measured): a slightly warm white sclera, a mid brown
# iris (the commonest colour; re-estimated from the photo when the iris is visible), ivory teeth, pink gums and
# tongue, and dark red / dark brown for the sockets (shadowed cavities).
PART_ALBEDO = {
    "mouth_socket": (0.22, 0.08, 0.08),
    "eye_socket_left": (0.20, 0.12, 0.10),
    "eye_socket_right": (0.20, 0.12, 0.10),
    "gums_tongue": (0.62, 0.30, 0.30),
    "teeth": (0.82, 0.78, 0.68),
    "sclera_left": (0.84, 0.80, 0.76),
    "iris_left": (0.30, 0.19, 0.11),
    "sclera_right": (0.84, 0.80, 0.76),
    "iris_right": (0.30, 0.19, 0.11),
}
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


def convert_ict(ict_dir, progress=None, with_parts: bool = True) -> MorphableModel:
    """Builds the face+head/neck `MorphableModel` (with eyes, teeth, gums and sockets) from an ICT-FaceKit folder.

    Args:
      ict_dir: folder holding ``FaceXModel/`` (or ``FaceXModel/`` itself).
      progress: optional callable wrapping an iterable (e.g. tqdm) for the 153 mesh files.
      with_parts: keep the part groups (``PARTS``); False gives the face and head only (converter version 1).
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

    n = NUM_WITH_PARTS_VERTICES if with_parts else NUM_FACE_HEAD_VERTICES
    neutral = read_obj_vertices(neutral_path, n)
    uv_all, polygons = read_obj_topology(neutral_path, NUM_WITH_PARTS_POLYGONS if with_parts
                                         else NUM_FACE_HEAD_POLYGONS)
    triangles, uv_triangles, source_polygon = triangulate(polygons)
    part_names, triangle_parts = _part_labels(source_polygon, with_parts)
    if with_parts:
        triangle_parts, keep = _split_eyeballs(neutral, triangles, triangle_parts, part_names)
        triangles, uv_triangles, source_polygon = triangles[keep], uv_triangles[keep], source_polygon[keep]
        triangle_parts = triangle_parts[keep]
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
    # The mirror of the face and head as before; part vertices mirror among themselves (left eye <-> right eye).
    symmetry = mirror_correspondence(mean_shape[:NUM_FACE_HEAD_VERTICES])
    if n > NUM_FACE_HEAD_VERTICES:
        symmetry = np.concatenate([symmetry, NUM_FACE_HEAD_VERTICES
                                   + mirror_correspondence(mean_shape[NUM_FACE_HEAD_VERTICES:])])
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
        symmetry_indices=symmetry,
        face_region_mask=region,
        skin_mask=skin,
        exp_names=tuple(indices["expressions"]),
        albedo_source="uniform",
        source=str(root),
        triangle_parts=triangle_parts,
        part_names=part_names,
        part_albedo=np.array([(0.0, 0.0, 0.0)] + [PART_ALBEDO[name] for name in part_names[1:]], np.float32),
    )


def _split_eyeballs(vertices, triangles, triangle_parts, part_names):
    """Re-labels the eyeballs: -> (triangle_parts [F] with the iris on the outer eyeball, keep [F] bool).

    The kit's eyeball is two nested full spheres for a game engine's eye shader: the outer one (M_Sclera*) is
    sclera and a transparent, refracting cornea, the inner one (M_Iris*) carries the iris texture. With opaque
    flat colours the outer sphere would hide the iris, so the inner sphere is dropped and the outer sphere's
    triangles within ``IRIS_HALF_ANGLE_DEG`` of the eye's axis (+z, the neutral gaze, from the eyeball's
    bounding-box centre) become the iris; the rest stays sclera. Both follow the kit's deformations.
    """
    parts = triangle_parts.copy()
    keep = np.ones(len(triangles), bool)
    limit = np.cos(np.radians(IRIS_HALF_ANGLE_DEG))
    for side in ("left", "right"):
        sclera, iris = part_names.index(f"sclera_{side}"), part_names.index(f"iris_{side}")
        outer = np.flatnonzero(triangle_parts == sclera)
        keep[triangle_parts == iris] = False
        points = vertices[np.unique(triangles[outer])]
        centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
        directions = vertices[triangles[outer]].mean(axis=1) - centre
        cosine = directions[:, 2] / np.maximum(np.linalg.norm(directions, axis=-1), 1e-12)
        parts[outer[cosine > limit]] = iris
    return parts, keep


def _part_labels(source_polygon, with_parts):
    """(part names, [F] part index of each triangle) from the kit polygon each triangle came from."""
    names = ("skin",) + (tuple(name for name, _, _ in PARTS) if with_parts else ())
    labels = np.zeros(len(source_polygon), np.int32)
    if with_parts:
        for index, (_, start, end) in enumerate(PARTS, start=1):
            labels[(source_polygon >= start) & (source_polygon < end)] = index
    return names, labels


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
