"""Face-mask quality against CelebAMask-HQ parsing labels, on the held-out 200 images.

  .venv/bin/python scripts/eval_masks.py --json docs/results/eval_masks.json \
      --parsing_weights outputs/parsing_net/parsing_net.keras --worst_png outputs/results/mask_worst_cases.png
  .venv/bin/python scripts/eval_masks.py --json /tmp/masks.json --num_images 3   # quick run

Protocol: the last 200 of the 1,000 CelebAMask-HQ-mini images (sorted by name; the parsing net trains on the
first 800) are detected (dlib HOG, largest face), aligned to the 224 crop, and every masker is run on the same
crop and landmarks; the label map (face = skin, nose, brows, eyes, lips, mouth; glasses, ears, hair, hat, neck
excluded) is warped with the same transform, and only the crop's valid area counts. Images without a
detection are counted and excluded. Reported per masker: mean / median / percentiles of the per-image IoU,
precision and recall, the IoU histogram, pixel-pooled scores, the per-image values, and (with two or more
maskers) the paired comparison against the first one.
The worst-case figure shows, for the ``--num_worst`` worst images of each masker in ``--grid_maskers``,
image | GT | per masker: mask | error overlay (red: false face, blue: missed face); no more than
``2 * --num_worst`` photos.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app, flags  # noqa: E402

from tf_facetex import cli, io_utils, paths  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Where the results JSON goes (written atomically).")
flags.DEFINE_string("celebamask_dir", None, "CelebAMask-HQ folder with images/ and masks/ "
                    "(default: <shared>/faces/celebamask_hq_mini/train).")
flags.DEFINE_integer("num_heldout", 200, "Held-out test set: the last N images by sorted name.")
flags.DEFINE_integer("num_images", None, "Evaluate only the first N of the held-out images (quick runs).")
flags.DEFINE_list("maskers", ["skin", "hull"], "Maskers to compare: skin (LandmarkSkinMasker), hull "
                  "(LandmarkHullMasker), parsing (ParsingNetMasker; needs --parsing_weights), parsing_post (the same "
                  "with largest-component + hole-filling post-processing).")
flags.DEFINE_string("parsing_weights", None, "Trained parsing net (.keras); adds 'parsing' to --maskers.")
flags.DEFINE_string("worst_png", None, "Worst-case figure (PNG); none when empty.")
flags.DEFINE_list("grid_maskers", ["skin", "parsing"],
                  "Maskers shown (and whose worst cases are picked) in the figure.")
flags.DEFINE_integer("num_worst", 4, "Worst images per masker in the figure (photos shown <= 2 x this).")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.mark_flag_as_required("json")


def _maskers():
    from tf_facetex.data import parsing_net

    names = list(FLAGS.maskers)
    if FLAGS.parsing_weights and "parsing" not in names:
        names.append("parsing")
    maskers = {}
    for name in names:
        if name in ("parsing", "parsing_post"):
            if not FLAGS.parsing_weights:
                raise app.UsageError(f"--maskers includes {name!r} but no --parsing_weights was given")
            maskers[name] = parsing_net.ParsingNetMasker(FLAGS.parsing_weights, postprocess=name == "parsing_post")
        else:
            maskers[name] = parsing_net.masker_from_name(name)
    return maskers


def _evaluate(files, maskers):
    """Runs every masker on every detected face -> (per_image {masker: {stem: scores}}, crops {stem: ...}, ...)."""
    import numpy as np
    from tqdm import tqdm

    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.evaluation import real_photos

    detector = FaceDetector()
    per_image = {name: {} for name in maskers}
    seconds = {name: 0.0 for name in maskers}
    crops, no_face = {}, []
    for path in tqdm(files, desc="masks", unit="img", disable=not FLAGS.progress):
        result = real_photos.celebamask_crop(path, detector)
        if result is None:
            no_face.append(path.stem)
            continue
        aligned, target = result
        predictions = {}
        for name, masker in maskers.items():
            start = time.perf_counter()
            predicted = masker(aligned.image, aligned.landmarks)
            seconds[name] += time.perf_counter() - start
            per_image[name][path.stem] = real_photos.mask_scores(predicted, target, aligned.valid)
            predictions[name] = (predicted > 0.5).astype(np.uint8)
        crops[path.stem] = (aligned.image, target, aligned.valid, predictions)
    return per_image, crops, no_face, seconds


def _report(per_image, no_face, seconds, num_files):
    import numpy as np

    from tf_facetex.evaluation import real_photos

    out = {}
    for name, scores in per_image.items():
        pooled = {key: sum(s[key] for s in scores.values()) for key in ("tp", "fp", "fn")}
        out[name] = {"num_images": len(scores), "num_no_face": len(no_face),
                     **real_photos.summarise_masks(scores),
                     "pixel_pooled": real_photos.scores_from_counts(pooled),
                     "ms_per_image": 1000.0 * seconds[name] / max(len(scores), 1),
                     "per_image": {stem: {k: round(s[k], 5) for k in ("iou", "precision", "recall")}
                                   for stem, s in scores.items()}}
    names = list(per_image)
    for other in names[1:]:
        stems = list(per_image[names[0]])
        diff = np.array([per_image[other][s]["iou"] - per_image[names[0]][s]["iou"] for s in stems])
        out[other][f"vs_{names[0]}"] = {"mean_iou_difference": float(diff.mean()) if len(diff) else float("nan"),
                                        "images_better": int((diff > 0).sum()), "images_worse": int((diff < 0).sum())}
    return {"num_files": num_files, "no_face": no_face, "maskers": out}


def _worst_png(per_image, crops, path):
    from tf_facetex.evaluation import real_photos

    shown = [name for name in FLAGS.grid_maskers if name in per_image]
    rows, used = [], set()
    for name in shown:
        worst = sorted(per_image[name], key=lambda stem: per_image[name][stem]["iou"])[:FLAGS.num_worst]
        for stem in worst:
            if stem in used:
                continue
            used.add(stem)
            image, target, valid, predictions = crops[stem]
            rows.append((f"worst {name}", image, target, [(n, predictions[n], valid) for n in shown]))
    if rows:
        io_utils.write_image(path, real_photos.worst_cases_grid(rows))


def main(argv):
    del argv
    from tf_facetex.evaluation import real_photos

    faces = paths.faces_dir()
    folder = FLAGS.celebamask_dir or (faces / "celebamask_hq_mini" / "train" if faces else None)
    if folder is None:
        raise FileNotFoundError("no --celebamask_dir given and no shared faces folder (shared/faces) found")
    _train, held_out = real_photos.heldout_split(real_photos.celebamask_files(folder), FLAGS.num_heldout)
    files = held_out[:FLAGS.num_images] if FLAGS.num_images else held_out
    maskers = _maskers()
    start = time.time()
    per_image, crops, no_face, seconds = _evaluate(files, maskers)
    result = {"protocol": "CelebAMask-HQ-mini, last {} of {} images by sorted name; 224 aligned crop (dlib HOG "
                          "landmarks); face = label ids {}; valid crop area only".format(
                              len(held_out), len(held_out) + len(_train), list(real_photos.CELEBAMASK_FACE_CLASSES)),
              "celebamask_dir": str(folder), "parsing_weights": FLAGS.parsing_weights,
              **_report(per_image, no_face, seconds, len(files)), "seconds": time.time() - start}
    io_utils.write_json(FLAGS.json, result)
    if FLAGS.worst_png:
        _worst_png(per_image, crops, FLAGS.worst_png)
    for name, summary in result["maskers"].items():
        print(f"{name:8s} IoU mean {summary['iou']['mean']:.4f} median {summary['iou']['median']:.4f} | "
              f"precision {summary['precision']['mean']:.4f} | recall {summary['recall']['mean']:.4f} | "
              f"{summary['num_images']} images, {len(no_face)} without a face")
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
