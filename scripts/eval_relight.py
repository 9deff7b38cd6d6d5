"""Relighting truth on real photos: albedo consistency and cross-relighting on a multi-light set (Yale B).

  nice -n 5 .venv/bin/python scripts/eval_relight.py --json docs/results/eval_relight.json \
      --figure docs/results/eval_relight.png
  .venv/bin/python scripts/eval_relight.py --json /tmp/relight.json --subjects 1 --lights A+000E+00,A+050E+00 \
      --fit_steps 10 --landmark_steps 20        # quick run
  nice -n 5 .venv/bin/python scripts/eval_relight.py --mode single,multi --json docs/results/eval_relight.json \
      --figure docs/results/eval_relight.png    # with the multi-photo mode

Every photo of a subject is reconstructed ON ITS OWN by the product's `Reconstructor` (per-image fit path, the
default of scripts/reconstruct.py; faces found by the product's detector with the same-subject fallback), then
scored by tf_facetex/evaluation/relight.py: per-texel coefficient of variation of the albedo A' across the
subject's lights vs that of the lit texture A' x shading (ratio: how much of the light is left in A'), and
cross-relighting PSNR of R(A'_i, L'_j) against photo j vs photo i itself. Default subset: the first 6
subjects x 6 lights (frontal, +-25 and +-50 deg azimuth, 45 deg above).

``--mode single,multi`` adds the multi-photo mode (scripts/reconstruct.py --same_person): the lights are split in two
halves (--multi_half and the rest); one albedo is fitted to each half's photos together, each photo of the other
half gets only its light fitted with that albedo fixed, and the same two measures are taken on the same photo
pairs and texels as the single mode (tf_facetex/evaluation/relight.py, `evaluate_subject_multi`).
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
flags.DEFINE_enum("landmark_net", "shipped", ["shipped", "none"], "The detector's second landmark model (the product "
                  "default: shipped; none: dlib's points only), for measuring its effect; recorded in the protocol.")
flags.DEFINE_list("baseline", [], "name=result.json entries (earlier runs of this script): their summary, command and "
                  "pipeline are copied into the JSON, to be shown beside this run's.")
flags.DEFINE_list("fit_overrides", [], "UV-fit settings other than the product's, name=value (fields of "
                  "tf_facetex.refinement.fit.UVFitConfig, e.g. symmetry_weighting=uniform,light_resolution=16): for "
                  "measuring a lever; recorded in the JSON's pipeline.")
flags.DEFINE_list("mode", ["single"], "Which modes: single (each photo alone), multi (one albedo per half of the "
                  "lights, relit to the other half's held-out lights; needs single too, for the comparison).")
flags.DEFINE_list("multi_half", ["A+000E+00", "A+050E+00", "A-050E+00"], "Lights of the first half in the multi "
                  "mode (the other --lights form the second half).")


def main(argv):
    del argv
    import json
    import pathlib

    import numpy as np

    from tf_facetex import pipeline
    from tf_facetex.data.known_faces import build_detector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import detection, relight
    from tf_facetex.face_model import load_face_model
    from tf_facetex.pipeline import setup

    if not FLAGS.json:
        raise FaceTexError("--json is required")
    modes = set(FLAGS.mode)
    if not modes or not modes <= {"single", "multi"} or modes == {"multi"}:
        raise FaceTexError("--mode must be single or single,multi (multi is compared with single on the same pairs)")
    split = [FLAGS.lights.index(code) for code in FLAGS.multi_half if code in FLAGS.lights]
    if "multi" in modes and (len(split) != len(FLAGS.multi_half) or not 0 < len(split) < len(FLAGS.lights)):
        raise FaceTexError("--multi_half must be some, not all, of --lights")
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

    second_landmarks = None if FLAGS.landmark_net == "none" else "shipped"
    finder = pipeline.FaceFinder(detector=build_detector("auto", group_fallback="landmarks",
                                                         landmark_net=second_landmarks), masker=FLAGS.masker)
    model = load_face_model(FLAGS.face_model)
    config = pipeline.ReconstructionConfig(fit_steps=FLAGS.fit_steps, landmark_steps=FLAGS.landmark_steps,
                                           turntable_yaws=())   # turntables are not scored
    reconstructor = pipeline.Reconstructor(model, config)
    if FLAGS.fit_overrides:
        reconstructor.use_refiner(setup.fit_refiner_with_overrides(reconstructor, FLAGS.fit_steps,
                                                                    FLAGS.fit_overrides))
    report = {"command": " ".join(sys.argv),
              "protocol": {"subjects": subjects, "lights": FLAGS.lights, "pipeline": reconstructor.describe(),
                           "masker": FLAGS.masker, "detector": finder.aligner.detector.describe(),
                           "modes": sorted(modes), "face_model": model.summary()},
              "subjects": {}, "load_average": {"start": list(os.getloadavg())}}
    for item in FLAGS.baseline:
        name, _, path = item.partition("=")
        try:
            earlier = json.loads(pathlib.Path(path).read_text())
        except (OSError, ValueError) as err:
            raise FaceTexError(f"--baseline {item}: unreadable ({err})") from err
        report.setdefault("baselines", {})[name] = {
            "file": path, "command": earlier.get("command"), "summary": earlier.get("summary"),
            "pipeline": earlier.get("protocol", {}).get("pipeline"), "code": earlier.get("code"),
            "seconds_per_photo": (earlier.get("summary") or {}).get("seconds_per_photo")}
    if "multi" in modes:
        report["protocol"]["multi_halves"] = [[FLAGS.lights[i] for i in split],
                                              [c for k, c in enumerate(FLAGS.lights) if k not in split]]
        report["multi"] = {"subjects": {}}
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
        multi = None
        if "multi" in modes:
            t1 = time.perf_counter()
            multi_scores, multi = relight.evaluate_subject_multi(reconstructor, faces, photos, [split], results, cross)
            multi_scores["seconds"] = round(time.perf_counter() - t1, 1)
            report["multi"]["subjects"][subject] = multi_scores
            m = multi_scores
            print(f"[eval_relight] {subject} multi: pair CV A' {m['cv_albedo_multi']:.3f} (single "
                  f"{m['cv_albedo_single_pairs']:.3f}) / lit {m['cv_lit_pairs']:.3f} = ratio {m['ratio_multi']:.3f} "
                  f"(single {m['ratio_single_pairs']:.3f}); held-out relit {m['relit_psnr_mean']:.2f} dB, gain "
                  f"{m['gain_db']:+.2f} (single on the same pairs {m['single_gain_db']:+.2f}); {m['seconds']:.0f} s",
                  flush=True)
        if first is None:
            first = (subject, results, cross, multi[0] if multi else None)
        report["load_average"]["last"] = list(os.getloadavg())
        io_utils.write_json(FLAGS.json, report)   # partial results survive an interrupted run
    values = list(report["subjects"].values())
    names = ("ratio", "cv_albedo", "cv_lit", "relit_psnr_mean", "baseline_psnr_mean", "gain_db")
    report["summary"] = {name: float(np.mean([v[name] for v in values])) for name in names}
    photos = len(values) * len(FLAGS.lights)
    report["summary"].update({"subjects": len(values), "photos": photos,
                              "ratio_per_subject": [round(v["ratio"], 4) for v in values],
                              "gain_db_per_subject": [round(v["gain_db"], 3) for v in values],
                              "seconds_per_photo": round(sum(v["seconds"] for v in values) / max(photos, 1), 1),
                              "seconds_total": round(time.perf_counter() - start, 1)})
    if "multi" in modes:
        values = list(report["multi"]["subjects"].values())
        names = ("ratio_multi", "ratio_single_pairs", "cv_albedo_multi", "cv_albedo_single_pairs", "cv_lit_pairs",
                 "relit_psnr_mean", "single_relit_psnr_mean", "baseline_psnr_mean", "gain_db", "single_gain_db")
        report["multi"]["summary"] = {name: float(np.mean([v[name] for v in values])) for name in names}
        report["multi"]["summary"].update({
            "subjects": len(values), "pairs": int(sum(v["pairs"] for v in values)),
            "ratio_multi_per_subject": [round(v["ratio_multi"], 4) for v in values],
            "ratio_single_pairs_per_subject": [round(v["ratio_single_pairs"], 4) for v in values],
            "gain_db_per_subject": [round(v["gain_db"], 3) for v in values],
            "single_gain_db_per_subject": [round(v["single_gain_db"], 3) for v in values],
            "seconds_per_subject": round(float(np.mean([v["seconds"] for v in values])), 1)})
    report["load_average"]["end"] = list(os.getloadavg())
    io_utils.write_json(FLAGS.json, report)
    if FLAGS.figure and first is not None:
        subject, results, cross, multi = first
        titles = [f"{subject} {code}" if k == 0 else code for k, code in enumerate(FLAGS.lights)]
        codes = [code.replace("E+00", "") for code in FLAGS.lights]
        io_utils.write_image(FLAGS.figure, relight.subject_figure(results, cross, titles, multi=multi, codes=codes))
    s = report["summary"]
    print(f"[eval_relight] {s['subjects']} subjects: ratio {s['ratio']:.3f}, relit {s['relit_psnr_mean']:.2f} dB vs "
          f"{s['baseline_psnr_mean']:.2f} dB (gain {s['gain_db']:+.2f} dB) -> {FLAGS.json}")
    if "multi" in modes:
        m = report["multi"]["summary"]
        print(f"[eval_relight] multi: pair ratio {m['ratio_multi']:.3f} vs single {m['ratio_single_pairs']:.3f}; "
              f"held-out gain {m['gain_db']:+.2f} dB vs single {m['single_gain_db']:+.2f} dB on the same pairs")


if __name__ == "__main__":
    cli.run(main)
