"""Speed of the no-weights default path (prior fit + UV fit + renders) per UV-fit solver, with retracing counts
and a machine yardstick, for scripts/bench.py (its ``default_path`` section) and scripts/bench_refiner_modes.py.

Measured on aligned faces (detection and masking are timed apart, `time_detect_and_mask`):
- ``first_call_s``: the first `Reconstructor.reconstruct` of a fresh reconstructor at that batch size (tracing,
  XLA compilation, lazy loading); scripts/bench.py runs each solver in a fresh process so that the first batch
  size's first call is cold (nothing traced or compiled before it). ``traces_first_call``: how many
  `tf.function` traces it made;
- ``ms_per_photo``: median over ``repeats`` later calls, divided by the batch; ``traces_per_later_call``: the
  traces those calls made (0 = nothing retraces per photo);
- ``yardstick_resnet50_ms``: Keras ResNet-50 (random weights) forward at batch 1, median ms, measured in the same
  process after the timings (so that it does not warm them up): dividing by it makes figures comparable across
  machines and loads.
"""
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

from tf_facetex.trace_counter import count_traces

# The UV-fit solvers compared (`refinement.fit.UVFitConfig.solver`): 'xla' the shipped default (all Adam steps in
# one compiled loop), 'adam' the previous per-step loop (kept for the comparison).
SOLVERS = ("xla", "adam")


def _load_average():
    return [round(x, 2) for x in os.getloadavg()]


def with_uv_solver(reconstructor, solver):
    """Sets the UV-fit solver (`SOLVERS`) of a `pipeline.Reconstructor` whose detail stage is the UV fit, keeping
    the fit's other settings (a new `FitRefiner` when it differs); returns the reconstructor."""
    import dataclasses

    from tf_facetex.refinement.fit import FitRefiner

    config = reconstructor.refiner.config
    if config.solver != solver:
        renderer = reconstructor.renderer
        reconstructor.use_refiner(FitRefiner(renderer.uv_mask, renderer.uv_symmetry_index,
                                             dataclasses.replace(config, solver=solver)))
    return reconstructor


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


def time_detect_and_mask(find, photos, repeats=2):
    """ms per photo of ``find(photo) -> aligned face`` (detection, landmarks, alignment, mask): the first call
    apart (loads the detector and the masking network). Returns ({'first_call_s', 'ms_per_photo'}, faces)."""
    start = time.perf_counter()
    faces = [find(photos[0])]
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        for photo in photos:
            start = time.perf_counter()
            find(photo)
            times.append(1e3 * (time.perf_counter() - start))
    faces += [find(photo) for photo in photos[1:]]
    return {"first_call_s": round(first, 2), "ms_per_photo": round(statistics.median(times), 1)}, faces


def time_reconstructors(factories, faces, batch, repeats=2, key="name"):
    """Timings of several reconstructors at one batch size on aligned faces (cycled to fill the batch).

    ``factories``: {name: zero-argument callable building a `Reconstructor`}. Each gets a fresh reconstructor
    and its first call; then the timed calls alternate between them (rotating order), so that they share the
    machine's load. Returns one dict per name: first_call_s, traces, ms_per_photo (median), detailed_psnr_db,
    the refiner's description and the load average around the timed calls."""
    batch_faces = [faces[k % len(faces)] for k in range(batch)]
    names = list(factories)
    reconstructors, runs = {}, {}
    for name in names:
        reconstructors[name] = factories[name]()
        load_before = _load_average()
        with count_traces() as first_traces:
            start = time.perf_counter()
            reconstructors[name].reconstruct(batch_faces)
            first = time.perf_counter() - start
        runs[name] = {key: name, "batch": batch, "first_call_s": round(first, 2),
                      "traces_first_call": first_traces.total,
                      "trace_seconds_first_call": first_traces.as_dict()["seconds_by_name"],
                      "refiner": reconstructors[name].refiner.describe(), "load_average_first_call": load_before,
                      "times": [], "traces": [], "psnr": None}
    load_before = _load_average()
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
        run.update({"ms_per_photo": round(1e3 * float(np.median(times)) / batch, 1) if times else None,
                    "traces_per_later_call": int(max(traces)) if traces else None,
                    "detailed_psnr_db": None if psnr is None else round(psnr, 3),
                    "load_average_timed": [load_before, _load_average()]})
        out.append(run)
    return out


def time_default_path(make_reconstructor, faces, batches=(1, 16), solvers=SOLVERS, repeats=2):
    """`time_reconstructors` of each solver at each batch size (in that order: the first batch size's first call
    is the process's first when nothing ran before). ``make_reconstructor(solver)`` builds the product's
    `Reconstructor` with that UV-fit solver (the script passes it: this layer does not import the pipeline).
    Returns the runs (one dict per batch and solver, with 'solver')."""
    runs = []
    for batch in batches:
        factories = {solver: (lambda solver=solver: make_reconstructor(solver)) for solver in solvers}
        runs += time_reconstructors(factories, faces, batch, repeats, key="solver")
    return runs


def default_path_report(make_reconstructor, faces, batches=(1, 16), solvers=SOLVERS, repeats=2, yardstick=True):
    """In this process: {'runs': `time_default_path` with 'ms_per_photo_over_yardstick', 'yardstick_resnet50_ms'
    (measured after the runs), 'load_average', 'cpu_count'}. The first call of the first solver at the first
    batch size is cold only when nothing was traced before in this process (scripts/bench.py runs one solver
    per fresh process: `run_in_fresh_process`)."""
    runs = time_default_path(make_reconstructor, faces, batches, solvers, repeats)
    report = {"runs": runs, "load_average": _load_average(), "cpu_count": os.cpu_count()}
    if yardstick:
        ms = resnet50_yardstick_ms()
        report["yardstick_resnet50_ms"] = round(ms, 1)
        for run in runs:
            run["ms_per_photo_over_yardstick"] = round(run["ms_per_photo"] / ms, 2) if run["ms_per_photo"] else None
    return report


def fresh_process_env(xla_cache_dir):
    """os.environ for a fresh measuring process whose persistent XLA cache (`tf_facetex.xla_cache`) is
    ``xla_cache_dir``: an empty folder makes its first call cold, as on a fresh machine; None turns it off."""
    flags = [flag for flag in os.environ.get("TF_XLA_FLAGS", "").split()
             if not flag.startswith("--tf_xla_persistent_cache_directory")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if xla_cache_dir is None:
        env["TF_FACETEX_XLA_CACHE"] = "0"
    else:
        flags.append(f"--tf_xla_persistent_cache_directory={xla_cache_dir}")
    env["TF_XLA_FLAGS"] = " ".join(flags)
    return env


def run_in_fresh_process(command, xla_cache_dir=None, timeout=3600):
    """Runs ``command`` (argv of a program that writes its result JSON to the path appended as
    ``--default_path_out=PATH``) in a new process (nothing traced yet; its XLA cache: `fresh_process_env`) and
    returns that JSON. Raises RuntimeError with the program's last output when it fails."""
    with tempfile.TemporaryDirectory(prefix="default_path_") as scratch:
        out = os.path.join(scratch, "report.json")
        done = subprocess.run([*command, f"--default_path_out={out}"], capture_output=True, text=True,
                              timeout=timeout, env=fresh_process_env(xla_cache_dir))
        if done.returncode != 0 or not os.path.isfile(out):
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
        with open(out) as handle:
            return json.load(handle)


def summarise(reports):
    """The per-solver reports of fresh processes (`default_path_report` with one solver each) -> one section:
    {'runs' (each with its process's yardstick ratio), 'yardstick_resnet50_ms' {solver: ms}, 'by_batch' {batch:
    {'<solver>_ms_per_photo', 'adam_over_xla'}}, 'batch_scaling' {solver: ms/photo at the largest batch / at the
    smallest}}."""
    runs = [run for report in reports for run in report["runs"]]
    yardsticks = {report["runs"][0]["solver"]: report.get("yardstick_resnet50_ms") for report in reports
                  if report["runs"]}
    by_batch = {}
    for run in runs:
        row = by_batch.setdefault(str(run["batch"]), {})
        row[f"{run['solver']}_ms_per_photo"] = run["ms_per_photo"]
        row[f"{run['solver']}_first_call_s"] = run["first_call_s"]
    for row in by_batch.values():
        if row.get("xla_ms_per_photo") and row.get("adam_ms_per_photo"):
            row["adam_over_xla"] = round(row["adam_ms_per_photo"] / row["xla_ms_per_photo"], 2)
    scaling = {}
    for solver in dict.fromkeys(run["solver"] for run in runs):
        mine = sorted((run["batch"], run["ms_per_photo"]) for run in runs if run["solver"] == solver)
        if len(mine) > 1 and mine[0][1]:
            scaling[solver] = round(mine[-1][1] / mine[0][1], 2)
    return {"runs": runs, "yardstick_resnet50_ms": yardsticks, "by_batch": by_batch,
            "batch_scaling_largest_over_smallest": scaling}
