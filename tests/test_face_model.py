"""Face models: conversion round trips, anatomy of the landmarks, symmetry, decoder linearity, bad files."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.errors import AssetError
from tf_facetex.face_model import FaceDecoder, MorphableModel
from tf_facetex.face_model.ict import README_LANDMARKS
from tf_facetex.face_model.model import mirror_correspondence


def _models(request):
    return [request.getfixturevalue(name) for name in ("tiny_model", "ict_model")]


@pytest.mark.parametrize("fixture", ["tiny_model", "ict_model"])
def test_npz_round_trip_equals_source(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    path = tmp_path / "model.npz"
    model.save(path)
    again = MorphableModel.load(path)
    for field in ("mean_shape", "id_basis", "exp_basis", "albedo_mean", "albedo_basis", "triangles", "uv_coords",
                  "uv_triangles", "textured_triangles", "landmark_indices", "symmetry_indices", "face_region_mask",
                  "skin_mask"):
        np.testing.assert_array_equal(getattr(again, field), getattr(model, field), err_msg=field)
    assert again.exp_names == model.exp_names and again.albedo_source == model.albedo_source


def test_ict_conversion_matches_the_kit(ict_model):
    model = ict_model
    # face + head [0:11248] and the parts (mouth socket, eye sockets, gums, teeth, eyeballs) up to 24591
    assert (model.num_vertices, model.num_id, model.num_exp, model.num_tex) == (24591, 100, 53, 0)
    np.testing.assert_array_equal(model.landmark_indices, README_LANDMARKS)
    # Quads split in two: 11144 face + head polygons -> 22288 triangles; face polygons (9230) are the textured ones.
    assert len(model.part_triangles("skin")) == 22288 and model.textured_triangles.sum() == 2 * 9230
    uv = model.uv_coords[model.uv_triangles[model.textured_triangles]]
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert "jawOpen" in model.exp_names and model.albedo_source == "uniform"
    # Seams: some geometry vertices carry more than one UV vertex.
    assert model.uv_coords.shape[0] > model.num_vertices


@pytest.mark.parametrize("fixture", ["tiny_model", "ict_model"])
def test_landmarks_land_on_expected_anatomy(fixture, request):
    lm = request.getfixturevalue(fixture).mean_landmarks()
    assert np.argmax(lm[:, 2]) == 30, "nose tip should be the most forward landmark"
    assert np.argmin(lm[:, 1]) == 8, "chin should be the lowest landmark"
    right_eye, left_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    assert right_eye[0] < 0 < left_eye[0], "subject's right eye is at -x"
    mouth = lm[48:68].mean(0)
    assert mouth[1] < lm[30, 1] < right_eye[1], "eyes above the nose tip above the mouth"
    assert abs(right_eye[1] - left_eye[1]) < 0.02


@pytest.mark.parametrize("fixture", ["tiny_model", "ict_model"])
def test_symmetry_map_is_an_involution_and_mirrors_geometry(fixture, request):
    model = request.getfixturevalue(fixture)
    sym = model.symmetry_indices
    np.testing.assert_array_equal(sym[sym], np.arange(model.num_vertices))
    mirrored = model.mean_shape[sym] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(mirrored - model.mean_shape).max() < 0.01  # decimetres: 1 mm
    # Landmarks are mirrored too: right eye outer corner (36) <-> left eye outer corner (45).
    assert sym[model.landmark_indices[36]] == model.landmark_indices[45]


def test_mirror_correspondence_on_jittered_points_is_involution(rng):
    half = rng.normal(size=(200, 3))
    half[:, 0] = np.abs(half[:, 0]) + 0.1
    points = np.concatenate([half, half * [-1, 1, 1] + rng.normal(scale=0.01, size=half.shape)])
    sym = mirror_correspondence(points)
    np.testing.assert_array_equal(sym[sym], np.arange(len(points)))
    assert (sym[:200] == np.arange(200, 400)).mean() > 0.99


def test_decoder_is_linear_in_its_coefficients(tiny_model, rng):
    decoder = FaceDecoder(tiny_model)
    size = decoder.layout.size
    a, b = rng.normal(size=(2, 1, size)).astype(np.float32)
    zero = np.zeros((1, size), np.float32)
    f = lambda c: decoder(tf.constant(c))  # noqa: E731
    for key in ("vertices", "albedo"):
        lhs = f(2.0 * a - 0.5 * b)[key] - f(zero)[key]
        rhs = 2.0 * (f(a)[key] - f(zero)[key]) - 0.5 * (f(b)[key] - f(zero)[key])
        np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), atol=1e-5)
    # Zero coefficients decode to the mean; one unit of mode k adds basis k.
    np.testing.assert_allclose(f(zero)["vertices"][0].numpy(), tiny_model.mean_shape, atol=1e-6)
    unit = zero.copy()
    unit[0, decoder.layout.slices["id"].start + 2] = 1.0
    np.testing.assert_allclose(f(unit)["vertices"][0].numpy(), tiny_model.mean_shape + tiny_model.id_basis[2],
                               atol=1e-6)
    normals = f(a)["normals"].numpy()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)


def test_decoder_accepts_a_dict_and_runs_in_tf_function(tiny_model):
    decoder = FaceDecoder(tiny_model)
    run = tf.function(lambda c: decoder(c))
    out = run({"id": tf.ones([3, tiny_model.num_id]), "exp": tf.zeros([3, tiny_model.num_exp])})
    assert out["vertices"].shape == (3, tiny_model.num_vertices, 3)
    assert out["albedo"].shape == (3, tiny_model.num_vertices, 3)
    layout = decoder.layout
    parts = layout.split(np.arange(layout.size, dtype=np.float32)[None])
    np.testing.assert_array_equal(layout.join(parts).numpy()[0], np.arange(layout.size))
    assert layout.size == tiny_model.num_id + tiny_model.num_exp + tiny_model.num_tex + 33


def test_missing_truncated_and_malformed_files_name_file_and_field(tiny_model, tmp_path):
    with pytest.raises(AssetError, match="nowhere.npz"):
        MorphableModel.load(tmp_path / "nowhere.npz")
    path = tmp_path / "model.npz"
    tiny_model.save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AssetError, match="truncated.npz"):
        MorphableModel.load(truncated)
    # A wrong-shaped basis: identity modes over the wrong number of vertices.
    contents = dict(np.load(path))
    contents["id_basis"] = contents["id_basis"][:, :-5]
    bad = tmp_path / "bad_shape.npz"
    np.savez(bad, **contents)
    with pytest.raises(AssetError, match=r"bad_shape.npz.*'id_basis'"):
        MorphableModel.load(bad)
    contents = dict(np.load(path))
    del contents["landmark_indices"]
    missing = tmp_path / "missing_field.npz"
    np.savez(missing, **contents)
    with pytest.raises(AssetError, match=r"missing_field.npz.*'landmark_indices'"):
        MorphableModel.load(missing)
    contents = dict(np.load(path))
    contents["triangles"] = contents["triangles"] + 10 ** 6
    out_of_range = tmp_path / "bad_index.npz"
    np.savez(out_of_range, **contents)
    with pytest.raises(AssetError, match=r"bad_index.npz.*'triangles'"):
        MorphableModel.load(out_of_range)


def test_ict_converter_reports_missing_and_truncated_meshes(tmp_path):
    from tf_facetex.face_model.ict import convert_ict
    with pytest.raises(AssetError, match="generic_neutral_mesh.obj"):
        convert_ict(tmp_path)
    model_dir = tmp_path / "FaceXModel"
    model_dir.mkdir()
    (model_dir / "vertex_indices.json").write_text('{"expressions": [], "idx_to_landmark_verts": []}')
    (model_dir / "generic_neutral_mesh.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(AssetError, match="idx_to_landmark_verts"):
        convert_ict(tmp_path)
