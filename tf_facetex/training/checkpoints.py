"""Checkpoints of a training run (any trainer's nets, optimisers, step, epoch), a finite-state guard, stop signals.

- `make_checkpoint(trainer)`: the tf.train.Checkpoint of everything a resumed run needs (the trainer's
  ``checkpoint_items()``).
- `CheckpointKeeper`: a CheckpointManager that refuses to write a state with NaN/Inf in it (so the newest checkpoint
  on disk is always a good one) and, under MultiWorkerMirroredStrategy, lets every worker take part in the save
  (collective ops) while only the chief writes into the run folder.
- Damaged checkpoints (a truncated or garbled ``.data``/``.index`` after a crash or a full disk): `restore_latest`
  checks the newest checkpoint's files (TensorFlow's per-tensor checksums) before restoring, moves a damaged one
  aside as ``corrupt-ckpt-N.*``, falls back to the newest intact one and logs which steps are lost.
- `resume_step` also drops the metrics.jsonl records logged after the restored step (a killed run logs steps its
  last checkpoint does not hold; the resumed run logs them again), so every step appears once.
- `StopSignal`: turns SIGTERM (and Ctrl-C) into a flag the loop checks after each step, so a killed run saves the
  step it is at and loses nothing.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import tempfile
import threading

import numpy as np
import tensorflow as tf

from tf_facetex.errors import TrainingError

CHECKPOINT_PREFIX = "ckpt"
CORRUPT_PREFIX = "corrupt-"
# What a damaged checkpoint raises when read: OpError (checksum, short sstable, missing shard), IndexError ("Read
# less bytes than requested" of a truncated .data file), ValueError / OSError from the Python readers.
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)


def make_checkpoint(trainer) -> tf.train.Checkpoint:
    """tf.train.Checkpoint of a trainer's ``checkpoint_items()`` (nets, optimisers, step and epoch): any trainer
    (refinement `FaceTexTrainer`, prior `PriorTrainer`) names what a resumed run needs."""
    return tf.train.Checkpoint(**trainer.checkpoint_items())


def checkpointed_variables(trainer) -> list:
    """Every variable a checkpoint holds (the trainer's ``checkpointed_variables()``: nets incl. BatchNorm
    statistics, optimiser slots, counters)."""
    return list(trainer.checkpointed_variables())


def non_finite_variables(variables) -> list:
    """Names (paths) of the floating-point variables holding a NaN or an Inf."""
    bad = []
    for variable in variables:
        value = tf.convert_to_tensor(variable)
        if value.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(value))):
            bad.append(getattr(variable, "path", None) or variable.name)
    return bad


def checkpoint_step(path) -> int:
    """The step stored in a checkpoint (read from the file, no model needed)."""
    reader = tf.train.load_checkpoint(str(path))
    for key in reader.get_variable_to_shape_map():
        if key.startswith("step/"):
            return int(reader.get_tensor(key))
    raise TrainingError(f"{path}: not a training checkpoint (no step)")


def checkpoint_damage(path):
    """None when every tensor of the checkpoint at prefix ``path`` reads back with its checksum; else the reason
    (one line), e.g. a truncated ``.data`` file or an ``.index`` that is not an sstable."""
    try:
        reader = tf.train.load_checkpoint(str(path))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except _READ_ERRORS as err:
        return " ".join(str(err).split())[:200] or type(err).__name__
    return None


def checkpoint_number(path):
    """N of a ``.../ckpt-N`` prefix (the step it was saved at), or None."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}-(\d+)", pathlib.Path(str(path)).name)
    return int(match.group(1)) if match else None


def lost_steps_text(lost_step, restored_step) -> str:
    """'steps 5-6' / 'step 6': the steps between a restored checkpoint and a lost newer one."""
    first = restored_step + 1
    return f"step {lost_step}" if first >= lost_step else f"steps {first}-{lost_step}"


def checkpoint_is_finite(path) -> bool:
    """True when every floating-point tensor in the checkpoint file is finite."""
    reader = tf.train.load_checkpoint(str(path))
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return False
    return True


class CheckpointKeeper:
    """Saves and restores a trainer's checkpoints in `directory`, never a non-finite state.

    Args:
      directory: the run's checkpoint folder.
      trainer: a compiled trainer with ``checkpoint_items()`` and ``checkpointed_variables()`` (optimisers built, so
        slots restore exactly).
      max_to_keep: checkpoints kept (older ones deleted).
      is_chief: False on non-chief workers of a multi-worker run: they save into a temporary folder (their save is
        needed for the collective ops) that is deleted straight after.
    """

    def __init__(self, directory, trainer, max_to_keep=3, is_chief=True, log=print):
        self.directory = pathlib.Path(directory)
        self.trainer = trainer
        self.is_chief = is_chief
        self.log = log
        self.checkpoint = make_checkpoint(trainer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=max_to_keep,
                                                  checkpoint_name=CHECKPOINT_PREFIX)

    @property
    def latest(self):
        """Path prefix of the newest checkpoint, or None."""
        return self.manager.latest_checkpoint

    def candidates(self) -> list:
        """Checkpoint prefixes, newest (highest step) first: the manager's list plus any ``ckpt-N`` whose index is
        on disk (a lost or stale ``checkpoint`` state file must not hide them)."""
        paths = {str(p) for p in self.manager.checkpoints}
        paths |= {str(p.with_suffix("")) for p in self.directory.glob(f"{CHECKPOINT_PREFIX}-*.index")}
        numbered = [(checkpoint_number(p), p) for p in paths if checkpoint_number(p) is not None]
        return [p for _, p in sorted(numbered, reverse=True)]

    def restore_latest(self, log=None):
        """Restores the newest intact checkpoint; returns its step, or None when the folder has none.

        A damaged newer checkpoint (unreadable files, see `checkpoint_damage`) is moved aside as
        ``corrupt-ckpt-N.*`` (by the chief) and the steps it held are logged as lost.

        Raises:
          TrainingError: no checkpoint is intact (nothing is moved then), or the newest intact one does not fit this
            model (another network preset or UV size).
        """
        log = log or getattr(self, "log", print)
        damaged = []   # (path, reason)
        for path in self.candidates():
            reason = checkpoint_damage(path)
            if reason is not None:
                damaged.append((path, reason))
                continue
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as err:
                raise TrainingError(f"{path}: cannot restore into this model ({' '.join(str(err).split())[:300]}); "
                                    "was it trained with another network preset or UV size?") from err
            step = int(self.trainer.step.numpy())
            if damaged:
                self._set_aside(damaged, path)
                for lost, reason in damaged:
                    log(f"[checkpoints] {pathlib.Path(lost).name} is damaged ({reason}); resuming from "
                        f"{pathlib.Path(path).name}: {lost_steps_text(checkpoint_number(lost), step)} lost, they are "
                        "trained again")
            return step
        if damaged:
            names = ", ".join(f"{pathlib.Path(p).name} ({reason})" for p, reason in damaged)
            raise TrainingError(f"{self.directory}: no intact checkpoint to resume from; damaged: {names}. Restore the "
                                "folder from a backup or start a new --model_dir")
        return None

    def _set_aside(self, damaged, newest_intact):
        """Renames the damaged checkpoints' files to ``corrupt-ckpt-N.*`` (kept for inspection, never taken again)
        and rewrites the manager's state so that ``newest_intact`` is the latest."""
        if not self.is_chief:
            return   # the chief moves the files; the others only skip them
        lost = {str(p) for p, _ in damaged}
        for path in lost:
            prefix = pathlib.Path(path)
            for file in prefix.parent.glob(prefix.name + ".*"):
                target = file.with_name(CORRUPT_PREFIX + file.name)
                if target.exists():
                    target = file.with_name(f"{CORRUPT_PREFIX}{os.getpid()}-{file.name}")
                os.replace(file, target)
        kept = [str(p) for p in self.manager.checkpoints if str(p) not in lost]
        if newest_intact not in kept:
            kept.append(newest_intact)
        kept.sort(key=checkpoint_number)
        tf.compat.v1.train.update_checkpoint_state(str(self.directory), newest_intact,
                                                   all_model_checkpoint_paths=kept)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                                  max_to_keep=getattr(self.manager, "_max_to_keep", 3),
                                                  checkpoint_name=CHECKPOINT_PREFIX)

    def save(self) -> str:
        """Saves at the trainer's current step after checking every variable is finite.

        Raises:
          TrainingError: a variable holds NaN/Inf; nothing is written, the previous checkpoint stays the newest.
        """
        step = int(self.trainer.step.numpy())
        bad = non_finite_variables(checkpointed_variables(self.trainer))
        if bad:
            raise TrainingError(f"not saving step {step}: non-finite values in {len(bad)} variables (e.g. {bad[0]}); "
                                f"last good checkpoint: {self.latest or 'none'}")
        if self.is_chief:
            return self.manager.save(checkpoint_number=step)
        scratch = tempfile.mkdtemp(prefix="facetex-worker-ckpt-")
        try:
            return self.checkpoint.write(str(pathlib.Path(scratch) / CHECKPOINT_PREFIX))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def write_or_check_run_config(model_dir, record: dict, resume: bool, keys, log, tag: str):
    """Writes run_config.json on a fresh run; on resume, refuses a change of any of ``keys`` (the architecture).

    ``record``: the run's settings (JSON-serialisable); keys absent from the saved file are not compared, so
    runs written by older versions still resume.
    """
    import json

    from tf_facetex import io_utils

    path = pathlib.Path(model_dir) / "run_config.json"
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        changed = {key: (saved.get(key), record.get(key)) for key in keys
                   if key in saved and saved.get(key) != record.get(key)}
        if changed:
            details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise TrainingError(f"{model_dir} was trained with other settings ({details}); resume with the original "
                                "settings or start a new --model_dir")
        return
    io_utils.write_json(path, record)
    log(f"[{tag}] settings written to {path}")


def refuse_to_overwrite(keeper, resume: bool):
    """A new run must not silently mix with an old one's checkpoints in the same folder."""
    if not resume and keeper.latest is not None:
        raise TrainingError(f"{keeper.directory} already has checkpoints (newest {keeper.latest}); pass --resume to "
                            "continue that run or choose a new --model_dir")


def resume_step(keeper, resume: bool, log, tag: str, metrics_path=None) -> int:
    """Restores the newest intact checkpoint when ``resume`` (model, optimisers, step) and returns the step to start
    at. The run's metrics.jsonl (default: next to the checkpoints folder) loses its records after that step."""
    if not resume:
        return 0
    restored = keeper.restore_latest(log=lambda line: log(line.replace("[checkpoints]", f"[{tag}]")))
    if restored is None:
        log(f"[{tag}] --resume: no checkpoint in {keeper.directory}, starting at step 0")
    start = restored or 0
    if getattr(keeper, "is_chief", True):
        path = pathlib.Path(metrics_path or pathlib.Path(keeper.directory).parent / "metrics.jsonl")
        dropped = truncate_metrics_after(path, start)
        if dropped:
            log(f"[{tag}] {path.name}: dropped {dropped} record(s) logged after step {start} (logged again now)")
    return start


def truncate_metrics_after(path, step) -> int:
    """Rewrites a metrics.jsonl (atomically) without the records after ``step`` and without torn lines (a kill -9
    mid-write); returns how many lines were dropped (0: the file is left untouched)."""
    from tf_facetex import io_utils

    path = pathlib.Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if record_step > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        io_utils.write_text(path, "".join(line + "\n" for line in kept))
    return dropped


class StopSignal:
    """Context manager: SIGTERM / SIGINT set `requested` instead of killing the process.

    The training loop checks `requested` after every step, saves a checkpoint and stops; a killed run therefore
    loses no step. A second Ctrl-C raises KeyboardInterrupt at once (for a stuck run). Handlers can only be
    installed in the main thread; elsewhere the context does nothing but still offers `request()`.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def request(self, signum=signal.SIGTERM, frame=None):
        """The handler (tests call it directly to simulate a kill)."""
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self.request)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False
