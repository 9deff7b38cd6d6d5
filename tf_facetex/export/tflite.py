"""TFLite exports: the refinement network (float32, dynamic-range int8) and the prior regressor, plus a runner.

- Refinement: inputs ``texture_uv`` f32 [1, S, S, 3], ``visibility_uv`` f32 [1, S, S, 1], ``prior_albedo_uv``
  f32 [1, S, S, 3], ``gamma`` f32 [1, 27] (the coarse light), ``normals_uv`` f32 [1, S, S, 3]; outputs
  ``albedo_uv`` [1, S, S, 3], ``illumination_uv`` [1, S, S, 27] — the same contract as the SavedModel's ``refine``
  signature (the fixed unseen-texel noise and the UV mask are constants in the model).
- Regressor: ``images`` uint8 [1, 224, 224, 3] (aligned crops) -> ``coefficients`` f32 [1, C].
- "dynamic_int8" is dynamic-range quantisation (`tf.lite.Optimize.DEFAULT` without a representative dataset):
  weights stored as int8, activations computed in float; about 4x smaller.
The full pipeline (rasteriser, unwrap) is not offered as TFLite: see docs/SERVING.md for what fails and why
(`try_convert` reports it).
"""
import inspect
import re

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tf_facetex.conventions import CROP_SIZE
from tf_facetex.refinement.network import UNSEEN_NOISE_SEED, refine_with_network, unseen_noise

QUANTIZATIONS = ("float32", "dynamic_int8")


def refinement_function(net, uv_mask, uv_size, noise_seed=UNSEEN_NOISE_SEED):
    """A tf.function with a fixed [1, S, S, C] signature wrapping `refine_with_network`."""
    uv_mask = tf.constant(np.asarray(uv_mask, np.float32).reshape(uv_size, uv_size, 1))
    noise = unseen_noise(uv_size, noise_seed)

    @tf.function(input_signature=[tf.TensorSpec([1, uv_size, uv_size, 3], tf.float32, name="texture_uv"),
                                  tf.TensorSpec([1, uv_size, uv_size, 1], tf.float32, name="visibility_uv"),
                                  tf.TensorSpec([1, uv_size, uv_size, 3], tf.float32, name="prior_albedo_uv"),
                                  tf.TensorSpec([1, 27], tf.float32, name="gamma"),
                                  tf.TensorSpec([1, uv_size, uv_size, 3], tf.float32, name="normals_uv")])
    def refine(texture_uv, visibility_uv, prior_albedo_uv, gamma, normals_uv):
        albedo, light = refine_with_network(net, texture_uv, visibility_uv, prior_albedo_uv, gamma, normals_uv,
                                            uv_mask, noise)
        return {"albedo_uv": albedo, "illumination_uv": light}

    return refine


def regressor_function(regressor, image_size=CROP_SIZE):
    """A tf.function uint8 images [1, H, H, 3] -> {'coefficients': [1, C]}."""

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.uint8, name="images")])
    def regress(images):
        return {"coefficients": regressor(tf.cast(images, tf.float32) / 255.0, training=False)}

    return regress


def freeze(function):
    """The function with its variables turned into constants, keeping its argument and output names.

    TFLite's converter (TF 2.21) keeps Keras 3 variables as TFLite resource variables (VAR_HANDLE /
    READ_VARIABLE) that nothing initialises: the flatbuffer has no weights and outputs NaN. Freezing first
    (`convert_variables_to_constants_v2`) gives plain constants. Freezing flattens the outputs to a list (in
    `tf.nest` order: sorted dict keys), so a wrapper with the original argument names returns them by name again.
    """

    concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    output_names = sorted(concrete.structured_outputs)
    specs = list(function.input_signature)

    def named(*args):
        return dict(zip(output_names, frozen(*args)))

    named.__signature__ = inspect.Signature(
        [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for spec in specs])
    return tf.function(named, input_signature=specs)


def convert(function, quantization="float32", allow_select_tf_ops=False) -> bytes:
    """Converts a tf.function (fixed input signature, dict output) to a TFLite flatbuffer (after `freeze`).

    Args:
      function: tf.function with an input_signature.
      quantization: 'float32' or 'dynamic_int8'.
      allow_select_tf_ops: also allow TF ops outside the TFLite builtins (Flex; needs the Flex delegate).
    Raises:
      ValueError for an unknown quantisation; the converter's own errors when an op does not convert.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    frozen = freeze(function)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen.get_concrete_function()], tf.Module())
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    if quantization == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def convert_refinement_net(net, uv_mask, uv_size, quantization="float32") -> bytes:
    return convert(refinement_function(net, uv_mask, uv_size), quantization)


def convert_regressor(regressor, image_size=CROP_SIZE, quantization="float32") -> bytes:
    return convert(regressor_function(regressor, image_size), quantization)


def try_convert(function, **kwargs):
    """(flatbuffer bytes or None, error summary or None): a conversion attempt that does not raise.

    The summary names the ops the converter could not map (its "TF Select ops" / "Flex ops" / "Custom ops" lists)
    rather than repeating its per-op location dumps.
    """
    try:
        return convert(function, **kwargs), None
    except Exception as err:  # noqa: BLE001 - the converter raises many types; we report them
        return None, summarize_converter_error(err)


def summarize_converter_error(err) -> str:

    text = str(err)
    lists = {}
    for label in ("TF Select ops", "Flex ops", "Custom ops"):
        for match in re.finditer(rf"{label}: ([^\n]+)", text):
            lists.setdefault(label, set()).update(op.strip() for op in match.group(1).split(","))
    unmapped = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", text)))
    illegal = sorted(set(re.findall(r"'(tf\.\w+)' op requires", text)))
    parts = [f"{label}: {', '.join(sorted(ops))}" for label, ops in lists.items()]
    if unmapped:
        parts.append(f"unsupported: {', '.join(unmapped)}")
    if illegal:
        parts.append(f"not legal in TFLite: {', '.join(illegal)}")
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text[:300])
    return f"{type(err).__name__}: " + ("; ".join(parts) if parts else " ".join(first.split())[:600])


def interpreter_class(runtime="tf.lite"):
    """The interpreter of ``runtime``: 'tf.lite' (TensorFlow's, deprecated upstream) or 'litert' (the standalone
    ``ai-edge-litert`` package, what devices run; installed by ``scripts/install_tools.sh litert``)."""
    if runtime == "tf.lite":
        return tf.lite.Interpreter
    if runtime == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise ImportError("runtime 'litert' needs the ai-edge-litert package "
                              "(scripts/install_tools.sh litert, then add its folder to PYTHONPATH)") from err
        return Interpreter
    raise ValueError(f"runtime must be 'tf.lite' or 'litert', got {runtime!r}")


def run_tflite(model_bytes, inputs: dict, num_threads=None, runtime="tf.lite") -> dict:
    """Runs a TFLite model through its (only) signature: {input name: array} -> {output name: array}."""
    interpreter = interpreter_class(runtime)(model_content=model_bytes, num_threads=num_threads)
    runner = interpreter.get_signature_runner()
    return {name: np.asarray(value) for name, value in runner(**inputs).items()}


def signature_io(model_bytes, runtime="tf.lite") -> dict:
    """{'inputs': {name: (shape, dtype)}, 'outputs': {...}} of a TFLite model's signature."""
    interpreter = interpreter_class(runtime)(model_content=model_bytes)
    signature = interpreter.get_signature_list()
    key = next(iter(signature))
    runner = interpreter.get_signature_runner(key)
    describe = lambda details: {name: (tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)  # noqa: E731
                                for name, d in details.items()}
    return {"signature": key, "inputs": describe(runner.get_input_details()),
            "outputs": describe(runner.get_output_details())}


def max_abs_errors(reference: dict, candidate: dict) -> dict:
    """{name: max |reference - candidate|} over the shared output names."""
    return {name: float(np.max(np.abs(np.asarray(reference[name], np.float64) - np.asarray(candidate[name]))))
            for name in reference if name in candidate}
