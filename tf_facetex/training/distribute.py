"""tf.distribute strategies by name, and which process is the chief (writes checkpoints and summaries)."""
import os

import tensorflow as tf

from tf_facetex.errors import TrainingError

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """tf.distribute strategy by name; create it before any other TensorFlow work (multi-worker needs that)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainingError("--strategy=multi_worker reads the cluster from the TF_CONFIG environment variable, "
                                "which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"--strategy must be one of {STRATEGIES}, got {name!r}")


def is_chief(strategy) -> bool:
    """True on the worker that writes checkpoints and summaries (the only one outside multi-worker runs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def num_workers(strategy) -> int:
    """Number of worker processes (input pipelines) of a strategy: 1 outside multi-worker runs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))


def num_replicas_in_context() -> int:
    """Replicas of the current replica context (1 outside tf.distribute)."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1
