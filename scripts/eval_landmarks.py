"""68-point landmark NME and head-pose error on AFLW2000-3D: dlib's detector and the fitted face model.

  .venv/bin/python scripts/eval_landmarks.py --json docs/results/eval_landmarks.json
  .venv/bin/python scripts/eval_landmarks.py --json /tmp/lm.json --num_images 20   # quick run

Protocol (per image, the first ``--num_images`` by sorted name):
(a) dlib: the project's ``FaceDetector`` (HOG, largest face, 68 landmarks) on the photo;
(b) fit: ``LandmarkFitter`` (default config, ICT-FaceKit model) on those landmarks in the aligned 224 crop,
    the fitted model's projected 68 landmarks mapped back to the photo with the inverse alignment transform,
    and its pose with the alignment's in-plane rotation undone (``real_photos.pose_in_photo``).
Ground truth: x, y of ``pt3d_68`` (3D-consistent contour: for large yaw the jaw points are not on the 2D
silhouette, where dlib puts them) and (pitch, yaw, roll) of ``Pose_Para``.
NME = mean point error / sqrt(w h) of the ground-truth 68-point box, over all 68 points and over the 51
inner points (17-67, same normaliser). Faces are binned by |yaw| (0-30, 30-60, 60-90 degrees; |yaw| > 90
goes to the last bin and is counted). Images without a detection count as failures of their bin and are
excluded from the NME; "balanced" is the mean over the three bins, as AFLW2000-3D tables report.
Pose: the sign of each fitted angle relative to ``Pose_Para`` is determined from the data (the sign with
the lower MAE, reported with both MAEs and the correlation), then the MAE in degrees.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils, paths  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Where the results JSON goes (written atomically).")
flags.DEFINE_string("aflw_dir", None, "AFLW2000-3D folder with *.jpg and *.mat (default: <shared>/faces/aflw2000_3d).")
flags.DEFINE_integer("num_images", None, "Only the first N images by sorted name (quick runs); default all.")
flags.DEFINE_enum("detector", "hog", ["hog", "cnn"], "dlib face detector.")
flags.DEFINE_integer("fit_steps", 300, "LandmarkFitter optimisation steps.")
flags.DEFINE_string("face_model", None, "Face model for the fit (default: the ICT-FaceKit model, cached).")
flags.DEFINE_boolean("per_image", True, "Include per-image values in the JSON.")
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.mark_flag_as_required("json")


def _detect_all(files):
    """Detects and aligns every image -> list of records (dict) with ground truth, dlib points and crop data."""
    from tqdm import tqdm

    from tf_facetex.data.align import align_face
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import NoFaceError
    from tf_facetex.evaluation import real_photos

    detector = FaceDetector(FLAGS.detector)
    records = []
    for path in tqdm(files, desc="detect", unit="img", disable=not FLAGS.progress):
        truth = real_photos.load_aflw2000(path.with_suffix(".mat"))
        record = {"stem": path.stem, "truth": truth["landmarks"], "pose": truth["pose"],
                  "bin": real_photos.yaw_bin(truth["pose"][1]), "detected": False}
        image = load_image(path)
        try:
            face = detector.detect(image, name=str(path))[0]
        except NoFaceError:
            records.append(record)
            continue
        aligned = align_face(image, face.landmarks)
        record.update(detected=True, dlib=face.landmarks.astype("float64"), crop_landmarks=aligned.landmarks,
                      transform=aligned.transform, inverse=aligned.inverse)
        records.append(record)
    return records


def _fit_all(records):
    """Runs LandmarkFitter on every detected face (one batch); adds 'fit' [68, 2] (photo px) and 'fit_pose' [3]."""
    import numpy as np

    from tf_facetex.data.align import apply_affine
    from tf_facetex.evaluation import real_photos
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter

    detected = [r for r in records if r["detected"]]
    if not detected:
        return
    model = load_face_model(FLAGS.face_model, log=lambda *_: None)
    fitter = LandmarkFitter(model, LandmarkFitConfig(steps=FLAGS.fit_steps))
    result = fitter(np.stack([r["crop_landmarks"] for r in detected]))
    for k, record in enumerate(detected):
        record["fit"] = apply_affine(record["inverse"], result["landmarks"][k]).astype(np.float64)
        record["fit_pose_crop"] = result["angles"][k]
        record["fit_pose"] = real_photos.pose_in_photo(result["angles"][k], record["transform"])


def _nme_stats(records, key):
    """NME distributions (68 and 51 inner points) of records[key] vs the truth, in percent."""
    import numpy as np

    from tf_facetex.evaluation import real_photos

    if not records:
        return {"nme68": real_photos.distribution([]), "nme51": real_photos.distribution([]),
                "fraction_nme68_over_10pct": float("nan"), "mean_offset51_px": [float("nan")] * 2}
    pred = np.stack([r[key] for r in records])
    truth = np.stack([r["truth"] for r in records])
    nme68 = 100.0 * real_photos.nme(pred, truth)
    nme51 = 100.0 * real_photos.nme(pred, truth, points=real_photos.INNER_POINTS)
    summary = {"nme68": real_photos.distribution(nme68), "nme51": real_photos.distribution(nme51),
               "fraction_nme68_over_10pct": float((nme68 > 10.0).mean())}
    # mean signed offset of the inner points (pred - truth, px): shows e.g. a 0/1-based pixel convention gap
    summary["mean_offset51_px"] = (pred - truth)[:, real_photos.INNER_POINTS].mean(axis=(0, 1)).tolist()
    return summary


def _pose_errors(records, signs):
    """Mean absolute (pitch, yaw, roll) error in degrees after applying the sign convention."""
    import numpy as np

    from tf_facetex.evaluation import real_photos

    if not records:
        return {"count": 0}
    fitted = np.stack([r["fit_pose"] for r in records]) * np.asarray(signs, np.float64)
    truth = np.stack([r["pose"] for r in records])
    error = np.degrees(np.abs(real_photos.wrap_angle(fitted - truth)))
    mae = error.mean(axis=0)
    return {"count": len(records), "mae_deg": {"pitch": float(mae[0]), "yaw": float(mae[1]), "roll": float(mae[2]),
                                              "mean": float(mae.mean())},
            "median_deg": dict(zip(("pitch", "yaw", "roll"), np.median(error, axis=0).tolist()))}


def _report(records):
    import numpy as np

    from tf_facetex.evaluation import real_photos

    detected = [r for r in records if r["detected"]]
    convention = real_photos.pose_sign_convention(np.stack([r["fit_pose"] for r in detected]),
                                                  np.stack([r["pose"] for r in detected])) if detected else None
    signs = convention["signs"] if convention else [1, 1, 1]
    bins = {}
    for name in real_photos.yaw_bin_names():
        in_bin = [r for r in records if r["bin"] == name]
        ok = [r for r in in_bin if r["detected"]]
        bins[name] = {"num_images": len(in_bin), "num_failures": len(in_bin) - len(ok),
                      "failure_rate": (len(in_bin) - len(ok)) / len(in_bin) if in_bin else float("nan"),
                      "dlib": _nme_stats(ok, "dlib"), "fit": _nme_stats(ok, "fit"), "pose": _pose_errors(ok, signs)}
    overall = {"num_images": len(records), "num_failures": len(records) - len(detected),
               "failure_rate": (len(records) - len(detected)) / max(len(records), 1),
               "num_abs_yaw_over_90": int(sum(abs(np.degrees(r["pose"][1])) > 90 for r in records)),
               "dlib": _nme_stats(detected, "dlib"), "fit": _nme_stats(detected, "fit"),
               "pose": _pose_errors(detected, signs)}
    balanced = {method: {metric: float(np.nanmean([bins[b][method][metric]["mean"] for b in bins]))
                         for metric in ("nme68", "nme51")} for method in ("dlib", "fit")}
    out = {"overall": overall, "by_abs_yaw_deg": bins, "balanced_mean_over_bins": balanced,
           "pose_sign_convention": {
               "meaning": "Pose_Para angle ~= sign * fitted angle (camera.py convention: R = Rz(roll) Ry(yaw) "
                          "Rx(pitch), y up, camera on +z), per (pitch, yaw, roll); chosen by lower MAE",
               **(convention or {})}}
    if FLAGS.per_image:
        out["per_image_note"] = ("nme68_* in percent; fit_pose_deg = (pitch, yaw, roll) in the camera convention "
                                 "(multiply by pose_sign_convention.signs to compare with Pose_Para)")
        out["per_image"] = {
            r["stem"]: {"yaw_deg": round(float(np.degrees(r["pose"][1])), 2), "detected": r["detected"],
                        **({"nme68_dlib": round(100.0 * float(real_photos.nme(r["dlib"], r["truth"])), 3),
                            "nme68_fit": round(100.0 * float(real_photos.nme(r["fit"], r["truth"])), 3),
                            "fit_pose_deg": [round(float(v), 2) for v in np.degrees(r["fit_pose"])]}
                           if r["detected"] else {})}
            for r in records}
    return out


def main(argv):
    del argv
    import pathlib

    faces = paths.faces_dir()
    folder = pathlib.Path(FLAGS.aflw_dir) if FLAGS.aflw_dir else (faces / "aflw2000_3d" if faces else None)
    if folder is None:
        raise FileNotFoundError("no --aflw_dir given and no shared faces folder (shared/faces) found")
    files = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".mat").is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no *.jpg with a matching .mat")
    files = files[:FLAGS.num_images] if FLAGS.num_images else files
    start = time.time()
    records = _detect_all(files)
    detect_seconds = time.time() - start
    _fit_all(records)
    result = {"protocol": "AFLW2000-3D; NME in percent of sqrt(w*h) of the ground-truth 68-point box (x, y of "
                          "pt3d_68); nme51 = points 17-67 with the same normaliser; failures (no detection) "
                          "excluded from NME; bins by |yaw| of Pose_Para",
              "aflw_dir": str(folder), "detector": FLAGS.detector, "fit_steps": FLAGS.fit_steps,
              **_report(records), "seconds": {"detect": detect_seconds, "total": time.time() - start}}
    io_utils.write_json(FLAGS.json, result)
    for name, stats in result["by_abs_yaw_deg"].items():
        print(f"|yaw| {name:6s}: {stats['num_images']:4d} images, failures {stats['failure_rate']:.1%} | "
              f"NME68 dlib {stats['dlib']['nme68']['mean']:.2f} fit {stats['fit']['nme68']['mean']:.2f} | "
              f"NME51 dlib {stats['dlib']['nme51']['mean']:.2f} fit {stats['fit']['nme51']['mean']:.2f}")
    pose = result["overall"]["pose"]
    if pose["count"]:
        print("pose MAE (deg): " + ", ".join(f"{k} {v:.2f}" for k, v in pose["mae_deg"].items()) +
              f"; signs {result['pose_sign_convention']['signs']}")
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
