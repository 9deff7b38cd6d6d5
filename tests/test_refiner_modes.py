"""The shipped refinement-network format and the refiner modes (fit, net, net+fit)."""
import json

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
from tf_facetex.errors import AssetError, FaceTexError
from tf_facetex.networks import build_refinement_net
from tf_facetex.prior.module import PriorConfig, PriorModule
from tf_facetex.prior.photometric_fit import PhotometricFitConfig
from tf_facetex.refinement import checkpoint as ckpt
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig, UVFitRefiner, coarse_light_where_unseen
from tf_facetex.refinement.net_fit import NetFitRefiner
from tf_facetex.refinement.network import NetworkRefiner
from tf_facetex.refinement import uv_solver
from tf_facetex.rendering import FaceRenderer

UV = 64


@pytest.fixture(scope="module")
def prior_out(tiny_model):
    renderer = FaceRenderer(tiny_model, 96, UV)
    config = SyntheticConfig(image_size=96, uv_size=UV, occluder_prob=0.0, noise_std=0.0, max_yaw=20)
    faces = SyntheticFaceGenerator(tiny_model, renderer, config).generate(np.random.default_rng(3), 2)
    prior = PriorModule(tiny_model, PriorConfig(image_size=96, uv_size=UV,
                                                photometric=PhotometricFitConfig(num_pixels=1024)),
                        renderer=renderer)
    out = prior(faces["image"].astype(np.float32) / 255.0, faces["landmarks"], faces["face_mask"])
    return renderer, out


def perturbed_net():
    net = build_refinement_net("small", uv_size=UV)
    for variable in net.weights:      # not the initial values: a load must really read them
        variable.assign(variable + tf.random.stateless_normal(variable.shape, [3, 4], stddev=0.01))
    return net


def test_shipped_folder_round_trip_and_errors(tmp_path):
    net = perturbed_net()
    weights = ckpt.save_shipped_net(net, tmp_path / "net", {"name": "t", "net_preset": "small", "uv_size": UV,
                                                             "steps": 7})
    assert weights.is_file() and ckpt.is_shipped_net(tmp_path / "net")
    assert not list((tmp_path / "net").glob(".*partial*"))           # no staging file left behind
    logged = []
    loaded, info = ckpt.load_refinement_net(tmp_path / "net", log=logged.append)
    assert info["shipped"] and info["uv_size"] == UV
    assert "shipped t" in logged[0] and "sha256" in logged[0] and "7 steps" in logged[0]
    for a, b in zip(loaded.weights, net.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A damaged weights file or config is an AssetError naming the file, not a traceback.
    (tmp_path / "net" / ckpt.SHIPPED_WEIGHTS).write_bytes(b"not hdf5")
    with pytest.raises(AssetError, match="cannot load"):
        ckpt.load_refinement_net(tmp_path / "net", log=lambda *_: None)
    (tmp_path / "net" / ckpt.SHIPPED_CONFIG).write_text(json.dumps({"net_config": {"uv_size": UV, "norm": "x"}}))
    with pytest.raises(AssetError, match="network.json"):
        ckpt.load_refinement_net(tmp_path / "net", log=lambda *_: None)


def test_default_network_comes_from_the_environment_or_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_FACETEX_REFINEMENT_NET", str(tmp_path / "missing"))
    with pytest.raises(AssetError, match="TF_FACETEX_REFINEMENT_NET"):
        ckpt.default_refinement_net()
    ckpt.save_shipped_net(perturbed_net(), tmp_path / "net", {"uv_size": UV})
    monkeypatch.setenv("TF_FACETEX_REFINEMENT_NET", str(tmp_path / "net"))
    assert ckpt.default_refinement_net() == tmp_path / "net"


def test_fit_from_a_start_begins_there_and_zero_steps_return_it(prior_out):
    renderer, out = prior_out
    rng = np.random.default_rng(1)
    start = {"albedo_uv": tf.constant(rng.uniform(0.2, 0.8, (2, UV, UV, 3)), tf.float32),
             "light_uv": tf.constant(rng.normal(0.0, 0.1, (2, UV, UV, 27)), tf.float32)}
    mask = renderer.uv_mask
    for solver in ("xla", "adam"):
        fit = UVFitRefiner(mask, renderer.uv_symmetry_index, UVFitConfig(steps=0, solver=solver))
        result = fit(out, start=start)
        np.testing.assert_allclose(result["albedo_uv"].numpy(), (start["albedo_uv"] * mask).numpy(), atol=1e-6)
        np.testing.assert_allclose(result["light_uv"].numpy(), (start["light_uv"] * mask).numpy(), atol=1e-6)
    # With steps, both solvers lower the objective from the start, and agree with each other.
    results = {}
    for solver in ("xla", "adam"):
        fit = UVFitRefiner(mask, renderer.uv_symmetry_index, UVFitConfig(steps=10, solver=solver))
        results[solver] = fit(out, start=start)
        assert results[solver]["loss"][-1] < results[solver]["loss"][0]
    assert results["xla"]["loss"][0] == pytest.approx(results["adam"]["loss"][0], rel=1e-5)
    assert results["xla"]["loss"][-1] == pytest.approx(results["adam"]["loss"][-1], rel=5e-3)
    # Adam normalises each texel's step, so where a gradient is ~0 the two round-offs can step apart: a few texels
    difference = np.abs(results["xla"]["albedo_uv"].numpy() - results["adam"]["albedo_uv"].numpy())
    assert difference.mean() < 1e-3 and np.mean(difference > 1e-2) < 0.01 and difference.max() < 0.1


def test_unseen_light_falls_back_to_the_start_light_map():
    rng = np.random.default_rng(2)
    light = tf.constant(rng.normal(size=(1, 32, 32, 27)), tf.float32)
    start = tf.constant(rng.normal(size=(1, 32, 32, 27)), tf.float32)
    unseen = tf.zeros([1, 32, 32, 1])
    np.testing.assert_allclose(coarse_light_where_unseen(light, start, unseen, 1.0).numpy(), start.numpy(), atol=1e-6)
    seen = tf.ones([1, 32, 32, 1])
    inner = coarse_light_where_unseen(light, start, seen, 1.0).numpy()[:, 4:-4, 4:-4]   # away from the zero padding
    np.testing.assert_allclose(inner, light.numpy()[:, 4:-4, 4:-4], atol=1e-6)


def test_net_fit_is_the_network_then_the_fit_from_its_output(prior_out):
    renderer, out = prior_out
    network = NetworkRefiner(perturbed_net(), renderer.uv_mask)
    fit = FitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, UVFitConfig(steps=10))
    combined = NetFitRefiner(network, fit)(out)
    start = network(out)
    expected = fit(out, start=start)
    np.testing.assert_allclose(combined["albedo_uv"].numpy(), expected["albedo_uv"].numpy(), atol=1e-6)
    np.testing.assert_allclose(combined["light_uv"].numpy(), expected["light_uv"].numpy(), atol=1e-6)
    # the fit moved the network's albedo (towards the photo), and it lowered the objective
    assert np.abs(combined["albedo_uv"].numpy() - start["albedo_uv"].numpy()).max() > 1e-3
    assert combined["loss_last"] < combined["loss_first"]
    description = NetFitRefiner(network, fit).describe()
    assert description["name"] == "net+fit" and description["steps"] == 10


def test_net_fit_starts(prior_out):
    from tf_facetex import sh
    from tf_facetex.refinement.net_fit import net_fit_start

    renderer, out = prior_out
    network_out = NetworkRefiner(perturbed_net(), renderer.uv_mask)(out)
    same = net_fit_start(out, network_out, "network")
    assert same["albedo_uv"] is network_out["albedo_uv"] and same["light_uv"] is network_out["light_uv"]
    coarse = net_fit_start(out, network_out, "network_albedo")
    np.testing.assert_array_equal(coarse["albedo_uv"].numpy(), network_out["albedo_uv"].numpy())
    np.testing.assert_allclose(coarse["light_uv"].numpy(),
                               np.broadcast_to(np.asarray(out["gamma"])[:, None, None, :], coarse["light_uv"].shape))
    photo = net_fit_start(out, network_out, "photo")
    np.testing.assert_array_equal(photo["light_uv"].numpy(), network_out["light_uv"].numpy())
    seen = np.asarray(out["visibility_uv"])[..., 0] > 0.5
    assert seen.any() and (~seen).any()
    # where the photo shows the texel, the start re-renders it under the network's light (unclipped texels) ...
    shading = sh.shading_uv(out["normals_uv"], network_out["light_uv"]).numpy()
    relit = photo["albedo_uv"].numpy() * shading
    inside = seen[..., None] & (shading > 0.05) & (photo["albedo_uv"].numpy() < 1.0) & (photo["albedo_uv"].numpy() > 0)
    np.testing.assert_allclose(relit[inside], np.asarray(out["texture_uv"])[inside], atol=1e-4)
    # ... and elsewhere it is the network's in-painted albedo
    np.testing.assert_array_equal(photo["albedo_uv"].numpy()[~seen], network_out["albedo_uv"].numpy()[~seen])
    with pytest.raises(ValueError, match="start"):
        net_fit_start(out, network_out, "prior")
    with pytest.raises(ValueError, match="start"):
        NetFitRefiner(None, None, start="prior")


def test_product_net_fit_settings_are_one(prior_out):
    from tf_facetex.pipeline import setup
    from tf_facetex.refinement import net_fit

    assert setup.DEFAULT_NET_FIT_STEPS == net_fit.NET_FIT_STEPS
    renderer, _ = prior_out
    refiner = net_fit.net_fit_refiner(NetworkRefiner(perturbed_net(), renderer.uv_mask), renderer.uv_mask,
                                      renderer.uv_symmetry_index)
    assert refiner.start == net_fit.NET_FIT_START
    assert refiner.fit.config.steps == net_fit.NET_FIT_STEPS
    assert refiner.fit.config.learning_rate == net_fit.NET_FIT_LEARNING_RATE


def test_upsampled_light_accepts_a_light_map_base():
    rng = np.random.default_rng(4)
    residual = tf.constant(rng.normal(size=(2, 4, 4, 27)), tf.float32)
    gamma = tf.constant(rng.normal(size=(2, 27)), tf.float32)
    from_gamma = uv_solver.upsampled_light(gamma, residual, 16)
    from_map = uv_solver.upsampled_light(tf.ones([2, 16, 16, 1]) * gamma[:, None, None, :], residual, 16)
    np.testing.assert_allclose(from_gamma.numpy(), from_map.numpy(), atol=1e-6)


def test_build_reconstructor_modes(tiny_model, tmp_path, monkeypatch):
    from tf_facetex import pipeline

    tiny_model_path = str(tmp_path / "procedural.npz")
    tiny_model.save(tiny_model_path)
    ckpt.save_shipped_net(perturbed_net(), tmp_path / "net", {"name": "t", "net_preset": "small", "uv_size": UV})
    monkeypatch.setenv("TF_FACETEX_REFINEMENT_NET", str(tmp_path / "net"))
    quiet = dict(log=lambda *_: None)
    fit = pipeline.build_reconstructor(tiny_model_path, **quiet)
    assert fit.refiner.name == "fit"
    net = pipeline.build_reconstructor(tiny_model_path, refiner="net", **quiet)
    assert net.refiner.name == "network" and net.config.uv_size == UV
    net_fit = pipeline.build_reconstructor(tiny_model_path, refiner="net+fit", net_fit_steps=5, **quiet)
    assert net_fit.refiner.describe()["steps"] == 5 and net_fit.refiner.describe()["name"] == "net+fit"
    with pytest.raises(FaceTexError, match="works at"):
        pipeline.build_reconstructor(tiny_model_path, refiner="net", uv_size=UV * 2, **quiet)
    with pytest.raises(FaceTexError, match="refiner must be"):
        pipeline.build_reconstructor(tiny_model_path, refiner="network", **quiet)


def test_training_can_start_from_shipped_weights(tmp_path):
    from tf_facetex.errors import TrainingError
    from tf_facetex.refinement.train import warm_start_generator

    shipped = perturbed_net()
    ckpt.save_shipped_net(shipped, tmp_path / "net", {"name": "t", "net_preset": "small", "uv_size": UV})
    fresh = build_refinement_net("small", uv_size=UV)
    assert not np.allclose(fresh.weights[0].numpy(), shipped.weights[0].numpy())
    logged = []
    warm_start_generator(fresh, tmp_path / "net", log=logged.append)
    for a, b in zip(fresh.weights, shipped.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "initialised from" in logged[-1]
    other = build_refinement_net("small", uv_size=UV, base_filters=8)   # another width: refused, nothing copied
    before = [w.numpy().copy() for w in other.weights]
    with pytest.raises(TrainingError, match="not this run's"):
        warm_start_generator(other, tmp_path / "net", log=lambda *_: None)
    for a, b in zip(other.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)
