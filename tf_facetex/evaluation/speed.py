"""Measuring speed and memory on this machine (scripts/bench.py): stage clocks, peak RSS, TF allocator statistics,
network forward timings and achieved rates against a matmul reference."""
import contextlib
import os
import resource
import statistics
import sys
import threading
import time

import psutil
import tensorflow as tf


def load_average():
    """The 1 / 5 / 15-minute load averages, rounded (recorded around every measurement on a shared machine)."""
    return [round(x, 2) for x in os.getloadavg()]


class StageClock:
    """Accumulates seconds per stage (wall, and process CPU time under '<stage>_cpu').

    ``timer(stage)`` is the context manager the product's timing hooks take (`Reconstructor.set_timer`).
    """

    def __init__(self):
        self.seconds = {}

    def add(self, name, seconds):
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timer(self, name):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)
            self.add(name + "_cpu", time.process_time() - cpu)


class RssSampler:
    """Peak resident set size between start() and stop(), sampled by a thread (psutil)."""

    def __init__(self, interval=0.01):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._thread = None
        self._stop = None

    def start(self):
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self.process.memory_info().rss)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return self.peak


def ru_maxrss_bytes():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # Linux: KiB


def tf_allocator_stats():
    """Peak / current bytes of TF's allocator on each device, or why they are not available."""
    out = {}
    for device in tf.config.list_logical_devices():
        try:
            info = tf.config.experimental.get_memory_info(device.name.replace("/device:", ""))
            out[device.name] = {"current_mb": round(info["current"] / 2**20, 1),
                                "peak_mb": round(info["peak"] / 2**20, 1)}
        except (ValueError, RuntimeError) as err:
            out[device.name] = f"not available ({' '.join(str(err).split())})"
    return out


def time_networks(nets, batches, repeats):
    """Forward pass alone (tf.function, inference) at each batch size: ms/image and achieved GFLOP/s."""
    rows = []
    for name, (net, spec, _, flops) in nets.items():
        for batch in batches:
            inputs = tf.nest.map_structure(lambda s: tf.random.uniform([batch, *s.shape]), spec)
            run = tf.function(lambda x: net(x, training=False), autograph=False)
            load_before = load_average()
            tf.nest.map_structure(lambda t: t.numpy(), run(inputs))
            times, cpus = [], []
            for _ in range(max(1, repeats)):
                start, cpu = time.perf_counter(), time.process_time()
                tf.nest.map_structure(lambda t: t.numpy(), run(inputs))
                times.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
            seconds, cpu_seconds = statistics.median(times), statistics.median(cpus)
            row = {"network": name, "batch_size": batch, "ms_per_image": round(1000 * seconds / batch, 2),
                   "images_per_s": round(batch / seconds, 3), "load_average_before": load_before,
                   "load_average_after": load_average()}
            if flops:
                row.update(achieved_gflop_per_s=round(flops * batch / seconds / 1e9, 2),
                           gflop_per_cpu_s=round(flops * batch / max(cpu_seconds, 1e-9) / 1e9, 2))
            rows.append(row)
    return rows


def add_fractions(result, start, end):
    """Achieved rates as fractions of the matmul benchmark, in wall time and in CPU time.

    fraction_of_matmul: achieved GFLOP/s over the better (less disturbed) of the start and end matmul medians;
    fraction_of_matmul_cpu: GFLOP per CPU-second over the matmul's GFLOP per CPU-second (median of both runs):
    how efficiently the stage uses the CPU time it got, much less sensitive to other jobs on the machine.
    """
    wall = max(start["gflops_median"], end["gflops_median"])
    per_cpu = 0.5 * (start["gflops_per_cpu_s"] + end["gflops_per_cpu_s"])
    result["matmul_reference"] = {
        "gflops": round(wall, 2), "gflops_per_cpu_s": round(per_cpu, 2),
        "note": "fraction_of_matmul = achieved GFLOP/s / the better of the start and end matmul medians; "
                "fraction_of_matmul_cpu = GFLOP per CPU-second / the matmul's (mean of start and end): the "
                "CPU-time figure is the one to trust while other jobs share the cores"}
    rows = [a for run in result.get("runs", []) for a in run.get("achieved", {}).values()]
    rows += result.get("networks_alone", [])
    for row in rows:
        if "achieved_gflop_per_s" in row:
            row["fraction_of_matmul"] = round(row["achieved_gflop_per_s"] / wall, 3)
        if "gflop_per_cpu_s" in row:
            row["fraction_of_matmul_cpu"] = round(row["gflop_per_cpu_s"] / per_cpu, 3)
