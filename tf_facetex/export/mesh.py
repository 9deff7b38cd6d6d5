"""Meshes and textures for renderers: OBJ + MTL + PNG, and texture dilation (numpy only).

What a user gets (the most frequent request of this line of work; docs/METHOD.md, "Exports"):
- only the model's ``textured_triangles`` (the ones inside the [0, 1]^2 UV atlas; ICT-FaceKit's head and neck are
  not), with their vertices and UV vertices re-indexed compactly;
- ``v`` in metres (the project's decimetres x 0.1), frame y up, the face looking towards +z (OBJ/glTF's usual
  frame; Blender's OBJ importer turns it into its Z-up frame by default);
- ``vt`` from the model's UV layout (v up, as OBJ), shifted by half a texel: our UV maps put texel j's *centre* at
  u = j / (S - 1) (`tf_facetex.rendering.uv`), while renderers (OpenGL, Blender, game engines) put it at
  (j + 0.5) / S, so vt = (u (S - 1) + 0.5) / S makes a renderer sample exactly the texel we computed. The image's
  top row is v = 1 (OBJ convention), which is how our UV maps are stored;
- ``vn`` optional (unit vertex normals in the same frame);
- ``f v/vt[/vn]`` counter-clockwise seen from outside.

Parts (a model with ``part_names`` beyond the skin: ICT-FaceKit's eyeballs, teeth, gums and sockets) follow the
face as their own objects (``o <part>``), each with its own material ``part_<name>`` whose diffuse colour ``Kd``
is the part's reflectance (flat: the parts have no texture chart; no ``vt``, faces ``v//vn``).

Textures are dilated before writing: texels outside the UV chart take the colour of the nearest texel inside it,
so bilinear filtering and mip-mapping in a renderer never blend in the black background (no dark seams).
"""
import dataclasses
import pathlib

import numpy as np

from tf_facetex import io_utils

DECIMETRES_TO_METRES = 0.1
MATERIAL_NAME = "face_albedo"


# ----------------------------------------------------------------------------------------------- textures
def fill_outside_mask(texture, mask):
    """Fills every texel outside ``mask`` with the value of the nearest texel inside it.

    Args:
      texture: [S, S, C] (any dtype); mask: [S, S] or [S, S, 1], nonzero inside the UV chart.
    Returns:
      [S, S, C] same dtype; unchanged inside the mask; unchanged entirely when the mask is empty or full.
    """
    from scipy import ndimage

    texture = np.asarray(texture)
    inside = np.asarray(mask).reshape(texture.shape[:2]) > 0
    if inside.all() or not inside.any():
        return texture.copy()
    # For each texel, the index of the nearest inside texel (Euclidean distance transform of the outside).
    rows, cols = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
    return texture[rows, cols]


# ----------------------------------------------------------------------------------------------- meshes
@dataclasses.dataclass
class TexturedMesh:
    """A triangle mesh with UV seams, ready for OBJ.

    vertices: [V, 3] float32; uvs: [T, 2] float32 (renderer convention, v up); faces: [F, 3] int into vertices;
    uv_faces: [F, 3] int into uvs; normals: [V, 3] float32 unit, or None.
    """
    vertices: np.ndarray
    uvs: np.ndarray
    faces: np.ndarray
    uv_faces: np.ndarray
    normals: np.ndarray = None


def texel_centre_uvs(uv_coords, uv_size):
    """Our UV convention -> renderers' (texel centres at (j + 0.5) / S): [..., 2] -> [..., 2] (module doc)."""
    uv = np.asarray(uv_coords, np.float64)
    scale = (uv_size - 1.0) / uv_size
    return (uv * scale + 0.5 / uv_size).astype(np.float32)


def _compact(indices):
    """[F, 3] indices -> (used original ids [K], [F, 3] indices into them)."""
    used, inverse = np.unique(indices.reshape(-1), return_inverse=True)
    return used, inverse.reshape(indices.shape).astype(np.int64)


def textured_mesh(model, vertices, normals=None, uv_size=None, scale=DECIMETRES_TO_METRES) -> TexturedMesh:
    """The textured part of a face mesh.

    Args:
      model: the `MorphableModel` (triangles, uv_coords, uv_triangles, textured_triangles).
      vertices: [N, 3] vertex positions in the model's units (decimetres); normals: [N, 3] or None.
      uv_size: the size S of the texture the mesh will reference (for the half-texel shift); None keeps the
        model's UVs unchanged.
      scale: multiplies the positions (default: decimetres -> metres).
    Returns:
      `TexturedMesh` with only the textured triangles and the vertices / UV vertices they use.
    """
    keep = np.asarray(model.textured_triangles, bool)
    used_vertices, faces = _compact(np.asarray(model.triangles)[keep])
    used_uvs, uv_faces = _compact(np.asarray(model.uv_triangles)[keep])
    uvs = np.asarray(model.uv_coords, np.float32)[used_uvs]
    if uv_size:
        uvs = texel_centre_uvs(uvs, uv_size)
    mesh_normals = None
    if normals is not None:
        mesh_normals = np.asarray(normals, np.float64)[used_vertices]
        mesh_normals /= np.maximum(np.linalg.norm(mesh_normals, axis=-1, keepdims=True), 1e-12)
        mesh_normals = mesh_normals.astype(np.float32)
    return TexturedMesh(vertices=(np.asarray(vertices, np.float64)[used_vertices] * scale).astype(np.float32),
                        uvs=uvs, faces=faces, uv_faces=uv_faces, normals=mesh_normals)


@dataclasses.dataclass
class PartMesh:
    """One untextured part of a mesh: name, vertices [V, 3], faces [F, 3] into them, normals [V, 3] or None,
    albedo [3] (its flat diffuse colour)."""
    name: str
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray


def part_meshes(model, vertices, normals=None, part_albedo=None, scale=DECIMETRES_TO_METRES) -> list:
    """The model's parts besides the skin as `PartMesh`es (empty for a model without parts).

    Args:
      model: the `MorphableModel` (triangle_parts, part_names, part_albedo); vertices / normals: [N, 3] as for
      `textured_mesh`; part_albedo: [P, 3] per-photo reflectances (default: the model's).
    """
    if not getattr(model, "has_parts", False):
        return []
    albedo = np.asarray(model.part_albedo if part_albedo is None else part_albedo, np.float32)
    out = []
    for index, name in enumerate(model.part_names[1:], start=1):
        triangles = np.asarray(model.triangles)[np.asarray(model.triangle_parts) == index]
        if not len(triangles):
            continue
        used, faces = _compact(triangles)
        part_normals = None
        if normals is not None:
            part_normals = np.asarray(normals, np.float64)[used]
            part_normals /= np.maximum(np.linalg.norm(part_normals, axis=-1, keepdims=True), 1e-12)
            part_normals = part_normals.astype(np.float32)
        out.append(PartMesh(name=name, vertices=(np.asarray(vertices, np.float64)[used] * scale).astype(np.float32),
                            faces=faces, normals=part_normals, albedo=np.clip(albedo[index], 0.0, 1.0)))
    return out


def _part_obj_lines(part: PartMesh, vertex_offset: int):
    """OBJ lines of one part; its vertex (and normal) indices start after ``vertex_offset`` earlier ones."""
    lines = [f"o {part.name}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in part.vertices.tolist()]
    if part.normals is not None:
        lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in part.normals.tolist()]
    lines += [f"usemtl part_{part.name}", "s 1"]
    faces = (part.faces + 1 + vertex_offset).tolist()
    if part.normals is not None:
        lines += ["f " + " ".join(f"{v}//{v}" for v in face) for face in faces]
    else:
        lines += ["f " + " ".join(str(v) for v in face) for face in faces]
    return lines


def obj_text(mesh: TexturedMesh, mtl_name="mesh.mtl", material=MATERIAL_NAME, header=(), parts=()):
    """The OBJ file's text (indices are 1-based; normals share the vertex indices); ``parts``: `PartMesh`es
    written after the face as their own objects (their normals must be given iff the face's are)."""
    lines = [f"# {line}" for line in header]
    lines += [f"mtllib {mtl_name}", "o face"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices.tolist()]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uvs.tolist()]
    if mesh.normals is not None:
        lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in mesh.normals.tolist()]
    lines += [f"usemtl {material}", "s 1"]
    corners = np.stack([mesh.faces + 1, mesh.uv_faces + 1], axis=-1).tolist()          # [F, 3, 2]
    if mesh.normals is not None:
        lines += ["f " + " ".join(f"{v}/{t}/{v}" for v, t in face) for face in corners]
    else:
        lines += ["f " + " ".join(f"{v}/{t}" for v, t in face) for face in corners]
    offset = len(mesh.vertices)
    for part in parts:
        if (part.normals is None) != (mesh.normals is None):
            raise ValueError(f"part {part.name}: normals must be given for every part iff the face has them")
        lines += _part_obj_lines(part, offset)
        offset += len(part.vertices)
    return "\n".join(lines) + "\n"


def mtl_text(texture_name="albedo.png", material=MATERIAL_NAME, parts=()):
    """A diffuse-only material referencing the albedo texture (white Kd: the texture is the colour), and one
    flat diffuse material per part (``Kd`` = its reflectance)."""
    part_lines = []
    for part in parts:
        r, g, b = np.asarray(part.albedo, np.float64).tolist()
        part_lines += [f"newmtl part_{part.name}", "Ka 1.000 1.000 1.000", f"Kd {r:.4f} {g:.4f} {b:.4f}",
                       "Ks 0.000 0.000 0.000", "d 1.0", "illum 1", ""]
    return "\n".join([
        "# tf_facetex: diffuse albedo with the lighting removed (no specular)",
        f"newmtl {material}",
        "Ka 1.000 1.000 1.000",
        "Kd 1.000 1.000 1.000",
        "Ks 0.000 0.000 0.000",
        "d 1.0",
        "illum 1",
        f"map_Kd {texture_name}",
        "",
    ] + part_lines)


def write_textured_obj(folder, mesh: TexturedMesh, texture, stem="mesh", texture_name="albedo.png",
                       uv_mask=None, header=(), parts=()):
    """Writes ``stem.obj``, ``stem.mtl`` and the texture (dilated outside ``uv_mask``) atomically.

    Args:
      folder: output folder; mesh: `TexturedMesh`; texture: [S, S, 3] float in [0, 1] or uint8 UV map (row 0 =
        v = 1); uv_mask: [S, S(, 1)] chart mask for the dilation, or None (written as is); parts: `PartMesh`es.
    Returns:
      {'obj': path, 'mtl': path, 'texture': path}.
    """

    folder = pathlib.Path(folder)
    if uv_mask is not None:
        texture = fill_outside_mask(texture, uv_mask)
    paths = {"texture": io_utils.write_image(folder / texture_name, texture),
             "mtl": io_utils.write_text(folder / f"{stem}.mtl", mtl_text(texture_name, parts=parts)),
             "obj": io_utils.write_text(folder / f"{stem}.obj", obj_text(mesh, f"{stem}.mtl", header=header,
                                                                         parts=parts))}
    return paths
