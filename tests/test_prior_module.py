"""The prior module on synthetic faces with known coefficients: geometry, light, unwrap, sample format."""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import metrics
from tf_facetex.face_model.decoder import CoefficientLayout
from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
from tf_facetex.prior.module import PriorConfig, PriorModule
from tf_facetex.prior.photometric_fit import PhotometricFitConfig
from tf_facetex.rendering import FaceRenderer


@pytest.fixture(scope="module")
def setup(tiny_model):
    renderer = FaceRenderer(tiny_model, 128, 64)
    config = SyntheticConfig(image_size=128, uv_size=64, directional_prob=0.0, occluder_prob=0.0, noise_std=0.0,
                             detail=0.0, max_yaw=30)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(11), 4)
    prior = PriorModule(tiny_model, PriorConfig(image_size=128, uv_size=64,
                                                photometric=PhotometricFitConfig(num_pixels=2048)),
                        renderer=renderer)
    images = faces["image"].astype(np.float32) / 255.0
    return prior, faces, images, prior(images, faces["landmarks"], faces["face_mask"])


def test_fit_recovers_geometry_and_light(setup):
    prior, faces, images, out = setup
    assert out["landmark_error"].numpy().mean() < 1.0        # noise-free landmarks, 128 px crops
    # With SH light only (no cast shadows), the albedo basis and the SH light explain the face: the coarse
    # render matches the image on the face mask.
    assert out["coarse_psnr"].numpy().min() > 25.0, out["coarse_psnr"].numpy()
    true_gamma = prior.layout.split(faces["coeffs"])["gamma"]
    normals = out["normals_uv"]
    fitted = prior.renderer.shading_uv(out["gamma"], normals) * prior.uv_mask
    truth = prior.renderer.shading_uv(true_gamma, normals) * prior.uv_mask
    # Shading is recovered up to the albedo/light scale per channel.
    assert metrics.scale_invariant_rmse(fitted, truth, out["visibility_uv"]).numpy().max() < 0.05


def test_outputs_have_the_refinement_sample_layout(setup):
    prior, faces, images, out = setup
    b, h, s = images.shape[0], 128, 64
    shapes = {"image": (b, h, h, 3), "face_mask": (b, h, h, 1), "proj_mask": (b, h, h, 1), "pixel_uv": (b, h, h, 2),
              "texture_uv": (b, s, s, 3), "visibility_uv": (b, s, s, 1), "prior_albedo_uv": (b, s, s, 3),
              "normals_uv": (b, s, s, 3), "gamma": (b, 27), "landmarks": (b, 68, 2)}
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
    # The unwrapped texture is the image: rendering it back reproduces the photo where it was seen.
    visible = out["visibility_uv"].numpy()
    assert visible.mean() > 0.2
    rendered, mask = prior.renderer.render_uv_maps(out["texture_uv"], prior.renderer.rasterize(out["posed_vertices"]))
    seen, _ = prior.renderer.render_uv_maps(out["visibility_uv"], prior.renderer.rasterize(out["posed_vertices"]))
    inside = (seen.numpy()[..., 0] > 0.999) & (faces["face_mask"][..., 0] > 0)
    assert np.abs(rendered.numpy() - images)[inside].mean() < 0.03


def test_regressor_mode_needs_a_regressor(tiny_model):
    with pytest.raises(ValueError, match="regressor"):
        PriorModule(tiny_model, PriorConfig(mode="regressor", image_size=64, uv_size=32))


def test_batched_prior_equals_one_at_a_time(tiny_model):
    """A folder run batches its photos (--batch_size); each face's prior must not depend on its batch-mates or its
    place in the batch (the photometric fit's pixel sample once did: a [B, H*W] random draw)."""
    renderer = FaceRenderer(tiny_model, 96, 64)
    config = SyntheticConfig(image_size=96, uv_size=64, occluder_prob=0.0, noise_std=0.0, max_yaw=20)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(5), 3)
    prior = PriorModule(tiny_model, PriorConfig(image_size=96, uv_size=64,
                                                photometric=PhotometricFitConfig(num_pixels=512)), renderer=renderer)
    images = faces["image"].astype(np.float32) / 255.0
    batched = prior(images, faces["landmarks"], faces["face_mask"])
    layout = CoefficientLayout.for_model(tiny_model)
    for index in (1, 2):
        alone = prior(images[index:index + 1], faces["landmarks"][index:index + 1],
                      faces["face_mask"][index:index + 1])
        together = layout.split(batched["coeffs"].numpy()[index:index + 1])
        single = layout.split(alone["coeffs"].numpy())
        # The light and albedo tone (closed-form photometric solve on the pixel sample): equal. The landmark fit's
        # Adam amplifies summation-order float noise along flat identity directions (seen: 0.02 std on one face of
        # three, 0.08% of the face size on the vertices), so the geometry is compared on what it produces.
        np.testing.assert_allclose(together["gamma"], single["gamma"], atol=2e-3)
        np.testing.assert_allclose(batched["tone"].numpy()[index], alone["tone"].numpy()[0], atol=2e-3)
        np.testing.assert_allclose(together["angles"], single["angles"], atol=1e-3)
        extent = np.ptp(alone["posed_vertices"].numpy()[0], axis=0).max()
        assert np.abs(batched["posed_vertices"].numpy()[index] - alone["posed_vertices"].numpy()[0]).max() < 2e-3 * extent
        assert abs(float(batched["coarse_psnr"][index]) - float(alone["coarse_psnr"][0])) < 0.05


def test_the_appearance_gate_drops_a_coloured_bar_the_mask_let_through(setup, tiny_model):
    prior, faces, images, out = setup
    barred = images.copy()
    rows = slice(50, 58)
    barred[:, rows, :] = [0.2, 0.8, 0.2]                 # a green bar across every face, inside the given mask
    def prior_with_gate(k):
        return PriorModule(tiny_model, PriorConfig(image_size=128, uv_size=64, appearance_gate=k,
                                                   photometric=PhotometricFitConfig(num_pixels=2048)),
                           renderer=prior.renderer)

    gated = prior_with_gate(3.5)
    plain = prior_with_gate(0.0)(barred, faces["landmarks"], faces["face_mask"])
    result = gated(barred, faces["landmarks"], faces["face_mask"])
    bar = np.zeros(images.shape[:3], bool)
    bar[:, rows] = True
    from tf_facetex.prior.appearance_gate import feature_regions

    protected = feature_regions(faces["landmarks"], 128, 4)    # brows, eyes, lips: left to the parser
    inside = bar & ~protected & (plain["face_mask"].numpy()[..., 0] > 0)
    assert inside.sum() > 100
    assert result["face_mask"].numpy()[..., 0][inside].mean() < 0.2      # the bar is no longer face
    assert result["visibility_uv"].numpy().sum() < plain["visibility_uv"].numpy().sum()
    elsewhere = (~bar) & ~protected & (plain["face_mask"].numpy()[..., 0] > 0)
    assert result["face_mask"].numpy()[..., 0][elsewhere].mean() > 0.9   # the rest of the face stays seen
