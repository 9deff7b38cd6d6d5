"""The generic lower layer of both trainers (docs/ARCHITECTURE.md): nothing here knows what is trained.

- `loop`: `run_loop` (stop signal, NaN/Inf guard, log / image / eval / checkpoint cadence), `evaluate`,
  `evaluate_and_log`;
- `checkpoints`: `CheckpointKeeper` over any trainer's ``checkpoint_items()`` (never writes a NaN state),
  `StopSignal` (SIGTERM -> save and stop), run_config.json checks;
- `runs`: a run folder read back (run_config.json, config, newest checkpoint);
- `distribute`: tf.distribute strategies by name, the chief;
- `schedule`: per-epoch learning-rate decay (`EpochDecay`), epoch-dependent loss weights, `TrainSchedule`;
- `summaries`: TensorBoard scalars / image grids and metrics.jsonl.
The refinement trainer is `tf_facetex.refinement.trainer` / `.train`, the prior's `tf_facetex.prior.trainer` /
`.train`; both run on `loop.run_loop`.
"""
from tf_facetex.training.checkpoints import CheckpointKeeper, StopSignal, make_checkpoint
from tf_facetex.training.loop import Cadence, LoopResult, evaluate, evaluate_and_log, run_loop
from tf_facetex.training.schedule import EpochDecay, TrainSchedule, epoch_learning_rate, scheduled_weights

__all__ = ["Cadence", "CheckpointKeeper", "EpochDecay", "LoopResult", "StopSignal", "TrainSchedule",
           "epoch_learning_rate", "evaluate", "evaluate_and_log", "make_checkpoint", "run_loop", "scheduled_weights"]
