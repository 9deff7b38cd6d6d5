"""Input throughput: per-photo preprocessing (decode + detect + align + mask) and the TFRecord pipeline.

  python scripts/bench_input.py --json

Prints ONE JSON object on stdout (logs go to stderr):
  preprocess_images_per_s   photos/s through FacePreprocessor (1 process; scale with --num_workers
                            of scripts/preprocess.py)
  pipeline_images_per_s     faces/s out of make_dataset (training mode: shuffle, decode, batch)
plus the settings used. Photos come from --photos_dir (default: ../shared/faces CelebAMask-HQ
images when present, else scikit-image's astronaut repeated).
"""
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_boolean("json", True, "Print the result as one JSON object (the only output on stdout).")
flags.DEFINE_string("photos_dir", None, "Folder of photos to preprocess (default: shared CelebAMask-HQ images).")
flags.DEFINE_integer("num_photos", 24, "Photos timed through the per-image preprocessing.")
flags.DEFINE_integer("num_records", 512, "Records written for the pipeline benchmark (faces repeated).")
flags.DEFINE_integer("num_shards", 4, "Shards the benchmark records are split into.")
flags.DEFINE_integer("batch_size", 16, "Pipeline batch size.")
flags.DEFINE_integer("num_batches", 40, "Batches timed (after 3 warm-up batches).")
flags.DEFINE_integer("threads", 2, "CPU threads TensorFlow may use (the machine is shared).")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Crop encoding in the benchmark records.")


def _photos():
    """(name, encoded bytes) pairs to preprocess."""
    from tf_facetex import paths
    from tf_facetex.data.datasets import list_image_files
    folder = FLAGS.photos_dir
    if folder is None and paths.faces_dir() is not None:
        folder = paths.faces_dir() / "celebamask_hq_mini" / "train" / "images"
    if folder is not None and os.path.isdir(folder):
        files = list_image_files(folder)[:FLAGS.num_photos]
        return str(folder), [(str(f), f.read_bytes()) for f in files]
    import skimage.data

    from tf_facetex.data.images import encode_jpeg
    data = encode_jpeg(skimage.data.astronaut())
    return "skimage.data.astronaut", [(f"astronaut_{i}", data) for i in range(FLAGS.num_photos)]


def bench_preprocess(photos):
    """-> (photos/s, aligned faces) over decode + detect + align + mask, one process."""
    from tf_facetex.data.align import FacePreprocessor
    from tf_facetex.errors import ImageError
    preprocessor = FacePreprocessor()
    preprocessor.from_bytes(photos[0][1], photos[0][0])  # warm-up: dlib models, caches
    faces, failed = [], 0
    start = time.perf_counter()
    for name, data in photos:
        try:
            faces += preprocessor.from_bytes(data, name)
        except ImageError:
            failed += 1
    elapsed = time.perf_counter() - start
    return len(photos) / elapsed, faces, failed


def bench_pipeline(faces, workdir):
    """-> faces/s out of make_dataset over freshly written shards."""
    from tf_facetex.data import tfrecords
    records = [tfrecords.encode_example(face, f"bench_{i}", f"{i:040x}", "train", FLAGS.image_format)
               for i, face in enumerate(faces)]
    per_shard = [[] for _ in range(FLAGS.num_shards)]
    for i in range(FLAGS.num_records):
        per_shard[i % FLAGS.num_shards].append(records[i % len(records)])
    for index, shard in enumerate(per_shard):
        tfrecords.write_records_atomic(os.path.join(workdir, f"train-{index:05d}.tfrecord"), shard)
    dataset = tfrecords.make_dataset(os.path.join(workdir, "train-*.tfrecord"), FLAGS.batch_size, training=True)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.num_batches):
        batch = next(iterator)
    _ = batch["image"].numpy()
    elapsed = time.perf_counter() - start
    return FLAGS.num_batches * FLAGS.batch_size / elapsed


def main(argv):
    del argv
    import cv2
    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    cv2.setNumThreads(FLAGS.threads)
    source, photos = _photos()
    print(f"[bench_input] preprocessing {len(photos)} photos from {source}", file=sys.stderr)
    preprocess_rate, faces, failed = bench_preprocess(photos)
    if not faces:
        print("[bench_input] error: no face found in any photo", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench_input_") as workdir:
        print(f"[bench_input] pipeline over {FLAGS.num_records} records", file=sys.stderr)
        pipeline_rate = bench_pipeline(faces, workdir)
    result = {
        "preprocess_images_per_s": round(preprocess_rate, 2),
        "pipeline_images_per_s": round(pipeline_rate, 1),
        "photos": len(photos), "photos_without_face": failed, "photos_source": source,
        "records": FLAGS.num_records, "batch_size": FLAGS.batch_size, "image_format": FLAGS.image_format,
        "threads": FLAGS.threads, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result) if FLAGS.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
