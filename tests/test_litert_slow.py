"""The TFLite exports under LiteRT (the standalone ai-edge-litert interpreter that devices run) agree with tf.lite
and with Keras. Slow only because it installs ai-edge-litert (scripts/install_tools.sh litert, ~22 MB)."""
import sys

import numpy as np
import pytest

import interop_tools

pytestmark = pytest.mark.slow
UV = 64


@pytest.fixture(scope="module")
def litert():
    interop_tools.install("litert")
    sys.path.insert(0, str(interop_tools.LITERT_SITE))
    from ai_edge_litert import interpreter
    return interpreter


def test_tflite_exports_run_under_litert(litert, tiny_model, record_property):
    import tensorflow as tf

    from tf_facetex.export import tflite
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.prior.regressor import PriorRegressor
    from tf_facetex.refinement.network import random_refine_inputs

    assert tflite.interpreter_class("litert") is litert.Interpreter
    rng = np.random.default_rng(5)
    net = build_refinement_net("small", uv_size=UV)
    mask = (rng.random((UV, UV, 1)) > 0.2).astype(np.float32)
    inputs = random_refine_inputs(rng, 1, UV, seen_fraction=0.6)
    keras = {k: v.numpy() for k, v in tflite.refinement_function(net, mask, UV)(**inputs).items()}
    for quantization, tolerance in (("float32", 1e-3), ("dynamic_int8", 2.0)):
        flatbuffer = tflite.convert_refinement_net(net, mask, UV, quantization)
        assert tflite.signature_io(flatbuffer, runtime="litert") == tflite.signature_io(flatbuffer)
        on_litert = tflite.run_tflite(flatbuffer, inputs, runtime="litert")
        on_tf = tflite.run_tflite(flatbuffer, inputs)
        between = tflite.max_abs_errors(on_tf, on_litert)
        to_keras = tflite.max_abs_errors(keras, on_litert)
        record_property(f"refine_{quantization}", {"litert_vs_tf.lite": between, "litert_vs_keras": to_keras})
        print(quantization, "LiteRT vs tf.lite", between, "LiteRT vs Keras", to_keras)
        assert set(on_litert) == {"albedo_uv", "illumination_uv"}
        assert max(between.values()) < 1e-5, between
        assert max(to_keras.values()) < tolerance, to_keras

    regressor = PriorRegressor.for_model(tiny_model, backbone="tiny")
    images = (rng.random((1, 224, 224, 3)) * 255).astype(np.uint8)
    regressor(np.zeros((1, 224, 224, 3), np.float32))
    expected = tflite.regressor_function(regressor)(images=tf.constant(images))["coefficients"].numpy()
    got = tflite.run_tflite(tflite.convert_regressor(regressor), {"images": images}, runtime="litert")["coefficients"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_unknown_runtime_is_refused():
    from tf_facetex.export import tflite

    with pytest.raises(ValueError, match="runtime"):
        tflite.interpreter_class("onnx")
