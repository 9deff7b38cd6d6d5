"""The weighted total of a set of loss terms: the one weighted sum every objective in the package uses."""
from typing import Mapping

import tensorflow as tf


def weighted_total(terms: Mapping, weights: Mapping):
    """sum_t weights[t] * terms[t], in the order of ``weights``, over the terms that have a weight.

    Args:
      terms: {name: scalar tensor}.
      weights: {name: Python number or scalar tensor (e.g. `training.schedule.scheduled_weights`)}; a name without
        a term, and a Python weight of exactly 0, are skipped (so an unused term never enters the sum).
    Returns:
      scalar (0.0 when nothing is weighted).
    """
    weighted = [weights[name] * terms[name] for name in weights
                if name in terms and not (isinstance(weights[name], (int, float)) and weights[name] == 0)]
    return tf.add_n(weighted) if weighted else tf.constant(0.0)
