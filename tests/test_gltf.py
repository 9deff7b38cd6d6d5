"""glTF 2.0 export (mesh.glb): an independent reader decodes the binary and checks it against the OBJ's geometry
and texel convention, the expressions as morph targets, the pose, extra parts as primitives; trimesh loads it."""
import io
import json
import struct

import numpy as np
import pytest

from tf_facetex.export import gltf, mesh as mesh_export

UV = 64
COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}
DTYPES = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}


# ------------------------------------------------------------------------------------------------ helpers
def parse_glb(data):
    """A reader written from the spec, independent of the writer: -> (JSON, accessor(i) -> ndarray)."""
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    document = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0
    binary = data[28 + json_len:28 + json_len + bin_len]
    assert 28 + json_len + bin_len == len(data)

    def accessor(index):
        acc = document["accessors"][index]
        view = document["bufferViews"][acc["bufferView"]]
        assert view["byteOffset"] % 4 == 0
        dtype = DTYPES[acc["componentType"]]
        n = COMPONENTS[acc["type"]]
        stride = view.get("byteStride", n * np.dtype(dtype).itemsize)
        assert stride == n * np.dtype(dtype).itemsize                  # tightly packed
        raw = np.frombuffer(binary, dtype, count=acc["count"] * n, offset=view["byteOffset"] + acc.get("byteOffset", 0))
        return raw.reshape(acc["count"], n) if n > 1 else raw

    return document, accessor


def texture_png(size=UV, seed=0):
    import cv2

    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def fitted(tiny_model):
    rng = np.random.default_rng(1)
    exp = rng.normal(0.0, 0.5, tiny_model.num_exp)
    identity = tiny_model.mean_shape + np.einsum("i,inc->nc", rng.normal(0, 1, tiny_model.num_id),
                                                 tiny_model.id_basis)
    vertices = identity + np.einsum("e,enc->nc", exp, tiny_model.exp_basis)
    return {"exp": exp, "vertices": vertices, "neutral": identity}


def corners(positions, indices):
    return positions[np.asarray(indices).reshape(-1, 3)]            # [F, 3, 3]


# ------------------------------------------------------------------------------------------------ tests
def test_glb_base_plus_weighted_targets_is_the_obj_mesh(tiny_model, fitted):
    png = texture_png()
    data = gltf.face_glb(tiny_model, fitted["vertices"], fitted["exp"], png, UV)
    document, accessor = parse_glb(data)
    (mesh,) = document["meshes"]
    (prim,) = mesh["primitives"]
    assert mesh["extras"]["targetNames"] == list(tiny_model.exp_names) and len(prim["targets"]) == tiny_model.num_exp
    np.testing.assert_allclose(mesh["weights"], fitted["exp"], rtol=0, atol=1e-12)
    base = accessor(prim["attributes"]["POSITION"]).astype(np.float64)
    deltas = np.stack([accessor(t["POSITION"]) for t in prim["targets"]]).astype(np.float64)
    shown = base + np.einsum("e,evc->vc", np.asarray(mesh["weights"]), deltas)   # what an engine displays

    obj = mesh_export.textured_mesh(tiny_model, fitted["vertices"], uv_size=UV)
    indices = accessor(prim["indices"])
    assert indices.size == 3 * obj.faces.shape[0]
    # Same triangles, same corner order (winding), same positions and same texel-exact UVs (flipped to v down).
    np.testing.assert_allclose(corners(shown, indices), corners(obj.vertices, obj.faces), atol=2e-6)
    uv = accessor(prim["attributes"]["TEXCOORD_0"])
    np.testing.assert_allclose(corners(uv, indices)[..., 0], corners(obj.uvs, obj.uv_faces)[..., 0], atol=1e-7)
    np.testing.assert_allclose(1.0 - corners(uv, indices)[..., 1], corners(obj.uvs, obj.uv_faces)[..., 1], atol=1e-6)
    # The neutral face is the base; POSITION bounds are exact.
    acc = document["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(acc["min"], base.min(0), atol=1e-7)
    np.testing.assert_allclose(acc["max"], base.max(0), atol=1e-7)
    np.testing.assert_allclose(corners(base, indices),
                               corners(mesh_export.textured_mesh(tiny_model, fitted["neutral"]).vertices, obj.faces),
                               atol=2e-6)
    # The texture is the PNG, byte for byte, bound as the base colour.
    (image,) = document["images"]
    view = document["bufferViews"][image["bufferView"]]
    _, binary = gltf.read_glb(data)
    assert binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]] == png
    material = document["materials"][prim["material"]]
    assert material["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0


def test_morph_normals_are_exact_at_each_single_target(tiny_model, fitted):
    data = gltf.face_glb(tiny_model, fitted["vertices"], fitted["exp"], texture_png(), UV)
    document, accessor = parse_glb(data)
    prim = document["meshes"][0]["primitives"][0]
    normals = accessor(prim["attributes"]["NORMAL"]).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    base = accessor(prim["attributes"]["POSITION"]).astype(np.float64)
    indices = accessor(prim["indices"]).reshape(-1, 3)
    for k in (0, tiny_model.num_exp - 1):
        target = prim["targets"][k]
        moved = base + accessor(target["POSITION"])
        expected = gltf.vertex_normals(moved / 0.1, indices)   # split vertices: only the primitive's triangles
        got = normals + accessor(target["NORMAL"])
        got /= np.linalg.norm(got, axis=-1, keepdims=True)
        # The file's normals also see the model's untextured triangles: differences only along the part's rim.
        cos = np.sum(got * expected, axis=-1)
        assert np.quantile(cos, 0.9) > 0.9999 and cos.min() > 0.9, (k, cos.min())


def test_vertex_normals_match_the_tensorflow_ones(tiny_model, fitted):
    import tensorflow as tf

    from tf_facetex import geometry

    expected = geometry.vertex_normals(tf.constant(fitted["vertices"][None], tf.float32), tiny_model.triangles,
                                       tiny_model.vertex_triangles())[0].numpy()
    np.testing.assert_allclose(gltf.vertex_normals(fitted["vertices"], tiny_model.triangles), expected, atol=1e-5)
    batched = gltf.vertex_normals(np.stack([fitted["vertices"], fitted["neutral"]]), tiny_model.triangles)
    np.testing.assert_allclose(batched[0], expected, atol=1e-5)


def test_posed_glb_recovers_the_pose(tiny_model, fitted):
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [0.2, -0.5, 0.1]).as_matrix()
    translation = np.array([0.1, -0.2, 0.3])
    posed = fitted["vertices"] @ rotation.T + translation
    r, t = gltf.rigid_fit(fitted["vertices"], posed)
    np.testing.assert_allclose(r, rotation, atol=1e-9)
    np.testing.assert_allclose(t, translation, atol=1e-9)
    document, accessor = parse_glb(gltf.face_glb(tiny_model, fitted["vertices"], fitted["exp"], texture_png(), UV,
                                                 posed_vertices=posed))
    mesh = document["meshes"][0]
    prim = mesh["primitives"][0]
    shown = accessor(prim["attributes"]["POSITION"]) + np.einsum(
        "e,evc->vc", np.asarray(mesh["weights"]), np.stack([accessor(t["POSITION"]) for t in prim["targets"]]))
    obj = mesh_export.textured_mesh(tiny_model, posed, uv_size=UV)
    np.testing.assert_allclose(corners(shown, accessor(prim["indices"])), corners(obj.vertices, obj.faces), atol=2e-6)


def test_named_parts_become_primitives_with_their_own_materials(tiny_model, fitted):
    textured = np.flatnonzero(tiny_model.textured_triangles)
    eyes = textured[: len(textured) // 5]                             # a fake second part
    parts = [gltf.MeshPart("face_albedo", textured[len(textured) // 5:]),
             gltf.MeshPart("eyes", eyes, base_color=(0.9, 0.9, 0.85, 1.0), textured=False)]
    document, accessor = parse_glb(gltf.face_glb(tiny_model, fitted["vertices"], fitted["exp"], texture_png(), UV,
                                                 parts=parts))
    prims = document["meshes"][0]["primitives"]
    assert [document["materials"][p["material"]]["name"] for p in prims] == ["face_albedo", "eyes"]
    assert "TEXCOORD_0" in prims[0]["attributes"] and "TEXCOORD_0" not in prims[1]["attributes"]
    assert "baseColorTexture" not in document["materials"][1]["pbrMetallicRoughness"]
    assert document["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"] == [0.9, 0.9, 0.85, 1.0]
    assert all(len(p["targets"]) == tiny_model.num_exp for p in prims)
    counts = [accessor(p["indices"]).size // 3 for p in prims]
    assert counts == [len(textured) - len(eyes), len(eyes)]


def test_without_morph_targets_the_base_is_the_fitted_face(tiny_model, fitted):
    document, accessor = parse_glb(gltf.face_glb(tiny_model, fitted["vertices"], fitted["exp"], texture_png(), UV,
                                                 with_morph_targets=False))
    mesh = document["meshes"][0]
    prim = mesh["primitives"][0]
    assert "targets" not in prim and "weights" not in mesh
    obj = mesh_export.textured_mesh(tiny_model, fitted["vertices"], uv_size=UV)
    np.testing.assert_allclose(corners(accessor(prim["attributes"]["POSITION"]), accessor(prim["indices"])),
                               corners(obj.vertices, obj.faces), atol=1e-7)


def test_trimesh_loads_the_glb_with_its_texture(tiny_model, fitted, tmp_path):
    import trimesh

    png = texture_png()
    (tmp_path / "albedo.png").write_bytes(png)
    path = gltf.write_face_glb(tmp_path / "mesh.glb", tiny_model, fitted["vertices"], fitted["exp"],
                               tmp_path / "albedo.png")
    scene = trimesh.load(path, process=False)
    (geometry,) = scene.geometry.values()
    assert len(geometry.faces) == int(tiny_model.textured_triangles.sum())
    image = geometry.visual.material.baseColorTexture
    assert image is not None and image.size == (UV, UV)
    from PIL import Image
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    assert geometry.visual.uv.shape == (len(geometry.vertices), 2)


def test_bad_inputs_are_refused(tiny_model, fitted, tmp_path):
    with pytest.raises(ValueError, match="GLB"):
        gltf.read_glb(b"not a glb file at all")
    with pytest.raises(ValueError, match="weights"):
        prims, mats = gltf.face_primitives(tiny_model, fitted["neutral"], tiny_model.exp_basis, UV)
        gltf.gltf_document(prims, mats, texture_png(), tiny_model.exp_names, weights=[0.0])
    import cv2
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="square"):
        gltf.write_face_glb(tmp_path / "m.glb", tiny_model, fitted["vertices"], fitted["exp"], tmp_path / "wide.png")


def test_a_model_with_named_parts_gets_one_primitive_each(tiny_model, fitted):
    import copy

    parted = copy.copy(tiny_model)         # the part fields as a face model with eyes / teeth carries them
    triangle_parts = np.zeros(tiny_model.num_triangles, np.int32)
    teeth = np.arange(0, tiny_model.num_triangles, 7)
    triangle_parts[teeth] = 1
    parted.textured_triangles = np.asarray(tiny_model.textured_triangles) & (triangle_parts == 0)
    parted.triangle_parts, parted.part_names = triangle_parts, ("skin", "teeth")
    parted.part_albedo = np.array([[0, 0, 0], [0.9, 0.85, 0.8]], np.float32)
    assert gltf.model_parts(tiny_model) is None
    photo_albedo = np.array([[0, 0, 0], [0.7, 0.6, 0.5]])
    document, accessor = parse_glb(gltf.face_glb(parted, fitted["vertices"], fitted["exp"], texture_png(), UV,
                                                 parts=gltf.model_parts(parted, photo_albedo)))
    prims = document["meshes"][0]["primitives"]
    assert [document["materials"][p["material"]]["name"] for p in prims] == ["face_albedo", "part_teeth"]
    np.testing.assert_allclose(document["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"],
                               [0.7, 0.6, 0.5, 1.0])
    assert accessor(prims[1]["indices"]).size == 3 * len(teeth)
    assert accessor(prims[0]["indices"]).size == 3 * int(parted.textured_triangles.sum())
    # Without explicit parts the model's own are used (with the model's reflectances).
    document, _ = parse_glb(gltf.face_glb(parted, fitted["vertices"], fitted["exp"], texture_png(), UV))
    np.testing.assert_allclose(document["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"],
                               [0.9, 0.85, 0.8, 1.0], atol=1e-6)
