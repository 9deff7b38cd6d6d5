"""Photos -> aligned 224 face crops with 68 landmarks and face masks, as TFRecord shards.

  python scripts/preprocess.py --input_dir=photos/ --output_dir=data/faces
  python scripts/preprocess.py --flagfile=configs/preprocess_example.cfg

Each photo is decoded (EXIF orientation, any colour mode), its faces detected (dlib HOG, 68
landmarks), aligned to Deng et al.'s 224 crop and masked; one tf.train.Example per face
(format: tf_facetex/data/records.py). Photos that cannot be used (corrupt, too small, no
face, ...) are skipped with a one-line reason; the run goes on and lists them at the end and in
the summary JSON. Byte-identical duplicates are processed once.

Large datasets on many machines: all machines use the same --num_shards; each runs its own
--shard_index list (e.g. machine k of M: shards k, k+M, ...). Photos go to shards by content hash,
so every machine agrees without talking to the others. Re-running skips finished shards and
resumes unfinished ones after the last photo done; files appear under their final names only when
complete (temp + rename).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("input_dir", None, "Folder of photos (searched recursively for .jpg/.jpeg/.png/.webp/.bmp); "
                          "repeat the flag for several folders. With --dataset=celeba: the CelebA root folder.")
flags.DEFINE_string("output_dir", None, "Where the shards, manifest.json and summary JSON are written.")
flags.DEFINE_enum("dataset", "folder", ["folder", "celeba"],
                  "Input layout: 'folder' = any images, train/test split by content hash; 'celeba' = "
                  "img_align_celeba/ + list_eval_partition.txt + list_landmarks_align_celeba.txt.")
flags.DEFINE_integer("num_shards", 16, "Total number of shards of the whole dataset (the same on every machine).")
flags.DEFINE_list("shard_index", [], "Shards this run processes (comma-separated, e.g. 0,4,8); empty = all shards.")
flags.DEFINE_float("test_fraction", 0.15, "Share of photos in the test split (the paper's 85/15); 0 = all train.")
flags.DEFINE_integer("split_seed", 0, "Seed of the train/test split (folder: hash salt; celeba: permutation seed).")
flags.DEFINE_enum("celeba_split", "paper", ["paper", "official"],
                  "CelebA split: 'paper' = random 85/15 by --split_seed; 'official' = list_eval_partition.txt.")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Encoding of the crops: png (lossless) or jpeg (smaller).")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality when --image_format=jpeg.")
flags.DEFINE_integer("crop_size", 224, "Side of the aligned crop in pixels (224 = Deng et al.).")
flags.DEFINE_boolean("allow_rotation", True, "Align with a full similarity (removes head roll); "
                     "--noallow_rotation uses Deng's scale + translation only.")
flags.DEFINE_boolean("all_faces", False, "Write every face of a photo (largest first), not only the largest.")
flags.DEFINE_enum("detector", "hog", ["hog", "cnn", "auto"], "dlib face detector: hog (fast; the default, so that "
                  "datasets made before 'auto' existed resume), cnn (MMOD; slower, finds more rotated/small/dark "
                  "faces) or auto (HOG, then the CNN when HOG finds nothing; scripts/reconstruct.py's default).")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"],
                  "Face mask: 'parsing' = the small face-parsing network (scripts/train_parsing_net.py; falls back "
                  "to 'skin' with a log line when its weights are missing); 'skin' = landmark region x per-image "
                  "skin colour model; 'hull' = landmark region only.")
flags.DEFINE_string("parsing_weights", None, "Parsing-network weights (default: $TF_FACETEX_PARSING_NET or "
                    "saved_models/parsing_net/parsing_net.keras).")
flags.DEFINE_integer("max_detect_side", 1024, "Photos larger than this (longer side, px) are downscaled for detection.")
flags.DEFINE_integer("min_side", 32, "Refuse photos smaller than this on either side (px).")
flags.DEFINE_integer("max_megapixels", 50, "Refuse photos whose header claims more megapixels (checked before decoding).")
flags.DEFINE_integer("num_workers", 1, "Worker processes for decoding/detection (each loads dlib's models, ~100 MB).")
flags.DEFINE_boolean("overwrite", False, "Redo the selected shards even if finished (deletes their old files).")
flags.DEFINE_string("summary_json", None, "Where to write this run's summary (default: <output_dir>/summary.json).")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")


def main(argv):
    del argv
    from tf_facetex.data import tfrecords
    from tf_facetex.errors import FaceTexError
    try:
        if not FLAGS.input_dir or not FLAGS.output_dir:
            raise FaceTexError("--input_dir and --output_dir are required (see --help)")
        config = tfrecords.PreprocessConfig(
            input_dirs=FLAGS.input_dir, output_dir=FLAGS.output_dir, dataset=FLAGS.dataset,
            num_shards=FLAGS.num_shards, shard_indices=[_int(v) for v in FLAGS.shard_index] or None,
            test_fraction=FLAGS.test_fraction, split_seed=FLAGS.split_seed, celeba_split=FLAGS.celeba_split,
            image_format=FLAGS.image_format, jpeg_quality=FLAGS.jpeg_quality, crop_size=FLAGS.crop_size,
            allow_rotation=FLAGS.allow_rotation, all_faces=FLAGS.all_faces, detector=FLAGS.detector,
            masker=FLAGS.masker, parsing_weights=FLAGS.parsing_weights, max_detect_side=FLAGS.max_detect_side, min_side=FLAGS.min_side,
            max_pixels=FLAGS.max_megapixels * 1_000_000, num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite,
            progress=FLAGS.progress, verbose=FLAGS.verbose)
        summary = tfrecords.run_preprocess(config, log=lambda msg: print(msg, file=sys.stderr))
        summary_path = FLAGS.summary_json or os.path.join(FLAGS.output_dir, "summary.json")
        io_utils.write_json(summary_path, summary)
        print(tfrecords.format_summary(summary), file=sys.stderr)
        print(f"[preprocess] summary: {summary_path}", file=sys.stderr)
    except KeyboardInterrupt:
        raise FaceTexError("interrupted; re-run the same command to resume") from None


def _int(value: str) -> int:
    from tf_facetex.errors import FaceTexError
    try:
        return int(value)
    except ValueError:
        raise FaceTexError(f"--shard_index: {value!r} is not an integer") from None


if __name__ == "__main__":
    cli.run(main)
