"""The no-weights detail stage: direct optimisation of A' and L' with the paper's UV-space losses."""
import numpy as np
import pytest

from tf_facetex import metrics
from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
from tf_facetex.prior.module import PriorConfig, PriorModule
from tf_facetex.prior.photometric_fit import PhotometricFitConfig
from tf_facetex.refinement.fit import UVFitConfig, UVFitRefiner
from tf_facetex.refinement.objective import render_from_lookup, shade_uv
from tf_facetex.rendering import FaceRenderer


@pytest.fixture(scope="module")
def prior_out(tiny_model):
    renderer = FaceRenderer(tiny_model, 96, 64)
    config = SyntheticConfig(image_size=96, uv_size=64, occluder_prob=0.0, noise_std=0.0, max_yaw=20)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(5), 2)
    prior = PriorModule(tiny_model, PriorConfig(image_size=96, uv_size=64,
                                                photometric=PhotometricFitConfig(num_pixels=1024)),
                        renderer=renderer)
    out = prior(faces["image"].astype(np.float32) / 255.0, faces["landmarks"], faces["face_mask"])
    return renderer, faces, out


def test_fit_lowers_the_loss_and_explains_the_photo_better_than_the_prior(prior_out):
    renderer, faces, out = prior_out
    refiner = UVFitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, UVFitConfig(steps=60))
    result = refiner(out)
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    rendered = render_from_lookup(shade_uv(result["albedo_uv"], result["light_uv"], out["normals_uv"]),
                                  out["pixel_uv"], out["proj_mask"])
    fitted = metrics.masked_psnr(np.clip(rendered, 0, 1), out["image"], out["face_mask"]).numpy()
    coarse = out["coarse_psnr"].numpy()
    assert (fitted > coarse + 1.0).all(), (fitted, coarse)
    # The albedo stays an albedo: closer to the truth than the unwrapped (lit) texture on seen texels.
    seen = out["visibility_uv"]
    truth = faces["albedo_gt_uv"]
    fit_error = metrics.scale_invariant_rmse(result["albedo_uv"], truth, seen).numpy()
    unwrapped_error = metrics.scale_invariant_rmse(out["texture_uv"], truth, seen).numpy()
    assert (fit_error < unwrapped_error).all(), (fit_error, unwrapped_error)
    assert result["light_uv"].shape[-1] == 27 and np.isfinite(result["light_uv"].numpy()).all()


def test_config_with_overrides_types_values_and_rejects_unknown_fields():
    from tf_facetex.refinement.fit import UVFitConfig, config_with_overrides

    config = config_with_overrides(UVFitConfig(steps=40), ["shading_fraction=0.5", "light_resolution=16",
                                                          "use_unwrapped_init=false", "symmetry_weighting=uniform"])
    assert config.steps == 40 and config.shading_fraction == 0.5 and config.light_resolution == 16
    assert isinstance(config.light_resolution, int) and config.use_unwrapped_init is False
    assert config.symmetry_weighting == "uniform"
    assert UVFitConfig().shading_fraction == 0.25          # the default object is untouched
    for bad in (["no_such_field=1"], ["steps="], ["steps"]):
        with pytest.raises(ValueError, match="UVFitConfig field"):
            config_with_overrides(UVFitConfig(), bad)


def test_fit_refiner_with_overrides_is_the_shipped_fit_with_those_fields():
    """The evaluation scripts' --fit_overrides (evaluate.py --protocol=celebamask, eval_relight.py)."""
    from types import SimpleNamespace

    from tf_facetex.errors import FaceTexError
    from tf_facetex.pipeline import setup
    from tf_facetex.refinement.fit import FitRefiner, UVFitConfig

    renderer = SimpleNamespace(uv_mask=np.ones((8, 8, 1), np.float32), uv_symmetry_index=None)
    refiner = setup.fit_refiner_with_overrides(SimpleNamespace(renderer=renderer), 40, ["photo_albedo=all"])
    assert isinstance(refiner, FitRefiner)
    assert refiner.config == UVFitConfig(steps=40, photo_albedo="all")
    with pytest.raises(FaceTexError, match="--fit_overrides"):
        setup.fit_refiner_with_overrides(SimpleNamespace(renderer=renderer), 40, ["no_such_field=1"])
