"""Synthetic faces: ground truth consistent with the image, determinism/resume, cast shadows."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import camera
from tf_facetex.data.synthetic import (SyntheticConfig, SyntheticFaceGenerator, load_synthetic_face,
                                       write_synthetic_dataset)
from tf_facetex.face_model import FaceDecoder
from tf_facetex.rendering import FaceRenderer


@pytest.fixture(scope="module")
def small(tiny_model):
    config = SyntheticConfig(image_size=96, uv_size=64, specular_prob=0.0, occluder_prob=0.0, noise_std=0.0)
    renderer = FaceRenderer(tiny_model, config.image_size, config.uv_size)
    return tiny_model, renderer, config


def test_image_is_albedo_times_irradiance(small):
    model, renderer, config = small
    generator = SyntheticFaceGenerator(model, renderer, config)
    faces = generator.generate(np.random.default_rng(3), 2)
    # Re-render the ground truth through the same pose and compare on the projected face.
    parts = generator.layout.split(faces["coeffs"])
    decoded = FaceDecoder(model)(faces["coeffs"])
    posed = camera.rigid_transform(decoded["vertices"], parts["angles"], parts["translation"])
    raster = renderer.rasterize(posed)
    rerender, mask = renderer.render_uv_maps(faces["albedo_gt_uv"] * faces["irradiance_gt_uv"], raster)
    inside = (mask.numpy()[..., 0] > 0) & (faces["proj_mask"][..., 0] > 0)
    image = faces["image"].astype(np.float32) / 255.0
    error = np.abs(image - np.clip(rerender.numpy(), 0, 1))[inside]
    assert inside.sum() > 1000
    assert np.median(error) < 1.5 / 255 and error.mean() < 0.01
    # Landmarks are the projected landmark vertices and fall inside the image.
    assert faces["landmarks"].shape == (2, 68, 2)
    assert (faces["landmarks"] > 0).all() and (faces["landmarks"] < config.image_size).all()


def test_without_directional_light_irradiance_is_the_sh_of_the_coefficients(small):
    model, renderer, config = small
    config = SyntheticConfig(**{**config.__dict__, "directional_prob": 0.0})
    generator = SyntheticFaceGenerator(model, renderer, config)
    faces = generator.generate(np.random.default_rng(4), 1)
    parts = generator.layout.split(faces["coeffs"])
    decoded = FaceDecoder(model)(faces["coeffs"])
    posed = camera.rigid_transform(decoded["vertices"], parts["angles"], parts["translation"])
    expected = renderer.shading_uv(parts["gamma"], renderer.normals_uv(posed)).numpy() * generator.uv_mask
    np.testing.assert_allclose(faces["irradiance_gt_uv"], np.clip(expected, 0, 4), atol=1e-4)


def test_grazing_light_casts_shadows(small):
    model, renderer, config = small
    generator = SyntheticFaceGenerator(model, renderer, config)
    posed = tf.constant(model.mean_shape[None])
    positions = renderer.rasterize_to_uv(posed).numpy()[0]
    inside = generator.uv_mask[..., 0] > 0
    frontal = generator.shadow_map(model.mean_shape, np.array([0.0, 0.0, 1.0]))(positions)[inside].mean()
    grazing_dir = np.array([0.97, 0.0, 0.25]) / np.linalg.norm([0.97, 0.0, 0.25])
    grazing = generator.shadow_map(model.mean_shape, grazing_dir)(positions)[inside].mean()
    assert frontal > 0.97 and grazing < frontal - 0.02, (frontal, grazing)


def test_dataset_writer_is_deterministic_and_resumes(small, tmp_path):
    model, renderer, config = small
    first = write_synthetic_dataset(model, config, tmp_path / "a", 5, seed=7, batch_size=2, progress=False,
                                    renderer=renderer)
    assert first["generated"] == 5
    again = write_synthetic_dataset(model, config, tmp_path / "a", 5, seed=7, batch_size=2, progress=False,
                                    renderer=renderer)
    assert again["generated"] == 0          # resume: nothing left to do
    (tmp_path / "a" / "gt" / "000003.npz").unlink()
    redo = write_synthetic_dataset(model, config, tmp_path / "a", 5, seed=7, batch_size=2, progress=False,
                                   renderer=renderer)
    assert redo["generated"] == 2           # the batch holding face 3 is redone ...
    copy = write_synthetic_dataset(model, config, tmp_path / "b", 5, seed=7, batch_size=2, progress=False,
                                   renderer=renderer)
    assert copy["generated"] == 5
    for i in range(5):                      # ... and reproduces the same faces
        a, b = load_synthetic_face(tmp_path / "a", i), load_synthetic_face(tmp_path / "b", i)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_allclose(a["albedo_gt_uv"], b["albedo_gt_uv"])


def test_clean_render_differs_from_the_photo_by_the_occluder_alone(small, tmp_path):
    model, renderer, config = small
    config = SyntheticConfig(**{**config.__dict__, "occluder_prob": 1.0, "noise_std": 0.02})
    generator = SyntheticFaceGenerator(model, renderer, config)
    faces = generator.generate(np.random.default_rng(5), 3)
    occluded = faces["occluder_mask"][..., 0] > 0.5
    assert occluded.any(axis=(1, 2)).all()
    image, clean = faces["image"].astype(np.int32), faces["image_clean"].astype(np.int32)
    # The same noise draw: identical pixels away from the occluder, different under it.
    assert np.array_equal(image[~occluded], clean[~occluded])
    assert np.abs(image - clean).max(axis=-1)[occluded].mean() > 5
    # Without occluders the clean render is the photo; the random stream (hence the photo) is the same as with
    # an occluder-free generator of the previous layout: clean == image.
    plain = SyntheticFaceGenerator(model, renderer, SyntheticConfig(**{**config.__dict__, "occluder_prob": 0.0}))
    faces = plain.generate(np.random.default_rng(5), 2)
    assert np.array_equal(faces["image"], faces["image_clean"])
    write_synthetic_dataset(model, config, tmp_path / "c", 2, seed=3, batch_size=2, progress=False, renderer=renderer)
    stored = load_synthetic_face(tmp_path / "c", 1)
    assert stored["image_clean"].shape == stored["image"].shape and stored["image_clean"].dtype == np.uint8
