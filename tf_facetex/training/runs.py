"""A training run folder read back: its run_config.json, the config it describes, and the newest checkpoint.

Both trainers (refinement and prior) rebuild a trainer for evaluation or inference this way.
"""
import dataclasses
import json
import pathlib

import tensorflow as tf

from tf_facetex.errors import TrainingError
from tf_facetex.training.checkpoints import CHECKPOINT_PREFIX, make_checkpoint


def read_run_config(model_dir, what="training") -> dict:
    """The run_config.json of a run folder. TrainingError when there is none (not a ``what`` run folder)."""
    model_dir = pathlib.Path(model_dir)
    path = model_dir / "run_config.json"
    if not path.is_file():
        raise TrainingError(f"{model_dir}: no run_config.json (not a {what} run folder)")
    return json.loads(path.read_text())


def config_from_record(config_class, record: dict):
    """A config dataclass from a run record (keys it does not know, e.g. sizes the run measured, ignored)."""
    fields = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{key: value for key, value in record.items() if key in fields})


def restore_checkpoint(trainer, model_dir, checkpoint=None, log=print, tag="train") -> str:
    """Restores ``checkpoint`` (default: the newest in <model_dir>/checkpoints) into ``trainer``'s
    `checkpoint_items`; every object of the trainer must be matched. Returns the checkpoint path."""
    model_dir = pathlib.Path(model_dir)
    path = checkpoint or tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if path is None:
        raise TrainingError(f"{model_dir / 'checkpoints'}: no {CHECKPOINT_PREFIX}-* checkpoint")
    make_checkpoint(trainer).restore(str(path)).expect_partial().assert_existing_objects_matched()
    log(f"[{tag}] restored {path} (step {int(trainer.step.numpy())})")
    return str(path)
