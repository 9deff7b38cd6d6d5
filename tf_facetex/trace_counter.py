"""Counts `tf.function` traces (new concrete functions) made while a block runs: the retracing check of the
benchmarks and tests ("a second photo of the same shape traces nothing").

TensorFlow keeps a tracing count per `tf.function` object, which misses functions that are created, traced and
dropped inside a call (a new ``@tf.function`` per photo is exactly the bug to catch). So this wraps TensorFlow's
internal tracing entry point (`tracing_compilation._create_concrete_function`, not a public API: for
measurement code only, never for the product's behaviour) for the duration of a ``with`` block.
"""
import collections
import contextlib
import time

from tensorflow.python.eager.polymorphic_function import tracing_compilation


class TraceCount:
    """The traces seen in a `count_traces` block: ``total``, ``by_name`` (function name -> count) and
    ``seconds_by_name`` (wall seconds spent tracing them, nested traces counted in their callers too)."""

    def __init__(self):
        self.by_name = collections.Counter()
        self.seconds_by_name = collections.Counter()

    @property
    def total(self) -> int:
        return int(sum(self.by_name.values()))

    def as_dict(self) -> dict:
        return {"total": self.total, "by_name": dict(self.by_name.most_common()),
                "seconds_by_name": {k: round(v, 2) for k, v in self.seconds_by_name.most_common()}}


@contextlib.contextmanager
def count_traces():
    """``with count_traces() as traces: ...`` then ``traces.total`` / ``traces.by_name``. Nests."""
    traces = TraceCount()
    original = tracing_compilation._create_concrete_function

    def counting(function_type, type_context, func_graph, tracing_options):
        name = str(getattr(tracing_options, "name", "?"))
        traces.by_name[name] += 1
        start = time.perf_counter()
        try:
            return original(function_type, type_context, func_graph, tracing_options)
        finally:
            traces.seconds_by_name[name] += time.perf_counter() - start

    tracing_compilation._create_concrete_function = counting
    try:
        yield traces
    finally:
        tracing_compilation._create_concrete_function = original
