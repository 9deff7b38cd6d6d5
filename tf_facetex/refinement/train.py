"""Training the refinement network: the run's config (`TrainConfig`), its data (`inspect_samples`, `uv_layout`),
the trainer (`build_trainer`, `restore_trainer`) and `train`, the loop scripts/train.py runs.

`train` puts `FaceTexTrainer.train_step_logs` (under a tf.distribute strategy) on the generic loop of
`tf_facetex.training.loop` (TensorBoard, checkpoints every N steps and on SIGTERM, resume, a NaN/Inf guard,
evaluation, a progress bar).
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tf_facetex.data.records import count_records
from tf_facetex.errors import TrainingError
from tf_facetex.face_model import load_face_model
from tf_facetex.identity import make_embed_fn as identity_embed_fn
from tf_facetex.losses import TERMS, LossOptions, LossWeights
from tf_facetex.networks import AlbedoDiscriminator, RefinementNet
from tf_facetex.prior.samples import sample_dataset
from tf_facetex.refinement.fit import UVFitConfig
from tf_facetex.refinement.toy_data import toy_identity_embedding, toy_uv_mask
from tf_facetex.refinement.trainer import FaceTexTrainer
from tf_facetex.rendering.uv import build_uv_raster
from tf_facetex.training import checkpoints, runs, summaries
from tf_facetex.training.checkpoints import CheckpointKeeper, write_or_check_run_config
from tf_facetex.training.distribute import is_chief, make_strategy, num_workers
from tf_facetex.training.loop import Cadence, evaluate, evaluate_and_log, run_loop
from tf_facetex.training.schedule import TrainSchedule


NO_FACE_MODEL = ("", "none")
TOY_FACE_MODEL = "toy"
DEFAULT_FACE_MODEL = "default"


def uv_layout(face_model, uv_size, log=print):
    """(uv_mask [S, S, 1] float32, symmetry_index [S * S] int32 or None) for `--face_model`.

    - '' / 'none': an all-ones mask and a mirror along W. Right for toy data whose whole UV square is "face";
      wrong for a real model (losses would count texels off the chart): said in the log.
    - 'toy': the toy world's egg-shaped chart (`toy_data.toy_uv_mask`), mirror along W.
    - 'default' (the face model `load_face_model()` finds: $TF_FACETEX_FACE_MODEL, then the cached ICT-FaceKit) or
      a face-model path (.npz, ICT folder, BFM_model_front.mat): the model's UV raster at S x S from
      `tf_facetex.rendering.uv.build_uv_raster` (its coverage mask and texel symmetry index). The samples must have
      been unwrapped with the same model and UV size.
    """
    if face_model in NO_FACE_MODEL:
        log(f"[train] no --face_model: using an all-ones {uv_size}x{uv_size} UV mask and a mirror along W "
            "(right for toy data only; real samples need --face_model=default or a model path)")
        return np.ones([uv_size, uv_size, 1], np.float32), None
    if face_model == TOY_FACE_MODEL:
        log(f"[train] --face_model=toy: the toy world's UV chart at {uv_size}x{uv_size}, mirror along W")
        return toy_uv_mask(uv_size), None
    model = load_face_model(None if face_model == DEFAULT_FACE_MODEL else face_model, allow_clone=False, log=log)
    raster = build_uv_raster(model, uv_size)
    log(f"[train] --face_model={face_model}: UV chart {int(raster.mask.sum())} of {uv_size}x{uv_size} texels, "
        "texel symmetry from the model")
    return raster.mask[..., None].astype(np.float32), np.asarray(raster.symmetry_index, np.int32)


IDENTITY_BACKENDS = ("none", "dlib", "arcface", "toy")


def make_embed_fn(backend="none", weights_path=None):
    """`embed_fn(images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2]) -> [B, D]` for the cross-perceptual term,
    or None for 'none': `tf_facetex.identity.make_embed_fn`, plus 'toy', the toy world's stand-in
    (`toy_data.toy_identity_embedding`: lighting-robust detail, no network). Call it under the strategy scope."""
    if backend == "toy":
        return toy_identity_embedding
    if backend not in IDENTITY_BACKENDS:
        raise TrainingError(f"--identity must be one of {IDENTITY_BACKENDS}, got {backend!r}")
    return identity_embed_fn(backend, weights_path or None)


# Settings a resumed run must share with the run that wrote the checkpoints.
ARCHITECTURE_KEYS = ("net_preset", "white_prior", "discriminator_ndf", "net_overrides", "discriminator_overrides",
                     "face_model")


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs (scripts/train.py fills it from flags; defaults are the paper's)."""

    train_data: str = ""
    eval_data: str = ""
    # A second held-out set with ground-truth albedo (synthetic faces): albedo si-RMSE against steps, logged as
    # eval_gt/* next to eval/*.
    eval_gt_data: str = ""
    model_dir: str = ""
    resume: bool = False
    init_weights: str = ""            # a fresh run's generator starts from these weights (shipped folder/checkpoint)
    strategy: str = "default"
    net_preset: str = "paper"
    white_prior: bool = False
    discriminator_ndf: int = 64
    net_overrides: dict = dataclasses.field(default_factory=dict)            # RefinementNet keyword overrides
    discriminator_overrides: dict = dataclasses.field(default_factory=dict)  # AlbedoDiscriminator overrides
    loss_preset: str = "paper"
    weight_overrides: dict = dataclasses.field(default_factory=dict)  # {term: weight} over the preset's
    disabled_terms: tuple = ()
    # The symmetry term's form: '' = the loss preset's (uniform: every chart texel pulled to its mirror), 'fit' =
    # the per-image fit's (`UVFitConfig.symmetry`: the mirror fills what the photo did not show; seen pairs pull
    # by a saturating L1), so that the network learns the objective the shipped fit minimises.
    symmetry_form: str = ""
    illumination_mask: str = "uv"
    identity: str = "none"
    identity_weights: str = ""
    face_model: str = ""
    global_batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int = 0          # 0: samples in train_data // global_batch_size
    max_steps: int = 0                # 0: epochs * steps_per_epoch
    learning_rate: float = 1e-4
    lr_decay: float = 0.98
    lr_floor: float = 1e-5
    d_learning_rate: float = 0.0      # 0: learning_rate
    beta_1: float = 0.9
    beta_2: float = 0.999
    clip_norm: float = 0.0            # 0: off
    log_every: int = 50
    image_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0               # 0: only at the end
    eval_batches: int = 20
    shuffle_buffer: int = 256
    seed: int = 0
    progress: bool = True
    poison_step: int = 0              # testing the NaN guard: the batch of this step gets a NaN image

    def schedule(self, steps_per_epoch) -> TrainSchedule:
        return TrainSchedule(global_batch_size=self.global_batch_size, epochs=self.epochs,
                             steps_per_epoch=steps_per_epoch, max_steps=self.max_steps or None,
                             learning_rate=self.learning_rate, lr_decay=self.lr_decay, lr_floor=self.lr_floor,
                             d_learning_rate=self.d_learning_rate or None, beta_1=self.beta_1, beta_2=self.beta_2,
                             clip_norm=self.clip_norm or None)


@dataclasses.dataclass
class TrainResult:
    """What `train` ends with: the step and epoch reached, whether a signal stopped it (then `stop_signal` names it,
    e.g. 'SIGTERM'), the newest checkpoint, the last step's logged values and the last evaluation."""

    step: int
    epoch: int
    interrupted: bool
    checkpoint: Optional[str]
    logs: dict
    eval: dict
    stop_signal: Optional[str] = None


def inspect_samples(file_pattern) -> dict:
    """Sizes of the refinement samples in a shard pattern, read from the first record.

    Returns:
      {'image_size', 'uv_size', 'num_coeffs', 'has_ground_truth', 'num_files'}.
    Raises:
      TrainingError: no files match or the first record is not a refinement sample.
    """
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise TrainingError(f"no files match {file_pattern!r} (toy data for a smoke run: "
                            "python scripts/make_toy_samples.py --out=DIR --n=240)")
    try:
        serialized = next(iter(tf.data.TFRecordDataset(files[:1]).take(1))).numpy()
        example = tf.train.Example.FromString(serialized)
        features = example.features.feature
        image = tf.io.decode_png(features["image"].bytes_list.value[0])
        texture = tf.io.decode_png(features["texture_uv"].bytes_list.value[0])
        coeffs = features["coeffs"].float_list.value
    except (StopIteration, KeyError, tf.errors.OpError) as err:
        raise TrainingError(f"{files[0]}: not a refinement-sample TFRecord ({type(err).__name__}: {err})") from err
    return {"image_size": int(image.shape[0]), "uv_size": int(texture.shape[0]), "num_coeffs": len(coeffs),
            "has_ground_truth": "albedo_gt_uv" in features and "irradiance_gt_uv" in features,
            "num_files": len(files)}


SYMMETRY_FORMS = ("", "fit")


def loss_options(config: TrainConfig) -> LossOptions:
    """The loss forms of a run: its preset's, with the per-image fit's symmetry form when ``symmetry_form='fit'``."""
    options = LossOptions.preset(config.loss_preset)
    if config.symmetry_form not in SYMMETRY_FORMS:
        raise TrainingError(f"symmetry_form must be one of {SYMMETRY_FORMS}, got {config.symmetry_form!r}")
    if config.symmetry_form == "fit":
        weighting, seen_weight, seen_scale, unseen_mirror_weight = UVFitConfig().symmetry()
        options = dataclasses.replace(options, symmetry_weighting=weighting, symmetry_seen_weight=seen_weight,
                                      symmetry_seen_scale=seen_scale, symmetry_unseen_mirror_weight=unseen_mirror_weight)
    return options


def build_trainer(config: TrainConfig, uv_size, uv_mask, symmetry_index, steps_per_epoch, embed_fn=None):
    """Networks, trainer and both optimisers (call under the strategy scope)."""
    generator = RefinementNet.from_preset(config.net_preset, **{"uv_size": uv_size, "white_prior": config.white_prior,
                                                                **config.net_overrides})
    discriminator = AlbedoDiscriminator(**{"ndf": config.discriminator_ndf, **config.discriminator_overrides})
    weights = LossWeights.preset(config.loss_preset)
    unknown = set(config.weight_overrides) - set(TERMS)
    if unknown:
        raise TrainingError(f"unknown loss terms {sorted(unknown)} in the weight overrides; terms are {TERMS}")
    weights = dataclasses.replace(weights, **{k: float(v) for k, v in config.weight_overrides.items()})
    weights = weights.without(*config.disabled_terms)
    trainer = FaceTexTrainer(generator, discriminator, uv_mask, symmetry_index, embed_fn=embed_fn,
                             loss_weights=weights, loss_options=loss_options(config), steps_per_epoch=steps_per_epoch,
                             illumination_mask=config.illumination_mask)
    g_optimizer, d_optimizer = config.schedule(steps_per_epoch).make_optimizers(trainer.epoch)
    trainer.compile(g_optimizer, d_optimizer)
    trainer.build_optimizers()
    return trainer


def warm_start_generator(generator, source, log=print):
    """Copies the weights of a trained refinement network (a shipped folder such as saved_models/refinement_net/,
    a run folder or a checkpoint prefix; `load_refinement_net`) into ``generator``, which must have the same
    architecture. The optimisers and the discriminator start afresh: this continues training from shipped weights,
    whose optimiser state is not shipped (it would triple the file).

    Raises TrainingError when the architectures differ."""
    from tf_facetex.refinement.checkpoint import load_refinement_net

    trained, info = load_refinement_net(source, log=log)
    mine = [tuple(w.shape) for w in generator.weights]
    theirs = [tuple(w.shape) for w in trained.weights]
    if mine != theirs:
        raise TrainingError(f"--init_weights {source}: its network ({info.get('net_preset')} preset, UV "
                            f"{info['uv_size']}, {trained.count_params():,} parameters) is not this run's "
                            f"({generator.count_params():,} parameters); use the same --net and samples' UV size")
    generator.set_weights(trained.get_weights())
    log(f"[train] generator initialised from {info['checkpoint']} (optimisers and discriminator start afresh)")


def restore_trainer(model_dir, checkpoint=None, log=print) -> FaceTexTrainer:
    """A trainer rebuilt from a run folder's run_config.json with a checkpoint's weights (default: the newest).

    For evaluation and inference (`trainer.predict_albedo`, `evaluate_albedo_vs_baselines`); the identity network
    is not loaded (it only serves the cross-perceptual training loss).
    """
    record = runs.read_run_config(model_dir, "training")
    config = runs.config_from_record(TrainConfig, record)
    config.disabled_terms = tuple(config.disabled_terms)
    uv_mask, symmetry_index = uv_layout(config.face_model, record["uv_size"], log)
    trainer = build_trainer(config, record["uv_size"], uv_mask, symmetry_index, record["steps_per_epoch"])
    runs.restore_checkpoint(trainer, model_dir, checkpoint, log, "train")
    return trainer


def train(config: TrainConfig, log=print, strategy=None, on_step: Optional[Callable] = None) -> TrainResult:
    """Trains the refinement module per `config` (see scripts/train.py for the flags).

    `on_step(step, logs)` (optional) is called on the chief after every step with the step's logged values (for
    notebooks, custom monitoring, tests).

    Checkpoints go to <model_dir>/checkpoints every `checkpoint_every` steps, at the end, and when SIGTERM/SIGINT
    arrives (then `interrupted` is True). A NaN/Inf loss stops the run with TrainingError before anything is saved;
    a non-finite state is never written, so the newest checkpoint is always good (`training.loop.run_loop`).
    """
    strategy = strategy or make_strategy(config.strategy)  # first: multi-worker must precede other TF work
    chief = is_chief(strategy)
    log = log if chief else (lambda *_: None)
    if not config.train_data or not config.model_dir:
        raise TrainingError("need --train_data (refinement-sample shards) and --model_dir")
    model_dir = pathlib.Path(config.model_dir)
    # Several comma-separated patterns train on their union (e.g. real photos and synthetic faces); the first
    # decides the sizes, every one must match them.
    train_patterns = [pattern for pattern in config.train_data.split(",") if pattern]
    info = inspect_samples(train_patterns[0])
    for pattern in train_patterns[1:]:
        other = inspect_samples(pattern)
        if (other["image_size"], other["uv_size"], other["num_coeffs"]) != (
                info["image_size"], info["uv_size"], info["num_coeffs"]):
            raise TrainingError(f"--train_data {pattern}: sizes {other} differ from {train_patterns[0]}'s {info}")
        info["num_files"] += other["num_files"]
    image_size, uv_size, num_coeffs = info["image_size"], info["uv_size"], info["num_coeffs"]
    replicas = strategy.num_replicas_in_sync
    workers = num_workers(strategy)
    if config.global_batch_size % replicas:
        raise TrainingError(f"--batch_size {config.global_batch_size} is not divisible by the {replicas} replicas")
    if workers > info["num_files"]:
        raise TrainingError(f"{info['num_files']} train shard(s) for {workers} workers: each worker reads its own "
                            "files; write at least as many shards as workers")
    steps_per_epoch = config.steps_per_epoch
    if not steps_per_epoch:
        steps_per_epoch = sum(count_records(pattern) for pattern in train_patterns) // config.global_batch_size
        if steps_per_epoch < 1:
            raise TrainingError(f"{config.train_data}: fewer samples than one batch of {config.global_batch_size}")
    schedule = config.schedule(steps_per_epoch)
    uv_mask, symmetry_index = uv_layout(config.face_model, uv_size, log)

    with strategy.scope():
        embed_fn = make_embed_fn(config.identity, config.identity_weights or None)
        trainer = build_trainer(config, uv_size, uv_mask, symmetry_index, steps_per_epoch, embed_fn)
    keeper = CheckpointKeeper(model_dir / "checkpoints", trainer, config.keep_checkpoints, is_chief=chief)
    checkpoints.refuse_to_overwrite(keeper, config.resume)
    if chief:
        record = {**dataclasses.asdict(config), "image_size": image_size, "uv_size": uv_size,
                  "num_coeffs": num_coeffs, "steps_per_epoch": steps_per_epoch}
        write_or_check_run_config(model_dir, record, config.resume, ARCHITECTURE_KEYS + ("uv_size", "image_size"),
                                  log, "train")
    start_step = checkpoints.resume_step(keeper, config.resume, log, "train")
    if start_step:
        log(f"[train] resumed from {keeper.latest}: step {start_step}, epoch {int(trainer.epoch.numpy())}")
    elif config.init_weights:
        warm_start_generator(trainer.generator, config.init_weights, log)
    trainer.update_epoch()

    def dataset_fn(context):
        return sample_dataset(train_patterns, context.get_per_replica_batch_size(config.global_batch_size),
                              image_size, uv_size, num_coeffs, training=True, input_context=context,
                              seed=config.seed + start_step, shuffle_buffer=config.shuffle_buffer)

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    names = trainer.log_names

    def replica_step(batch, control):
        batch = dict(batch)
        # Fault injection for the NaN-guard test (control[1] = 1 on --poison_step only).
        batch["image"] = tf.where(control[1] > 0, tf.fill(tf.shape(batch["image"]), np.nan), batch["image"])
        logs = trainer.train_step_logs(batch)
        return tf.stack([tf.cast(logs[name], tf.float32) for name in names] + [control[0]])

    @tf.function(autograph=False)  # no Python control flow on tensors here; autograph would only cost trace time
    def distributed_step(iterator, control):
        values = strategy.run(replica_step, args=(next(iterator), control))
        # One all-reduce for all logged values; the last entry > 0 when any worker was asked to stop.
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, values, axis=None)

    eval_dataset = None
    if config.eval_data and chief:
        eval_info = inspect_samples(config.eval_data)
        if (eval_info["image_size"], eval_info["uv_size"]) != (image_size, uv_size):
            raise TrainingError(f"eval data is {eval_info['image_size']}/{eval_info['uv_size']} (image/UV), train "
                                f"data {image_size}/{uv_size}")
        eval_dataset = sample_dataset(config.eval_data, max(1, config.global_batch_size // replicas), image_size,
                                      uv_size, num_coeffs, training=False,
                                      with_ground_truth=eval_info["has_ground_truth"], deterministic=True)
    eval_gt_dataset = None
    if config.eval_gt_data and chief:
        gt_info = inspect_samples(config.eval_gt_data)
        if (gt_info["image_size"], gt_info["uv_size"]) != (image_size, uv_size) or not gt_info["has_ground_truth"]:
            raise TrainingError(f"--eval_gt_data must be samples with ground truth at {image_size}/{uv_size} "
                                f"(image/UV); got {gt_info}")
        eval_gt_dataset = sample_dataset(config.eval_gt_data, max(1, config.global_batch_size // replicas),
                                         image_size, uv_size, num_coeffs, training=False, with_ground_truth=True,
                                         deterministic=True)
    visual_source = eval_dataset or sample_dataset(train_patterns[0], 4, image_size, uv_size, num_coeffs,
                                                   training=False, deterministic=True)
    visual_batch = {key: value[:4] for key, value in next(iter(visual_source)).items()} if chief else None
    visuals_fn = tf.function(trainer.visuals, autograph=False)
    evaluation_fn = tf.function(trainer.evaluation_values, reduce_retracing=True, autograph=False)
    summary = summaries.TrainingLog(model_dir, enabled=chief)
    log(f"[train] strategy {config.strategy} ({strategy.__class__.__name__}): {replicas} replica(s) on {workers} "
        f"worker(s), global batch {config.global_batch_size}, "
        f"{steps_per_epoch} steps/epoch, steps {start_step} -> {schedule.total_steps}; images {image_size}px, UV "
        f"{uv_size}px; generator {trainer.generator.count_params():,} params, loss preset {config.loss_preset}"
        + (f", off: {','.join(config.disabled_terms)}" if config.disabled_terms else ""))

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def step_fn(step, stop_requested):
        poison = 1.0 if config.poison_step and step + 1 == config.poison_step else 0.0
        values = distributed_step(iterator, tf.constant([1.0 if stop_requested else 0.0, poison])).numpy()
        return dict(zip(names, values[:-1].tolist())), (values[-1] > 0 if multi_worker else None)

    def train_scalars():
        epoch = int(trainer.epoch.numpy())
        return {"learning_rate": float(trainer.g_optimizer.learning_rate), "epoch": epoch,
                "prior_l1_weight": float(trainer.loss_weights.weight("prior_l1", epoch))}

    def write_images(step):
        if visual_batch is not None:
            visuals = {key: value.numpy() for key, value in visuals_fn(visual_batch).items()}
            summary.image(step, "train", summaries.training_grid(visuals))

    def write_eval(step):
        if eval_gt_dataset is not None:
            results = evaluate(trainer, eval_gt_dataset, None, evaluation_fn)
            summary.scalars(step, results, "eval_gt")
            log(f"[train] eval_gt at step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(results.items())
                                                               if k.startswith(("albedo", "od_psnr", "oc_psnr"))))
        return evaluate_and_log(trainer, eval_dataset, config.eval_batches or None, evaluation_fn, summary, step,
                                log, "train")

    cadence = Cadence(config.log_every, config.image_every, config.eval_every, config.checkpoint_every)
    result = run_loop(step_fn, keeper, summary, start_step=start_step, total_steps=schedule.total_steps,
                      cadence=cadence, resumed=config.resume, tag="train", log=log, train_scalars=train_scalars,
                      write_images=write_images, write_eval=write_eval, progress_keys=("total", "image", "d_loss"),
                      on_step=on_step, progress=config.progress, chief=chief)
    if not result.interrupted:
        log(f"[train] done at step {result.step}; checkpoint {keeper.latest}")
    return TrainResult(step=result.step, epoch=int(trainer.epoch.numpy()), interrupted=result.interrupted,
                       checkpoint=keeper.latest, logs=result.logs, eval=result.eval, stop_signal=result.stop_signal)
