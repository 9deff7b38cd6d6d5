"""Issue 19: why is batch 16 slower per photo than batch 1? (the profile behind docs/METHOD.md's answer; writes
batch_scaling_check.json next to this file)

    .venv/bin/python docs/results/issue19/batch_scaling_check.py [UV sizes, default 128,256] [batches, default 1,4,16]

The astronaut (skimage.data.astronaut: detected, masked, prior fitted once, as the product does) replicated to
each batch size; per UV size and batch: the product's UV fit alone (`FitRefiner`, the shipped compiled loop,
30 steps: the per-step cost does not depend on the step count) and the rest of `Reconstructor.reconstruct` (prior,
renders, turntable: the whole call minus the fit). Process CPU seconds per photo (less sensitive to the other jobs
on a shared machine than wall time; both cores count) and wall ms, the best of 2 calls after a warm-up. Each
(UV size, batch) runs in its own process, as one run of scripts/reconstruct.py uses one batch size.
"""
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_facetex import io_utils, pipeline  # noqa: E402
from tf_facetex.evaluation.speed import StageClock  # noqa: E402
from tf_facetex.refinement import uv_solver  # noqa: E402
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig  # noqa: E402

FIT_STEPS = 30


def best_of(call, repeats=2):
    """(min wall s, min CPU s) of ``repeats`` calls after one warm-up call."""
    call()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def measure(size, batch):
    """One (UV size, batch) in this process -> its row."""
    face = pipeline.FaceFinder(log=lambda *_: None).from_image(skimage.data.astronaut(), name="astronaut")[0]
    reconstructor = pipeline.build_reconstructor(None, uv_size=size, log=lambda *_: None)
    image = face.image[None].astype(np.float32) / 255.0
    prior_out = reconstructor.prior(image, face.landmarks[None].astype(np.float32),
                                    face.mask[None, ..., None].astype(np.float32))
    sample = {k: tf.repeat(tf.convert_to_tensor(prior_out[k], tf.float32), batch, 0) for k in uv_solver.SAMPLE_KEYS}
    fit = FitRefiner(reconstructor.renderer.uv_mask, reconstructor.renderer.uv_symmetry_index,
                     UVFitConfig(steps=FIT_STEPS))
    load = [round(x, 2) for x in os.getloadavg()]
    fit_wall, fit_cpu = best_of(lambda: fit(sample)["albedo_uv"].numpy())
    clock = StageClock()
    reconstructor.set_timer(clock.timer)
    reconstructor.reconstruct([face] * batch)                    # warm-up: traces this batch size
    clock.seconds.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    reconstructor.reconstruct([face] * batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    refine_wall, refine_cpu = clock.seconds["refine"], clock.seconds["refine_cpu"]
    return {"uv_size": size, "batch": batch,
            "fit_cpu_ms_per_photo_step": round(1e3 * fit_cpu / batch / FIT_STEPS, 2),
            "fit_wall_ms_per_photo_step": round(1e3 * fit_wall / batch / FIT_STEPS, 2),
            "reconstruct_cpu_ms_per_photo": round(1e3 * cpu / batch, 1),
            "reconstruct_wall_ms_per_photo": round(1e3 * wall / batch, 1),
            "without_fit_cpu_ms_per_photo": round(1e3 * (cpu - refine_cpu) / batch, 1),
            "without_fit_wall_ms_per_photo": round(1e3 * (wall - refine_wall) / batch, 1),
            "load_average": load}


def main(sizes, batches):
    import subprocess

    rows = []
    for size in sizes:
        for batch in batches:
            done = subprocess.run([sys.executable, __file__, "--one", str(size), str(batch)], capture_output=True,
                                  text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        first = next(r for r in rows if r["uv_size"] == row["uv_size"] and r["batch"] == batches[0])
        row["fit_cpu_over_smallest_batch"] = round(row["fit_cpu_ms_per_photo_step"]
                                                   / first["fit_cpu_ms_per_photo_step"], 2)
        row["without_fit_cpu_over_smallest_batch"] = round(row["without_fit_cpu_ms_per_photo"]
                                                           / first["without_fit_cpu_ms_per_photo"], 2)
    result = {"command": "python docs/results/issue19/batch_scaling_check.py " + " ".join(sys.argv[1:]),
              "fit_steps": FIT_STEPS, "rows": rows, "cpu_count": os.cpu_count(),
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    io_utils.write_json(pathlib.Path(__file__).with_suffix(".json"), result, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main([int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "128,256").split(",")],
             [int(b) for b in (sys.argv[2] if len(sys.argv) > 2 else "1,4,16").split(",")])
