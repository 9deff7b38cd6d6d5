"""Counts `tf.function` traces (new concrete functions) made while a block runs: the retracing check of the
benchmarks and tests ("a second photo of the same shape traces nothing").

TensorFlow keeps a tracing count per `tf.function` object, which misses functions that are created, traced and
dropped inside a call (a new ``@tf.function`` per photo is exactly the bug to catch). So this wraps TensorFlow's
internal tracing entry point (`tracing_compilation._create_concrete_function`, not a public API: for
measurement code only, never for the product's behaviour) for the duration of a ``with`` block.
"""
import collections
import contextlib

from tensorflow.python.eager.polymorphic_function import tracing_compilation


class TraceCount:
    """The traces seen in a `count_traces` block: ``total`` and ``by_name`` (function name -> count)."""

    def __init__(self):
        self.by_name = collections.Counter()

    @property
    def total(self) -> int:
        return int(sum(self.by_name.values()))

    def as_dict(self) -> dict:
        return {"total": self.total, "by_name": dict(self.by_name.most_common())}


@contextlib.contextmanager
def count_traces():
    """``with count_traces() as traces: ...`` then ``traces.total`` / ``traces.by_name``. Nests."""
    traces = TraceCount()
    original = tracing_compilation._create_concrete_function

    def counting(function_type, type_context, func_graph, tracing_options):
        traces.by_name[str(getattr(tracing_options, "name", "?"))] += 1
        return original(function_type, type_context, func_graph, tracing_options)

    tracing_compilation._create_concrete_function = counting
    try:
        yield traces
    finally:
        tracing_compilation._create_concrete_function = original
