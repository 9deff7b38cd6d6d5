"""Writes toy-world refinement samples (no rasteriser needed) as train/eval TFRecord shards.

  python scripts/make_toy_samples.py --out=outputs/toy64 --n=240
  python scripts/make_toy_samples.py --out=outputs/toy256 --n=64 --image_size=224 --uv_size=256

The toy world (tf_facetex/refinement/toy_data.py) is a cylinder-and-dome head with a ground-truth albedo (smooth
skin, brows/eyes/lips, freckles), a random SH light times a soft cast shadow, and an image rendered by the same
lookup the trainer uses; the samples carry albedo_gt_uv and irradiance_gt_uv for albedo-error evaluation. Writes
<out>/train-*.tfrecord and <out>/eval-*.tfrecord (--eval_fraction of --n, the paper's 85/15 by default).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_integer("n", 240, "Number of samples (train + eval).")
flags.DEFINE_float("eval_fraction", 0.15, "Share of the samples written as eval shards.")
flags.DEFINE_integer("image_size", 64, "Image side H.")
flags.DEFINE_integer("uv_size", 64, "UV map side S (a multiple of 16 for the refinement network).")
flags.DEFINE_integer("num_shards", 4, "Train shards (eval gets a quarter of them, at least one).")
flags.DEFINE_float("max_yaw", 0.6, "Largest head yaw in radians (beyond ~0.17 part of the face is unseen).")
flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    if FLAGS.n < 1 or FLAGS.image_size < 8 or FLAGS.uv_size < 8:
        raise app.UsageError("need --n >= 1, --image_size >= 8 and --uv_size >= 8")
    from tf_facetex.refinement.toy_data import write_toy_dataset

    result = write_toy_dataset(FLAGS.out, FLAGS.n, FLAGS.eval_fraction, FLAGS.image_size, FLAGS.uv_size,
                               FLAGS.num_shards, FLAGS.seed, FLAGS.max_yaw)
    print(f"wrote {result['num_train']} train samples to {result['train']}"
          + (f" and {result['num_eval']} eval samples to {result['eval']}" if result["num_eval"] else ""))


if __name__ == "__main__":
    cli.run(main)
