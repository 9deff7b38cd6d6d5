"""Trains the detector's second landmark model (``tf_facetex.data.landmark_net``) on CPU.

  nice -n 5 .venv/bin/python scripts/train_landmark_net.py \
      --synthetic_dirs /tmp/lmnet/train_a,/tmp/lmnet/train_b --validation_dirs /tmp/lmnet/tune_a,/tmp/lmnet/tune_b

Data (never an evaluation set of scripts/eval_detection.py):
- synthetic faces of scripts/make_synthetic.py (their true projected landmarks; seeds other than the
  evaluation's 777 and 7), the box derived from the 51 inner points (`landmark_net.box_from_landmarks`);
- CelebAMask-HQ-mini photos: the first ``--num_celebamask`` (700) by sorted name, i.e. inside the 800-photo
  training pool (the last 200 are the held-out test set and are never read here; photos 700-799 are the
  validation and threshold-tuning photos), labelled by dlib (HOG box + 68 points), kept only where the
  detected eye centres are within ``--label_max_eye_error`` inter-ocular distances of the eye labels.
- optionally (``--aflw_range``, fine-tuning from ``--init_weights``) AFLW2000-3D photos with their true 68 points
  (x, y of pt3d_68), the box derived from the inner points like the synthetic faces'; scripts/eval_landmarks.py
  reports on the first N by sorted name (all 1,000 of the shared copy by default), so train on a range after
  the photos it reports on (`--num_images 500` with `--aflw_range 500:950`).
Outputs in ``--out_dir``: landmark_net.weights.h5 and landmark_net.json (architecture, crop mapping, training
summary).
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils, paths  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("synthetic_dirs", [], "scripts/make_synthetic.py folders (images/, gt/) to train on.")
flags.DEFINE_list("validation_dirs", [], "scripts/make_synthetic.py folders for the validation loss.")
flags.DEFINE_string("celebamask_dir", None, "CelebAMask-HQ folder (default <shared>/faces/celebamask_hq_mini/train).")
flags.DEFINE_integer("num_celebamask", 700, "CelebAMask-HQ training photos: the first N by sorted name (<= 800).")
flags.DEFINE_integer("num_celebamask_val", 100, "CelebAMask-HQ validation photos: the next N (within the first 800).")
flags.DEFINE_float("label_max_eye_error", 0.08, "Drop CelebAMask-HQ photos whose dlib eye centres are further than "
                   "this (inter-ocular units) from the eye labels.")
flags.DEFINE_string("out_dir", "saved_models/landmark_net", "Where the weights and config go.")
flags.DEFINE_string("cache", "/tmp/landmark_net_samples.npz", "Cache of the prepared samples.")
flags.DEFINE_integer("steps", 5000, "Training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (cosine decay).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("procedural_negatives", 300, "Flat / noise / gradient / blob images without a face.")
flags.DEFINE_float("max_minutes", 60.0, "Stop once training passes this wall time (the CPU is shared).")
flags.DEFINE_string("aflw_dir", None, "AFLW2000-3D folder (*.jpg + *.mat; default <shared>/faces/aflw2000_3d).")
flags.DEFINE_string("aflw_range", "", "AFLW2000-3D training photos as FIRST:END of the sorted names (e.g. "
                    "1000:1900); empty: none.")
flags.DEFINE_string("aflw_val_range", "", "AFLW2000-3D validation photos, FIRST:END of the sorted names.")
flags.DEFINE_string("init_weights", None, "Start from these weights (fine-tuning), e.g. "
                    "saved_models/landmark_net/landmark_net.weights.h5.")


def _synthetic(folders, inner_to_box, rng):
    """(face samples, negative samples: a region of the background of each image)."""
    import pathlib

    import numpy as np

    from tf_facetex.data import landmark_net as lnet
    from tf_facetex.data import landmark_net_train as lt
    from tf_facetex.data.images import load_image

    rows, negatives = [], []
    for folder in folders:
        folder = pathlib.Path(folder)
        for path in sorted((folder / "images").glob("*.png")):
            truth = np.load(folder / "gt" / f"{path.stem}.npz")
            points = truth["landmarks"].astype(np.float32)
            image = load_image(str(path))
            rows.append(lt.make_sample(image, lnet.box_from_landmarks(points, inner_to_box), points))
            negative = lt.negative_sample(image, truth["proj_mask"][..., 0] > 0, rng)
            if negative is not None:
                negatives.append(negative)
    return _to_samples(rows, "synthetic"), _to_samples(negatives, "negative")


def _aflw(folder, index_range, inner_to_box):
    """Samples of the AFLW2000-3D photos ``index_range`` ('FIRST:END' of the sorted names) with their true points."""
    import pathlib

    from tf_facetex.data import landmark_net as lnet
    from tf_facetex.data import landmark_net_train as lt
    from tf_facetex.data.images import load_image
    from tf_facetex.evaluation import real_photos

    if not index_range:
        return _to_samples([], "aflw")
    first, end = (int(v) for v in index_range.split(":"))
    rows = []
    for path in sorted(pathlib.Path(folder).glob("*.jpg"))[first:end]:
        points = real_photos.load_aflw2000(path.with_suffix(".mat"))["landmarks"].astype("float32")
        rows.append(lt.make_sample(load_image(str(path)), lnet.box_from_landmarks(points, inner_to_box), points))
    return _to_samples(rows, "aflw")


def _to_samples(rows, kind):
    import numpy as np

    from tf_facetex.data import landmark_net_train as lt

    if not rows:
        return lt.Samples(np.zeros((0, lt.SOURCE_SIZE, lt.SOURCE_SIZE), np.uint8), np.zeros((0, 68, 2), np.float32),
                          np.zeros((0, 4), np.float32), np.zeros((0,), "<U16"))
    crops, points, boxes = (np.stack(c) for c in zip(*rows))
    return lt.Samples(crops, points, boxes, np.array([kind] * len(rows)))


def _celebamask(files, max_eye_error, rng):
    """(rows of make_sample, HOG boxes, dlib points) of the photos whose dlib eyes match their labels, and
    negative rows (two regions without face labels per photo)."""
    import numpy as np

    from tf_facetex.data import landmark_net_train as lt
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import NoFaceError
    from tf_facetex.evaluation import detection, real_photos

    from tf_facetex.data.masks import CELEBAMASK_FACE_CLASSES

    detector = FaceDetector("hog", exposure_retry=False, landmark_net=None)
    rows, boxes, points, negatives = [], [], [], []
    for path in files:
        image = load_image(str(path))
        labels = real_photos.load_celebamask_labels(str(path), image.shape)
        for _ in range(2):
            negative = lt.negative_sample(image, np.isin(labels, list(CELEBAMASK_FACE_CLASSES)), rng)
            if negative is not None:
                negatives.append(negative)
        try:
            face = detector.detect(image, name=str(path))[0]
        except NoFaceError:
            continue
        centres = []
        for label in (4, 5):
            ys, xs = np.nonzero(labels == label)
            if xs.size:
                centres.append([xs.mean(), ys.mean()])
        if len(centres) != 2 or detection.eye_nme(face.landmarks, centres) > max_eye_error:
            continue
        rows.append(lt.make_sample(image, face.box, face.landmarks))
        boxes.append(face.box)
        points.append(face.landmarks)
    return rows, np.array(boxes), np.array(points), negatives


def _inner_to_box(boxes, points):
    """Mean (dx, dy, width, height) of the HOG box relative to the inner points' box (`landmark_net`)."""
    import numpy as np

    inner = points[:, 17:68]
    lo, hi = inner.min(axis=1), inner.max(axis=1)
    size = hi - lo
    centre = 0.5 * (lo + hi)
    box_centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    box_size = boxes[:, 2:] - boxes[:, :2]
    values = np.concatenate([(box_centre - centre) / size, box_size / size], axis=1)
    return tuple(round(float(v), 4) for v in np.median(values, axis=0))


def main(argv):
    del argv
    import pathlib

    import numpy as np

    from tf_facetex.data import landmark_net as lnet
    from tf_facetex.data import landmark_net_train as lt
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import real_photos

    if not FLAGS.synthetic_dirs:
        raise FaceTexError("--synthetic_dirs is required")
    start = time.time()
    faces = paths.faces_dir()
    celeba_dir = pathlib.Path(FLAGS.celebamask_dir or (faces / "celebamask_hq_mini" / "train" if faces else ""))
    pool, _ = real_photos.heldout_split(real_photos.celebamask_files(celeba_dir))
    if FLAGS.num_celebamask + FLAGS.num_celebamask_val > len(pool):
        raise FaceTexError(f"--num_celebamask + --num_celebamask_val exceed the {len(pool)}-photo training pool")
    train_files = pool[:FLAGS.num_celebamask]
    val_files = pool[FLAGS.num_celebamask:FLAGS.num_celebamask + FLAGS.num_celebamask_val]

    print(f"[landmark_net] labelling {len(train_files)} + {len(val_files)} CelebAMask-HQ photos (dlib HOG)", flush=True)
    rng = np.random.default_rng(FLAGS.seed)
    celeb_rows, celeb_boxes, celeb_points, celeb_negatives = _celebamask(train_files, FLAGS.label_max_eye_error, rng)
    val_rows, _, _, val_negatives = _celebamask(val_files, FLAGS.label_max_eye_error, rng)
    inner_to_box = _inner_to_box(celeb_boxes, celeb_points)
    print(f"[landmark_net] {len(celeb_rows)} training / {len(val_rows)} validation photos kept; "
          f"inner box -> face box {inner_to_box}", flush=True)
    synthetic, synthetic_negatives = _synthetic(FLAGS.synthetic_dirs, inner_to_box, rng)
    aflw_dir = FLAGS.aflw_dir or (faces / "aflw2000_3d" if faces else None)
    if (FLAGS.aflw_range or FLAGS.aflw_val_range) and not (aflw_dir and pathlib.Path(aflw_dir).is_dir()):
        raise FaceTexError(f"--aflw_range: no AFLW2000-3D folder ({aflw_dir}); pass --aflw_dir")
    aflw, aflw_val = _aflw(aflw_dir, FLAGS.aflw_range, inner_to_box), _aflw(aflw_dir, FLAGS.aflw_val_range,
                                                                            inner_to_box)
    procedural = _to_samples([lt.procedural_negative(rng) for _ in range(FLAGS.procedural_negatives)], "negative")
    samples = lt.stack_samples([synthetic, _to_samples(celeb_rows, "celebamask"), aflw, synthetic_negatives,
                                _to_samples(celeb_negatives, "negative"), procedural])
    val_synthetic, val_synthetic_negatives = _synthetic(FLAGS.validation_dirs, inner_to_box, rng)
    validation = lt.stack_samples([val_synthetic, _to_samples(val_rows, "celebamask"), aflw_val,
                                   val_synthetic_negatives,
                                   _to_samples(val_negatives, "negative"),
                                   _to_samples([lt.procedural_negative(rng) for _ in range(50)], "negative")])
    counts = {str(kind): int(n) for kind, n in zip(*np.unique(samples.kinds, return_counts=True))}
    print(f"[landmark_net] training samples {counts}, {len(validation.crops)} validation; "
          f"prepared in {(time.time() - start) / 60:.1f} min", flush=True)

    channels, hidden = (24, 32, 48, 64, 96), 256
    model, history = lt.train(samples, FLAGS.steps, FLAGS.batch_size, FLAGS.learning_rate, FLAGS.seed,
                              lnet.INPUT_SIZE, channels, hidden, validation, max_minutes=FLAGS.max_minutes,
                              init_weights=FLAGS.init_weights,
                              kind_weights=lt.FINE_TUNE_KIND_WEIGHTS if len(aflw.crops) else None)

    out = pathlib.Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged = out / f".landmark_net.{os.getpid()}.weights.h5"   # Keras wants the .weights.h5 suffix
    model.save_weights(str(staged))
    os.replace(staged, out / lnet.WEIGHTS_FILE)
    config = {"input_size": lnet.INPUT_SIZE, "crop_margin": lnet.CROP_MARGIN, "channels": list(channels),
              "hidden": hidden, "inner_to_box": list(inner_to_box), "parameters": int(model.count_params()),
              "training": {"command": " ".join(sys.argv), "synthetic_dirs": FLAGS.synthetic_dirs,
                           "validation_dirs": FLAGS.validation_dirs,
                           "samples": counts,
                           "celebamask_photos": f"first {FLAGS.num_celebamask} by sorted name",
                           "celebamask_val_photos": f"next {FLAGS.num_celebamask_val}",
                           "aflw2000_photos": FLAGS.aflw_range or None, "aflw2000_val_photos": FLAGS.aflw_val_range
                           or None, "init_weights": FLAGS.init_weights,
                           "validation_samples": int(len(validation.crops)), "steps": FLAGS.steps,
                           "batch_size": FLAGS.batch_size, "learning_rate": FLAGS.learning_rate, "seed": FLAGS.seed,
                           "minutes": round((time.time() - start) / 60, 1), "history": history}}
    io_utils.write_json(out / lnet.CONFIG_FILE, config)
    print(f"[landmark_net] -> {out} ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    cli.run(main)
