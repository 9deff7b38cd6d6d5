"""Trains the prior regressor (image -> morphable-model coefficients) self-supervised, as Deng et al. 2019.

  python scripts/train_prior.py --flagfile=configs/prior_smoke.cfg              # CPU smoke run, a few minutes
  python scripts/train_prior.py --flagfile=configs/prior_synthetic.cfg          # a few thousand synthetic faces
  python scripts/train_prior.py --flagfile=configs/prior_synthetic.cfg --resume # after a kill
  python scripts/train_prior.py --train_data='data/faces/train-*.tfrecord' --eval_data='data/faces/test-*.tfrecord'
      --model_dir=runs/prior --backbone=resnet50 --identity=dlib                 # real photos (data pipeline)

Data: any data-pipeline TFRecords (scripts/preprocess.py: aligned crops, 68 landmarks, face mask), or, with no
--train_data, --synthetic_count synthetic faces written once under --synthetic_dir (default <model_dir>/synthetic).
Losses (tf_facetex/prior/losses.py): photometric (per-pixel L2 norm on the face mask x rendered face), 68-landmark,
identity-perceptual (--identity=dlib|arcface; slow on CPU, off by default), coefficient and light regularisers,
reflectance (skipped when the face model has no albedo basis, e.g. ICT-FaceKit) and an optional pseudo-label term
(--pseudo_labels=dataset uses the records' coefficients, e.g. fits written by a fitting run; 'fit' runs the landmark
fit on every batch).

Outputs in --model_dir: checkpoints/ (regressor, optimiser, step; every --checkpoint_every steps, at the end, and on
SIGTERM / Ctrl-C -> exit status 143 / 130, continue with --resume), regressor.weights.h5 (for
`tf_facetex.prior.regressor.load_regressor` and --regressor_weights), tensorboard/ (loss/*, train/*, eval/*,
images/train: input | render | render over input | landmarks), metrics.jsonl, run_config.json. With
--results_json the held-out set is evaluated against the mean face at the end (landmark px at 224, shape RMSE in
mm, coefficient errors, skin-mask PSNR).
"""
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
WEIGHT_NAMES = ("photometric", "landmark", "identity", "coefficients", "gamma", "reflectance", "pseudo_label",
                "w_id", "w_exp", "w_tex")

# Data and run folder.
flags.DEFINE_string("train_data", "", "Data-pipeline TFRecords (glob); empty = synthetic faces (--synthetic_count).")
flags.DEFINE_string("eval_data", "", "Held-out TFRecords (glob); empty = the synthetic test split, or none.")
flags.DEFINE_string("model_dir", None, "Run folder: checkpoints/, tensorboard/, metrics.jsonl, regressor.weights.h5.")
flags.DEFINE_bool("resume", False, "Continue from the newest checkpoint in --model_dir (same settings).")
flags.DEFINE_integer("synthetic_count", 0, "Synthetic faces to write and train on when --train_data is empty.")
flags.DEFINE_string("synthetic_dir", "", "Where they go (reused when it already has TFRecords); default "
                    "<model_dir>/synthetic.")
flags.DEFINE_integer("synthetic_uv_size", 64, "UV size of the synthetic faces' painted albedo.")
flags.DEFINE_integer("synthetic_seed", 0, "Seed of the synthetic faces.")
# Model.
flags.DEFINE_string("face_model", "default", "Face model: 'default' (see README, e.g. the cached ICT-FaceKit), a path "
                    "(.npz, ICT folder, BFM .mat), or 'procedural' (the tiny test model).")
flags.DEFINE_enum("backbone", "resnet50", ["resnet50", "mobilenetv2", "compact", "tiny"],
                  "Regressor backbone: resnet50 (Deng et al.; GPU), compact (CPU-sized, keeps spatial features), "
                  "mobilenetv2, tiny (smoke tests).")
flags.DEFINE_string("backbone_weights", "", "Optional backbone weights file (e.g. ImageNet ResNet-50 .h5).")
flags.DEFINE_integer("image_size", 0, "Crop size; 0 = the data's. Must match the data.")
flags.DEFINE_integer("render_size", 0, "Render size of the photometric term; 0 = the crop size.")
# Losses.
flags.DEFINE_list("loss_weights", [], "term=value pairs over Deng et al.'s weights (photometric 1.92, landmark "
                  "1.6e-3, identity 0.2, coefficients 3e-4, gamma 10, reflectance 5, pseudo_label 0; inner w_id 1, "
                  "w_exp 0.8, w_tex 0.017). Names: " + ", ".join(WEIGHT_NAMES) + ".")
flags.DEFINE_enum("identity", "none", ["none", "dlib", "arcface"],
                  "Identity-perceptual term: dlib's face-recognition ResNet, ArcFace (--identity_weights) or none.")
flags.DEFINE_string("identity_weights", "", "Weights of --identity=arcface (deepface's arcface_weights.h5).")
flags.DEFINE_enum("pseudo_labels", "none", ["none", "dataset", "fit"],
                  "Pseudo-label term: the records' coefficients ('dataset'), a landmark fit per batch ('fit'), or none. "
                  "Its weight is --loss_weights=pseudo_label=W (default 0: set it).")
flags.DEFINE_list("pseudo_parts", ["id", "exp", "angles"], "Coefficient parts the pseudo-label term compares (id, exp, "
                  "tex, angles, gamma, translation; id and exp as the face mesh). Translation is left out by default: "
                  "a landmark fit's depth is unreliable.")
flags.DEFINE_integer("pseudo_fit_steps", 100, "Adam steps of the per-batch landmark fit (--pseudo_labels=fit).")
# Schedule.
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("epochs", 10, "Epochs (when --max_steps is 0).")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0 = train records // batch size.")
flags.DEFINE_integer("max_steps", 0, "Stop at this step; 0 = epochs * steps_per_epoch.")
flags.DEFINE_float("learning_rate", 1e-4, "Initial Adam learning rate (Deng et al.: 1e-4).")
flags.DEFINE_float("lr_decay", 0.98, "Learning-rate factor per epoch.")
flags.DEFINE_float("lr_floor", 1e-5, "Lowest learning rate.")
flags.DEFINE_float("clip_norm", 0.0, "Clip gradients to this global norm; 0 = off.")
# Logging, checkpoints, evaluation.
flags.DEFINE_integer("log_every", 50, "Steps between scalar summaries.")
flags.DEFINE_integer("image_every", 500, "Steps between image grids; 0 = only at the end.")
flags.DEFINE_integer("checkpoint_every", 500, "Steps between checkpoints (also at the end and on SIGTERM).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("eval_every", 0, "Steps between evaluations; 0 = only at the end.")
flags.DEFINE_integer("eval_batches", 10, "Batches per in-training evaluation; 0 = the whole eval set.")
flags.DEFINE_string("results_json", "", "At the end, evaluate the whole eval set against the mean face and write "
                    "the figures here (e.g. docs/results/prior_training.json).")
flags.DEFINE_bool("evaluate_only", False, "Do not train: evaluate the newest checkpoint in --model_dir against the "
                  "mean face on --eval_data (default: the run's) and write --results_json.")
flags.DEFINE_integer("eval_render_size", 0, "Render size of --evaluate_only's photometric metric; 0 = the crop size.")
flags.DEFINE_bool("jit_render", True, "XLA-compile the renderer's fixed-shape stages (faster steps, slower start).")
flags.DEFINE_integer("shuffle_buffer", 256, "Shuffle buffer (records).")
flags.DEFINE_integer("seed", 0, "Seed of the data order and the initialisation.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_integer("poison_step", 0, "Testing the NaN guard: this step's batch gets a NaN image; 0 = off.")


def parse_weights(pairs):
    """['name=value', ...] -> {name: float}; ValueError names the bad pair."""
    return cli.parse_name_values(pairs, WEIGHT_NAMES, "name")


cli.register_name_values_validator("loss_weights", WEIGHT_NAMES, "name")


def config_from_flags():
    """`PriorTrainConfig` from the flags of the same names (their defaults are checked against the config's)."""
    from tf_facetex.prior.train import PriorTrainConfig

    return cli.config_from_flags(PriorTrainConfig, FLAGS, weight_overrides=parse_weights(FLAGS.loss_weights))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    cli.check_ranges({"learning_rate": (0.0, None, True, False), "lr_decay": (0.0, 1.0, True, False),
                      "lr_floor": (0.0, None, False, False), "clip_norm": (0.0, None, False, False)})
    config = config_from_flags()
    import keras
    from absl import logging

    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)

    from tf_facetex.prior.train import evaluate_run, train_prior

    if FLAGS.evaluate_only:
        evaluate_run(config.model_dir, FLAGS.eval_data, FLAGS.results_json, FLAGS.eval_render_size or None,
                     batch_size=config.batch_size)
        return
    keras.utils.set_random_seed(config.seed)
    result = train_prior(config)
    if result.interrupted:
        sys.exit(128 + signal.Signals[result.stop_signal].value)


if __name__ == "__main__":
    flags.mark_flag_as_required("model_dir")
    cli.run(main)
