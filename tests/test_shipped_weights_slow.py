"""The shipped weights as users get them: scripts/export_savedmodel.py and scripts/export_tflite.py with no flags
load saved_models/refinement_net/ and saved_models/prior_regressor/ (no random-weight banner), and the served
(SavedModel), tf.lite and LiteRT outputs equal the Python `net` mode's within the tolerances below. Slow: two
full-size exports (the real face model) and the LiteRT install."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import interop_tools

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[1]
# float32 everywhere; the differences are the graph vs eager kernels (SavedModel) and the TFLite kernels.
TOLERANCE = {"albedo_uv": 1e-4, "illumination_uv": 1e-3, "coefficients": 1e-4}


def _run(script, *args):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                            timeout=1500, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def default_model(ict_model):
    """The face model the exports load without flags: ICT-FaceKit with the shipped photo-built albedo prior (the
    regressor predicts its 10 albedo coefficients)."""
    from tf_facetex.face_model import load_face_model

    return load_face_model(None, allow_clone=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def shipped(default_model):
    from tf_facetex import paths
    from tf_facetex.prior.regressor import load_shipped_regressor, shipped_regressor_or_none
    from tf_facetex.refinement.checkpoint import load_refinement_net, shipped_refinement_net_or_none
    from tf_facetex.refinement.network import NetworkRefiner, random_refine_inputs
    from tf_facetex.rendering.uv import build_uv_raster

    assert shipped_refinement_net_or_none() == paths.refinement_net_dir(), "saved_models/refinement_net missing"
    assert shipped_regressor_or_none() == paths.prior_regressor_dir(), "saved_models/prior_regressor missing"
    net, info = load_refinement_net(paths.refinement_net_dir(), log=lambda *_: None)
    regressor, _ = load_shipped_regressor(default_model, paths.prior_regressor_dir(), log=lambda *_: None)
    uv_mask = build_uv_raster(default_model, info["uv_size"]).mask.astype(np.float32)[..., None]
    rng = np.random.default_rng(11)
    size = info["uv_size"]
    inputs = random_refine_inputs(rng, 1, size, seen_fraction=0.6)
    python_net = NetworkRefiner(net, uv_mask)(inputs)
    images = (rng.random((1, 224, 224, 3)) * 255).astype(np.uint8)
    return {"inputs": inputs, "images": images,
            "python": {"albedo_uv": python_net["albedo_uv"].numpy(), "illumination_uv": python_net["light_uv"].numpy(),
                       "coefficients": regressor(images.astype(np.float32) / 255.0).numpy()}}


def _errors(expected, got):
    return {key: float(np.max(np.abs(np.asarray(got[key]) - expected[key]))) for key in got if key in expected}


def test_savedmodel_with_no_flags_serves_the_shipped_weights(shipped, tmp_path, record_property):
    from tf_facetex.export import serving

    output = _run("export_savedmodel.py", f"--output_dir={tmp_path}", "--name=facetex", "--noverify")
    assert "RANDOMLY INITIALISED" not in output
    assert "refinement network: shipped" in output and "prior regressor: shipped" in output
    loaded = serving.load_servable(tmp_path / "facetex" / "1")
    info = json.loads((tmp_path / "facetex" / "1" / "assets.extra" / "export_info.json").read_text())
    assert info["untrained"] == []
    refined = loaded.signatures["refine"](**{k: tf.constant(v) for k, v in shipped["inputs"].items()})
    served = loaded.signatures["serving_default"](images=tf.constant(shipped["images"]))
    errors = _errors(shipped["python"], {"albedo_uv": refined["albedo_uv"], "illumination_uv": refined["illumination_uv"],
                                         "coefficients": served["coefficients"]})
    record_property("savedmodel_vs_python", errors)
    print("SavedModel vs Python", errors)
    assert np.abs(shipped["python"]["coefficients"]).max() > 1e-2        # trained weights, not the zero head
    for key, error in errors.items():
        assert error < TOLERANCE[key], (key, errors)


def test_tflite_with_no_flags_matches_python_under_tf_lite_and_litert(shipped, tmp_path, record_property):
    from tf_facetex.export import tflite

    interop_tools.install("litert")
    sys.path.insert(0, str(interop_tools.LITERT_SITE))
    output = _run("export_tflite.py", f"--output_dir={tmp_path}", "--quantizations=float32")
    assert "RANDOMLY INITIALISED" not in output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checkpoint"] != "RANDOM INIT" and report["regressor_weights"] != "RANDOM INIT"
    results = {}
    for runtime in ("tf.lite", "litert"):
        kwargs = {} if runtime == "tf.lite" else {"runtime": "litert"}
        refine = tflite.run_tflite((tmp_path / "refine_float32.tflite").read_bytes(), shipped["inputs"], **kwargs)
        coeffs = tflite.run_tflite((tmp_path / "regressor_float32.tflite").read_bytes(),
                                   {"images": shipped["images"]}, **kwargs)
        results[runtime] = _errors(shipped["python"], {**refine, **coeffs})
    record_property("tflite_vs_python", results)
    print("TFLite vs Python", results)
    for runtime, errors in results.items():
        assert set(errors) == set(TOLERANCE), errors
        for key, error in errors.items():
            assert error < TOLERANCE[key], (runtime, key, errors)
