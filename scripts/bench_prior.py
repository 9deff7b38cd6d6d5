"""Benchmark of the prior module: fitting ms/image by stage, and regressor images/s (batch 16, CPU).

    python scripts/bench_prior.py --json [--batch_size 16] [--backbone resnet50]

Prints one JSON object. Faces come from the synthetic generator (no photos needed); timings are
wall-clock after one warm-up call (tf.function tracing and XLA compilation excluded).
"""
import json
import time

from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", False, "Print one JSON object (otherwise one line per figure).")
flags.DEFINE_integer("batch_size", 16, "Images per batch.")
flags.DEFINE_integer("repeats", 2, "Timed repetitions (the median is reported).")
flags.DEFINE_string("backbone", "resnet50", "Regressor backbone to time.")
flags.DEFINE_string("face_model", None, "Face model; default: see README.")


def _timed(function, repeats):
    function()  # warm-up: tracing / compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv):
    del argv
    import os

    import numpy as np
    import tensorflow as tf

    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.module import PriorConfig, PriorModule
    from tf_facetex.prior.regressor import PriorRegressor

    model = load_face_model(FLAGS.face_model, log=lambda *_: None)
    batch = FLAGS.batch_size
    prior = PriorModule(model, PriorConfig())
    faces = SyntheticFaceGenerator(model, prior.renderer, SyntheticConfig()).generate(np.random.default_rng(0), batch)
    images = faces["image"].astype(np.float32) / 255.0
    landmarks, masks = faces["landmarks"], faces["face_mask"]

    stages = {}
    fit = {}
    stages["landmark_fit"] = _timed(lambda: fit.update(prior.landmark_fitter(landmarks)), FLAGS.repeats)
    parts = {k: tf.constant(fit[k]) for k in ("id", "exp", "angles", "translation")}
    posed = prior.decoder.pose(parts)["posed"]
    stages["rasterize"] = _timed(lambda: prior.renderer.rasterize(posed), FLAGS.repeats)
    raster = prior.renderer.rasterize(posed)
    normals = prior.renderer.vertex_normals(posed)
    stages["photometric_fit"] = _timed(lambda: prior.photometric_fitter(images, masks, raster, normals),
                                       FLAGS.repeats)
    stages["unwrap"] = _timed(lambda: prior.renderer.unwrap(images, posed, raster), FLAGS.repeats)
    total = _timed(lambda: prior(images, landmarks, masks), FLAGS.repeats)

    regressor = PriorRegressor.for_model(model, backbone=FLAGS.backbone)
    run = tf.function(lambda x: regressor(x, training=False))
    regress_time = _timed(lambda: run(images).numpy(), FLAGS.repeats)

    result = {
        "device": "cpu", "cpu_count": os.cpu_count(), "batch_size": batch, "face_model": model.name,
        "fit_ms_per_image": round(1000 * total / batch, 1),
        "fit_stage_ms_per_image": {k: round(1000 * v / batch, 1) for k, v in stages.items()},
        "regressor_backbone": FLAGS.backbone,
        "regressor_images_per_s": round(batch / regress_time, 2),
    }
    if FLAGS.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    cli.run(main)
