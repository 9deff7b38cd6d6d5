"""Exhaustive comparison of our Keras dlib face-recognition network with dlib itself on real photos.

Run the assertions:   .venv/bin/python -m pytest -m slow -s tests/test_identity_slow.py
Print the figures:    .venv/bin/python tests/test_identity_slow.py   (one JSON object)

Faces: every face dlib's HOG detector finds in ../shared/faces/{deepface_unit, face_recognition,
dlib_faces, deca_examples} plus skimage's astronaut, 68 landmarks from dlib's shape predictor. For each
face we compare dlib's ``compute_face_descriptor(img, shape)`` with
  (a) our network on our numpy chip (``extract_dlib_chip``, bit-exact to dlib's chip), and
  (b) the all-TF path (``extract_chips`` = differentiable warp + float pyramid, then the network: what
      ``DlibIdentityEncoder.embed`` computes before L2-normalising).
On deepface's labelled pairs (master.csv) all descriptor sets are judged with dlib's 0.6 rule.
"""
import csv
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest

FOLDERS = ("deepface_unit", "face_recognition", "dlib_faces", "deca_examples")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _load_rgb(path):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _photos(faces_dir):
    import skimage.data
    yield "skimage:astronaut", skimage.data.astronaut()
    for folder in FOLDERS:
        for path in sorted((pathlib.Path(faces_dir) / folder).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image = _load_rgb(path)
                if image is not None:
                    yield f"{folder}/{path.relative_to(pathlib.Path(faces_dir) / folder)}", image


def compare_with_dlib(faces_dir, max_faces_per_image=8, log=lambda *a: None):
    """Runs the comparison; returns a dict of figures (see module docstring)."""
    import dlib
    import face_recognition_models
    import tensorflow as tf
    from tf_facetex.identity import alignment
    from tf_facetex.identity.encoder import DlibIdentityEncoder

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    reference = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    encoder = DlibIdentityEncoder()
    # Raw (unnormalised) descriptors through the all-TF path, so dlib's 0.6 rule applies to them too.
    descriptors_tf = tf.function(lambda image, landmarks: encoder.descriptors(encoder.extract_chips(image, landmarks)),
                                 reduce_retracing=True)

    records = []     # name, face index, dlib descriptor, ours (numpy chip), ours (TF warp), chip diff
    start = time.time()
    for name, image in _photos(faces_dir):
        upsample = 1 if max(image.shape[:2]) < 1000 else 0
        detections = sorted(detector(image, upsample), key=lambda r: -r.area())[:max_faces_per_image]
        for index, box in enumerate(detections):
            shape = predictor(image, box)
            landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            dlib_descriptor = np.array(reference.compute_face_descriptor(image, shape), np.float32)
            dlib_chip = dlib.get_face_chip(image, shape, 150, 0.25)
            our_chip = alignment.extract_dlib_chip(image, landmarks)
            ours = encoder.descriptors(our_chip[None]).numpy()[0]
            ours_tf = descriptors_tf(tf.constant(image[None]), tf.constant(landmarks[None], tf.float32)).numpy()[0]
            tf_chip = encoder.extract_chips(image[None], landmarks=landmarks[None].astype(np.float32)).numpy()[0]
            records.append(dict(name=name, face=index, dlib=dlib_descriptor, ours=ours, ours_tf=ours_tf,
                                chip_diff=float(np.abs(dlib_chip.astype(np.int16) - our_chip).mean()),
                                tf_chip_diff=float(np.abs(dlib_chip - tf_chip * 255.0).mean()),
                                scale=float(np.sqrt(abs(np.linalg.det(alignment.dlib_chip_matrix(landmarks)[:, :2]))))))
        log(f"{name}: {len(detections)} face(s), {time.time() - start:.0f}s")

    def cosine(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    cos = np.array([cosine(r["ours"], r["dlib"]) for r in records])
    cos_tf = np.array([cosine(r["ours_tf"], r["dlib"]) for r in records])
    max_abs = np.array([np.abs(r["ours"] - r["dlib"]).max() for r in records])
    worst = records[int(np.argmin(cos))]
    worst_tf = records[int(np.argmin(cos_tf))]

    # deepface's labelled pairs, largest face of each image.
    by_image = {}
    for r in records:
        if r["name"].startswith("deepface_unit/") and r["face"] == 0:
            by_image[r["name"].split("/", 1)[1]] = r
    pairs, skipped = [], 0
    with open(pathlib.Path(faces_dir) / "deepface_unit" / "master.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            a, b = by_image.get(row["file_x"]), by_image.get(row["file_y"])
            if a is None or b is None:
                skipped += 1
                continue
            pairs.append((a, b, row["Decision"].strip().lower() == "yes"))
    same = np.array([p[2] for p in pairs])
    dist = {key: np.array([np.linalg.norm(a[key] - b[key]) for a, b, _ in pairs]) for key in ("dlib", "ours", "ours_tf")}

    def accuracy(d):
        return float(np.mean((d < 0.6) == same))

    return {
        "faces": len(records),
        "images": len({r["name"] for r in records}),
        "cosine_numpy_chip": {"min": float(cos.min()), "mean": float(cos.mean()), "worst_face": f"{worst['name']}#{worst['face']}"},
        "max_abs_descriptor_diff": float(max_abs.max()),
        "cosine_tf_warp": {"min": float(cos_tf.min()), "mean": float(cos_tf.mean()),
                           "worst_face": f"{worst_tf['name']}#{worst_tf['face']} (scale {worst_tf['scale']:.2f})"},
        "chip_mean_abs_diff_numpy_vs_dlib": {"max": max(r["chip_diff"] for r in records),
                                             "mean": float(np.mean([r["chip_diff"] for r in records]))},
        "chip_mean_abs_diff_tf_vs_dlib": {"max": max(r["tf_chip_diff"] for r in records),
                                          "mean": float(np.mean([r["tf_chip_diff"] for r in records]))},
        "pairs": {"count": len(pairs), "same": int(same.sum()), "skipped_no_face": skipped,
                  "accuracy_at_0.6": {k: accuracy(v) for k, v in dist.items()},
                  "decisions_agree_ours_vs_dlib": float(np.mean((dist["ours"] < 0.6) == (dist["dlib"] < 0.6))),
                  "decisions_agree_tf_vs_dlib": float(np.mean((dist["ours_tf"] < 0.6) == (dist["dlib"] < 0.6))),
                  "distance_correlation_ours": float(np.corrcoef(dist["ours"], dist["dlib"])[0, 1]),
                  "distance_correlation_tf": float(np.corrcoef(dist["ours_tf"], dist["dlib"])[0, 1]),
                  "max_abs_distance_diff_ours": float(np.abs(dist["ours"] - dist["dlib"]).max())},
        "seconds": round(time.time() - start, 1),
    }


@pytest.mark.slow
def test_descriptors_match_dlib_on_real_photos(faces_dir):
    figures = compare_with_dlib(faces_dir)
    print(json.dumps(figures, indent=1))
    assert figures["faces"] >= 30
    assert figures["cosine_numpy_chip"]["min"] > 0.999
    assert figures["chip_mean_abs_diff_numpy_vs_dlib"]["max"] < 0.05
    assert figures["cosine_tf_warp"]["min"] > 0.99
    pairs = figures["pairs"]
    assert pairs["count"] > 200
    assert pairs["decisions_agree_ours_vs_dlib"] == 1.0
    assert pairs["distance_correlation_ours"] > 0.999
    assert abs(pairs["accuracy_at_0.6"]["ours"] - pairs["accuracy_at_0.6"]["dlib"]) < 1e-9
    assert pairs["decisions_agree_tf_vs_dlib"] > 0.97
    assert pairs["distance_correlation_tf"] > 0.99


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from tf_facetex import paths
    faces = paths.faces_dir()
    if faces is None:
        sys.exit("../shared/faces not found (set TF_FACETEX_SHARED)")
    print(json.dumps(compare_with_dlib(faces, log=lambda *a: print(*a, file=sys.stderr)), indent=1))
