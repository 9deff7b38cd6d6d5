"""Relighting truth on real photos: albedo consistency and cross-relighting on a multi-light set (Yale B).

  nice -n 5 .venv/bin/python scripts/eval_relight.py --json docs/results/eval_relight.json \
      --figure docs/results/eval_relight.png
  .venv/bin/python scripts/eval_relight.py --json /tmp/relight.json --subjects 1 --lights A+000E+00,A+050E+00 \
      --fit_steps 10 --landmark_steps 20        # quick run

Every photo of a subject is reconstructed ON ITS OWN by the product's `Reconstructor` (per-image fit path, the
default of scripts/reconstruct.py; faces found by the product's detector with the same-subject fallback), then
scored by tf_facetex/evaluation/relight.py: per-texel coefficient of variation of the albedo A' across the
subject's lights vs that of the lit texture A' x shading (ratio: how much of the light is left in A'), and
cross-relighting PSNR of R(A'_i, L'_j) against photo j vs photo i itself. Default subset: the first 6
subjects x 6 lights (frontal, +-25 and +-50 deg azimuth, 45 deg above).
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
flags.DEFINE_string("figure", None, "PNG of the first subject: photos, albedos, relit vs real (optional).")
flags.DEFINE_string("yale_dir", None, "Yale B folder with index.tsv (default <shared>/faces/yaleb_cropped_dev).")
flags.DEFINE_integer("subjects", 6, "Number of subjects (the first N by name).")
flags.DEFINE_list("subject_names", [], "Explicit subjects (overrides --subjects).")
flags.DEFINE_list("lights", ["A+000E+00", "A+025E+00", "A-025E+00", "A+050E+00", "A-050E+00", "A+000E+45"],
                  "Lights (file-name codes A<azimuth>E<elevation>).")
flags.DEFINE_integer("fit_steps", 150, "UV-fit steps (the product default).")
flags.DEFINE_integer("landmark_steps", 300, "Landmark-fit steps (the product default).")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "Face masker (the product default: parsing).")
flags.DEFINE_string("face_model", None, "Face model (default: see README).")


def main(argv):
    del argv
    import pathlib

    import numpy as np

    from tf_facetex import pipeline
    from tf_facetex.data.known_faces import build_detector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import detection, relight
    from tf_facetex.face_model import load_face_model

    if not FLAGS.json:
        raise FaceTexError("--json is required")
    faces_root = paths.faces_dir()
    folder = pathlib.Path(FLAGS.yale_dir or (faces_root / "yaleb_cropped_dev" if faces_root else ""))
    if not (folder / "index.tsv").is_file():
        raise FaceTexError(f"{folder}: no index.tsv (see --yale_dir)")
    rows = detection.read_yale_index(folder)
    by_subject = {}
    for row in rows:
        code = "ambient" if row["azimuth_deg"] == "ambient" else f"A{row['azimuth_deg']}E{row['elevation_deg']}"
        by_subject.setdefault(row["subject"], {})[code] = row["path"]
    subjects = FLAGS.subject_names or sorted(s for s in by_subject
                                             if all(code in by_subject[s] for code in FLAGS.lights))[:FLAGS.subjects]
    if not subjects:
        raise FaceTexError("no subject has all of --lights")

    finder = pipeline.FaceFinder(detector=build_detector("auto", group_fallback="landmarks"), masker=FLAGS.masker)
    model = load_face_model(FLAGS.face_model)
    config = pipeline.ReconstructionConfig(fit_steps=FLAGS.fit_steps, landmark_steps=FLAGS.landmark_steps,
                                           turntable_yaws=())   # turntables are not scored
    reconstructor = pipeline.Reconstructor(model, config)
    report = {"command": " ".join(sys.argv),
              "protocol": {"subjects": subjects, "lights": FLAGS.lights, "pipeline": reconstructor.describe(),
                           "masker": FLAGS.masker, "detector": finder.aligner.detector.describe()},
              "subjects": {}}
    first = None
    start = time.perf_counter()
    for subject in subjects:
        t0 = time.perf_counter()
        photo_paths = [by_subject[subject][code] for code in FLAGS.lights]
        photos = [load_image(p) for p in photo_paths]
        faces = [finder.from_image(photo, name=p)[0] for photo, p in zip(photos, photo_paths)]
        scores, results, cross = relight.evaluate_subject(reconstructor, faces, photos)
        scores["detectors"] = [face.detector for face in faces]
        scores["grayscale_input"] = [bool(face.grayscale) for face in faces]
        scores["seconds"] = round(time.perf_counter() - t0, 1)
        report["subjects"][subject] = scores
        print(f"[eval_relight] {subject}: CV A' {scores['cv_albedo']:.3f} / lit {scores['cv_lit']:.3f} = ratio "
              f"{scores['ratio']:.3f}; relit {scores['relit_psnr_mean']:.2f} dB vs photo i "
              f"{scores['baseline_psnr_mean']:.2f}"
              f" dB (gain {scores['gain_db']:+.2f}); {scores['seconds']:.0f} s", flush=True)
        if first is None:
            first = (subject, results, cross)
        io_utils.write_json(FLAGS.json, report)   # partial results survive an interrupted run
    values = list(report["subjects"].values())
    names = ("ratio", "cv_albedo", "cv_lit", "relit_psnr_mean", "baseline_psnr_mean", "gain_db")
    report["summary"] = {name: float(np.mean([v[name] for v in values])) for name in names}
    photos = len(values) * len(FLAGS.lights)
    report["summary"].update({"subjects": len(values), "photos": photos,
                              "ratio_per_subject": [round(v["ratio"], 4) for v in values],
                              "gain_db_per_subject": [round(v["gain_db"], 3) for v in values],
                              "seconds_per_photo": round((time.perf_counter() - start) / max(photos, 1), 1)})
    io_utils.write_json(FLAGS.json, report)
    if FLAGS.figure and first is not None:
        subject, results, cross = first
        titles = [f"{subject} {code}" if k == 0 else code for k, code in enumerate(FLAGS.lights)]
        io_utils.write_image(FLAGS.figure, relight.subject_figure(results, cross, titles))
    s = report["summary"]
    print(f"[eval_relight] {s['subjects']} subjects: ratio {s['ratio']:.3f}, relit {s['relit_psnr_mean']:.2f} dB vs "
          f"{s['baseline_psnr_mean']:.2f} dB (gain {s['gain_db']:+.2f} dB) -> {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
