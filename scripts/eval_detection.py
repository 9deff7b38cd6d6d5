"""Detection + alignment success on hard inputs, before and after the robust detector.

  nice -n 5 .venv/bin/python scripts/eval_detection.py --json docs/results/eval_detection.json \
      --synthetic_sets synthetic_eval=/tmp/synth_eval,synthetic_hard_light=/tmp/synth_hard
  .venv/bin/python scripts/eval_detection.py --json /tmp/det.json --max_photos 20   # quick run

Sets: the Yale B dev frames (<shared>/faces/yaleb_cropped_dev: grey, tight crops, one point light from up
to 60 deg aside / 40 deg below, ambient frames), the held-out 200 CelebAMask-HQ-mini photos, and folders of
scripts/make_synthetic.py faces (``--synthetic_sets name=folder,...``; the command that makes each folder is
rebuilt from its manifest and recorded). Configurations (tf_facetex/evaluation/detection.py): 'hog' (HOG +
upsampling + padding), 'hog+exposure', 'auto_dlib' (HOG then the CNN, each also on an exposure-normalised copy,
dlib's points: the default before the landmark network), 'auto_ungated' (+ the landmark network and the
last-resort retries, its points also where its crop is mostly outside the photo: the first such default), 'auto'
(the default: the cascade of tf_facetex.data.detect.landmark_source) and, on Yale B, 'auto+group' (a frame with no
detection borrows the landmarks of its subject's best-lit detected frame). Success = found and the five
alignment points within 0.15 inter-ocular distances of the reference (see the module for why). The CNN's
cost is timed on its own as well.
"""
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils, paths  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Where the results JSON goes (written atomically).")
flags.DEFINE_string("yale_dir", None, "Yale B folder with index.tsv (default <shared>/faces/yaleb_cropped_dev).")
flags.DEFINE_string("celebamask_dir", None, "CelebAMask-HQ folder with images/ and masks/ "
                    "(default <shared>/faces/celebamask_hq_mini/train).")
flags.DEFINE_list("synthetic_sets", [], "name=folder entries: scripts/make_synthetic.py folders (images/, gt/, "
                  "manifest.json), each its own row.")
flags.DEFINE_list("configs", ["hog", "auto_dlib", "auto", "auto+group"], "Detector configurations.")
flags.DEFINE_list("yale_configs", None, "Configurations for Yale B (default: --configs; the full set is long).")
flags.DEFINE_list("sets", ["yaleb_dev", "celebamask_hq_heldout", "synthetic"], "Which sets to run.")
flags.DEFINE_integer("max_photos", None, "Use at most this many photos of each set (quick runs; evenly spaced).")
flags.DEFINE_integer("cnn_timing_photos", 8, "Photos of each set the CNN stage alone is timed on.")
flags.DEFINE_integer("ordinary_timing_photos", 60, "CelebAMask-HQ held-out photos on which 'auto_dlib' and 'auto' "
                     "are timed interleaved (photo by photo, so that both see the same load): the cost of the "
                     "landmark network's check on ordinary photos.")


def _subsample(items, limit):
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / float(limit)
    return [items[int(i * step)] for i in range(limit)]


def _with_hard_light(report, items, hard):
    """The report without its per-photo lists, with the aligned fraction of the hard-light frames added."""
    report = dict(report)
    report.pop("records", None)
    failed = set(report.pop("failed_paths"))
    hard_items = [item for item in items if item in hard]
    report["hard_light_frames"] = len(hard_items)
    report["hard_light_aligned"] = round(sum(item not in failed for item in hard_items) / max(len(hard_items), 1), 4)
    return report


def _interleaved_timing(items, load) -> dict:
    """Median seconds per photo of 'auto_dlib' and 'auto', timed photo by photo in turn (after one warm-up)."""
    import numpy as np

    from tf_facetex.errors import NoFaceError
    from tf_facetex.evaluation import detection

    detectors = {name: detection.detection_config(name) for name in ("auto_dlib", "auto")}
    seconds = {name: [] for name in detectors}
    for index, item in enumerate(items):
        image = load(item)
        for name, detector in detectors.items():
            start = time.perf_counter()
            try:
                detector.detect(image, name=item)
            except NoFaceError:
                pass
            if index:   # the first photo warms up (tracing the network, loading the models)
                seconds[name].append(time.perf_counter() - start)
    medians = {name: round(float(np.median(values)), 4) for name, values in seconds.items() if values}
    return {"photos": max(len(items) - 1, 0), "median_seconds": medians,
            "mean_seconds": {name: round(float(np.mean(v)), 4) for name, v in seconds.items() if v},
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def _summary(results) -> list:
    """One record per (set, configuration): the table of docs/RESULTS.md."""
    rows = []
    for set_name, entry in results["sets"].items():
        for config, report in entry["configs"].items():
            rows.append({"set": set_name, "config": config, "photos": report["photos"], "found": report["found"],
                         "aligned": report["aligned"], "aligned_count": report["aligned_count"],
                         "nme_median": report["nme_median"], "seconds_per_photo": report["seconds_per_photo"]})
    return rows


def main(argv):
    del argv
    import numpy as np

    from tf_facetex.data.align import five_points
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import detection, real_photos

    if not FLAGS.json:
        raise FaceTexError("--json is required")
    unknown = set(FLAGS.configs + (FLAGS.yale_configs or [])) - set(detection.CONFIGS)
    if unknown:
        raise FaceTexError(f"--configs: unknown {sorted(unknown)}; known: {sorted(detection.CONFIGS)}")
    faces = paths.faces_dir()
    results = {"command": " ".join(sys.argv), "load_average": [round(v, 2) for v in os.getloadavg()],
               "protocol": {"aligned_nme": detection.ALIGNED_NME,
                            "configs": {name: detection.CONFIGS[name]
                                        for name in dict.fromkeys(FLAGS.configs + (FLAGS.yale_configs or []))}},
               "sets": {}}
    timing = {}
    cnn = FaceDetector("cnn")

    def time_cnn(name, items):
        seconds = []
        cnn._cnn_stage(load_image(items[0]), all_faces=False)  # warm-up (first call allocates)
        for item in items[:FLAGS.cnn_timing_photos]:
            image = load_image(item)
            start = time.perf_counter()
            cnn._cnn_stage(image, all_faces=False)
            seconds.append(time.perf_counter() - start)
        timing[name] = {"photos": len(seconds), "cnn_seconds_per_photo": round(float(np.mean(seconds)), 4),
                        "cnn_max_side": cnn.cnn_max_side}

    # ------------------------------------------------------------------------------------------ Yale B
    yale_dir = pathlib.Path(FLAGS.yale_dir or (faces / "yaleb_cropped_dev" if faces else ""))
    if "yaleb_dev" in FLAGS.sets and (yale_dir / "index.tsv").is_file():
        rows = detection.read_yale_index(yale_dir)
        # references: dlib's points on each subject's frontal-light frame (the detector before the landmark
        # network), the same for every configuration
        references = detection.yale_references(rows, load_image,
                                               FaceDetector("auto", landmark_net=None, last_resort=False))
        subject_of = {row["path"]: row["subject"] for row in rows}
        members = {}
        for row in rows:
            members.setdefault(row["subject"], []).append(row["path"])
        items = _subsample([row["path"] for row in rows if row["subject"] in references], FLAGS.max_photos)
        hard = {row["path"] for row in rows if row["azimuth_deg"] == "ambient"
                or abs(int(row["azimuth_deg"])) >= 50 or int(row["elevation_deg"]) < 0}

        def yale_error(name, face):
            return detection.five_point_nme(face.landmarks, references[subject_of[name]])

        per_config = {}
        yale_configs = FLAGS.yale_configs or FLAGS.configs
        # 'auto' = 'auto+group' without the borrowed faces (the same detections): derived, not run twice
        derive_auto = "auto" in yale_configs and "auto+group" in yale_configs
        for config in [c for c in yale_configs if not (derive_auto and c == "auto")]:
            print(f"[eval_detection] Yale B, {config}: {len(items)} frames", flush=True)
            detector = detection.detection_config(config, group_of=lambda name: members[subject_of[name]])
            report = detection.evaluate_items(detector, items, load_image, yale_error, log=print)
            reports = {config: report}
            if derive_auto and config == "auto+group":
                reports["auto"] = detection.summarise(detection.without_group_fallback(report["records"]))
                reports["auto"]["derived_from"] = "auto+group (its detections, without the borrowed faces)"
            for name, report in reports.items():
                per_config[name] = _with_hard_light(report, items, hard)
                print(f"  {name}: found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                      f"({report['seconds_per_photo']:.3f} s/frame; stages {report['stages']})", flush=True)
        results["sets"]["yaleb_dev"] = {"folder": yale_dir.name, "subjects": len(references),
                                        "subjects_without_reference": sorted(set(members) - set(references)),
                                        "hard_light": "ambient, |azimuth| >= 50 deg or elevation < 0",
                                        "configs": {c: per_config[c] for c in yale_configs if c in per_config}}
        time_cnn("yaleb_dev", items)

    # ------------------------------------------------------------------------------------ CelebAMask-HQ
    celeba_dir = pathlib.Path(FLAGS.celebamask_dir or (faces / "celebamask_hq_mini" / "train" if faces else ""))
    if "celebamask_hq_heldout" in FLAGS.sets and (celeba_dir / "images").is_dir():
        _, heldout = real_photos.heldout_split(real_photos.celebamask_files(celeba_dir))
        items = _subsample([str(p) for p in heldout], FLAGS.max_photos)

        def celeba_error(name, face):
            labels = real_photos.load_celebamask_labels(name, load_image(name).shape)
            centres = []
            for label in (4, 5):  # CelebAMask-HQ l_eye, r_eye
                ys, xs = np.nonzero(labels == label)
                if xs.size == 0:
                    return None
                centres.append([xs.mean(), ys.mean()])
            return detection.eye_nme(face.landmarks, centres)

        per_config = {}
        for config in [c for c in FLAGS.configs if c != "auto+group"]:
            print(f"[eval_detection] CelebAMask-HQ, {config}: {len(items)} photos", flush=True)
            report = detection.evaluate_items(detection.detection_config(config), items, load_image, celeba_error)
            report.pop("failed_paths")
            report.pop("records")
            per_config[config] = report
            print(f"  found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                  f"({report['seconds_per_photo']:.3f} s/photo; stages {report['stages']})", flush=True)
        results["ordinary_photo_cost"] = _interleaved_timing(items[:FLAGS.ordinary_timing_photos], load_image)
        results["sets"]["celebamask_hq_heldout"] = {"folder": str(celeba_dir.name), "reference": "eye labels",
                                                    "configs": per_config}
        time_cnn("celebamask_hq_heldout", items)

    # ---------------------------------------------------------------------------------------- synthetic
    for entry in FLAGS.synthetic_sets if "synthetic" in FLAGS.sets else []:
        set_name, _, folder_text = entry.partition("=")
        if not folder_text:
            raise FaceTexError(f"--synthetic_sets: {entry!r} is not name=folder")
        folder = pathlib.Path(folder_text)
        items = _subsample(sorted(str(p) for p in (folder / "images").glob("*.png")), FLAGS.max_photos)
        if not items:
            raise FaceTexError(f"--synthetic_sets: {folder} holds no images/*.png")

        def synthetic_error(name, face, folder=folder):
            truth = np.load(folder / "gt" / f"{pathlib.Path(name).stem}.npz")["landmarks"]
            return detection.five_point_nme(face.landmarks, five_points(truth))

        per_config = {}
        for config in [c for c in FLAGS.configs if c != "auto+group"]:
            print(f"[eval_detection] {set_name}, {config}: {len(items)} faces", flush=True)
            report = detection.evaluate_items(detection.detection_config(config), items, load_image, synthetic_error)
            report.pop("failed_paths")
            report["per_face"] = {pathlib.Path(r["name"]).stem: [r["stage"], None if r["error"] is None
                                                                  else round(r["error"], 4)]
                                  for r in report.pop("records")}
            per_config[config] = report
            print(f"  found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                  f"({report['seconds_per_photo']:.3f} s/face; stages {report['stages']})", flush=True)
        manifest = detection.synthetic_manifest(folder)
        results["sets"][set_name] = {"folder": folder.name, "generator_config": manifest.get("config"),
                                     "make_synthetic": detection.make_synthetic_command(manifest),
                                     "configs": per_config}
        time_cnn(set_name, items)
    results["summary"] = _summary(results)
    results["cnn_cost"] = timing
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    io_utils.write_json(FLAGS.json, results)
    print(f"[eval_detection] -> {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
