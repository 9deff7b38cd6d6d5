"""Throughput of the identity encoder on this machine: eager vs tf.function vs XLA (jit_compile).

    .venv/bin/python scripts/bench_identity.py --json            # one JSON object on stdout
    .venv/bin/python scripts/bench_identity.py --backend dlib --batch 16 --seconds 5

Timed per mode (batch of --batch, after one warm-up call that also traces/compiles):
- ``chips``: ``embed_chips`` on aligned chips (the network alone);
- ``images``: ``embed`` on --image_size renderings with 68 landmarks (TF alignment warp + network);
- ``images_grad``: ``embed`` plus the gradient of an identity loss w.r.t. the images (the training use).
The ArcFace backend needs --weights (deepface's arcface_weights.h5); without it random weights are used,
which does not change the speed.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _make_encoder(backend, weights):
    from tf_facetex.identity import encoder as enc
    if backend == "dlib":
        return enc.DlibIdentityEncoder(weights)
    if weights:
        return enc.ArcFaceIdentityEncoder(weights)
    import tempfile
    path = os.path.join(tempfile.mkdtemp(), "random_arcface_weights.h5")
    enc.save_arcface_weights_h5(enc.build_arcface_model(), path)
    return enc.ArcFaceIdentityEncoder(path)


def _inputs(encoder, batch, image_size, seed=0):
    """Synthetic batch: random chips, and images with a plausible 68-point face in the middle."""
    rng = np.random.default_rng(seed)
    chips = rng.uniform(0, 1, (batch, encoder.chip_size, encoder.chip_size, 3)).astype(np.float32)
    images = rng.uniform(0, 1, (batch, image_size, image_size, 3)).astype(np.float32)
    from tf_facetex.identity.alignment import dlib_template
    indices, template = dlib_template(68, size=image_size * 0.6, padding=0.0)
    landmarks = np.zeros((batch, 68, 2), np.float32)
    # Only the points the alignments use need to be sensible: dlib's 68-point template (nose, eyes, mouth)
    # placed in the image centre; the eye/nose/mouth points give ArcFace's 5 points as well.
    landmarks[:, indices] = template + image_size * 0.2 + rng.normal(0, 1.0, (batch, len(indices), 2))
    return tf.constant(chips), tf.constant(images), tf.constant(landmarks)


def _time(fn, args, seconds, min_runs=3):
    fn(*args)                                                     # warm-up: trace / compile
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < seconds:
        out = fn(*args)
        _ = out.numpy() if hasattr(out, "numpy") else out
        runs += 1
    return (time.perf_counter() - start) / runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="dlib", choices=("dlib", "arcface"))
    parser.add_argument("--weights", default=None, help="model file (default: dlib's from face_recognition_models)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=4.0, help="minimum timed seconds per measurement")
    parser.add_argument("--json", action="store_true", help="print only one JSON object")
    args = parser.parse_args(argv)

    from tf_facetex.identity.encoder import identity_similarity
    encoder = _make_encoder(args.backend, args.weights)
    chips, images, landmarks = _inputs(encoder, args.batch, args.image_size)
    target = tf.math.l2_normalize(tf.ones([args.batch, encoder.embedding_dim]), axis=-1)

    def chips_fn(c):
        return encoder.embed_chips(c)

    def images_fn(x, lm):
        return encoder.embed(x, landmarks=lm)

    def grad_fn(x, lm):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(1.0 - identity_similarity(encoder.embed(x, landmarks=lm), target))
        return tape.gradient(loss, x)

    modes = {"eager": lambda f: f, "tf_function": lambda f: tf.function(f),
             "xla": lambda f: tf.function(f, jit_compile=True)}
    results = {}
    for mode, wrap in modes.items():
        entry = {}
        for name, fn, fn_args in (("chips", chips_fn, (chips,)), ("images", images_fn, (images, landmarks)),
                                  ("images_grad", grad_fn, (images, landmarks))):
            try:
                seconds = _time(wrap(fn), fn_args, args.seconds)
                entry[name] = round(args.batch / seconds, 2)
            except Exception as err:  # noqa: BLE001 - XLA may not support an op here; report, don't crash
                entry[name] = None
                entry[name + "_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            if not args.json:
                print(f"{mode:12s} {name:12s} {entry[name]} images/s", file=sys.stderr)
        results[mode] = entry
    report = {"backend": args.backend, "batch": args.batch, "image_size": args.image_size,
              "chip_size": encoder.chip_size, "unit": "images/s", "cpu_count": os.cpu_count(),
              "tensorflow": tf.__version__, "device": "CPU" if not tf.config.list_physical_devices("GPU") else "GPU",
              "results": results}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
