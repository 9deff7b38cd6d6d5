"""The one training loop both trainers run (refinement: `tf_facetex.refinement.train`; prior:
`tf_facetex.prior.train`), and the one evaluate-and-log.

`run_loop` owns what every run needs around its step: the stop signal (SIGTERM / Ctrl-C -> save the step and
stop), the NaN/Inf guard (stop before anything is saved, so the newest checkpoint is always finite), the
log / image / eval / checkpoint cadence, the progress bar and the final save + evaluation. What a step is, what
gets logged besides the losses, and how images are drawn come from the caller.

A trainer used with this module offers ``evaluation_values(batch) -> {name: [B]}`` (for `evaluate`) and, for
`tf_facetex.training.checkpoints.CheckpointKeeper`, ``checkpoint_items()`` and ``checkpointed_variables()``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_facetex.errors import TrainingError
from tf_facetex.training.checkpoints import StopSignal
from tf_facetex.training.summaries import progress_text


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Every how many steps to log scalars, draw images, evaluate and checkpoint (0: never, except at the end)."""

    log_every: int = 50
    image_every: int = 500
    eval_every: int = 0
    checkpoint_every: int = 1000


@dataclasses.dataclass
class LoopResult:
    step: int
    logs: dict
    eval: dict
    interrupted: bool
    stop_signal: Optional[str] = None


def describe_non_finite(logs) -> str:
    """'name=value, ...' of the logged values that are NaN or Inf."""
    return ", ".join(f"{name}={value:.4g}" for name, value in logs.items() if not np.isfinite(value)) or "?"


def evaluate(trainer, dataset, max_batches=None, evaluation_fn=None) -> dict:
    """Means over samples of ``trainer.evaluation_values`` on a (finite) dataset of batches with an 'image' key."""
    evaluation_fn = evaluation_fn or tf.function(trainer.evaluation_values, reduce_retracing=True, autograph=False)
    sums, count = {}, 0
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        for name, values in evaluation_fn(batch).items():
            sums[name] = sums.get(name, 0.0) + float(tf.reduce_sum(values))
        count += int(batch["image"].shape[0])
    return {name: total / count for name, total in sums.items()} if count else {}


def evaluate_and_log(trainer, dataset, max_batches, evaluation_fn, summary, step, log, tag) -> dict:
    """`evaluate` on ``dataset`` (None: nothing, {}), written as eval/* scalars at ``step`` and logged as
    '[tag] eval at step N: name=value, ...'. The training loops' periodic and final evaluation."""
    if dataset is None:
        return {}
    results = evaluate(trainer, dataset, max_batches, evaluation_fn)
    summary.scalars(step, results, "eval")
    log(f"[{tag}] eval at step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(results.items())))
    return results


def run_loop(step_fn: Callable[[int, bool], tuple], keeper, summary, *, start_step: int, total_steps: int,
             cadence: Cadence, resumed: bool, tag: str, log=print, train_scalars: Callable[[], dict] = dict,
             write_images: Optional[Callable[[int], None]] = None, write_eval: Callable[[int], dict] = lambda _: {},
             progress_keys=("total",), on_step: Optional[Callable] = None, progress: bool = True,
             chief: bool = True) -> LoopResult:
    """Runs ``step_fn`` from ``start_step`` to ``total_steps`` with checkpoints, logs, evaluation and a stop signal.

    Args:
      step_fn: ``step_fn(step, stop_requested) -> (logs {name: float}, workers_stop)``: one training step (the
        step about to run is ``step + 1``). ``workers_stop`` is None, or, in a multi-worker run, the all-reduced
        stop request of every worker (a bool); None means: read this process's stop signal after the step (so a
        signal arriving during ``on_step`` stops at that step).
      keeper: a `CheckpointKeeper`; summary: a `summaries.TrainingLog` (closed at the end).
      resumed: the run continues from ``keeper.latest`` (then the start step counts as saved).
      train_scalars: extra train/* scalars at each log step (learning rate, epoch, ...); steps_per_second added.
      write_images(step): image summaries (every ``cadence.image_every`` steps and at the end), or None.
      write_eval(step) -> results: the periodic (``cadence.eval_every``) and final evaluation.
      progress_keys: logged values shown in the progress bar; on_step(step, logs): called on the chief.
    Returns:
      `LoopResult`. A non-finite logged value raises TrainingError before anything is saved.
    """
    step, logs, eval_results, interrupted = start_step, {}, {}, False
    last_saved = start_step if resumed and keeper.latest else None
    last_time, last_step = time.perf_counter(), start_step
    bar = tqdm(total=total_steps, initial=start_step, disable=not (chief and progress), dynamic_ncols=True, desc=tag)
    stop = StopSignal()
    try:
        with stop:
            while step < total_steps:
                logs, workers_stop = step_fn(step, stop.requested)
                step += 1
                if not all(np.isfinite(value) for value in logs.values()):
                    raise TrainingError(
                        f"non-finite loss at step {step} ({describe_non_finite(logs)}); stopped without saving. "
                        f"Newest checkpoint (finite): {keeper.latest or 'none'}; continue from it with --resume "
                        "(a lower --learning_rate may help)")
                bar.update(1)
                bar.set_postfix(progress_text(logs, progress_keys), refresh=False)
                if on_step is not None and chief:
                    on_step(step, logs)
                if step % cadence.log_every == 0 or step == start_step + 1:
                    now = time.perf_counter()
                    summary.scalars(step, logs, "loss")
                    summary.scalars(step, {**train_scalars(),
                                           "steps_per_second": (step - last_step) / max(now - last_time, 1e-9)},
                                    "train")
                    last_time, last_step = now, step
                if write_images is not None and chief and cadence.image_every and step % cadence.image_every == 0:
                    write_images(step)
                if cadence.eval_every and step % cadence.eval_every == 0 and step < total_steps:
                    eval_results = write_eval(step)
                stop_now = stop.requested if workers_stop is None else bool(workers_stop)
                if stop_now or (cadence.checkpoint_every and step % cadence.checkpoint_every == 0):
                    keeper.save()
                    last_saved = step
                if stop_now:
                    interrupted = True
                    log(f"\n[{tag}] {stop.signal_name or 'stop request'}: saved step {step} to {keeper.latest}; "
                        "continue with --resume")
                    break
        if not interrupted:
            if last_saved != step:
                keeper.save()
            if write_images is not None and chief:
                write_images(step)
            eval_results = write_eval(step)
    finally:
        bar.close()
        summary.close()
    return LoopResult(step=step, logs=logs, eval=eval_results, interrupted=interrupted,
                      stop_signal=(stop.signal_name or "SIGTERM") if interrupted else None)
