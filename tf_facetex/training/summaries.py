"""What a researcher watches: TensorBoard scalars and image grids, a JSON-lines log, and the progress-bar text.

TensorBoard layout (under <model_dir>/tensorboard):
  loss/<term>          every unweighted generator term, loss/total (weighted) and loss/d_loss
  train/learning_rate, train/epoch, train/prior_l1_weight, train/steps_per_second
  eval/<metric>        od_/oc_ l1, psnr, ssim and albedo_si_rmse (when the eval data has ground truth)
  images/train         rows of samples: input | R(A',L') | R(A',L) | A' | shading of L' (x0.5) | T
The same scalars go to <model_dir>/metrics.jsonl, one JSON object per logged step (easy to plot or test).
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import tensorflow as tf

from tf_facetex import visualize

GRID_COLUMNS = (("input", "input"), ("od", "R(A',L')"), ("oc", "R(A',L)"), ("albedo", "A'"),
                ("shading", "shading L' x0.5"), ("texture", "T"))
SHADING_DISPLAY_SCALE = 0.5  # shading is ~0.5-1.5: halve it so that the grid shows it without clipping


def _resize(image, size):
    """[h, w, c] float -> [size, size, c] (bilinear)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.image.resize(image[None], [size, size], method="bilinear")[0].numpy()


def training_grid(visuals: dict, max_rows=4) -> np.ndarray:
    """One uint8 image: a row per sample with the columns of `GRID_COLUMNS` (first row labelled).

    Args:
      visuals: FaceTexTrainer.visuals output as numpy: 'input', 'od', 'oc' [B, H, H, 3]; 'albedo', 'shading',
        'texture' [B, S, S, 3] (resized to H for the grid).
    Returns:
      [rows * (H + 2) + 2, 6 * (H + 2) + 2, 3] uint8.
    """
    visuals = {key: np.asarray(value, np.float32) for key, value in visuals.items()}
    size = visuals["input"].shape[1]
    rows = []
    for index in range(min(max_rows, visuals["input"].shape[0])):
        row = []
        for key, title in GRID_COLUMNS:
            cell = visuals[key][index]
            if key == "shading":
                cell = cell * SHADING_DISPLAY_SCALE
            cell = np.clip(_resize(cell, size), 0.0, 1.0)
            row.append(visualize.label(cell, title, scale=max(0.25, size / 560)) if index == 0 else cell)
        rows.append(row)
    return visualize.grid(rows)


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingLog:
    """TensorBoard writer + metrics.jsonl for the chief; a no-op elsewhere (`enabled=False`)."""

    def __init__(self, model_dir, enabled=True):
        self.enabled = enabled
        self.model_dir = pathlib.Path(model_dir)
        self._writer = None
        self._jsonl = None
        if enabled:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.model_dir / "tensorboard"))
            self._jsonl = open(self.model_dir / "metrics.jsonl", "a", encoding="utf-8")

    def scalars(self, step, values: dict, prefix: str):
        """Writes {name: number} as `prefix/name` at `step` (TensorBoard and one JSON line)."""
        if not self.enabled:
            return
        with self._writer.as_default(step=int(step)):
            for name, value in values.items():
                tf.summary.scalar(f"{prefix}/{name}", float(value))
        record = {"step": int(step), "kind": prefix, **{name: _finite_or_none(v) for name, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def image(self, step, name, image):
        """One uint8 [H, W, 3] image under `images/name`."""
        if not self.enabled:
            return
        with self._writer.as_default(step=int(step)):
            tf.summary.image(f"images/{name}", np.asarray(image)[None], max_outputs=1)

    def flush(self):
        if self.enabled:
            self._writer.flush()
            self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._writer.close()
            self._jsonl.close()
            self.enabled = False


def read_metrics(path, kind=None) -> list:
    """The records of a metrics.jsonl (optionally only those of one kind: 'loss', 'train', 'eval')."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if kind is None or record.get("kind") == kind:
                    records.append(record)
    return records


def progress_text(logs: dict, keys=("total", "image", "d_loss")) -> dict:
    """The tqdm postfix: a few current losses, 4 significant digits."""
    return {key: f"{float(logs[key]):.4g}" for key in keys if key in logs}


def training_wall_seconds(model_dir) -> float | None:
    """Wall-clock seconds a run trained: per TensorBoard event file (one per sitting: a resumed run writes a new
    one), the span from its first to its last event, summed over the files; None when there is none."""
    total, found = 0.0, False
    for path in sorted((pathlib.Path(model_dir) / "tensorboard").glob("**/events.out.tfevents.*")):
        times = [event.wall_time for event in tf.compat.v1.train.summary_iterator(str(path)) if event.wall_time]
        if times:
            total, found = total + max(times) - min(times), True
    return total if found else None
