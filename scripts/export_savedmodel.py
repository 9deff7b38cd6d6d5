"""Exports the servable SavedModel: aligned uint8 crops in; albedo UV, illumination UV, coefficients, re-renders out.

    python scripts/export_savedmodel.py --regressor_weights prior.weights.h5 --checkpoint runs/paper
    # -> saved_models/tf_facetex/<next version>/  (TF Serving: --model_base_path=$PWD/saved_models/tf_facetex)

Signatures ``serving_default`` (images uint8 [B, 224, 224, 3] of ALIGNED crops) and ``refine`` (the refinement
network alone); outputs and a REST example are in docs/SERVING.md. The servable uses the regressor prior (a
signature has no landmarks for the per-image fit) and the refinement network. Missing weights are replaced by a
random initialisation with a loud warning (useful to test serving plumbing; the results mean nothing) and recorded
in ``<version>/assets.extra/export_info.json``; --strict refuses instead.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "saved_models", "Base folder; the model goes to <output_dir>/<name>/<version>/.")
flags.DEFINE_string("name", "tf_facetex", "Model name (TF Serving's --model_name).")
flags.DEFINE_integer("version", None, "Version number (default: one above the largest existing).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --version.")
flags.DEFINE_string("face_model", None, "Face model: .npz, ICT-FaceKit folder/archive or BFM_model_front.mat. "
                    "Default: $TF_FACETEX_FACE_MODEL, then the cached/shared ICT-FaceKit (see README, Assets).")
flags.DEFINE_string("regressor_weights", None, "PriorRegressor weights (.weights.h5, with --regressor_backbone). None: "
                    "the shipped saved_models/prior_regressor/ (random init with a warning only when it is absent).")
flags.DEFINE_string("regressor_backbone", "resnet50", "Regressor backbone: resnet50 (Deng et al.), compact, mobilenetv2, "
                    "or tiny (tests only).")
flags.DEFINE_string("checkpoint", None, "Refinement network: a shipped network folder, a scripts/train.py run folder, "
                    "its checkpoints/ folder or a checkpoint prefix. None: the shipped saved_models/refinement_net/ "
                    "(random init with a warning only when it is absent).")
flags.DEFINE_enum("net_preset", "paper", ["paper", "small", "cpu"], "Network architecture without --checkpoint.")
flags.DEFINE_integer("uv_size", None, "UV size (default: the checkpoint's, else 256).")
flags.DEFINE_bool("strict", False, "Refuse to export random weights (no --regressor_weights or --checkpoint).")
flags.DEFINE_bool("verify", True, "Reload the export with tf.saved_model.load and run both signatures once.")


def warn(message):
    import sys

    bar = "!" * 100
    print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from tf_facetex.errors import FaceTexError
    from tf_facetex.export import serving
    from tf_facetex.face_model import load_face_model
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.refinement.checkpoint import load_refinement_net, shipped_refinement_net_or_none
    from tf_facetex.prior.regressor import resolve_regressor, shipped_regressor_or_none

    checkpoint = FLAGS.checkpoint or shipped_refinement_net_or_none()
    untrained = [part for part, given in (("regressor", FLAGS.regressor_weights or shipped_regressor_or_none()),
                                          ("refinement", checkpoint)) if not given]
    if untrained and FLAGS.strict:
        raise FaceTexError(f"--strict: no trained weights for {' and '.join(untrained)} (--regressor_weights, "
                           "--checkpoint)")
    model = load_face_model(FLAGS.face_model)
    regressor, regressor_source = resolve_regressor(model, FLAGS.regressor_weights, FLAGS.regressor_backbone)
    if regressor_source is None:
        warn("no --regressor_weights: the prior regressor is RANDOMLY INITIALISED (its zero head predicts the mean "
             "face, frontal, ambient light, for every image). Use only to test serving plumbing.")
    if checkpoint:
        net, info = load_refinement_net(checkpoint)
        if FLAGS.uv_size and FLAGS.uv_size != info["uv_size"]:
            raise FaceTexError(f"--uv_size {FLAGS.uv_size} but the checkpoint was trained at {info['uv_size']}")
        uv_size = info["uv_size"]
    else:
        uv_size = FLAGS.uv_size or 256
        net = build_refinement_net(FLAGS.net_preset, uv_size=uv_size)
        warn(f"no --checkpoint: the refinement network ({FLAGS.net_preset}, {net.count_params():,} parameters) is "
             "RANDOMLY INITIALISED; its albedo and illumination outputs are meaningless. Use only to test serving "
             "plumbing.")
    info = {"face_model": {"name": model.name, "source": model.source},
            "regressor": {"backbone": regressor.backbone_name, "weights": regressor_source or "RANDOM INIT"},
            "refinement": {"checkpoint": str(checkpoint) if checkpoint else "RANDOM INIT",
                           "config": {k: v for k, v in net.get_config().items()
                                      if k not in ("name", "trainable", "dtype")}},
            "untrained": untrained}
    module = serving.FaceTexServing(model, regressor, net, uv_size, info=info, name=FLAGS.name)
    print(f"[export] tracing and saving (face model {model.name}, UV {uv_size}, "
          f"{module.layout.size} coefficients) ...")
    path = serving.save_servable(module, FLAGS.output_dir, FLAGS.name, FLAGS.version, FLAGS.overwrite)
    print(f"[export] wrote {path}")
    if FLAGS.verify:
        loaded = serving.load_servable(path)
        out = loaded.signatures["serving_default"](images=tf.zeros([1, 224, 224, 3], tf.uint8))
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(out.items()))
        s = uv_size
        refined = loaded.signatures["refine"](texture_uv=tf.zeros([1, s, s, 3]), visibility_uv=tf.zeros([1, s, s, 1]),
                                              prior_albedo_uv=tf.zeros([1, s, s, 3]), gamma=tf.zeros([1, 27]),
                                              normals_uv=tf.zeros([1, s, s, 3]))
        print(f"[export] reloaded and ran serving_default: {shapes}; refine: "
              + ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(refined.items())))
    print(f"[export] inspect: saved_model_cli show --all --dir {path}")
    print(f"[export] serve:   tensorflow_model_server --rest_api_port=8501 --model_name={FLAGS.name} "
          f"--model_base_path={path.parent.resolve()}")


if __name__ == "__main__":
    cli.run(main)
