"""Floating-point operation counts from the TF profiler, and the machine's achieved matmul FLOP/s.

Used by scripts/bench.py (arithmetic intensity of the refinement network and the prior regressor).

Convention (TensorFlow's registered flop statistics, ``tf.compat.v1.profiler`` with
``ProfileOptionBuilder.float_operation()``): a multiply-add counts as 2 FLOPs — MatMul ``2 * k * m * n``,
Conv2D ``2 * output elements * kh * kw * in_channels`` — and element-wise ops with a registered statistic
(BiasAdd, Add, Mul, ...) count 1 per output element. Ops without one (FusedBatchNorm, Relu, Tanh, resizes,
...) count 0, so the total is a slight undercount dominated by the convolutions / matmuls. Shapes must be
static: count on a concrete function traced with a fixed batch size.
"""
from __future__ import annotations

import collections
import time

import tensorflow as tf


def graph_flops(graph) -> dict:
    """{'total': int, 'by_op_type': {type: flops}} of a `tf.Graph` (e.g. a concrete function's ``.graph``)."""

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    result = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="scope",
                                           options=options)
    types = {op.name: op.type for op in graph.get_operations()}
    by_type = collections.Counter()

    def walk(node):
        if node.float_ops:
            by_type[types.get(node.name, "?")] += int(node.float_ops)
        for child in node.children:
            walk(child)

    walk(result)
    return {"total": int(result.total_float_ops), "by_op_type": dict(by_type.most_common())}


def function_flops(function, *input_specs) -> dict:
    """FLOPs of ``function(*inputs)`` traced with the given `tf.TensorSpec`s (fixed shapes), as `graph_flops`."""

    concrete = tf.function(function, autograph=False).get_concrete_function(*input_specs)
    return graph_flops(concrete.graph)


def model_flops_per_example(model, input_specs, batch_size=1, training=False) -> dict:
    """FLOPs per example of a Keras model's forward pass.

    Args:
      model: a built Keras model (or any callable taking (inputs, training=...)).
      input_specs: a `tf.TensorSpec` without the batch dimension, or a dict of them (the model's dict input).
      batch_size: traced batch size; the totals are divided by it.
    Returns:
      {'per_example': float, 'total': int, 'batch_size': int, 'by_op_type': {type: flops per example}}.
    """

    def batched(spec):
        return tf.TensorSpec([batch_size, *spec.shape], spec.dtype)

    specs = tf.nest.map_structure(batched, input_specs)
    counted = function_flops(lambda inputs: model(inputs, training=training), specs)
    return {"per_example": counted["total"] / batch_size, "total": counted["total"], "batch_size": batch_size,
            "by_op_type": {k: v / batch_size for k, v in counted["by_op_type"].items()}}


def matmul_gflops(size=2048, repeats=10, dtype="float32", device=None) -> dict:
    """The machine's achieved dense matmul rate: ``tf.matmul`` of two [size, size] matrices, 2 size^3 FLOPs each.

    One warm-up call, then ``repeats`` timed calls (each forced to the host); returns the best and the median
    GFLOP/s, the seconds per call, and GFLOP per CPU-second of this process (all threads; on a CPU shared with
    other jobs, the wall-clock rate depends on the share this process gets, the per-CPU-second rate much less).
    """

    device = device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")
    with tf.device(device):
        a = tf.random.stateless_normal([size, size], seed=[1, 2], dtype=dtype)
        b = tf.random.stateless_normal([size, size], seed=[3, 4], dtype=dtype)
        run = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
        run(a, b).numpy()
        times, cpus = [], []
        for _ in range(max(1, repeats)):
            start, cpu = time.perf_counter(), time.process_time()
            run(a, b).numpy()
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    flops = 2.0 * size ** 3
    times.sort()
    cpus.sort()
    median, cpu_median = times[len(times) // 2], cpus[len(cpus) // 2]
    return {"size": size, "dtype": str(dtype), "device": device, "repeats": len(times),
            "seconds_median": median, "gflops_best": flops / times[0] / 1e9, "gflops_median": flops / median / 1e9,
            "cpu_seconds_median": cpu_median, "gflops_per_cpu_s": flops / max(cpu_median, 1e-9) / 1e9}
