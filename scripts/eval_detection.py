"""Detection + alignment success on hard inputs, before and after the robust detector.

  nice -n 5 .venv/bin/python scripts/eval_detection.py --json docs/results/eval_detection.json \
      --synthetic_dir /tmp/synth_hardlight      # made by scripts/make_synthetic.py --directional_prob 1
  .venv/bin/python scripts/eval_detection.py --json /tmp/det.json --max_photos 20   # quick run

Sets: the Yale B dev frames (<shared>/faces/yaleb_cropped_dev: grey, tight crops, one point light from up
to 60 deg aside / 40 deg below, ambient frames), the held-out 200 CelebAMask-HQ-mini photos, and synthetic
faces under hard directional light (optional). Configurations (tf_facetex/evaluation/detection.py):
'hog' (the default before: HOG + upsampling + padding), 'hog+exposure', 'auto' (HOG then the CNN, each
also on an exposure-normalised copy: the new default) and, on Yale B, 'auto+group' (a frame with no
detection borrows the landmarks of its subject's best-lit detected frame). Success = found and the five
alignment points within 0.15 inter-ocular distances of the reference (see the module). The CNN's cost is
timed on its own as well.
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
flags.DEFINE_string("synthetic_dir", None, "A scripts/make_synthetic.py folder (images/, gt/); skipped when unset.")
flags.DEFINE_list("configs", ["hog", "hog+exposure", "auto", "auto+group"], "Detector configurations.")
flags.DEFINE_integer("max_photos", None, "Use at most this many photos of each set (quick runs; evenly spaced).")
flags.DEFINE_integer("cnn_timing_photos", 8, "Photos of each set the CNN stage alone is timed on.")


def _subsample(items, limit):
    if not limit or len(items) <= limit:
        return list(items)
    step = len(items) / float(limit)
    return [items[int(i * step)] for i in range(limit)]


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
    unknown = set(FLAGS.configs) - set(detection.CONFIGS)
    if unknown:
        raise FaceTexError(f"--configs: unknown {sorted(unknown)}; known: {sorted(detection.CONFIGS)}")
    faces = paths.faces_dir()
    results = {"command": " ".join(sys.argv),
               "protocol": {"aligned_nme": detection.ALIGNED_NME,
                            "configs": {name: detection.CONFIGS[name] for name in FLAGS.configs}},
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
    if (yale_dir / "index.tsv").is_file():
        rows = detection.read_yale_index(yale_dir)
        references = detection.yale_references(rows, load_image, FaceDetector("auto"))
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
        for config in FLAGS.configs:
            print(f"[eval_detection] Yale B, {config}: {len(items)} frames", flush=True)
            detector = detection.detection_config(config, group_of=lambda name: members[subject_of[name]])
            report = detection.evaluate_items(detector, items, load_image, yale_error, log=print)
            failed = set(report.pop("failed_paths"))
            hard_items = [item for item in items if item in hard]
            report["hard_light_frames"] = len(hard_items)
            report["hard_light_aligned"] = round(sum(item not in failed for item in hard_items)
                                                 / max(len(hard_items), 1), 4)
            per_config[config] = report
            print(f"  found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                  f"({report['seconds_per_photo']:.3f} s/frame; stages {report['stages']})", flush=True)
        results["sets"]["yaleb_dev"] = {"folder": yale_dir.name, "subjects": len(references),
                                        "subjects_without_reference": sorted(set(members) - set(references)),
                                        "hard_light": "ambient, |azimuth| >= 50 deg or elevation < 0",
                                        "configs": per_config}
        time_cnn("yaleb_dev", items)

    # ------------------------------------------------------------------------------------ CelebAMask-HQ
    celeba_dir = pathlib.Path(FLAGS.celebamask_dir or (faces / "celebamask_hq_mini" / "train" if faces else ""))
    if (celeba_dir / "images").is_dir():
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
            per_config[config] = report
            print(f"  found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                  f"({report['seconds_per_photo']:.3f} s/photo; stages {report['stages']})", flush=True)
        results["sets"]["celebamask_hq_heldout"] = {"folder": str(celeba_dir.name), "reference": "eye labels",
                                                    "configs": per_config}
        time_cnn("celebamask_hq_heldout", items)

    # ---------------------------------------------------------------------------------------- synthetic
    if FLAGS.synthetic_dir:
        folder = pathlib.Path(FLAGS.synthetic_dir)
        items = _subsample(sorted(str(p) for p in (folder / "images").glob("*.png")), FLAGS.max_photos)

        def synthetic_error(name, face):
            truth = np.load(folder / "gt" / f"{pathlib.Path(name).stem}.npz")["landmarks"]
            return detection.five_point_nme(face.landmarks, five_points(truth))

        manifest = folder / "manifest.json"
        per_config = {}
        for config in [c for c in FLAGS.configs if c != "auto+group"]:
            print(f"[eval_detection] synthetic, {config}: {len(items)} faces", flush=True)
            report = detection.evaluate_items(detection.detection_config(config), items, load_image, synthetic_error)
            report.pop("failed_paths")
            per_config[config] = report
            print(f"  found {report['found']:.3f}, aligned {report['aligned']:.3f} "
                  f"({report['seconds_per_photo']:.3f} s/face; stages {report['stages']})", flush=True)
        import json
        knobs = json.loads(manifest.read_text()).get("config") if manifest.is_file() else None
        results["sets"]["synthetic_hard_light"] = {"folder": folder.name, "generator_config": knobs,
                                                   "configs": per_config}
        time_cnn("synthetic_hard_light", items)
    results["cnn_cost"] = timing
    io_utils.write_json(FLAGS.json, results)
    print(f"[eval_detection] -> {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
