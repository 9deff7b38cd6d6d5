"""End-to-end speed of the refiner modes of scripts/reconstruct.py on aligned real photos: the whole
`Reconstructor` (prior, unwrap, detail stage, renders, turntable), per photo at one batch size, interleaved so that
the modes share the machine's load (`tf_facetex.evaluation.default_path_speed.time_reconstructors`).

    python scripts/bench_refiner_modes.py --json docs/results/bench_refiner_modes.json

Modes: fit (the default, 150 steps), net (the shipped network), net+fit (30 steps), and regressor+net (the shipped
prior regressor instead of the landmark + photometric fit, then the network: the path that needs no landmarks).
Detection and masking are not timed (the same for every mode). The photos: the first --num_photos held-out
CelebAMask-HQ-mini images (never trained on).
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_photos", 4, "Held-out CelebAMask-HQ-mini photos timed (cycled to fill the batch).")
flags.DEFINE_integer("batch_size", 1, "Photos per reconstruct call.")
flags.DEFINE_integer("repeats", 3, "Timed calls per mode after the first (median reported).")
flags.DEFINE_list("modes", ["fit", "net", "net+fit", "regressor+net"], "Modes to time.")
flags.DEFINE_string("json", None, "Results JSON.")

MODES = {"fit": dict(refiner="fit"), "net": dict(refiner="net"), "net+fit": dict(refiner="net+fit"),
         "regressor+net": dict(refiner="net", prior="regressor")}


def main(argv):
    del argv
    import os
    import sys

    from tf_facetex import io_utils, paths, pipeline
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import real_photos
    from tf_facetex.evaluation.default_path_speed import resnet50_yardstick_ms, time_reconstructors
    from tf_facetex.pipeline import setup

    unknown = sorted(set(FLAGS.modes) - set(MODES))
    if unknown:
        raise FaceTexError(f"--modes {unknown}: known modes are {sorted(MODES)}")
    faces_root = paths.faces_dir()
    if faces_root is None:
        raise FaceTexError("no shared faces folder (../shared/faces) to time on")
    _, held_out = real_photos.heldout_split(real_photos.celebamask_files(faces_root / "celebamask_hq_mini" / "train"))
    finder = pipeline.FaceFinder()
    faces = [finder.from_image(load_image(path), name=str(path))[0] for path in held_out[:FLAGS.num_photos]]
    factories = {mode: (lambda mode=mode: setup.build_reconstructor(**MODES[mode])) for mode in FLAGS.modes}
    runs = time_reconstructors(factories, faces, FLAGS.batch_size, FLAGS.repeats, key="mode")
    yardstick = resnet50_yardstick_ms()
    for run in runs:
        run["ms_per_photo_over_yardstick"] = round(run["ms_per_photo"] / yardstick, 2)
        print(f"[bench] {run['mode']:14s} {run['ms_per_photo']:8.1f} ms/photo (first call {run['first_call_s']} s), "
              f"detailed PSNR {run['detailed_psnr_db']} dB")
    fit = next((r for r in runs if r["mode"] == "fit"), None)
    result = {"command": " ".join(["python", *sys.argv]), "photos": [path.name for path in held_out[:FLAGS.num_photos]],
              "batch_size": FLAGS.batch_size, "repeats": FLAGS.repeats, "yardstick_resnet50_ms": round(yardstick, 1),
              "runs": runs, "speedup_over_fit": {r["mode"]: round(fit["ms_per_photo"] / r["ms_per_photo"], 2)
                                                 for r in runs} if fit else None,
              "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    if FLAGS.json:
        io_utils.write_json(FLAGS.json, result)
    print(f"[bench] speed-up over fit: {result['speedup_over_fit']}; load {result['load_average']}")


if __name__ == "__main__":
    cli.run(main)
