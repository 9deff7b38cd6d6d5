"""Training of the detail refinement module (paper sections 5-6; SPEC section 4).

- `trainer`: `FaceTexTrainer` (keras.Model with a GAN-style train_step / test_step), `render_from_lookup`,
  `evaluate_albedo_vs_baselines`, `restore_trainer`, and the loop `train(TrainConfig)` that scripts/train.py runs.
- `schedule`: per-epoch learning-rate decay (`EpochDecay`), epoch-dependent loss weights, `TrainSchedule`.
- `checkpoints`: `CheckpointKeeper` (never writes a NaN state), `StopSignal` (SIGTERM -> save and stop).
- `summaries`: TensorBoard scalars / image grids and metrics.jsonl.
- `toy_data`: a self-consistent toy world of refinement samples (tests, smoke runs, benchmarks).
"""
from tf_facetex.training.checkpoints import CheckpointKeeper, StopSignal, make_checkpoint
from tf_facetex.training.schedule import EpochDecay, TrainSchedule, epoch_learning_rate, scheduled_weights
from tf_facetex.training.trainer import (
    FaceTexTrainer,
    TrainConfig,
    TrainResult,
    evaluate,
    evaluate_albedo_vs_baselines,
    render_from_lookup,
    restore_trainer,
    train,
    uv_layout,
)

__all__ = [
    "CheckpointKeeper", "EpochDecay", "FaceTexTrainer", "StopSignal", "TrainConfig", "TrainResult", "TrainSchedule",
    "epoch_learning_rate", "evaluate", "evaluate_albedo_vs_baselines", "make_checkpoint", "render_from_lookup",
    "restore_trainer", "scheduled_weights", "train", "uv_layout",
]
