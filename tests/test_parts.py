"""The model's parts (eyes, teeth, gums, sockets): conversion, deformation, hole-free renders, iris estimate, export."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import camera
from tf_facetex.face_model import FaceDecoder, MorphableModel
from tf_facetex.rendering import FaceRenderer
from tf_facetex.rendering import parts as parts_lib

SIZE = 224
EYES = (np.arange(36, 42), np.arange(42, 48))
INNER_MOUTH = np.arange(60, 68)


@pytest.fixture(scope="module")
def ict(ict_model):
    if not ict_model.has_parts:
        pytest.skip("the cached ICT model has no parts (converter version 1)")
    return ict_model


@pytest.fixture(scope="module")
def renderer(ict):
    return FaceRenderer(ict, SIZE, 64)


def _pose(model, exp=None):
    """Frontal mean face with optional expression weights {name: value} -> posed vertices [1, N, 3]."""
    decoder = FaceDecoder(model)
    coeffs = np.zeros((1, model.num_exp), np.float32)
    for name, value in (exp or {}).items():
        coeffs[0, model.exp_names.index(name)] = value
    vertices = decoder({"id": tf.zeros((1, model.num_id)), "exp": tf.constant(coeffs)})["vertices"]
    return camera.rigid_transform(vertices, tf.zeros((1, 3)), tf.zeros((1, 3)))


def _hull(points):
    import cv2
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask.astype(bool)


def _regions(model, posed):
    landmarks = camera.project(tf.gather(posed, model.landmark_indices, axis=1), SIZE)[0].numpy()[0]
    return {"eye_left": _hull(landmarks[EYES[0]]), "eye_right": _hull(landmarks[EYES[1]]),
            "mouth": _hull(landmarks[INNER_MOUTH])}


def test_ict_parts_are_named_untextured_and_deform_with_the_kit(ict):
    expected = {"mouth_socket", "eye_socket_left", "eye_socket_right", "gums_tongue", "teeth", "sclera_left",
                "iris_left", "sclera_right", "iris_right"}
    assert set(ict.part_names[1:]) == expected and ict.part_names[0] == "skin"
    assert len(ict.part_triangles("skin")) == 22288                  # the face + head of converter version 1
    assert not ict.textured_triangles[ict.triangle_parts != 0].any()
    for name in expected:
        assert len(ict.part_triangles(name)) > 0, name
    # the kit's identity modes move the eyeballs; jawOpen moves the lower teeth down
    eyeball = ict.part_vertices("sclera_left")
    assert np.abs(ict.id_basis[:, eyeball]).max() > 1e-3
    jaw = ict.exp_basis[ict.exp_names.index("jawOpen")][ict.part_vertices("teeth")]
    assert jaw[:, 1].min() < -0.1                                    # decimetres: > 1 cm down
    # left and right eyes are mirror images
    left, right = ict.mean_shape[ict.part_vertices("iris_left")], ict.mean_shape[ict.part_vertices("iris_right")]
    np.testing.assert_allclose(left.mean(0) * [-1, 1, 1], right.mean(0), atol=0.01)
    assert left.mean(0)[0] > 0                                        # the subject's left eye is at +x


@pytest.mark.slow   # rasterises the 48k-triangle ICT mesh at 224 px (~30 s with the XLA compile)
@pytest.mark.parametrize("expression", [{}, {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, {"jawOpen": 0.8}])
def test_no_background_inside_the_eyes_and_mouth(ict, renderer, expression):
    """Frontal renders (eyes open, closed, mouth open): every pixel inside the landmark hulls of the eyes and of
    the inner mouth shows a triangle; without the parts the same renders have holes there."""
    posed = _pose(ict, expression)
    raster = renderer.rasterize(posed)
    covered = raster.triangle_id.numpy()[0] >= 0
    regions = _regions(ict, posed)
    for name, region in regions.items():
        if region.sum() < 4:       # a closed mouth / closed eye has no hull to speak of
            continue
        assert covered[region].all(), (name, expression, int((~covered[region]).sum()))
    # The same geometry without the part triangles: holes (the test can fail)
    skin = ict.triangle_parts == 0
    bare = ict.replace(triangles=ict.triangles[skin], uv_triangles=ict.uv_triangles[skin],
                       textured_triangles=ict.textured_triangles[skin], triangle_parts=None,
                       part_albedo=None, part_names=("skin",))
    bare_ids = FaceRenderer(bare, SIZE, 64).rasterize(posed).triangle_id.numpy()[0]
    closed_eyes = "eyeBlink_L" in expression
    open_regions = [r for n, r in regions.items() if r.sum() >= 4 and (n != "mouth" or "jawOpen" in expression)
                    and not (n.startswith("eye") and closed_eyes)]
    if open_regions:      # closed eyes and mouth have no holes to begin with
        assert any((bare_ids[r] < 0).mean() > 0.3 for r in open_regions)


@pytest.mark.slow   # rasterises the 48k-triangle ICT mesh at 224 px (~30 s with the XLA compile)
def test_open_eyes_show_sclera_and_iris_open_mouth_shows_teeth(ict, renderer):
    posed = _pose(ict, {"jawOpen": 0.8})
    raster = renderer.rasterize(posed)
    part = parts_lib.pixel_parts(ict.triangle_parts, raster.triangle_id).numpy()[0]
    regions = _regions(ict, posed)
    names = np.array(ict.part_names)
    # landmarks 36-41 are the subject's right eye (image left), 42-47 the left one
    assert {"sclera_right", "iris_right"} <= set(names[np.unique(part[regions["eye_left"]])])
    assert {"sclera_left", "iris_left"} <= set(names[np.unique(part[regions["eye_right"]])])
    assert "teeth" in set(names[np.unique(part[regions["mouth"]])])


@pytest.mark.slow   # rasterises the 48k-triangle ICT mesh at 224 px (~30 s with the XLA compile)
def test_render_parts_and_iris_estimate_recover_a_known_albedo(ict, renderer):
    posed = _pose(ict)
    raster = renderer.rasterize(posed)
    normals = renderer.vertex_normals(posed)
    gamma = np.zeros((1, 27), np.float32)
    gamma[0, [0, 9, 18]] = 0.8
    albedo = np.tile(np.asarray(ict.part_albedo)[None], (1, 1, 1))
    iris = [ict.part_names.index("iris_left"), ict.part_names.index("iris_right")]
    albedo[0, iris] = [0.10, 0.45, 0.20]                      # green eyes
    image, mask = parts_lib.render_parts(ict.triangles, ict.triangle_parts, raster, albedo, gamma, normals)
    assert mask.numpy().sum() > 100 and float(tf.reduce_max(image)) <= 1.5
    face_mask = np.ones((1, SIZE, SIZE, 1), np.float32)
    estimated, pixels = parts_lib.estimate_part_albedo(ict, raster, image.numpy(), gamma, normals, face_mask)
    assert pixels["iris_left"][0] >= 12 and pixels["sclera_left"][0] >= 12
    np.testing.assert_allclose(estimated[0, iris], [[0.10, 0.45, 0.20]] * 2, atol=1e-3)
    sclera = [ict.part_names.index("sclera_left"), ict.part_names.index("sclera_right")]
    np.testing.assert_allclose(estimated[0, sclera], np.asarray(ict.part_albedo)[sclera], atol=1e-3)
    # parts not estimated keep their default; with the eyes outside the face mask every part does
    others = [k for k in range(len(ict.part_names)) if k not in iris + sclera + [ict.part_names.index("teeth")]]
    np.testing.assert_allclose(estimated[0, others], np.asarray(ict.part_albedo)[others])
    default, none = parts_lib.estimate_part_albedo(ict, raster, image.numpy(), gamma, normals, 0 * face_mask)
    assert none["iris_left"][0] == 0 and np.allclose(default[0], ict.part_albedo)


def test_obj_exports_parts_as_groups_with_materials(ict, tmp_path):
    import trimesh

    from tf_facetex.export import mesh as mesh_export
    normals = np.tile([[0.0, 0.0, 1.0]], (ict.num_vertices, 1))
    face = mesh_export.textured_mesh(ict, ict.mean_shape, normals, uv_size=64)
    albedo = np.asarray(ict.part_albedo).copy()
    albedo[ict.part_names.index("iris_left")] = [0.1, 0.45, 0.2]
    parts = mesh_export.part_meshes(ict, ict.mean_shape, normals, albedo)
    assert [p.name for p in parts] == list(ict.part_names[1:])
    paths = mesh_export.write_textured_obj(tmp_path, face, np.full((64, 64, 3), 0.5), parts=parts)
    text = paths["obj"].read_text()
    assert text.count("\no ") == len(ict.part_names) and "usemtl part_teeth" in text
    assert "Kd 0.1000 0.4500 0.2000" in paths["mtl"].read_text()
    scene = trimesh.load(paths["obj"], process=False)
    geometry = scene.geometry if isinstance(scene, trimesh.Scene) else {"face": scene}
    total = sum(len(g.faces) for g in geometry.values())
    assert total == int(ict.textured_triangles.sum()) + int((ict.triangle_parts != 0).sum())
    with pytest.raises(ValueError, match="normals"):
        mesh_export.obj_text(face, parts=mesh_export.part_meshes(ict, ict.mean_shape, None))


def test_parts_survive_save_and_old_files_load_without_them(tiny_model, tmp_path):
    triangle_parts = np.zeros(tiny_model.num_triangles, np.int32)
    untextured = np.flatnonzero(~tiny_model.textured_triangles)
    if not len(untextured):
        textured = tiny_model.textured_triangles.copy()
        textured[-4:] = False
        model = tiny_model.replace(textured_triangles=textured)
        untextured = np.arange(tiny_model.num_triangles - 4, tiny_model.num_triangles)
    else:
        model = tiny_model
    triangle_parts[untextured] = 1
    model = model.replace(triangle_parts=triangle_parts, part_names=("skin", "teeth"),
                          part_albedo=np.array([[0, 0, 0], [0.8, 0.8, 0.7]], np.float32))
    model.save(tmp_path / "m.npz")
    again = MorphableModel.load(tmp_path / "m.npz")
    assert again.part_names == ("skin", "teeth") and again.has_parts
    np.testing.assert_array_equal(again.triangle_parts, triangle_parts)
    np.testing.assert_allclose(again.part_albedo, model.part_albedo)
    # a file written before parts existed
    with np.load(tmp_path / "m.npz") as data:
        contents = {k: data[k] for k in data.files if k not in ("triangle_parts", "part_albedo")}
    import json
    meta = json.loads(str(contents["meta"]))
    del meta["part_names"]
    contents["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **contents)
    old = MorphableModel.load(tmp_path / "old.npz")
    assert not old.has_parts and old.part_names == ("skin",)
    from tf_facetex.errors import AssetError
    with pytest.raises(AssetError, match="textured triangles"):
        tiny_model.replace(triangle_parts=np.ones(tiny_model.num_triangles, np.int32), part_names=("skin", "x"),
                           part_albedo=np.zeros((2, 3), np.float32))
