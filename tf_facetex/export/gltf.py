"""glTF 2.0 binary (``.glb``) export of a reconstructed face: albedo embedded, expressions as named morph targets.

What a user gets in ``mesh.glb`` (numpy only; the container is written here because the glTF writers at hand either
have no morph targets (trimesh) or bring a tree of dependencies for ~100 lines of format):
- one mesh ``face`` whose primitives are the model's parts: the textured face (the model's ``textured_triangles``,
  material ``face_albedo`` with ``albedo.png`` embedded as its ``baseColorTexture``) and, when the face model names
  more parts (eyes, teeth, ...), one primitive each with its own material (`MeshPart`);
- positions in metres, y up, the face towards +z (glTF's own frame and the OBJ's), ``NORMAL`` and ``TEXCOORD_0``;
  texcoords are the OBJ's ``vt`` (half-texel exact, `mesh.texel_centre_uvs`) flipped to glTF's v-down origin
  (t = 1 - v), so both files sample the same texels;
- the model's expressions as morph targets (``POSITION`` and, by default, ``NORMAL`` deltas), named in
  ``mesh.extras.targetNames`` (the convention three.js, Blender and Babylon read), with the base mesh the
  *neutral* face of the fitted identity and ``mesh.weights`` the fitted expression coefficients: an engine shows
  the fitted face as loaded, and setting a weight to w means "this expression at w", as for the model;
- the normal deltas are n(neutral + delta_i) - n(neutral), so the displayed normals are a linearisation (exact at
  the neutral face and at each single target).

The glTF spec's rules a validator checks (4-byte alignment, accessor min/max for every ``POSITION``, byteStride
only on vertex buffers, padding of the JSON chunk with spaces and the BIN chunk with zeros) are followed below.
"""
import dataclasses
import json
import pathlib
import struct
from typing import Optional, Sequence

import numpy as np

from tf_facetex.export.mesh import DECIMETRES_TO_METRES, MATERIAL_NAME, texel_centre_uvs

GLB_MAGIC = 0x46546C67         # b"glTF"
CHUNK_JSON = 0x4E4F534A        # b"JSON"
CHUNK_BIN = 0x004E4942         # b"BIN\0"
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_INT = 5126, 5125
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071
GENERATOR = "tf_facetex glTF writer"


# ----------------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class MeshPart:
    """A named part of the face model that becomes its own glTF primitive.

    name: the primitive's / material's name; triangles: [F] int indices into ``model.triangles`` (or an [F_all]
    bool mask); base_color: RGBA in [0, 1] multiplied with the texture; textured: whether the part samples the
    albedo texture (its UVs must lie in the atlas) or is a flat ``base_color``.
    """
    name: str
    triangles: np.ndarray
    base_color: tuple = (1.0, 1.0, 1.0, 1.0)
    textured: bool = True


@dataclasses.dataclass
class Primitive:
    """One glTF primitive, vertices already split at UV seams (glTF has one index per vertex).

    positions: [V, 3] float32; normals: [V, 3] float32 or None; texcoords: [V, 2] float32 (glTF's v-down) or None;
    indices: [F, 3] int; material: index into the materials; target_positions / target_normals: [E, V, 3] deltas or
    None.
    """
    name: str
    positions: np.ndarray
    indices: np.ndarray
    material: int
    normals: Optional[np.ndarray] = None
    texcoords: Optional[np.ndarray] = None
    target_positions: Optional[np.ndarray] = None
    target_normals: Optional[np.ndarray] = None


@dataclasses.dataclass
class Material:
    name: str
    base_color: tuple = (1.0, 1.0, 1.0, 1.0)
    textured: bool = False


# ----------------------------------------------------------------------------------------------- geometry
def vertex_normals(vertices, triangles, dtype=np.float64):
    """Area-weighted unit vertex normals (as `tf_facetex.geometry.vertex_normals`): [..., N, 3], [F, 3] -> [..., N, 3].
    ``dtype``: the arithmetic's (float32 halves the time and memory of the 53-target batch)."""
    from scipy import sparse

    vertices = np.asarray(vertices, dtype)
    triangles = np.asarray(triangles)
    corners = vertices[..., triangles, :]                                       # [..., F, 3, 3]
    face_normals = np.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
    # Sum over each vertex's triangles as one sparse [N, F] incidence product (batch and xyz as columns).
    num_vertices, num_faces = vertices.shape[-2], triangles.shape[0]
    incidence = sparse.csr_matrix((np.ones(3 * num_faces, dtype), (triangles.T.reshape(-1), np.tile(np.arange(num_faces), 3))),
                                  shape=(num_vertices, num_faces))
    columns = np.moveaxis(face_normals, -2, 0).reshape(num_faces, -1)            # [F, (...) * 3]
    summed = np.moveaxis((incidence @ columns).reshape((num_vertices,) + face_normals.shape[:-2] + (3,)), 0, -2)
    return summed / np.maximum(np.linalg.norm(summed, axis=-1, keepdims=True), 1e-12)


def rigid_fit(source, target):
    """The rotation R and translation t with target ~ source R^T + t (least squares, Kabsch): [N, 3] x2 -> [3, 3], [3].

    Used to recover the pose of a posed mesh from its unposed twin, whatever the Euler convention that made it.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((target - mu_t).T @ (source - mu_s))
    sign = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, sign]) @ vt
    return rotation, mu_t - mu_s @ rotation.T


def split_seams(triangles, uv_triangles):
    """Unique (vertex, uv vertex) corners: [F, 3] x2 -> (vertex ids [V'], uv ids [V'], [F, 3] indices into them)."""
    pairs = np.stack([np.asarray(triangles).reshape(-1), np.asarray(uv_triangles).reshape(-1)], axis=-1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(-1, 3).astype(np.int64)


def model_parts(model, part_albedo=None):
    """The `MeshPart`s of a face model with named part groups (``triangle_parts`` [F] into ``part_names``, part 0 the
    textured skin; ``part_albedo`` [P, 3] flat reflectances, or the photo's), or None for a model without parts.

    Materials are named as in the OBJ: the skin ``face_albedo``, the others ``part_<name>``.
    """
    triangle_parts = getattr(model, "triangle_parts", None)
    if triangle_parts is None or not np.any(np.asarray(triangle_parts) != 0):
        return None
    triangle_parts = np.asarray(triangle_parts)
    names = list(getattr(model, "part_names"))
    albedo = np.asarray(model.part_albedo if part_albedo is None else part_albedo, np.float64)
    textured = np.asarray(model.textured_triangles, bool)
    parts = [MeshPart(MATERIAL_NAME, np.flatnonzero(textured & (triangle_parts == 0)))]
    for index, name in enumerate(names[1:], start=1):
        colour = tuple(float(c) for c in np.clip(albedo[index], 0.0, 1.0)) + (1.0,)
        parts.append(MeshPart(f"part_{name}", np.flatnonzero(triangle_parts == index), base_color=colour,
                              textured=False))
    return parts


def face_primitives(model, neutral_vertices, exp_deltas, uv_size, parts: Sequence[MeshPart] = None,
                    rotation=None, translation=None, scale=DECIMETRES_TO_METRES, morph_normals=True):
    """The face's primitives and materials.

    Args:
      model: the `MorphableModel` (triangles, uv_coords, uv_triangles, textured_triangles).
      neutral_vertices: [N, 3] the fitted identity without expression, model frame and units (decimetres).
      exp_deltas: [E, N, 3] per-expression offsets (``model.exp_basis``) or None (no morph targets).
      uv_size: the texture size S (half-texel shift); parts: `MeshPart`s, default `model_parts` (the model's
        named parts) or else one textured part = the model's textured triangles; rotation, translation: optional pose [3, 3], [3] (decimetres) applied to everything.
      scale: positions' unit (default decimetres -> metres); morph_normals: also write NORMAL deltas.
    Returns:
      ([Primitive], [Material]).
    """
    triangles = np.asarray(model.triangles)
    neutral = np.asarray(neutral_vertices, np.float64)
    normals = vertex_normals(neutral, triangles)
    deltas = target_normal_deltas = None
    if exp_deltas is not None and len(exp_deltas):
        deltas = np.asarray(exp_deltas, np.float64)
        if morph_normals:
            target_normal_deltas = vertex_normals(neutral[None] + deltas, triangles, np.float32) - normals[None]
    if rotation is not None:
        rotation = np.asarray(rotation, np.float64)
        neutral = neutral @ rotation.T + np.asarray(translation, np.float64)
        normals = normals @ rotation.T
        deltas = None if deltas is None else deltas @ rotation.T
        target_normal_deltas = None if target_normal_deltas is None else target_normal_deltas @ rotation.T
    if parts is None:
        parts = model_parts(model)
    if parts is None:
        parts = [MeshPart(MATERIAL_NAME, np.flatnonzero(np.asarray(model.textured_triangles, bool)))]
    primitives, materials = [], []
    for part in parts:
        selected = np.asarray(part.triangles)
        selected = np.flatnonzero(selected) if selected.dtype == bool else selected.astype(np.int64)
        if selected.size == 0:
            continue
        vertex_ids, uv_ids, indices = split_seams(triangles[selected], np.asarray(model.uv_triangles)[selected])
        texcoords = None
        if part.textured:
            uv = texel_centre_uvs(np.asarray(model.uv_coords)[uv_ids], uv_size)
            texcoords = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=-1).astype(np.float32)   # glTF: v down
        materials.append(Material(part.name, tuple(float(c) for c in part.base_color), part.textured))
        primitives.append(Primitive(
            name=part.name, positions=(neutral[vertex_ids] * scale).astype(np.float32), indices=indices,
            material=len(materials) - 1, normals=normals[vertex_ids].astype(np.float32), texcoords=texcoords,
            target_positions=None if deltas is None else (deltas[:, vertex_ids] * scale).astype(np.float32),
            target_normals=None if target_normal_deltas is None
            else target_normal_deltas[:, vertex_ids].astype(np.float32)))
    return primitives, materials


# ----------------------------------------------------------------------------------------------- container
class _BufferBuilder:
    """Accumulates the BIN chunk, its bufferViews and accessors (every view 4-byte aligned)."""

    def __init__(self):
        self.data = bytearray()
        self.views, self.accessors = [], []

    def view(self, payload: bytes, target=None, stride=None) -> int:
        self.data += b"\0" * (-len(self.data) % 4)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        if stride is not None:
            view["byteStride"] = stride
        self.data += payload
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array, kind, bounds=False, target=ARRAY_BUFFER) -> int:
        array = np.ascontiguousarray(array, np.uint32 if kind == "SCALAR" else np.float32)
        components = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[kind]
        flat = array.reshape(-1, components)
        stride = None if target == ELEMENT_ARRAY_BUFFER else 4 * components
        accessor = {"bufferView": self.view(array.tobytes(), target, stride),
                    "componentType": UNSIGNED_INT if kind == "SCALAR" else FLOAT,
                    "count": int(flat.shape[0]), "type": kind}
        if bounds:
            accessor["min"] = flat.min(0).astype(float).tolist()
            accessor["max"] = flat.max(0).astype(float).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def gltf_document(primitives: Sequence[Primitive], materials: Sequence[Material], texture_png: bytes = None,
                  target_names=(), weights=None, mesh_name="face", extras=None):
    """The glTF JSON and its binary buffer: -> (dict, bytes)."""
    buffers = _BufferBuilder()
    gltf_primitives = []
    num_targets = {0 if p.target_positions is None else len(p.target_positions) for p in primitives}
    if len(num_targets) > 1:
        raise ValueError(f"every primitive of a mesh needs the same number of morph targets, got {num_targets}")
    for prim in primitives:
        attributes = {"POSITION": buffers.accessor(prim.positions, "VEC3", bounds=True)}
        if prim.normals is not None:
            attributes["NORMAL"] = buffers.accessor(prim.normals, "VEC3")
        if prim.texcoords is not None:
            attributes["TEXCOORD_0"] = buffers.accessor(prim.texcoords, "VEC2")
        entry = {"attributes": attributes, "mode": 4, "material": prim.material,
                 "indices": buffers.accessor(prim.indices.reshape(-1), "SCALAR", bounds=True,
                                             target=ELEMENT_ARRAY_BUFFER)}
        if prim.target_positions is not None:
            targets = []
            for k in range(len(prim.target_positions)):
                target = {"POSITION": buffers.accessor(prim.target_positions[k], "VEC3", bounds=True)}
                if prim.target_normals is not None:
                    target["NORMAL"] = buffers.accessor(prim.target_normals[k], "VEC3")
                targets.append(target)
            entry["targets"] = targets
        gltf_primitives.append(entry)
    mesh = {"name": mesh_name, "primitives": gltf_primitives}
    if num_targets != {0}:
        count = num_targets.pop()
        names = [str(n) for n in target_names]
        if names and len(names) != count:
            raise ValueError(f"{len(names)} target names for {count} morph targets")
        if names:
            mesh["extras"] = {"targetNames": names}
        if weights is not None:
            if len(weights) != count:
                raise ValueError(f"{len(weights)} weights for {count} morph targets")
            mesh["weights"] = [float(w) for w in weights]
    document = {"asset": {"version": "2.0", "generator": GENERATOR},
                "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"name": mesh_name, "mesh": 0}],
                "meshes": [mesh], "materials": []}
    for material in materials:
        pbr = {"baseColorFactor": list(material.base_color), "metallicFactor": 0.0, "roughnessFactor": 1.0}
        if material.textured:
            if texture_png is None:
                raise ValueError(f"material {material.name!r} is textured but no texture was given")
            pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
        document["materials"].append({"name": material.name, "pbrMetallicRoughness": pbr})
    if texture_png is not None and any(m.textured for m in materials):
        document["images"] = [{"name": "albedo", "mimeType": "image/png",
                               "bufferView": buffers.view(bytes(texture_png))}]
        document["samplers"] = [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR,
                                 "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}]
        document["textures"] = [{"source": 0, "sampler": 0}]
    if extras:
        document["asset"]["extras"] = extras
    buffers.data += b"\0" * (-len(buffers.data) % 4)
    document["buffers"] = [{"byteLength": len(buffers.data)}]
    document["bufferViews"] = buffers.views
    document["accessors"] = buffers.accessors
    return document, bytes(buffers.data)


def glb_bytes(document: dict, binary: bytes) -> bytes:
    """The GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary = bytes(binary) + b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return (struct.pack("<III", GLB_MAGIC, 2, total) + struct.pack("<II", len(text), CHUNK_JSON) + text
            + struct.pack("<II", len(binary), CHUNK_BIN) + binary)


def read_glb(data: bytes):
    """GLB bytes -> (JSON dict, BIN bytes); raises ValueError on a malformed container."""
    data = bytes(data)
    if len(data) < 20:
        raise ValueError("not a GLB file: too short")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or total != len(data):
        raise ValueError(f"not a glTF 2.0 GLB (magic {magic:#x}, version {version}, length {total} vs {len(data)})")
    offset, document, binary = 12, None, b""
    while offset < len(data):
        length, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8:offset + 8 + length]
        if kind == CHUNK_JSON:
            document = json.loads(chunk.decode("utf-8"))
        elif kind == CHUNK_BIN:
            binary = chunk
        offset += 8 + length
    if document is None:
        raise ValueError("GLB without a JSON chunk")
    return document, binary


# ----------------------------------------------------------------------------------------------- the face
def png_size(png: bytes) -> int:
    """The side of a square PNG from its IHDR chunk; ValueError for anything else."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("the albedo texture is not a PNG file")
    width, height = struct.unpack(">II", png[16:24])
    if width != height:
        raise ValueError(f"the albedo texture must be square, got {width} x {height}")
    return int(width)


def face_glb(model, vertices, exp_weights, texture_png: bytes, uv_size, posed_vertices=None,
             parts: Sequence[MeshPart] = None, with_morph_targets=True, morph_normals=True, extras=None) -> bytes:
    """The GLB of one reconstructed face.

    Args:
      model: the `MorphableModel`; vertices: [N, 3] the fitted unposed face (identity + expression, decimetres);
      exp_weights: [E] the fitted expression coefficients (unused without morph targets); texture_png: the albedo PNG's bytes (as written beside
      the OBJ); uv_size: its size S; posed_vertices: [N, 3] the same face posed as in the photo (the GLB is then
      posed: its pose is recovered with `rigid_fit`), or None; parts: `MeshPart`s (default: the textured face);
      with_morph_targets: False writes the fitted face alone (no targets; a small file for previews).
    Returns:
      the ``.glb`` bytes.
    """
    exp_basis = np.asarray(model.exp_basis, np.float64)
    vertices = np.asarray(vertices, np.float64)
    rotation = translation = None
    if posed_vertices is not None:
        rotation, translation = rigid_fit(vertices, posed_vertices)
    if with_morph_targets and exp_basis.shape[0]:
        exp_weights = np.asarray(exp_weights, np.float64).reshape(-1)
        neutral = vertices - np.einsum("e,enc->nc", exp_weights, exp_basis)
        deltas, weights, names = exp_basis, exp_weights, model.exp_names
    else:
        neutral, deltas, weights, names = vertices, None, None, ()
    primitives, materials = face_primitives(model, neutral, deltas, uv_size, parts, rotation, translation,
                                            morph_normals=morph_normals)
    document, binary = gltf_document(primitives, materials, texture_png, names, weights, extras=extras)
    return glb_bytes(document, binary)


def write_face_glb(path, model, vertices, exp_weights, texture_path, posed_vertices=None, parts=None, extras=None,
                   part_albedo=None):
    """Writes `face_glb` to ``path`` atomically, embedding the PNG at ``texture_path``; returns the path.
    ``part_albedo`` [P, 3]: the photo's reflectances of the model's parts (default: the model's; see `model_parts`)."""
    from tf_facetex import io_utils

    texture_png = pathlib.Path(texture_path).read_bytes()
    width = png_size(texture_png)
    if parts is None:
        parts = model_parts(model, part_albedo)
    return io_utils.write_bytes(path, face_glb(model, vertices, exp_weights, texture_png, width, posed_vertices,
                                               parts, extras=extras))
