"""The training schedule: per-epoch learning-rate decay and the epoch-dependent loss weights (paper section 6).

The paper trains 10 epochs with Adam at 1e-4, "reduced with attenuation coefficient of 0.98 every 1 epochs until we
reached 1e-5", batch 16, and sets the prior-L1 weight to 0 after the first epoch. Both depend on the epoch, which
the trainer keeps in a variable (derived from its step counter, so a resumed run lands on the same epoch); the
functions here read that variable inside the compiled step, so a new epoch never needs a retrace.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tf_facetex.losses import TERMS, LossWeights


def epoch_learning_rate(epoch, initial=1e-4, decay_rate=0.98, floor=1e-5):
    """lr(epoch) = max(initial * decay_rate ** epoch, floor) for a Python or numpy epoch (0-based)."""
    return float(max(initial * decay_rate ** int(epoch), floor))


@keras.saving.register_keras_serializable(package="tf_facetex")
class EpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr = max(initial * decay_rate ** epoch, floor), the epoch read from a variable at every step.

    The staircase-per-epoch decay of the paper (and of FuxiCV/3D-Face-GCNs' `exponential_decay(..., 0.98,
    staircase=True)`; docs/METHOD.md, "Training schedule"). Reading the trainer's epoch variable (not the optimiser's own
    iteration count) keeps the generator's and the discriminator's optimisers on the same schedule.

    Args:
      epoch: a scalar integer variable (or any callable returning the epoch); None reads epoch 0.
    """

    def __init__(self, initial=1e-4, decay_rate=0.98, floor=1e-5, epoch=None):
        self.initial = float(initial)
        self.decay_rate = float(decay_rate)
        self.floor = float(floor)
        self.epoch = epoch

    def _epoch(self):
        if self.epoch is None:
            return tf.constant(0.0)
        value = self.epoch() if callable(self.epoch) else self.epoch
        return tf.cast(tf.convert_to_tensor(value), tf.float32)

    def __call__(self, step):
        del step  # the epoch, not the optimiser's iteration, drives the decay
        lr = self.initial * tf.pow(tf.constant(self.decay_rate, tf.float32), self._epoch())
        return tf.maximum(lr, self.floor)

    def get_config(self):
        # The epoch variable is runtime state (checkpointed with the trainer), not configuration.
        return {"initial": self.initial, "decay_rate": self.decay_rate, "floor": self.floor}


def scheduled_weights(weights: LossWeights, epoch) -> dict:
    """The loss weights at `epoch` as float32 scalars usable inside a compiled step.

    Same semantics as `LossWeights.weight` (disabled terms 0; prior L1 only while epoch < prior_l1_epochs) but the
    epoch may be a tensor or variable. Terms whose weight is statically 0 are left out, so their (possibly
    expensive) values need not enter the total.

    Args:
      weights: LossWeights.
      epoch: scalar int (Python, tensor or variable), 0-based.
    Returns:
      {term: float32 scalar tensor} for the terms with a non-zero static weight.
    """
    out = {}
    for term in TERMS:
        static = 0.0 if term in weights.disabled else float(getattr(weights, term))
        if not static:
            continue
        if term == "prior_l1" and weights.prior_l1_epochs is not None:
            active = tf.cast(tf.convert_to_tensor(epoch), tf.int64) < weights.prior_l1_epochs
            out[term] = tf.where(active, tf.constant(static, tf.float32), 0.0)
        else:
            out[term] = tf.constant(static, tf.float32)
    return out


@dataclasses.dataclass(frozen=True)
class TrainSchedule:
    """How long and how fast (paper: Adam 1e-4, x0.98 per epoch, floor 1e-5, batch 16, 10 epochs).

    Attributes:
      global_batch_size: samples per step over all replicas (the paper's batch 16).
      epochs: epochs to train when max_steps is None.
      steps_per_epoch: steps that make one epoch (data size // global batch, or set for bounded runs).
      max_steps: stop at this global step (None = epochs * steps_per_epoch).
      learning_rate, lr_decay, lr_floor: the EpochDecay parameters (shared by both optimisers unless
        d_learning_rate is set).
      d_learning_rate: the discriminator's initial rate (None = learning_rate).
      beta_1, beta_2: Adam moments (the paper's "momentum was 0.9"; beta_2 Adam's default).
      clip_norm: optional global-norm gradient clipping per optimiser (GCNs clip at 5; off in the
        paper).
    """

    global_batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int = 1000
    max_steps: Optional[int] = None
    learning_rate: float = 1e-4
    lr_decay: float = 0.98
    lr_floor: float = 1e-5
    d_learning_rate: Optional[float] = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    clip_norm: Optional[float] = None

    def __post_init__(self):
        if self.global_batch_size < 1 or self.steps_per_epoch < 1 or self.epochs < 1:
            raise ValueError("global_batch_size, steps_per_epoch and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError("max_steps must be >= 0")

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch

    def epoch_of_step(self, step) -> int:
        return int(step) // self.steps_per_epoch

    def make_optimizers(self, epoch):
        """(generator Adam, discriminator Adam), separate state, both on EpochDecay(epoch)."""
        def adam(initial, name):
            return keras.optimizers.Adam(
                EpochDecay(initial, self.lr_decay, self.lr_floor, epoch), beta_1=self.beta_1, beta_2=self.beta_2,
                global_clipnorm=self.clip_norm or None, name=name)

        d_initial = self.learning_rate if self.d_learning_rate is None else self.d_learning_rate
        return adam(self.learning_rate, "g_adam"), adam(d_initial, "d_adam")

    def learning_rates(self):
        """[epochs] the generator's rate per epoch (for logs and docs)."""
        return np.array([epoch_learning_rate(e, self.learning_rate, self.lr_decay, self.lr_floor)
                         for e in range(self.epochs)])
