"""Exports TFLite models: the refinement network (float32 and dynamic-range int8) and the prior regressor.

    python scripts/export_tflite.py --checkpoint runs/paper --regressor_weights prior.weights.h5
    # -> saved_models/tf_facetex/tflite/{refine_float32,refine_dynamic_int8,regressor_float32,...}.tflite
    #    + report.json (sizes, max abs error against Keras on a test input, what failed to convert)

Contracts (docs/SERVING.md): refine_*.tflite takes texture_uv f32 [1, S, S, 3], visibility_uv f32 [1, S, S, 1],
prior_albedo_uv f32 [1, S, S, 3] and returns albedo_uv [1, S, S, 3], illumination_uv [1, S, S, 27];
regressor_*.tflite takes images uint8 [1, 224, 224, 3] (aligned crops) and returns coefficients f32 [1, C].
Every model is run once with tf.lite.Interpreter and compared with the Keras model (--verify). Missing weights
are replaced by a random initialisation with a warning (sizes and conversion are the same; errors are measured on
random weights then). --try_full_pipeline also attempts the whole SavedModel graph and records why it fails.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "saved_models/tf_facetex/tflite", "Output folder for the .tflite files and "
                    "report.json.")
flags.DEFINE_string("face_model", None, "Face model (its UV chart masks the refinement outputs; its coefficient "
                    "layout sizes the regressor). Default: see README, Assets.")
flags.DEFINE_string("checkpoint", None, "Refinement network: a shipped network folder, a scripts/train.py run folder, "
                    "its checkpoints/ folder or a checkpoint prefix. None: the shipped saved_models/refinement_net/ "
                    "(random init with a warning only when it is absent).")
flags.DEFINE_enum("net_preset", "paper", ["paper", "small", "cpu"], "Network architecture without --checkpoint.")
flags.DEFINE_integer("uv_size", None, "UV size (default: the checkpoint's, else 256).")
flags.DEFINE_string("regressor_weights", None, "PriorRegressor weights (.weights.h5, with --regressor_backbone). None: "
                    "the shipped saved_models/prior_regressor/ (random init with a warning only when it is absent).")
flags.DEFINE_string("regressor_backbone", "resnet50", "Regressor backbone: resnet50, compact, mobilenetv2 or tiny.")
flags.DEFINE_bool("include_regressor", True, "Also convert the prior regressor.")
flags.DEFINE_list("quantizations", ["float32", "dynamic_int8"], "Which variants to write: float32, dynamic_int8.")
flags.DEFINE_bool("verify", True, "Run each model with tf.lite.Interpreter and compare with Keras.")
flags.DEFINE_bool("try_full_pipeline", False, "Also try to convert the whole servable graph (prior + rasteriser + "
                  "refinement) and record the converter's error in report.json (slow).")


def main(argv):
    del argv
    import pathlib

    import numpy as np
    import tensorflow as tf

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.export import tflite
    from tf_facetex.face_model import load_face_model
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.refinement.checkpoint import load_refinement_net, shipped_refinement_net_or_none
    from tf_facetex.refinement.network import random_refine_inputs
    from tf_facetex.prior.regressor import build_regressor, resolve_regressor
    from tf_facetex.rendering.uv import build_uv_raster

    unknown = set(FLAGS.quantizations) - set(tflite.QUANTIZATIONS)
    if unknown:
        raise FaceTexError(f"--quantizations: unknown {sorted(unknown)}; choose from {tflite.QUANTIZATIONS}")
    out_dir = pathlib.Path(FLAGS.output_dir)
    model = load_face_model(FLAGS.face_model)
    checkpoint = FLAGS.checkpoint or shipped_refinement_net_or_none()
    if checkpoint:
        net, info = load_refinement_net(checkpoint)
        uv_size = info["uv_size"]
    else:
        uv_size = FLAGS.uv_size or 256
        net = build_refinement_net(FLAGS.net_preset, uv_size=uv_size)
        print(f"WARNING: no --checkpoint: exporting a RANDOMLY INITIALISED {FLAGS.net_preset} refinement network")
    uv_mask = build_uv_raster(model, uv_size).mask.astype(np.float32)[..., None]
    rng = np.random.default_rng(0)
    refine_inputs = random_refine_inputs(rng, 1, uv_size, seen_fraction=0.6)
    jobs = [("refine", tflite.refinement_function(net, uv_mask, uv_size), refine_inputs)]
    if FLAGS.include_regressor:
        regressor, regressor_source = resolve_regressor(model, FLAGS.regressor_weights, FLAGS.regressor_backbone)
        if regressor_source is None:
            print("WARNING: no --regressor_weights: exporting a RANDOMLY INITIALISED regressor (its zero head "
                  "outputs zeros; the comparison then only checks the plumbing)")
        images = (rng.random((1, 224, 224, 3)) * 255).astype(np.uint8)
        jobs.append(("regressor", tflite.regressor_function(regressor), {"images": images}))
    report = {"face_model": model.name, "uv_size": uv_size, "checkpoint": str(checkpoint) if checkpoint else "RANDOM INIT",
              "regressor_weights": (regressor_source if FLAGS.include_regressor else None) or "RANDOM INIT", "models": {}, "failed": {}}
    for name, function, inputs in jobs:
        reference = {k: v.numpy() for k, v in function(**inputs).items()} if FLAGS.verify else None
        for quantization in FLAGS.quantizations:
            key = f"{name}_{quantization}"
            flatbuffer, error = tflite.try_convert(function, quantization=quantization)
            if flatbuffer is None:
                report["failed"][key] = error
                print(f"[tflite] {key}: conversion failed: {error}")
                continue
            path = io_utils.write_bytes(out_dir / f"{key}.tflite", flatbuffer)
            entry = {"file": path.name, "bytes": len(flatbuffer), **tflite.signature_io(flatbuffer)}
            if reference is not None:
                outputs = tflite.run_tflite(flatbuffer, inputs)
                entry["max_abs_error"] = tflite.max_abs_errors(reference, outputs)
                entry["reference_max_abs"] = {k: float(np.max(np.abs(v))) for k, v in reference.items()}
                entry["mean_abs_error"] = {k: float(np.mean(np.abs(reference[k] - outputs[k]))) for k in reference}
            report["models"][key] = entry
            errors = ", ".join(f"{k} {v:.3g}" for k, v in entry.get("max_abs_error", {}).items())
            print(f"[tflite] {path} ({len(flatbuffer) / 1e6:.2f} MB)" + (f"; max abs error vs Keras: {errors}"
                                                                         if errors else ""))
    if FLAGS.try_full_pipeline:
        from tf_facetex.export import serving

        # Which ops convert does not depend on the regressor's backbone: the tiny one keeps this attempt quick.
        tiny = build_regressor(model, "tiny")
        module = serving.FaceTexServing(model, tiny, net, uv_size)

        # The servable without its PNG (string) output: what does the geometry need? (A static batch of 1 crashed
        # the TF 2.21 converter with SIGFPE on the ICT-FaceKit graph; the servable's dynamic batch does not.)
        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.uint8, name="images")])
        def arrays(images):
            outputs = module.serve(images)
            outputs.pop("albedo_png_bytes")
            return outputs

        _, error = tflite.try_convert(arrays, quantization="float32")
        report["failed"]["full_pipeline_builtins"] = error or "converted"
        _, error = tflite.try_convert(arrays, quantization="float32", allow_select_tf_ops=True)
        report["failed"]["full_pipeline_select_tf_ops"] = error or "converted (needs the Flex delegate)"
        print(f"[tflite] full pipeline: {report['failed']['full_pipeline_builtins']}")
    io_utils.write_json(out_dir / "report.json", report)
    print(f"[tflite] report: {out_dir / 'report.json'}")


if __name__ == "__main__":
    cli.run(main)
