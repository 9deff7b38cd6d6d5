"""Training the prior regressor: `PriorTrainConfig`, its data, `train_prior` (the loop scripts/train_prior.py runs,
on `tf_facetex.training.loop`), restoring a run and evaluating it.

The run folder is the refinement trainer's: run_config.json, checkpoints (regressor, optimiser, step, epoch) every
N steps, at the end and on SIGTERM/Ctrl-C, ``--resume``, a NaN/Inf guard that stops before saving a bad state,
TensorBoard scalars (loss/*, train/*, eval/*) and image grids (input | render | render over input | landmarks,
data in green, prediction in red), metrics.jsonl, and regressor.weights.h5 at the end. `evaluate_run` compares
the trained regressor with the mean face on held-out synthetic faces (`tf_facetex.prior.evaluation`).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from tf_facetex import io_utils
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data.records import count_records, list_record_files
from tf_facetex.data.synthetic import SyntheticConfig, write_synthetic_dataset
from tf_facetex.data.tfdata import discover_optional_fields, make_dataset
from tf_facetex.errors import TrainingError
from tf_facetex.face_model import load_face_model
from tf_facetex.face_model.decoder import CoefficientLayout
from tf_facetex.face_model.procedural import make_procedural_model
from tf_facetex.identity import make_embed_fn
from tf_facetex.prior.evaluation import LandmarkPseudoLabels, evaluate_prior, format_results
from tf_facetex.prior.losses import PSEUDO_DEFAULT_PARTS, PriorLossWeights
from tf_facetex.prior.regressor import BACKBONES, PriorRegressor
from tf_facetex.prior.trainer import PriorTrainer, visual_grid
from tf_facetex.rendering import FaceRenderer
from tf_facetex.training import checkpoints, runs, summaries
from tf_facetex.training.checkpoints import CheckpointKeeper, write_or_check_run_config
from tf_facetex.training.loop import Cadence, evaluate_and_log, run_loop
from tf_facetex.training.schedule import EpochDecay

PSEUDO_LABEL_SOURCES = ("none", "dataset", "fit")

ARCHITECTURE_KEYS = ("backbone", "face_model", "image_size")


@dataclasses.dataclass
class PriorTrainConfig:
    """Everything `train_prior` needs (scripts/train_prior.py fills it from flags)."""

    train_data: str = ""              # data-pipeline TFRecords (glob); empty: synthetic faces (synthetic_count)
    eval_data: str = ""
    model_dir: str = ""
    resume: bool = False
    face_model: str = "default"       # 'default' (load_face_model), a model path, or 'procedural' (tests only)
    backbone: str = "resnet50"          # the flag's documented default (Deng et al.); tests and smoke runs pass "tiny"
    backbone_weights: str = ""
    image_size: int = 0               # 0: the data's crop size
    render_size: int = 0              # 0: image_size (photometric term's render size)
    jit_render: bool = True           # XLA-compile the renderer's fixed-shape stages (faster steps, slower first step)
    # Synthetic faces made on the fly when train_data is empty (written once under synthetic_dir).
    synthetic_count: int = 0
    synthetic_dir: str = ""           # default <model_dir>/synthetic
    synthetic_uv_size: int = 64
    synthetic_seed: int = 0
    # Losses.
    weight_overrides: dict = dataclasses.field(default_factory=dict)
    identity: str = "none"            # 'none', 'dlib' or 'arcface' (slow on CPU)
    identity_weights: str = ""
    pseudo_labels: str = "none"       # 'none', 'dataset' (the records' gt_coeffs) or 'fit' (landmark fit per batch)
    pseudo_parts: tuple = PSEUDO_DEFAULT_PARTS
    pseudo_fit_steps: int = 100
    # Schedule.
    batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int = 0          # 0: train records // batch_size
    max_steps: int = 0                # 0: epochs * steps_per_epoch
    learning_rate: float = 1e-4
    lr_decay: float = 0.98
    lr_floor: float = 1e-5
    clip_norm: float = 0.0
    # Logging, checkpoints, evaluation.
    log_every: int = 50
    image_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_batches: int = 10
    results_json: str = ""            # final evaluation vs the mean face (`evaluate_prior`) written here
    shuffle_buffer: int = 256
    seed: int = 0
    progress: bool = True
    poison_step: int = 0              # testing the NaN guard: this step's batch gets a NaN image


@dataclasses.dataclass
class PriorTrainResult:
    step: int
    epoch: int
    interrupted: bool
    checkpoint: Optional[str]
    weights: Optional[str]
    logs: dict
    eval: dict
    stop_signal: Optional[str] = None
    results: Optional[dict] = None


def load_model_for_training(spec: str, log=print):
    """'default' / '' -> `load_face_model()`; 'procedural' -> the tiny test model; else a model path."""
    if spec == "procedural":
        log("[train_prior] face model: procedural test model (tests and smoke runs only)")
        return make_procedural_model()

    return load_face_model(None if spec in ("", "default") else spec, log=log)


def ensure_synthetic_data(config: PriorTrainConfig, model, log=print):
    """Writes `synthetic_count` synthetic faces (with TFRecords) once; -> (train glob, test glob, folder)."""
    folder = pathlib.Path(config.synthetic_dir or pathlib.Path(config.model_dir) / "synthetic")
    train_glob, test_glob = str(folder / "tfrecords" / "train-*.tfrecord"), str(folder / "tfrecords" / "test-*.tfrecord")
    if tf.io.gfile.glob(train_glob):
        log(f"[train_prior] synthetic faces: using {folder}")
        return train_glob, test_glob, folder
    size = config.image_size or CROP_SIZE
    log(f"[train_prior] writing {config.synthetic_count} synthetic faces ({size}px) to {folder}")
    write_synthetic_dataset(model, SyntheticConfig(image_size=size, uv_size=config.synthetic_uv_size), folder,
                            config.synthetic_count, seed=config.synthetic_seed, tfrecord=True, num_shards=2,
                            progress=config.progress)
    return train_glob, test_glob, folder


def _coefficient_fields(files):
    """The optional TFRecord fields to parse: only 'coeffs' (skips the large albedo/irradiance ground truth)."""
    fields = discover_optional_fields(files)
    return {name: field for name, field in fields.items() if name == "coeffs"}


def crop_size_of(files) -> int:
    """The crop size of the first record's image (TFRecord folders need not have a manifest)."""
    record = next(iter(tf.data.TFRecordDataset(files[:1])))
    parsed = tf.io.parse_single_example(record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
    return int(tf.io.extract_jpeg_shape(parsed["image/encoded"])[0]) if parsed["image/encoded"].numpy()[:2] == \
        b"\xff\xd8" else int(tf.io.decode_image(parsed["image/encoded"], channels=3).shape[0])


def make_prior_dataset(pattern, batch_size, training, seed=0, shuffle_buffer=256):
    """Data-pipeline batches (image, landmarks, mask, and gt_coeffs when the records have coefficients)."""
    files = list_record_files(pattern)
    return make_dataset(files, batch_size, training=training, deterministic=not training or seed is not None,
                        seed=seed, shuffle_buffer=shuffle_buffer, optional_fields=_coefficient_fields(files),
                        drop_remainder=training, crop_size=crop_size_of(files))


def build_prior_trainer(config: PriorTrainConfig, model, image_size, steps_per_epoch, embed_fn=None):
    if config.backbone not in BACKBONES:
        raise TrainingError(f"--backbone must be one of {BACKBONES}, got {config.backbone!r}")
    regressor = PriorRegressor.for_model(model, backbone=config.backbone, image_size=image_size,
                                         backbone_weights=config.backbone_weights or None)
    renderer = FaceRenderer(model, config.render_size or image_size, uv_size=32, jit_stages=config.jit_render)
    weights = PriorLossWeights().with_overrides(config.weight_overrides)
    # No pseudo-labels, no parts: the trainer then skips the ~15 MB mesh basis of the term it will never compute.
    pseudo_parts = tuple(config.pseudo_parts) if config.pseudo_labels != "none" else ()
    trainer = PriorTrainer(regressor, model, renderer, weights, embed_fn=embed_fn, pseudo_parts=pseudo_parts,
                           steps_per_epoch=steps_per_epoch)
    optimizer = keras.optimizers.Adam(EpochDecay(config.learning_rate, config.lr_decay, config.lr_floor,
                                                 trainer.epoch), global_clipnorm=config.clip_norm or None)
    trainer.compile(optimizer)
    trainer.build_all()
    return trainer


def train_prior(config: PriorTrainConfig, log=print, on_step: Optional[Callable] = None) -> PriorTrainResult:
    """Trains the prior regressor per `config` (flags in scripts/train_prior.py); see the module docstring."""
    if not config.model_dir:
        raise TrainingError("need --model_dir")
    if config.pseudo_labels not in PSEUDO_LABEL_SOURCES:
        raise TrainingError(f"--pseudo_labels must be one of {PSEUDO_LABEL_SOURCES}, got {config.pseudo_labels!r}")
    model_dir = pathlib.Path(config.model_dir)
    model = load_model_for_training(config.face_model, log)
    train_data, eval_data = config.train_data, config.eval_data
    if not train_data:
        if config.synthetic_count <= 0:
            raise TrainingError("need --train_data (data-pipeline TFRecords) or --synthetic_count > 0")
        train_data, synthetic_eval, _ = ensure_synthetic_data(config, model, log)
        eval_data = eval_data or synthetic_eval

    files = list_record_files(train_data)
    if not files:
        raise TrainingError(f"{train_data}: no TFRecord files")
    probe = next(iter(make_prior_dataset(files, 1, training=False)))
    image_size = int(probe["image"].shape[1])
    if config.image_size and config.image_size != image_size:
        raise TrainingError(f"--image_size {config.image_size} but the data's crops are {image_size}px")
    if config.pseudo_labels == "dataset" and "gt_coeffs" not in probe:
        raise TrainingError(f"--pseudo_labels=dataset: {train_data} has no 'coeffs' field")
    if "gt_coeffs" in probe and int(probe["gt_coeffs"].shape[-1]) != CoefficientLayout.for_model(model).size:
        raise TrainingError(f"the records' coefficients have {int(probe['gt_coeffs'].shape[-1])} entries, the face "
                            f"model {CoefficientLayout.for_model(model).size}: data made with another face model?")
    steps_per_epoch = config.steps_per_epoch or max(1, count_records(files) // config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch

    embed_fn = make_embed_fn(config.identity, config.identity_weights)
    trainer = build_prior_trainer(config, model, image_size, steps_per_epoch, embed_fn)
    if not trainer.has_reflectance:
        log("[train_prior] the face model has no albedo basis: the reflectance term is left out")
    keeper = CheckpointKeeper(model_dir / "checkpoints", trainer, config.keep_checkpoints)
    checkpoints.refuse_to_overwrite(keeper, config.resume)
    record = {**dataclasses.asdict(config), "train_data": train_data, "eval_data": eval_data,
              "image_size": image_size, "steps_per_epoch": steps_per_epoch, "num_coeffs": trainer.layout.size,
              "layout": trainer.layout.to_dict(), "face_model_source": model.source}
    model_dir.mkdir(parents=True, exist_ok=True)
    write_or_check_run_config(model_dir, record, config.resume, ARCHITECTURE_KEYS, log, "train_prior")
    start_step = checkpoints.resume_step(keeper, config.resume, log, "train_prior")
    if start_step:
        log(f"[train_prior] resumed from {keeper.latest}: step {start_step}")
    trainer.update_epoch()

    with_pseudo = config.pseudo_labels != "none"
    fitter = (LandmarkPseudoLabels(model, image_size, config.pseudo_fit_steps)
              if config.pseudo_labels == "fit" else None)
    names = trainer.log_names(with_pseudo)
    dataset = make_prior_dataset(files, config.batch_size, training=True, seed=config.seed + start_step,
                                 shuffle_buffer=config.shuffle_buffer)
    keys = ("image", "mask", "landmarks") + (("gt_coeffs",) if config.pseudo_labels == "dataset" else ())
    iterator = iter(dataset.map(lambda b: {k: b[k] for k in keys}))

    @tf.function
    def compiled_step(batch):
        logs = trainer.train_step_logs(batch)
        return tf.stack([tf.cast(logs[name], tf.float32) for name in names])

    eval_dataset = None
    if eval_data and tf.io.gfile.glob(eval_data.split(",")[0]):
        eval_dataset = make_prior_dataset(eval_data, config.batch_size, training=False)
    visual_batch = next(iter(eval_dataset or make_prior_dataset(files, 4, training=False)))
    visual_batch = {k: v[:4] for k, v in visual_batch.items() if k in ("image", "mask", "landmarks")}
    evaluation_fn = tf.function(trainer.evaluation_values, reduce_retracing=True)
    summary = summaries.TrainingLog(model_dir)
    log(f"[train_prior] {config.backbone} regressor ({trainer.regressor.count_params():,} params), "
        f"{trainer.layout.size} coefficients, images {image_size}px, render {trainer.render_size}px, batch "
        f"{config.batch_size}, {steps_per_epoch} steps/epoch, steps {start_step} -> {total_steps}; terms "
        f"{', '.join(trainer.term_names(with_pseudo))}")

    def write_eval(step):
        return evaluate_and_log(trainer, eval_dataset, config.eval_batches or None, evaluation_fn, summary, step,
                                log, "train_prior")

    def write_images(step):
        summary.image(step, "train", visual_grid(trainer.visuals(visual_batch)))

    def step_fn(step, stop_requested):
        batch = next(iterator)
        if config.poison_step and step + 1 == config.poison_step:
            batch = dict(batch, image=tf.fill(tf.shape(batch["image"]), np.nan))
        if config.pseudo_labels == "dataset":
            batch = dict(batch)
            batch["pseudo_coeffs"] = batch.pop("gt_coeffs")
        elif fitter is not None:
            batch = dict(batch, pseudo_coeffs=fitter(batch["landmarks"]))
        return dict(zip(names, compiled_step(batch).numpy().tolist())), None

    def train_scalars():
        return {"learning_rate": float(trainer.optimizer_.learning_rate), "epoch": int(trainer.epoch.numpy())}

    cadence = Cadence(config.log_every, config.image_every, config.eval_every, config.checkpoint_every)
    result = run_loop(step_fn, keeper, summary, start_step=start_step, total_steps=total_steps, cadence=cadence,
                      resumed=config.resume, tag="train_prior", log=log, train_scalars=train_scalars,
                      write_images=write_images, write_eval=write_eval,
                      progress_keys=("total", "landmark_px", "photometric"), on_step=on_step,
                      progress=config.progress)
    weights_path, results = None, None
    if not result.interrupted:
        weights_path = save_regressor_weights(trainer.regressor, model_dir / "regressor.weights.h5")
        log(f"[train_prior] done at step {result.step}; checkpoint {keeper.latest}; weights {weights_path}")
        if config.results_json and eval_dataset is not None:
            # Rebuilt from the checkpoint, rendering at the crop size whatever the training render size.
            results = evaluate_run(model_dir, eval_data, config.results_json, render_size=image_size,
                                   batch_size=config.batch_size, log=log)
    return PriorTrainResult(step=result.step, epoch=int(trainer.epoch.numpy()), interrupted=result.interrupted,
                            checkpoint=keeper.latest, weights=weights_path, logs=result.logs, eval=result.eval,
                            stop_signal=result.stop_signal, results=results)


def save_regressor_weights(regressor, path) -> str:
    """Writes the regressor's weights atomically (Keras needs the .weights.h5 suffix; `load_regressor` reads it)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.partial.weights.h5")
    regressor.save_weights(str(tmp))
    os.replace(tmp, path)
    return str(path)


def restore_prior_trainer(model_dir, checkpoint=None, log=print, render_size=None) -> PriorTrainer:
    """A `PriorTrainer` rebuilt from a run folder's run_config.json with a checkpoint's weights (default newest);
    ``render_size`` overrides the photometric render size (e.g. evaluate at the crop size)."""
    record = runs.read_run_config(model_dir, "train_prior")
    config = runs.config_from_record(PriorTrainConfig, record)
    if render_size is not None:
        config.render_size = int(render_size)
    model = load_model_for_training(config.face_model, log)
    trainer = build_prior_trainer(config, model, record["image_size"], record["steps_per_epoch"])
    runs.restore_checkpoint(trainer, model_dir, checkpoint, log, "train_prior")
    return trainer


def evaluate_run(model_dir, eval_data="", results_json="", render_size=None, max_batches=None, batch_size=16,
                 log=print) -> dict:
    """Evaluates a finished run (newest checkpoint) against the mean face (`evaluate_prior`) on ``eval_data``
    (default: the run's eval data), rendering at ``render_size`` (default: the crop size); writes ``results_json``."""
    record = runs.read_run_config(model_dir, "train_prior")
    eval_data = eval_data or record.get("eval_data")
    if not eval_data:
        raise TrainingError(f"{model_dir}: no eval data recorded; pass --eval_data")
    trainer = restore_prior_trainer(model_dir, log=log, render_size=render_size or record["image_size"])
    started = time.perf_counter()
    results = evaluate_prior(trainer, make_prior_dataset(eval_data, batch_size, training=False), max_batches)
    results.update({"step": int(trainer.step.numpy()), "model_dir": str(model_dir), "eval_data": eval_data,
                    "train_data": record.get("train_data"), "backbone": record.get("backbone"),
                    "image_size": record["image_size"], "render_size": trainer.render_size,
                    "face_model": trainer.face_model.source,
                    "terms": list(trainer.term_names(record.get("pseudo_labels", "none") != "none")),
                    **{key: record.get(key) for key in ("pseudo_labels", "pseudo_parts", "pseudo_fit_steps")},
                    "loss_weights": dataclasses.asdict(trainer.loss_weights),
                    "seconds": round(time.perf_counter() - started, 1)})
    if results_json:
        io_utils.write_json(results_json, results)
        log(f"[train_prior] evaluation vs the mean face written to {results_json}")
    log(format_results(results))
    return results
