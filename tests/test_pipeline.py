"""The product pipeline on the procedural test model: reconstruction, face folders, OBJ/MTL/PNG in trimesh,
relighting, lighting presets, texture dilation, the batch runner's error handling and atomic folders, and restoring
the refinement network from a training checkpoint."""
import dataclasses
import json
import pathlib

import numpy as np
import pytest

from tf_facetex import lighting_presets, pipeline
from tf_facetex.data.align import AlignedFace
from tf_facetex.errors import FaceTexError, NoFaceError
from tf_facetex.export import mesh as mesh_export

UV = 64


# ------------------------------------------------------------------------------------------------ fixtures
def aligned_faces(faces):
    """AlignedFace objects for synthetic 224 crops (the crop is the photo: identity transform)."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = []
    for b in range(faces["image"].shape[0]):
        size = faces["image"].shape[1]
        out.append(AlignedFace(image=faces["image"][b], landmarks=faces["landmarks"][b].astype(np.float32),
                               transform=identity, inverse=identity, original_shape=(size, size),
                               valid=np.ones((size, size), np.float32), mask=faces["face_mask"][b][..., 0],
                               face_index=0))
    return out


@pytest.fixture(scope="module")
def synthetic(tiny_model):
    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.rendering import FaceRenderer

    config = SyntheticConfig(image_size=224, uv_size=UV, directional_prob=0.0, occluder_prob=0.0, specular_prob=0.0,
                             noise_std=0.0, max_yaw=20)
    faces = SyntheticFaceGenerator(tiny_model, FaceRenderer(tiny_model, 224, UV), config).generate(
        np.random.default_rng(3), 2)
    return faces


@pytest.fixture(scope="module")
def reconstructor(tiny_model):
    # Two turntable views for two faces: every batch has the same size, so XLA compiles each stage once.
    config = pipeline.ReconstructionConfig(uv_size=UV, fit_steps=40, landmark_steps=80, turntable_yaws=(-30.0, 30.0))
    return pipeline.Reconstructor(tiny_model, config)


@pytest.fixture(scope="module")
def results(reconstructor, synthetic):
    return reconstructor.reconstruct(aligned_faces(synthetic))


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory, reconstructor, results, tiny_model):
    folder = tmp_path_factory.mktemp("faces") / "face"
    photo = results[0].face.image
    pipeline.write_face_outputs(results[0], folder, tiny_model, reconstructor.layout, photo, "synthetic.png",
                                reconstructor.uv_mask)
    return folder


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("model") / "procedural.npz"
    tiny_model.save(path)
    return path


# ------------------------------------------------------------------------------------------------ reconstruction
def test_turntable_is_the_face_rendered_at_each_yaw(reconstructor, results):
    # The turntable decodes the face once and poses it per view; it must equal rendering the face's coefficients
    # at each yaw (`Reconstructor.render`, which decodes per view).
    import tensorflow as tf

    from tf_facetex.lighting_presets import preset
    from tf_facetex.pipeline.reconstructor import turntable_poses

    result = results[0]
    angles, translation = turntable_poses(reconstructor.config.turntable_yaws)
    views = angles.shape[0]
    coeffs = tf.constant(np.repeat(result.coeffs[None], views, axis=0), tf.float32)
    albedo = tf.constant(np.repeat(result.albedo_uv[None], views, axis=0), tf.float32)
    gamma = np.tile(preset(reconstructor.config.turntable_light)[None], [views, 1])
    part_albedo = getattr(result, "part_albedo", None)
    images, _ = reconstructor.render(coeffs, albedo, gamma, angles, translation,
                                     part_albedo=None if part_albedo is None else np.repeat(part_albedo[None],
                                                                                            views, axis=0))
    expected = np.concatenate(list(np.clip(images.numpy(), 0.0, 1.0)), axis=1)
    np.testing.assert_allclose(result.turntable, expected, atol=1e-5)
    assert float(np.abs(expected[:, :224] - expected[:, 224:]).max()) > 0.05     # the views differ


def test_reconstruction_explains_the_photo_better_than_the_prior(results):
    for result in results:
        assert result.albedo_uv.shape == (UV, UV, 3) and result.light_uv.shape == (UV, UV, 27)
        assert result.render_detailed.shape == (224, 224, 3) and result.turntable.shape == (224, 2 * 224, 3)
        assert np.isfinite(result.light_uv).all() and 0.0 <= result.albedo_uv.min() <= result.albedo_uv.max() <= 1.0
        metrics = result.metrics
        assert metrics["detailed_psnr_db"] > metrics["prior_psnr_db"] + 1.0, metrics
        assert metrics["detailed_psnr_db"] > 25.0, metrics


def test_face_folder_has_every_output(face_folder, results, reconstructor, tiny_model):
    for name in pipeline.OUTPUT_FILES:
        assert (face_folder / name).is_file(), name
    record = json.loads((face_folder / "coefficients.json").read_text())
    layout_sizes = record["face_model"]["coefficient_sizes"]
    assert {k: len(v) for k, v in record["coefficients"].items()} == layout_sizes
    assert record["face_model"]["name"] == tiny_model.name
    assert np.allclose(record["alignment"]["transform"], [[1, 0, 0], [0, 1, 0]])
    assert len(record["tone"]) == 3 and record["metrics"]["detailed_psnr_db"] > 0
    light = np.load(face_folder / "illumination.npy")
    assert light.shape == (UV, UV, 27) and light.dtype == np.float32
    # Inside the chart the files hold A' and L' exactly (A' to 8 bits); outside, the nearest chart texel's value.
    import cv2
    inside = reconstructor.uv_mask[..., 0] > 0
    np.testing.assert_array_equal(light[inside], results[0].light_uv[inside])
    albedo = cv2.imread(str(face_folder / "albedo.png"))[..., ::-1] / 255.0
    assert albedo.shape == (UV, UV, 3) and (albedo.sum(axis=-1) > 0).all(), "black texels left in albedo.png"
    assert np.abs(albedo[inside] - results[0].albedo_uv[inside]).max() < 0.5 / 255 + 1e-6
    detailed = cv2.imread(str(face_folder / "render_detailed.png"), cv2.IMREAD_UNCHANGED)
    assert detailed.shape == (224, 224, 4)


def test_obj_mtl_png_load_in_trimesh_with_texture(face_folder, tiny_model):
    import trimesh

    loaded = trimesh.load(face_folder / "mesh.obj", process=False)
    assert isinstance(loaded, trimesh.Trimesh)
    assert len(loaded.faces) == int(tiny_model.textured_triangles.sum())
    uv = loaded.visual.uv
    assert uv.shape[0] == loaded.vertices.shape[0] and uv.min() >= 0.0 and uv.max() <= 1.0
    image = loaded.visual.material.image
    assert image is not None and image.size == (UV, UV)
    # Metres: the procedural face is ~1.5 dm wide.
    width = np.ptp(loaded.vertices[:, 0])
    assert 0.05 < width < 0.5, width


def test_obj_keeps_only_textured_triangles(tiny_model, tmp_path):
    import trimesh

    keep = np.zeros(tiny_model.num_triangles, bool)
    keep[: tiny_model.num_triangles // 2] = True
    partial = tiny_model.replace(textured_triangles=keep)
    mesh = mesh_export.textured_mesh(partial, partial.mean_shape, normals=None, uv_size=UV)
    assert mesh.faces.shape[0] == keep.sum() and mesh.faces.max() < mesh.vertices.shape[0]
    used = np.unique(partial.triangles[keep])
    assert mesh.vertices.shape[0] == used.size
    paths = mesh_export.write_textured_obj(tmp_path, mesh, np.full((UV, UV, 3), 0.5), uv_mask=None)
    loaded = trimesh.load(paths["obj"], process=False)
    assert len(loaded.faces) == keep.sum()


def test_vt_samples_the_texel_we_computed(tiny_model):
    """A renderer samples texture coordinate vt at pixel (vt_u S - 0.5, (1 - vt_v) S - 0.5) (OpenGL convention):
    with our half-texel shift it reads back each vertex's own value from a UV map we rasterised; without it, it
    reads a neighbour's."""
    from tf_facetex.rendering import FaceRenderer

    renderer = FaceRenderer(tiny_model, 64, UV)
    # A field linear in (u, v) (the procedural model's x and y are), so bilinear sampling of it is exact.
    x, y = tiny_model.mean_shape[:, 0], tiny_model.mean_shape[:, 1]
    values = np.stack([x, y, x + y], axis=-1).astype(np.float32)
    uv_map = renderer.rasterize_to_uv(values[None]).numpy()[0]
    vertex_uv = tiny_model.uv_coords[tiny_model.uv_triangles.reshape(-1)]
    vertex_values = values[tiny_model.triangles.reshape(-1)]

    def sample(vt):
        x, y = vt[:, 0] * UV - 0.5, (1.0 - vt[:, 1]) * UV - 0.5
        import cv2
        return cv2.remap(uv_map, x.astype(np.float32)[:, None], y.astype(np.float32)[:, None], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)[:, 0]

    # Vertices on the chart border read the gutter too (filled from the nearest triangle, not linearly): skip them.
    interior = np.all((vertex_uv > 0.05) & (vertex_uv < 0.95), axis=-1)
    shifted = np.abs(sample(mesh_export.texel_centre_uvs(vertex_uv, UV)) - vertex_values)[interior].max()
    naive = np.abs(sample(vertex_uv) - vertex_values)[interior].max()
    assert shifted < 1e-4, shifted
    assert naive > 10 * shifted


def test_fill_outside_mask_copies_the_nearest_inside_texel():
    texture = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:6] = True
    texture[2:4, 2:6] = [[10, 20, 30]]
    texture[3, 5] = [200, 100, 50]
    filled = mesh_export.fill_outside_mask(texture, mask)
    assert (filled[mask] == texture[mask]).all()
    assert (filled.sum(axis=-1) > 0).all()
    assert (filled[7, 7] == [200, 100, 50]).all()      # the corner's nearest inside texel is (3, 5)
    assert (mesh_export.fill_outside_mask(texture, np.zeros((8, 8))) == texture).all()


# ------------------------------------------------------------------------------------------------ relighting
def test_relight_with_the_estimated_light_reproduces_the_detailed_render(face_folder, results, tiny_model_file):
    image, mask, description = pipeline.relight_reconstruction(face_folder, "estimated",
                                                               face_model=str(tiny_model_file), log=lambda *_: None)
    inside = (mask[..., 0] > 0) & (results[0].render_mask[..., 0] > 0)
    assert inside.mean() > 0.1
    # Same pose and light: only the 8-bit albedo.png quantisation differs.
    assert np.abs(image - results[0].render_detailed)[inside].mean() < 0.01, description


def test_relight_left_preset_lights_the_image_left_side(face_folder, tiny_model_file):
    image, mask, _ = pipeline.relight_reconstruction(face_folder, "left", frontal=True,
                                                     face_model=str(tiny_model_file), log=lambda *_: None)
    brightness = image.mean(axis=-1)
    covered = mask[..., 0] > 0
    columns = np.nonzero(covered.any(axis=0))[0]
    middle = (columns.min() + columns.max()) // 2
    left = brightness[:, :middle][covered[:, :middle]].mean()
    right = brightness[:, middle:][covered[:, middle:]].mean()
    assert left > right + 0.05, (left, right)


def test_relight_refuses_another_face_model(face_folder, tmp_path, tiny_model):
    from tf_facetex.face_model.procedural import make_procedural_model

    other = make_procedural_model(grid=11)
    other = other.replace(name="another")
    path = tmp_path / "other.npz"
    other.save(path)
    with pytest.raises(FaceTexError, match="face model"):
        pipeline.relight_reconstruction(face_folder, "front", face_model=str(path), log=lambda *_: None)


# ------------------------------------------------------------------------------------------------ lighting
def test_presets_light_from_their_named_side():
    normals = np.array([[-1, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], np.float32)
    shade = {name: lighting_presets.shading_of(lighting_presets.preset(name), normals).mean(axis=-1)
             for name in lighting_presets.PRESET_NAMES}
    assert shade["left"][0] > shade["left"][1] + 0.2
    assert shade["right"][1] > shade["right"][0] + 0.2
    assert shade["top"][2] > shade["top"][3] + 0.2
    assert shade["front"][4] > shade["front"][0]
    sunset = lighting_presets.shading_of(lighting_presets.preset("sunset"), normals[1:2])[0]
    assert sunset[0] > sunset[2]                       # orange: red above blue on the sun side
    for name in lighting_presets.PRESET_NAMES[:6]:     # the built ones are peak-normalised
        peak = lighting_presets.shading_of(lighting_presets.preset(name),
                                           lighting_presets.front_hemisphere_normals()).mean(axis=-1).max()
        assert abs(peak - lighting_presets.PEAK_SHADING) < 1e-3, name
    with pytest.raises(FaceTexError, match="unknown light preset"):
        lighting_presets.preset("disco")


def test_environment_projection_uses_solid_angles():
    _, solid_angles = lighting_presets.equirect_directions(32)
    assert abs(solid_angles.sum() - 4 * np.pi) < 1e-2
    # A constant environment of radiance R shades every normal to R (physical scale, no normalisation); without
    # the cos(latitude) weights the polar rows would count as much as the equator and this would be off by ~50 %.
    gamma = lighting_presets.environment_to_sh(np.full((32, 64, 3), 0.6, np.float32), normalize=False)
    shading = lighting_presets.shading_of(gamma, lighting_presets.front_hemisphere_normals(50))
    assert np.abs(shading - 0.6).max() < 5e-3
    # Light in the panorama's top rows (the sky) lights upward normals.
    sky = np.zeros((32, 64, 3), np.float32)
    sky[:4] = 5.0
    gamma = lighting_presets.environment_to_sh(sky, normalize=False)
    up, down = lighting_presets.shading_of(gamma, np.array([[0, 1, 0], [0, -1, 0]], np.float32)).mean(axis=-1)
    assert up > 5 * max(down, 1e-3)
    # The panorama's edges are behind the camera: they light normals facing the camera (+z).
    front = np.zeros((32, 64, 3), np.float32)
    front[10:22, :6] = front[10:22, -6:] = 5.0
    gamma = lighting_presets.environment_to_sh(front, normalize=False)
    towards, away = lighting_presets.shading_of(gamma, np.array([[0, 0, 1], [0, 0, -1]], np.float32)).mean(axis=-1)
    assert towards > 5 * max(away, 1e-3)


def test_light_sources_from_files(tmp_path):
    nine = tmp_path / "nine.json"
    nine.write_text(json.dumps([0.1] * 9))
    assert np.allclose(lighting_presets.load_sh_json(nine), [0.1] * 27)
    record = tmp_path / "coefficients.json"
    record.write_text(json.dumps({"coefficients": {"gamma": list(range(27))}}))
    assert lighting_presets.load_sh_json(record)[5] == 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(FaceTexError, match="27"):
        lighting_presets.load_sh_json(bad)
    from tf_facetex import io_utils
    panorama = io_utils.write_image(tmp_path / "env.png", np.full((16, 32, 3), 128, np.uint8))
    gamma, description = lighting_presets.resolve_light(str(panorama))
    assert gamma.shape == (27,) and "environment" in description
    with pytest.raises(FaceTexError, match="neither a preset"):
        lighting_presets.resolve_light(str(tmp_path / "missing.hdr"))


# ------------------------------------------------------------------------------------------------ batch runner
class FakePreprocessor:
    """Faces for files whose name starts with 'face', NoFaceError for the others (no dlib needed)."""

    def __init__(self, faces):
        self.faces = faces

    def from_image(self, image, name="<image>"):
        if not pathlib.Path(name).name.startswith("face"):
            raise NoFaceError(f"{name}: no face found")
        return [self.faces[0]]


class CachedReconstructor:
    """The fixture's reconstructor with its results cached: the runner's bookkeeping is under test here, and the
    reconstruction itself is tested above (and costs a recompilation per new batch size)."""

    def __init__(self, reconstructor, results):
        self.model, self.layout, self.uv_mask = reconstructor.model, reconstructor.layout, reconstructor.uv_mask
        self.describe = reconstructor.describe
        self.results = results
        self.batches = []

    def reconstruct(self, faces):
        self.batches.append(len(faces))
        return [dataclasses.replace(self.results[0], face=face) for face in faces]


def test_batch_runner_records_errors_and_never_leaves_half_folders(tmp_path, reconstructor, results, synthetic,
                                                                   monkeypatch):
    from tf_facetex import io_utils

    reconstructor = CachedReconstructor(reconstructor, results)

    inputs = tmp_path / "in"
    io_utils.write_image(inputs / "face_a.png", synthetic["image"][0])
    io_utils.write_image(inputs / "sub" / "face_a.jpg", synthetic["image"][0])   # same stem: must not collide
    io_utils.write_image(inputs / "landscape.png", np.full((64, 64, 3), 90, np.uint8))
    (inputs / "broken.jpg").write_text("not an image")
    out = pipeline.check_output_dir(tmp_path / "out")
    files = pipeline.resolve_inputs(inputs)
    assert len(files) == 4
    summary = pipeline.reconstruct_inputs(files, out, lambda: reconstructor, FakePreprocessor(aligned_faces(synthetic)),
                                          batch_size=2, progress=False)
    assert sorted(o["folder"] for o in summary.outputs) == ["face_a_jpg", "face_a_png"]
    assert reconstructor.batches == [2]   # the two faces were batched
    errors = json.loads((out / "errors.json").read_text())
    assert sorted(pathlib.Path(e["input"]).name for e in errors) == ["broken.jpg", "landscape.png"]
    assert any("not an image" in e["error"] for e in errors) and any("no face" in e["error"] for e in errors)
    assert not summary.all_failed
    index = (out / "index.html").read_text()
    assert 'src="face_a_png/thumbnail.jpg"' in index and "broken.jpg" in index
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # A failure while a folder is being written leaves neither a partial folder nor a half-replaced old one.
    def explode(result, folder, *args, **kwargs):
        (pathlib.Path(folder) / "albedo.png").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pipeline.batch, "write_face_outputs", explode)  # the runner's writer
    before = sorted(p.name for p in (out / "face_a_png").iterdir())
    summary = pipeline.reconstruct_inputs([inputs / "face_a.png"], out, lambda: reconstructor,
                                          FakePreprocessor(aligned_faces(synthetic)), progress=False)
    assert summary.all_failed and "disk full" in summary.errors[0]["error"]
    assert sorted(p.name for p in (out / "face_a_png").iterdir()) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_input_and_output_checks(tmp_path):
    with pytest.raises(FaceTexError, match="no images"):
        pipeline.resolve_inputs(tmp_path)
    with pytest.raises(FaceTexError, match="no such file"):
        pipeline.resolve_inputs(tmp_path / "missing.jpg")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(FaceTexError, match="not writable"):
        pipeline.check_output_dir(blocker / "out")
    names = pipeline.folder_names([pathlib.Path("a/x.jpg"), pathlib.Path("b/x.jpg"), pathlib.Path("x.png")])
    assert len(set(names.values())) == 3


# ------------------------------------------------------------------------------------------------ network refiner
def test_network_refiner_restores_the_generator_of_a_training_checkpoint(tmp_path, tiny_model):
    import dataclasses

    import tensorflow as tf

    from tf_facetex import io_utils
    from tf_facetex.errors import AssetError
    from tf_facetex.training.checkpoints import CheckpointKeeper
    from tf_facetex.refinement.network import random_refine_inputs
    from tf_facetex.refinement.train import TrainConfig, build_trainer

    config = TrainConfig(net_preset="small", model_dir=str(tmp_path), face_model="none")
    uv_mask = np.ones((UV, UV, 1), np.float32)
    trainer = build_trainer(config, UV, uv_mask, None, steps_per_epoch=1)
    for variable in trainer.generator.weights:   # not the initial values: the restore must really load them
        variable.assign(variable + tf.random.stateless_normal(variable.shape, [1, 2], stddev=0.01))
    CheckpointKeeper(tmp_path / "checkpoints", trainer).save()
    io_utils.write_json(tmp_path / "run_config.json", {**dataclasses.asdict(config), "uv_size": UV,
                                                      "image_size": 224, "steps_per_epoch": 1})
    net, info = pipeline.load_refinement_net(tmp_path, log=lambda *_: None)
    assert info["uv_size"] == UV
    for restored, trained in zip(net.weights, trainer.generator.weights):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy())
    refiner = pipeline.NetworkRefiner(net, uv_mask)
    rng = np.random.default_rng(0)
    sample = random_refine_inputs(rng, 2, UV, seen_fraction=0.5)
    out = refiner(sample)
    assert out["albedo_uv"].shape == (2, UV, UV, 3) and out["light_uv"].shape == (2, UV, UV, 27)
    # A face's result does not depend on its batch neighbours (one fixed noise draw for every position).
    single = refiner({k: v[1:] for k, v in sample.items()})
    np.testing.assert_allclose(single["albedo_uv"].numpy()[0], out["albedo_uv"].numpy()[1], atol=1e-5)
    # The checkpoints/ folder and the prefix work too; a run_config describing another network does not.
    pipeline.load_refinement_net(tmp_path / "checkpoints", log=lambda *_: None)
    (tmp_path / "run_config.json").write_text(json.dumps({"net_preset": "paper", "uv_size": UV}))
    with pytest.raises(AssetError, match="cannot restore"):
        pipeline.load_refinement_net(tmp_path, log=lambda *_: None)
    with pytest.raises(AssetError, match="not a training run"):
        pipeline.load_refinement_net(tmp_path / "nothing", log=lambda *_: None)


def test_timing_hook_times_each_stage_without_changing_the_result(reconstructor, synthetic, results):
    from tf_facetex.evaluation.speed import StageClock

    clock = StageClock()
    reconstructor.set_timer(clock.timer)
    try:
        timed = reconstructor.reconstruct(aligned_faces(synthetic))   # the fixture's batch: no new compilation
    finally:
        reconstructor.set_timer(type(reconstructor).timer)
    stages = {name for name in clock.seconds if not name.endswith("_cpu")}
    assert {"prior", "prior_total", "refine", "turntable"} <= stages
    assert 0.0 < clock.seconds["prior"] <= clock.seconds["prior_total"]
    for again, first in zip(timed, results):
        np.testing.assert_allclose(again.albedo_uv, first.albedo_uv, atol=1e-4)
