"""Speed of the no-weights default path (prior fit + UV fit + renders) per UV-fit solver, with retracing
counts and a machine yardstick, for scripts/bench.py (``--default_path``) and scripts/bench_uv_fit.py.

Measured on aligned faces (detection and masking are timed separately by scripts/bench.py):
- ``first_call_s``: the first `Reconstructor.reconstruct` of a fresh reconstructor at that batch size (tracing,
  XLA compilation, lazy loading); ``traces_first_call`` how many `tf.function` traces it made;
- ``ms_per_photo``: median over ``repeats`` later calls (alternating between the solvers), divided by the
  batch; ``traces_per_later_call``: the traces those calls made (0 = nothing retraces per photo);
- ``yardstick_resnet50_ms``: Keras ResNet-50 (random weights) forward at batch 1, median ms: dividing by it
  makes figures comparable across machines and loads.
"""
import os
import time

import numpy as np

from tf_facetex.refinement.fit import UVFitConfig
from tf_facetex.trace_counter import count_traces

# The UV-fit solvers compared: the previous per-step Adam loop and the same Adam in one compiled loop (the
# default; fewer or decayed steps reach a lower objective but a worse albedo, scripts/bench_uv_fit.py).
SOLVERS = {
    "adam": dict(solver="adam", steps=150, learning_rate=0.01, decay=1.0),
    "xla": dict(solver="xla", steps=150, learning_rate=0.01, decay=1.0),
}


def resnet50_yardstick_ms(repeats=10):
    """Median ms of a Keras ResNet-50 (weights=None) forward pass at batch 1 (224 x 224), after a warm-up."""
    import keras
    import tensorflow as tf

    network = keras.applications.ResNet50(weights=None)
    forward = tf.function(lambda x: network(x, training=False))
    image = tf.random.stateless_uniform([1, 224, 224, 3], [0, 0])
    forward(image).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(image).numpy()
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.median(times))


def time_default_path(make_reconstructor, faces, batch, solvers=("xla", "adam"), repeats=2):
    """Timings of the solvers at one batch size on aligned faces (cycled to fill the batch); see the module doc.

    ``make_reconstructor(fit_config)`` builds the product's `Reconstructor` whose `FitRefiner` uses that
    `refinement.fit.UVFitConfig` (scripts/bench.py passes it: this layer does not import the pipeline).
    Returns one dict per solver (`time_reconstructors`, with the solver's settings)."""
    factories = {solver: (lambda solver=solver: make_reconstructor(UVFitConfig(**SOLVERS[solver])))
                 for solver in solvers}
    runs = time_reconstructors(factories, faces, batch, repeats, key="solver")
    for run in runs:
        run.update({k: v for k, v in SOLVERS[run["solver"]].items() if k != "solver"})
    return runs


def time_reconstructors(factories, faces, batch, repeats=2, key="name"):
    """Timings of several reconstructors at one batch size on aligned faces (cycled to fill the batch).

    ``factories``: {name: zero-argument callable building a `Reconstructor`}. Each gets a fresh reconstructor
    and its first call; then the timed calls alternate between them (rotating order), so that they share the
    machine's load. Returns one dict per name: first_call_s, traces, ms_per_photo (median), detailed_psnr_db."""
    batch_faces = [faces[k % len(faces)] for k in range(batch)]
    names = list(factories)
    reconstructors, runs = {}, {}
    for name in names:
        reconstructors[name] = factories[name]()
        with count_traces() as first_traces:
            start = time.perf_counter()
            reconstructors[name].reconstruct(batch_faces)
            first = time.perf_counter() - start
        runs[name] = {key: name, "batch": batch, "first_call_s": round(first, 2),
                      "traces_first_call": first_traces.total,
                      "trace_seconds_first_call": first_traces.as_dict()["seconds_by_name"],
                      "times": [], "traces": [], "psnr": None}
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            with count_traces() as traces:
                start = time.perf_counter()
                results = reconstructors[name].reconstruct(batch_faces)
                runs[name]["times"].append(time.perf_counter() - start)
            runs[name]["traces"].append(traces.total)
            runs[name]["psnr"] = float(np.mean([r.metrics["detailed_psnr_db"] for r in results]))
    out = []
    for name in names:
        run = runs[name]
        times, traces, psnr = run.pop("times"), run.pop("traces"), run.pop("psnr")
        run.update({"ms_per_photo": round(1e3 * float(np.median(times)) / batch, 1),
                    "traces_per_later_call": int(max(traces)) if traces else None,
                    "detailed_psnr_db": None if psnr is None else round(psnr, 3)})
        out.append(run)
    return out


def default_path_report(make_reconstructor, faces, batches=(1, 16), solvers=("xla", "adam"), repeats=2):
    """{'yardstick_resnet50_ms', 'runs': [time_default_path per solver and batch], 'load_average'}."""
    yardstick = resnet50_yardstick_ms()
    runs = []
    for batch in batches:
        for run in time_default_path(make_reconstructor, faces, batch, tuple(solvers), repeats):
            run["ms_per_photo_over_yardstick"] = round(run["ms_per_photo"] / yardstick, 2)
            runs.append(run)
    return {"yardstick_resnet50_ms": round(yardstick, 1), "runs": runs,
            "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
