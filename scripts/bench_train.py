"""Training speed of the refinement module on this machine: one JSON object on stdout.

  python scripts/bench_train.py --json                  # small and paper nets, batch 16
  python scripts/bench_train.py --json --nets=small --steps=10

For each net (toy samples at its size: small 64px images / 64^2 UV, paper 224px / 256^2 UV, written to a temporary
folder) it times, after one warm-up call each, tf.function'd pieces of a training step at the given batch size:
  input     seconds per batch of the tf.data pipeline alone (decode + batch; prefetch overlaps it with compute)
  forward   noise fill + RefinementNet forward (training mode)
  rendering SH shading and the lookup renders R(A',L'), R(A',L) (and the cross render when an identity is used)
  losses    every generator term + the discriminator's loss (forward only)
  step      the whole update (forward, rendering, losses, both backward passes, both Adam updates)
  backward  step - forward - rendering - losses (gradients and optimiser updates)
and reports steps_per_second = 1 / step, end_to_end_steps_per_second (pulling batches from the pipeline while
stepping), and each piece's share of input + step.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", True, "Print the result as one JSON object (the only output mode).")
flags.DEFINE_list("nets", ["small", "paper"], "RefinementNet presets to time.")
flags.DEFINE_integer("batch_size", 16, "Batch size (the paper's 16).")
flags.DEFINE_integer("steps", 3, "Timed calls per piece after the warm-up.")
flags.DEFINE_string("data_dir", "", "Where to write the toy samples (default: a temporary folder).")
flags.DEFINE_list("base_filters", [], "Width sweep: time each net at each of these base filter counts (e.g. 16,24,32); "
                  "empty = the preset's width.")
flags.DEFINE_integer("res_blocks", 0, "Residual blocks of the swept nets; 0 = the preset's.")

SIZES = {"small": {"image_size": 64, "uv_size": 64, "ndf": 16}, "paper": {"image_size": 224, "uv_size": 256, "ndf": 64},
         "cpu": {"image_size": 224, "uv_size": 128, "ndf": 16}}


def _timed(fn, *args, repeats):
    """Seconds per call of fn(*args) (after one warm-up call), the result forced to the host."""
    import time

    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    return (time.perf_counter() - start) / repeats


def bench_net(preset, batch_size, repeats, data_dir, net_overrides=None):
    import time

    import tensorflow as tf

    from tf_facetex.prior.samples import sample_dataset
    from tf_facetex.refinement import toy_data
    from tf_facetex.refinement.train import TrainConfig, build_trainer

    sizes = SIZES[preset]
    pattern = toy_data.write_toy_dataset(os.path.join(data_dir, preset), batch_size, eval_fraction=0.0,
                                         image_size=sizes["image_size"], uv_size=sizes["uv_size"])["train"]
    dataset = sample_dataset(pattern, batch_size, sizes["image_size"], sizes["uv_size"], toy_data.TOY_NUM_COEFFS,
                             training=True, shuffle_buffer=batch_size)
    iterator = iter(dataset)
    batch = next(iterator)
    config = TrainConfig(net_preset=preset, discriminator_ndf=sizes["ndf"], face_model="toy",
                         global_batch_size=batch_size, net_overrides=dict(net_overrides or {}))
    trainer = build_trainer(config, sizes["uv_size"], toy_data.toy_uv_mask(sizes["uv_size"]), None,
                            steps_per_epoch=1000)

    def compiled(fn):
        return tf.function(fn, autograph=False)

    forward = compiled(lambda b: trainer.forward(b, training=True))
    outputs = forward(batch)
    render = compiled(trainer.render)
    renders = render(batch, outputs)

    def loss_pieces(b, o, r):
        terms = trainer.generator_terms(b, o, r)
        return trainer.weighted_total(terms), trainer.discriminator_loss(b, o["albedo"])

    losses = compiled(loss_pieces)
    step = compiled(trainer.train_step_logs)
    times = {
        "input": _timed(lambda: next(iterator), repeats=repeats),
        "forward": _timed(forward, batch, repeats=repeats),
        "rendering": _timed(render, batch, outputs, repeats=repeats),
        "losses": _timed(losses, batch, outputs, renders, repeats=repeats),
        "step": _timed(step, batch, repeats=repeats),
    }
    times["backward"] = max(0.0, times["step"] - times["forward"] - times["rendering"] - times["losses"])
    start = time.perf_counter()
    for _ in range(repeats):
        step(next(iterator))["total"].numpy()
    end_to_end = repeats / (time.perf_counter() - start)
    whole = times["input"] + times["step"]
    return {
        "image_size": sizes["image_size"], "uv_size": sizes["uv_size"], "net_overrides": dict(net_overrides or {}),
        "generator_params": int(trainer.generator.count_params()),
        "discriminator_params": int(trainer.discriminator.count_params()),
        "seconds": {k: round(v, 4) for k, v in times.items()},
        "steps_per_second": round(1.0 / times["step"], 4),
        "end_to_end_steps_per_second": round(end_to_end, 4),
        "share": {k: round(times[k] / whole, 4) for k in ("input", "forward", "rendering", "losses", "backward")},
    }


def _variants():
    """(name, preset, net overrides) per timed net: each preset, or each preset at each --base_filters."""
    if not FLAGS.base_filters:
        return [(preset, preset, {}) for preset in FLAGS.nets]
    blocks = {"num_res_blocks": FLAGS.res_blocks} if FLAGS.res_blocks else {}
    return [(f"{preset}_f{width}" + (f"_r{FLAGS.res_blocks}" if blocks else ""), preset,
             {"base_filters": int(width), **blocks}) for preset in FLAGS.nets for width in FLAGS.base_filters]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    unknown = set(FLAGS.nets) - set(SIZES)
    if unknown:
        raise app.UsageError(f"unknown --nets {sorted(unknown)}; choose from {sorted(SIZES)}")
    import json
    import platform
    import tempfile

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        data_dir = FLAGS.data_dir or scratch
        result = {
            "what": "refinement training step timings (tf.function, CPU unless a GPU is visible)",
            "batch_size": FLAGS.batch_size, "timed_calls": FLAGS.steps,
            "devices": [d.device_type for d in tf.config.list_physical_devices()],
            "cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
            "nets": {name: bench_net(preset, FLAGS.batch_size, FLAGS.steps, data_dir, overrides)
                     for name, preset, overrides in _variants()},
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    print(json.dumps(result, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run(main)
