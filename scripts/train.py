"""Trains the detail refinement module (paper sections 5-6) on refinement-sample shards.

  python scripts/train.py --flagfile=configs/refine_paper.cfg --model_dir=runs/paper
      --train_data='data/refine/train-*.tfrecord' --eval_data='data/refine/eval-*.tfrecord'   (one command)
  python scripts/train.py --flagfile=configs/refine_paper.cfg --model_dir=runs/paper --resume   # after a kill

  # CPU smoke run on toy data (about a minute or two):
  python scripts/make_toy_samples.py --out=outputs/toy64 --n=240
  python scripts/train.py --flagfile=configs/refine_smoke.cfg

Watch it with `tensorboard --logdir=<model_dir>`: loss/* (every unweighted term, the weighted total, D's loss),
train/* (learning rate, epoch, prior-L1 weight, speed), eval/* and images/train (input | R(A',L') | R(A',L) | A' |
shading of L' | T). The same scalars are appended to <model_dir>/metrics.jsonl.

Checkpoints (nets, both optimisers, step, epoch) go to <model_dir>/checkpoints every --checkpoint_every steps, at
the end, and on SIGTERM or Ctrl-C (then the run saves the step it is at and exits with status 143, or 130 for
Ctrl-C; --resume continues exactly there; a second Ctrl-C stops at once). A NaN/Inf loss stops the run with an
error and saves nothing, so the newest checkpoint is always finite.

Multi-worker: every worker runs the same command with --strategy=multi_worker and its own TF_CONFIG, e.g.
  TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
Worker 0 writes checkpoints and summaries; each worker reads its own subset of the shards.
"""
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
TERM_FLAGS = ("illumination", "cross_perceptual", "symmetry", "smoothness", "prior_l1", "gan", "image_gradient",
              "image")

# Data and run folder.
flags.DEFINE_string("train_data", None,
                    "Refinement-sample TFRecord shards (glob), e.g. 'data/refine/train-*.tfrecord'; several "
                    "comma-separated globs train on their union (e.g. real and synthetic samples).")
flags.DEFINE_string("eval_data", "", "Held-out shards (glob) for the evaluation metrics; empty = none.")
flags.DEFINE_string("eval_gt_data", "", "A second held-out set with ground-truth albedo (synthetic-face samples, glob): "
                    "albedo si-RMSE and re-render metrics at every evaluation, logged as eval_gt/*; empty = none.")
flags.DEFINE_string("model_dir", None, "Run folder: checkpoints/, tensorboard/, metrics.jsonl, run_config.json.")
flags.DEFINE_bool("resume", False, "Continue from the newest checkpoint in --model_dir (same settings).")
flags.DEFINE_string("init_weights", "", "A new run's refinement network starts from these weights: a shipped "
                    "folder (e.g. saved_models/refinement_net, to continue the shipped training), a run folder or a "
                    "checkpoint; optimisers start afresh. Ignored by --resume (the checkpoint wins).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "tf.distribute strategy: one device, all local devices, or several workers (reads TF_CONFIG).")
# Model.
flags.DEFINE_enum("net", "paper", ["paper", "small", "cpu"], "RefinementNet preset: the authors' UVNet (~35.6 M), "
                  "'cpu' (the shipped network: 128^2 UV, 24 base filters, 4 residual blocks, outputs = corrections "
                  "of the prior albedo and light) or 'small' (1.05 M, smoke runs).")
flags.DEFINE_enum("net_outputs", "", ["", "absolute", "residual"], "Override the preset's output mode: 'absolute' "
                  "(A', L' from the decoders alone, the paper's) or 'residual' (corrections of the prior albedo and the "
                  "coarse light); empty = the preset's.")
flags.DEFINE_integer("net_light_resolution", -1, "Override the preset's light_resolution (residual outputs: the "
                     "light correction averaged to this grid and upsampled; 0 = full resolution); -1 = the preset's.")
flags.DEFINE_integer("discriminator_ndf", 64, "Filters of the PatchGAN discriminator's first layer (pix2pix 64).")
flags.DEFINE_bool("white_prior", False, "Fig. 5 ablation: feed a white map instead of the prior albedo.")
flags.DEFINE_string("face_model", "", "Face model for the UV mask and texel symmetry: 'default' (the model "
                    "load_face_model finds, e.g. the cached ICT-FaceKit), a model path (.npz, ICT folder, BFM .mat), "
                    "'toy' (the toy world's chart), or empty/'none' (all-ones mask: toy data only).")
flags.DEFINE_enum("identity", "none", ["none", "dlib", "arcface", "toy"],
                  "Identity network of the cross-perceptual loss: dlib's ResNet, ArcFace (--identity_weights), 'toy' "
                  "(a lighting-robust detail descriptor for toy data), or 'none' (the term is left out).")
flags.DEFINE_string("identity_weights", "", "Weights file of --identity=arcface (deepface's arcface_weights.h5).")
# Losses.
flags.DEFINE_enum("loss_preset", "paper", ["paper", "authors"],
                  "Loss weights and forms: the paper's (section 6) or the authors' released config.")
flags.DEFINE_list("loss_weights", [], "Weights overriding the preset's, as term=value pairs, e.g. "
                  "'illumination=5,smoothness=1' (terms: " + ", ".join(TERM_FLAGS) + ").")
for _term in TERM_FLAGS:
    flags.DEFINE_bool(f"use_{_term}", True, f"Ablation switch: --nouse_{_term} drops the {_term} term.")
flags.DEFINE_enum("symmetry_form", "", ["", "fit"], "Form of the symmetry term: '' = the loss preset's (uniform), "
                  "'fit' = the per-image fit's (the mirror fills what the photo did not show; seen pairs pull by a "
                  "saturating L1; refinement.fit.UVFitConfig).")
flags.DEFINE_enum("illumination_mask", "uv", ["uv", "visibility"],
                  "Mask of the illumination regulariser: the UV chart (authors) or the visible texels (paper eq. 1).")
# Schedule (the paper: Adam 1e-4, x0.98 per epoch down to 1e-5, batch 16, 10 epochs).
flags.DEFINE_integer("batch_size", 16, "Global batch size (over all replicas).")
flags.DEFINE_integer("epochs", 10, "Epochs (when --max_steps is 0).")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0 = train samples // batch size (counts the shards).")
flags.DEFINE_integer("max_steps", 0, "Stop at this global step; 0 = epochs * steps_per_epoch.")
flags.DEFINE_float("learning_rate", 1e-4, "Initial Adam learning rate of the generator.")
flags.DEFINE_float("lr_decay", 0.98, "Learning-rate factor per epoch.")
flags.DEFINE_float("lr_floor", 1e-5, "Lowest learning rate.")
flags.DEFINE_float("d_learning_rate", 0.0, "Initial rate of the discriminator's own Adam; 0 = --learning_rate.")
flags.DEFINE_float("beta_1", 0.9, "Adam beta_1 (the paper's momentum 0.9).")
flags.DEFINE_float("beta_2", 0.999, "Adam beta_2.")
flags.DEFINE_float("clip_norm", 0.0, "Clip each optimiser's gradients to this global norm; 0 = off.")
# Logging, checkpoints, evaluation.
flags.DEFINE_integer("log_every", 50, "Steps between scalar summaries.")
flags.DEFINE_integer("image_every", 500, "Steps between image grids; 0 = only at the end.")
flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints (also saved at the end and on SIGTERM).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept on disk.")
flags.DEFINE_integer("eval_every", 0, "Steps between evaluations on --eval_data; 0 = only at the end.")
flags.DEFINE_integer("eval_batches", 20, "Batches per evaluation; 0 = the whole eval set.")
flags.DEFINE_integer("shuffle_buffer", 256, "Shuffle buffer (samples).")
flags.DEFINE_integer("seed", 0, "Seed of the data order and the network initialisation.")
flags.DEFINE_bool("progress", True, "Show a progress bar with the current losses.")
flags.DEFINE_integer("poison_step", 0, "Testing the NaN guard: the batch of this step gets a NaN image; 0 = off.")


def parse_weights(pairs):
    """['term=value', ...] -> {term: float}; ValueError names the bad pair."""
    return cli.parse_name_values(pairs, TERM_FLAGS, "term")


cli.register_name_values_validator("loss_weights", TERM_FLAGS, "term")


def config_from_flags():
    """`TrainConfig` from the flags of the same names (--net, --batch_size renamed; defaults checked against the
    config's)."""
    from tf_facetex.refinement.train import TrainConfig

    disabled = tuple(term for term in TERM_FLAGS if not FLAGS[f"use_{term}"].value)
    net_overrides = {"outputs": FLAGS.net_outputs} if FLAGS.net_outputs else {}
    if FLAGS.net_light_resolution >= 0:
        net_overrides["light_resolution"] = FLAGS.net_light_resolution
    return cli.config_from_flags(TrainConfig, FLAGS, renamed={"net_preset": "net", "global_batch_size": "batch_size"},
                                 weight_overrides=parse_weights(FLAGS.loss_weights), disabled_terms=disabled,
                                 net_overrides=net_overrides)


# (low, high, low_open, high_open) of the numeric flags; NaN/Inf are refused for every float flag (cli.run).
FLAG_RANGES = {"learning_rate": (0.0, None, True, False), "lr_decay": (0.0, 1.0, True, False),
               "lr_floor": (0.0, None, False, False), "d_learning_rate": (0.0, None, False, False),
               "beta_1": (0.0, 1.0, False, True), "beta_2": (0.0, 1.0, False, True),
               "clip_norm": (0.0, None, False, False)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from tf_facetex.errors import FaceTexError

    cli.check_ranges(FLAG_RANGES)
    negative = {term: value for term, value in parse_weights(FLAGS.loss_weights).items() if value < 0}
    if negative:
        raise FaceTexError(f"--loss_weights: weights must be >= 0, got {negative} (0 drops a term)")
    config = config_from_flags()
    import keras
    from absl import logging

    if not FLAGS.verbose:
        logging.set_verbosity(logging.WARNING)  # TF's checkpoint code logs every save at INFO

    from tf_facetex.training.distribute import make_strategy
    from tf_facetex.refinement.train import train

    strategy = make_strategy(config.strategy)  # before any other TensorFlow work (multi-worker needs that)
    keras.utils.set_random_seed(config.seed)
    result = train(config, strategy=strategy)
    if result.interrupted:
        # 128 + the signal (143 for SIGTERM, 130 for Ctrl-C): a scheduler sees the run did not finish; --resume
        # continues it from the checkpoint just saved.
        sys.exit(128 + signal.Signals[result.stop_signal].value)


if __name__ == "__main__":
    cli.run(main)
