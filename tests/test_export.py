"""Exports: the SavedModel (reload, signatures, agreement with the Python pipeline, TF Serving REST JSON shapes,
version folders) and the TFLite models (interpreter vs Keras). Fast tests use the procedural model, the tiny
regressor backbone and the small refinement network at UV 64; full-size runs are marked slow."""
import base64
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import pipeline
from tf_facetex.data.align import AlignedFace
from tf_facetex.export import serving, tflite
from tf_facetex.refinement.network import random_refine_inputs

UV = 64
REPO = pathlib.Path(__file__).resolve().parent.parent


def randomize_head(regressor, seed=0, scale=1e-2):
    """The regressor's zero-initialised head predicts the mean face for every image; small random weights make the
    coefficients (pose, shape, light) depend on the image, so the comparisons below exercise the whole path."""
    rng = np.random.default_rng(seed)
    kernel, bias = regressor.head.kernel, regressor.head.bias
    kernel.assign(rng.normal(0.0, scale, kernel.shape).astype(np.float32))
    bias.assign(rng.normal(0.0, 0.05, bias.shape).astype(np.float32))


@pytest.fixture(scope="module")
def crops():
    """Two 224 crops: the astronaut aligned by the real detector, and a darker, mirrored, noisy copy."""
    import skimage.data

    from tf_facetex.data.align import FacePreprocessor

    face = FacePreprocessor().from_image(skimage.data.astronaut(), "astronaut")[0]
    rng = np.random.default_rng(1)
    noise = np.clip(face.image[:, ::-1].astype(np.float32) * 0.6 + rng.normal(0, 12, face.image.shape), 0, 255)
    return np.stack([face.image, noise.astype(np.uint8)])


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.prior.regressor import PriorRegressor

    regressor = PriorRegressor.for_model(tiny_model, backbone="tiny")
    regressor(np.zeros((1, 224, 224, 3), np.float32))
    randomize_head(regressor)
    net = build_refinement_net("small", uv_size=UV)
    module = serving.FaceTexServing(tiny_model, regressor, net, UV, info={"test": True})
    base = tmp_path_factory.mktemp("saved_models")
    path = serving.save_servable(module, base, "facetex")
    return {"module": module, "path": path, "loaded": serving.load_servable(path), "regressor": regressor,
            "net": net, "base": base}


def test_version_folder_layout(exported):
    path = exported["path"]
    assert path.name == "1" and (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    info = json.loads((path / "assets.extra" / "export_info.json").read_text())
    assert info["uv_size"] == UV and info["test"] is True and set(info["signatures"]) == set(serving.SIGNATURE_KEYS)
    assert not [p for p in path.parent.iterdir() if not p.name.isdigit()], "staging folder left behind"
    assert serving.next_version(path.parent) == 2
    (path.parent / "7").mkdir()
    (path.parent / "notes").mkdir()
    assert serving.next_version(path.parent) == 8
    with pytest.raises(Exception, match="exists"):
        serving.save_servable(exported["module"], exported["base"], "facetex", version=1)


def test_reloaded_savedmodel_matches_the_python_module(exported, crops):
    loaded = exported["loaded"]
    assert set(loaded.signatures) == set(serving.SIGNATURE_KEYS)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 224, 224, 3]
    reloaded = loaded.signatures["serving_default"](images=tf.constant(crops))
    direct = exported["module"].serve(tf.constant(crops))
    assert set(reloaded) == set(serving.SERVING_OUTPUTS)
    for key in serving.SERVING_OUTPUTS:
        if key == "albedo_png_bytes":
            assert [bytes(v) for v in reloaded[key].numpy()] == [bytes(v) for v in direct[key].numpy()]
        else:
            np.testing.assert_allclose(reloaded[key].numpy(), direct[key].numpy(), atol=1e-5, err_msg=key)
    # The random head really moves the face: different coefficients per image.
    coefficients = reloaded["coefficients"].numpy()
    assert np.abs(coefficients[0] - coefficients[1]).max() > 1e-3
    assert reloaded["render_mask"].numpy().mean() > 0.05


def test_savedmodel_agrees_with_the_python_pipeline(exported, crops, tiny_model):
    """serving_default = PriorModule(regressor) + NetworkRefiner + FaceRenderer.render, as the Reconstructor runs
    them (no face mask: the signature has none)."""
    config = pipeline.ReconstructionConfig(prior="regressor", uv_size=UV, mask_unwrap=False, turntable_yaws=())
    reconstructor = pipeline.Reconstructor(tiny_model, config, regressor=exported["regressor"])
    reconstructor.use_refiner(pipeline.NetworkRefiner(exported["net"], reconstructor.renderer.uv_mask))
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    faces = [AlignedFace(image=crop, landmarks=np.zeros((68, 2), np.float32), transform=identity, inverse=identity,
                         original_shape=(224, 224), valid=np.ones((224, 224), np.float32)) for crop in crops]
    results = reconstructor.reconstruct(faces)
    served = exported["loaded"].signatures["serving_default"](images=tf.constant(crops))
    for b, result in enumerate(results):
        np.testing.assert_allclose(served["coefficients"].numpy()[b], result.coeffs, atol=1e-4)
        visible = served["visibility_uv"].numpy()[b]
        # Visibility is a discrete test (z-buffer, depth tolerance): allow a handful of flipped texels between the
        # XLA-compiled eager renderer and the plain-graph one.
        assert np.mean(visible != result.visibility_uv) < 0.005
        for key, value in (("albedo_uv", result.albedo_uv), ("illumination_uv", result.light_uv),
                           ("render", result.render_detailed), ("render_coarse", result.render_coarse)):
            difference = np.abs(served[key].numpy()[b] - value)
            assert np.mean(difference) < 1e-3 and np.quantile(difference, 0.99) < 1e-2, (key, difference.max())


def test_refine_signature_is_the_network_refiner(exported):
    rng = np.random.default_rng(2)
    inputs = random_refine_inputs(rng, 2, UV, seen_fraction=0.5)
    served = exported["loaded"].signatures["refine"](**{k: tf.constant(v) for k, v in inputs.items()})
    refiner = pipeline.NetworkRefiner(exported["net"], exported["module"].uv_mask)
    direct = refiner(inputs)
    np.testing.assert_allclose(served["albedo_uv"].numpy(), direct["albedo_uv"].numpy(), atol=1e-5)
    np.testing.assert_allclose(served["illumination_uv"].numpy(), direct["light_uv"].numpy(), atol=1e-4)


def _check_instance(value, spec):
    """A JSON instance against a TensorSpec without the batch dimension (shape, integer range for uint8)."""
    array = np.asarray(value)
    assert list(array.shape) == spec.shape.as_list()[1:], (array.shape, spec.shape)
    if spec.dtype == tf.uint8:
        assert np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= 255
    return array.astype(spec.dtype.as_numpy_dtype)


def test_tf_serving_rest_request_and_response_json(exported, crops):
    """The REST predict API's request bodies (row and columnar) built from a real aligned photo, checked against
    the signature, and the response built from the reloaded model's outputs as TF Serving formats it."""
    signature = exported["loaded"].signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert list(specs) == ["images"]
    # Row format with one named input may list bare tensors; columnar format names the input.
    requests = [json.dumps({"signature_name": "serving_default", "instances": [crops[0].tolist()]}),
                json.dumps({"signature_name": "serving_default", "instances": [{"images": crops[0].tolist()}]}),
                json.dumps({"signature_name": "serving_default", "inputs": {"images": crops[:1].tolist()}})]
    batches = []
    for text in requests:
        body = json.loads(text)
        if "instances" in body:
            rows = [row["images"] if isinstance(row, dict) else row for row in body["instances"]]
            batches.append(np.stack([_check_instance(row, specs["images"]) for row in rows]))
        else:
            batches.append(np.stack([_check_instance(row, specs["images"]) for row in body["inputs"]["images"]]))
    for batch in batches:
        np.testing.assert_array_equal(batch, crops[:1])
    outputs = signature(images=tf.constant(batches[0]))
    out_specs = signature.structured_outputs

    def jsonable(name, value):   # TF Serving: DT_STRING outputs whose name ends in _bytes are base64 {"b64": ...}
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
        return value.tolist()

    response = json.loads(json.dumps({"predictions": [
        {name: jsonable(name, value.numpy()[b]) for name, value in outputs.items()} for b in range(len(batches[0]))]}))
    prediction = response["predictions"][0]
    assert set(prediction) == set(serving.SERVING_OUTPUTS)
    for name, spec in out_specs.items():
        if name.endswith("_bytes"):
            png = tf.io.decode_png(base64.b64decode(prediction[name]["b64"])).numpy()
            assert png.shape == (UV, UV, 3) and (png.sum(axis=-1) > 0).all()   # pull-push filled: no black
        else:
            assert list(np.asarray(prediction[name]).shape) == spec.shape.as_list()[1:], name
    documented = (REPO / "docs" / "SERVING.md").read_text()
    for name in serving.SERVING_OUTPUTS + ("images", "texture_uv", "prior_albedo_uv"):
        assert f"`{name}`" in documented, f"{name} is not documented in docs/SERVING.md"


def test_pull_push_fill_keeps_the_chart_and_fills_the_rest():
    values = np.zeros((1, 16, 16, 3), np.float32)
    mask = np.zeros((16, 16, 1), np.float32)
    mask[4:8, 4:12] = 1.0
    values[0, 4:8, 4:12] = [0.2, 0.4, 0.6]
    filled = serving.pull_push_fill(values, mask).numpy()
    np.testing.assert_allclose(filled[0, 4:8, 4:12], values[0, 4:8, 4:12], atol=1e-6)
    np.testing.assert_allclose(filled[0], np.broadcast_to([0.2, 0.4, 0.6], (16, 16, 3)), atol=1e-5)


def test_tflite_refinement_and_regressor_match_keras(exported, tiny_model, record_property):
    net, regressor = exported["net"], exported["regressor"]
    mask = exported["module"].uv_mask.numpy()
    rng = np.random.default_rng(3)
    inputs = random_refine_inputs(rng, 1, UV, seen_fraction=0.6)
    function = tflite.refinement_function(net, mask, UV)
    reference = {k: v.numpy() for k, v in function(**inputs).items()}
    sizes = {}
    for quantization, tolerance in (("float32", {"albedo_uv": 1e-4, "illumination_uv": 1e-3}),
                                    ("dynamic_int8", {"albedo_uv": 0.25, "illumination_uv": 2.0})):
        flatbuffer = tflite.convert_refinement_net(net, mask, UV, quantization)
        sizes[quantization] = len(flatbuffer)
        io = tflite.signature_io(flatbuffer)
        assert io["inputs"]["visibility_uv"] == ((1, UV, UV, 1), "float32")
        assert io["outputs"]["illumination_uv"] == ((1, UV, UV, 27), "float32")
        errors = tflite.max_abs_errors(reference, tflite.run_tflite(flatbuffer, inputs))
        record_property(f"refine_{quantization}", {"bytes": len(flatbuffer), "max_abs_error": errors})
        for key, limit in tolerance.items():
            assert errors[key] < limit, (quantization, errors)
    params = net.count_params()
    assert sizes["float32"] > 4 * params * 0.9, "weights missing from the flatbuffer"
    assert sizes["dynamic_int8"] < 0.4 * sizes["float32"]
    images = (rng.random((1, 224, 224, 3)) * 255).astype(np.uint8)
    function = tflite.regressor_function(regressor)
    expected = function(images=tf.constant(images))["coefficients"].numpy()
    got = tflite.run_tflite(tflite.convert_regressor(regressor), {"images": images})["coefficients"]
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(got, expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_full_size_export_serves_the_astronaut(ict_model, tmp_path, crops):
    """scripts/export_savedmodel.py with no flags: the real face model, the shipped prior regressor and refinement
    network, reloaded with tf.saved_model.load and run on an aligned real photo (tests/test_shipped_weights_slow.py
    compares its outputs with Python's)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "export_savedmodel.py"),
                             f"--output_dir={tmp_path}", "--name=facetex", "--noverify"],
                            capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RANDOMLY INITIALISED" not in result.stderr
    assert "prior regressor: shipped" in result.stdout + result.stderr
    assert "refinement network: shipped" in result.stdout + result.stderr     # the shipped network, UV 128
    loaded = serving.load_servable(tmp_path / "facetex" / "1")
    outputs = loaded.signatures["serving_default"](images=tf.constant(crops[:1]))
    assert outputs["albedo_uv"].shape == (1, 128, 128, 3) and outputs["illumination_uv"].shape == (1, 128, 128, 27)
    assert outputs["render_mask"].numpy().mean() > 0.2
