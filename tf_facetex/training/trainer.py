"""FaceTexTrainer: the detail refinement module's training step (paper sections 5-6), keras-io GAN style.

One step, from a batch of refinement samples (`tf_facetex.prior.samples`):

1. Unseen texels of the unwrapped texture T are filled with fresh Gaussian noise (re-drawn every step).
2. The RefinementNet maps (T, prior albedo A) to the detailed albedo A' and the 27-channel light map L'.
3. Rendering is a lookup, no rasteriser (the geometry is frozen): per texel colour A' * shading(normals, light),
   bilinearly sampled at each pixel's texel position and masked by M_proj (`render_from_lookup`):
   R(A', L') ("OD", detailed light), R(A', L) ("OC", the coarse gamma), and for the cross-perceptual term
   R(A'_b, L'_a) with the batch rolled by one (b's albedo, normals and lookup; a's light map).
4. Generator terms (unweighted values all logged): illumination regularisation, cross-perceptual (when an
   identity embedding is given), symmetry, edge-aware smoothness, prior L1 (weight by epoch), GAN generator term,
   image gradient and image losses on M_face. The weighted total (`LossWeights`) updates the generator.
5. The PatchGAN discriminator learns real = prior albedo A, fake = stop_gradient(A') with its own optimiser.

Distribution: every term is a mean over the replica's local batch; the optimisers all-reduce gradients by SUM, so
the loss each replica differentiates is divided by the number of replicas. With equal local batches that is
sum over the local samples / global batch size, i.e. the gradient of the global-batch mean (what Keras 3's own
`compile`/`fit` do, `keras.src.losses.loss.scale_loss_for_distribution`). Logged values are the unscaled means.

The epoch lives in a variable derived from the step counter (epoch = step // steps_per_epoch), so the prior-L1
schedule and the learning-rate decay (`schedule.EpochDecay`) follow a resumed run exactly.

`train()` at the bottom is the loop scripts/train.py runs: tf.distribute strategies, TensorBoard, checkpoints
every N steps and on SIGTERM, resume, a NaN/Inf guard, evaluation, a progress bar.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from tf_facetex import metrics as facetex_metrics
from tf_facetex import sh
from tf_facetex.errors import TrainingError
from tf_facetex.losses import (
    TERMS,
    LossOptions,
    LossWeights,
    cross_perceptual_loss,
    edge_aware_smoothness,
    gan_discriminator_loss,
    gan_generator_loss,
    illumination_regularization,
    image_gradient_loss,
    image_loss,
    prior_l1_loss,
    roll_batch,
    symmetry_loss,
)
from tf_facetex.networks import fill_unseen_with_noise
from tf_facetex.training.schedule import scheduled_weights

ILLUMINATION_MASKS = ("uv", "visibility")
EVAL_NOISE_SEED = (20240, 7)  # evaluation fills unseen texels with the same noise every time: comparable numbers

# --------------------------------------------------------------------------------------------------------------
# Rendering by lookup (no rasteriser)
# --------------------------------------------------------------------------------------------------------------


def render_from_lookup(maps_uv, pixel_uv, proj_mask):
    """Images from UV maps through the cached image-from-UV lookup: bilinear(maps_uv, pixel_uv) * proj_mask.

    maps_uv [B, S, S, C], pixel_uv [B, H, W, 2] (col, row), proj_mask [B, H, W, 1] -> [B, H, W, C]; the renderer's
    `render_uv_maps`, so training and inference sample UV maps identically.
    """
    from tf_facetex.rendering import uv as uv_lib

    return uv_lib.render_uv_maps(maps_uv, pixel_uv, proj_mask)


def shading_uv(normals_uv, light):
    """SH shading per texel: normals [B, S, S, 3] with a light map [B, S, S, 27] or a global gamma [B, 27]
    -> [B, S, S, 3] (`sh.shading`, 0.8 ambient added there)."""
    light = tf.convert_to_tensor(light)
    if light.shape.rank == 2:
        light = light[:, tf.newaxis, tf.newaxis, :]
    return sh.shading(normals_uv, light)


def _num_replicas():
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class FaceTexTrainer(keras.Model):
    """RefinementNet + AlbedoDiscriminator trained with the paper's losses (module docstring).

    Args:
      generator: a `RefinementNet` ({'texture_uv', 'prior_albedo_uv'[, 'uv_mask']} -> {'albedo', 'light'}).
      discriminator: an `AlbedoDiscriminator` ((albedo [B, S, S, 3], uv_mask) -> patch logits).
      uv_mask: [S, S, 1] (or [S, S]) the face model's UV chart M_uv (1 inside). Until the UV rasteriser lands the
        scripts pass all ones (toy data) or the toy world's chart.
      symmetry_index: None (mirror = flip along W) or [S * S] int texel -> mirrored texel, -1 where none.
      embed_fn: identity embedding `embed_fn(images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2]) -> [B, D]` for
        the cross-perceptual term; None leaves the term out (it is then neither computed nor logged).
      loss_weights: `LossWeights` or a preset name ('paper', 'authors'); ablations via its `disabled`.
      loss_options: `LossOptions` or a preset name: which form each term takes.
      steps_per_epoch: steps in one epoch; the epoch variable is step // steps_per_epoch. None: the epoch is
        whatever the caller assigns to `trainer.epoch`.
      illumination_mask: 'uv' (the chart, as the authors' code; default) or 'visibility' (the paper's eq. 1 reading
        "regions visible to the camera": uv_mask * visibility_uv).
      noise_mean, noise_stddev: statistics of the unseen-texel noise in [0, 1] texture space (authors: N(0, 1)).
      cross_shift: the batch roll pairing sample b with sample (b - shift) mod B in the cross-perceptual term.
    """

    def __init__(self, generator, discriminator, uv_mask, symmetry_index=None, embed_fn: Optional[Callable] = None,
                 loss_weights="paper", loss_options="paper", steps_per_epoch: Optional[int] = None,
                 illumination_mask="uv", noise_mean=0.0, noise_stddev=1.0, cross_shift=1, **kwargs):
        super().__init__(**kwargs)
        if illumination_mask not in ILLUMINATION_MASKS:
            raise ValueError(f"illumination_mask must be one of {ILLUMINATION_MASKS}, got {illumination_mask!r}")
        self.generator = generator
        self.discriminator = discriminator
        uv_mask = np.asarray(uv_mask, np.float32)
        self.uv_mask = tf.constant(uv_mask[..., None] if uv_mask.ndim == 2 else uv_mask)          # [S, S, 1]
        self.symmetry_index = (None if symmetry_index is None
                               else tf.constant(np.asarray(symmetry_index, np.int32).reshape(-1)))
        self.embed_fn = embed_fn
        self.loss_weights = loss_weights if isinstance(loss_weights, LossWeights) else LossWeights.preset(loss_weights)
        self.loss_options = (loss_options if isinstance(loss_options, LossOptions)
                             else LossOptions.preset(loss_options))
        self.steps_per_epoch = steps_per_epoch
        self.illumination_mask = illumination_mask
        self.noise_mean = float(noise_mean)
        self.noise_stddev = float(noise_stddev)
        self.cross_shift = int(cross_shift)
        # Steps completed and the current epoch: checkpointed, and read by the schedules inside the step. Only the
        # first replica's update counts (they all agree).
        self.step = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica", name="step")
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica",
                                    name="epoch")
        self.log_names = self.generator_term_names() + ("total", "d_loss")
        self.eval_names = tuple(f"{render}_{metric}" for render in ("od", "oc") for metric in ("l1", "psnr", "ssim"))
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.log_names + self.eval_names
                          + ("albedo_si_rmse",)}
        self.g_optimizer = None
        self.d_optimizer = None

    # -- Keras plumbing ------------------------------------------------------------------------------------------

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Two optimisers with their own state (keras-io GAN style). XLA stays off (CPU, tf.distribute)."""
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def build_networks(self):
        """Creates the generator's and discriminator's weights (one call at the UV size) if not built yet."""
        size = int(self.uv_mask.shape[0])
        zeros = tf.zeros([1, size, size, 3])
        if not self.generator.built:
            self.generator({"texture_uv": zeros, "prior_albedo_uv": zeros, "uv_mask": self.uv_mask}, training=False)
        if not self.discriminator.built:
            self.discriminator(zeros, self.uv_mask, training=False)

    def build_optimizers(self):
        """Creates the nets' weights and both optimisers' slots now (before tracing, under the strategy scope;
        needed for an exact restore)."""
        self.build_networks()
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, inputs, training=False):
        """A sample batch (dict) -> the generator's {'albedo', 'light'} (unseen texels noise-filled)."""
        return self.forward(inputs, training=training)

    def generator_term_names(self):
        """The unweighted generator terms this trainer computes and logs (`tf_facetex.losses.TERMS` order)."""
        names = ("illumination",) + (("cross_perceptual",) if self.embed_fn is not None else ()) + (
            "symmetry", "smoothness", "prior_l1", "gan", "image_gradient", "image")
        return names

    # -- Pieces of a step (pure given the nets; scripts/bench_train.py times them one by one) ---------------------

    def generator_inputs(self, batch, training=True):
        """{'texture_uv' noise-filled, 'prior_albedo_uv', 'uv_mask'}; fresh noise when training, fixed otherwise."""
        seed = None if training else tf.constant(EVAL_NOISE_SEED, tf.int32)
        texture = fill_unseen_with_noise(batch["texture_uv"], batch["visibility_uv"], self.uv_mask, seed=seed,
                                         mean=self.noise_mean, stddev=self.noise_stddev)
        return {"texture_uv": texture, "prior_albedo_uv": batch["prior_albedo_uv"], "uv_mask": self.uv_mask}

    def forward(self, batch, training=True):
        """batch -> {'albedo' [B, S, S, 3] in [0, 1], 'light' [B, S, S, 27]}."""
        return self.generator(self.generator_inputs(batch, training), training=training)

    def render(self, batch, outputs, cross=None):
        """Renders by lookup.

        Returns:
          {'shading': S(L') [B, S, S, 3], 'od': R(A', L') [B, H, W, 3], 'oc': R(A', L) [B, H, W, 3]} and, when
          cross (default: an identity embedding is set), 'cross': R(A'_b, L'_{b - shift}) [B, H, W, 3].
        """
        albedo, light = outputs["albedo"], outputs["light"]
        normals, pixel_uv, proj_mask = batch["normals_uv"], batch["pixel_uv"], batch["proj_mask"]
        shading = shading_uv(normals, light)
        renders = {
            "shading": shading,
            "od": render_from_lookup(albedo * shading, pixel_uv, proj_mask),
            "oc": render_from_lookup(albedo * shading_uv(normals, batch["gamma"]), pixel_uv, proj_mask),
        }
        with_cross = self.embed_fn is not None if cross is None else cross
        if with_cross:
            # b keeps its albedo, normals and lookup; only the light map comes from a = (b - shift) mod B.
            cross_shading = shading_uv(normals, roll_batch(light, self.cross_shift))
            renders["cross"] = render_from_lookup(albedo * cross_shading, pixel_uv, proj_mask)
        return renders

    def _illumination_mask(self, batch):
        if self.illumination_mask == "visibility":
            return self.uv_mask * batch["visibility_uv"]
        return self.uv_mask

    def generator_terms(self, batch, outputs, renders):
        """The unweighted generator terms: {name: scalar} for `generator_term_names()`."""
        options = self.loss_options
        albedo, light = outputs["albedo"], outputs["light"]
        prior, image, face_mask = batch["prior_albedo_uv"], batch["image"], batch["face_mask"]
        terms = {"illumination": illumination_regularization(
            light, batch["gamma"], self._illumination_mask(batch), norm=options.illumination_norm,
            rgb_consistency=options.illumination_rgb_consistency)}
        if self.embed_fn is not None:
            landmarks = batch["landmarks"]
            terms["cross_perceptual"] = cross_perceptual_loss(
                lambda images: self.embed_fn(images, landmarks), renders["cross"], image, face_mask=face_mask)
        terms["symmetry"] = symmetry_loss(albedo, self.uv_mask, self.symmetry_index, norm=options.symmetry_norm)
        terms["smoothness"] = edge_aware_smoothness(albedo, prior, self.uv_mask, alpha=options.smoothness_alpha,
                                                    variant=options.smoothness_variant)
        terms["prior_l1"] = prior_l1_loss(albedo, prior, self.uv_mask, norm=options.prior_norm)
        terms["gan"] = gan_generator_loss(self.discriminator(albedo, self.uv_mask, training=True),
                                          kind=options.gan_kind)
        terms["image_gradient"] = image_gradient_loss(renders["od"], image, face_mask,
                                                      norm=options.image_gradient_norm)
        terms["image"] = image_loss(renders["od"], image, face_mask, form=options.image_form)
        return terms

    def weighted_total(self, terms):
        """sum_t w_t(epoch) * term_t over the terms with a non-zero weight (prior L1 by epoch)."""
        weights = scheduled_weights(self.loss_weights, self.epoch)
        weighted = [weights[name] * terms[name] for name in weights if name in terms]
        return tf.add_n(weighted) if weighted else tf.constant(0.0)

    def discriminator_loss(self, batch, albedo):
        """D's loss: real = prior albedo A, fake = the detailed albedo A' (no gradient into the generator)."""
        real = self.discriminator(batch["prior_albedo_uv"], self.uv_mask, training=True)
        fake = self.discriminator(tf.stop_gradient(albedo), self.uv_mask, training=True)
        return gan_discriminator_loss(real, fake, kind=self.loss_options.gan_kind)

    # -- Steps ---------------------------------------------------------------------------------------------------

    def update_epoch(self):
        if self.steps_per_epoch:
            self.epoch.assign(self.step // self.steps_per_epoch)

    @tf.autograph.experimental.do_not_convert  # plain TF, no Python control flow on tensors: faster traces
    def train_step_logs(self, batch):
        """One generator and one discriminator update; returns {name: scalar} (unweighted terms, 'total',
        'd_loss'), this replica's values, unscaled. Runs in a replica context under tf.distribute."""
        self.update_epoch()
        replica_scale = 1.0 / _num_replicas()
        generator_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.forward(batch, training=True)
            renders = self.render(batch, outputs)
            terms = self.generator_terms(batch, outputs, renders)
            total = self.weighted_total(terms)
            scaled = total * replica_scale
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, generator_variables), generator_variables))

        discriminator_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            d_loss = self.discriminator_loss(batch, outputs["albedo"])
            scaled = d_loss * replica_scale
        self.d_optimizer.apply_gradients(
            zip(tape.gradient(scaled, discriminator_variables), discriminator_variables))
        self.step.assign_add(1)
        return {**terms, "total": total, "d_loss": d_loss}

    @tf.autograph.experimental.do_not_convert  # plain TF, no Python control flow on tensors: faster traces
    def train_step(self, data):
        """Keras `fit` entry point: `train_step_logs` + running means of every logged value."""
        logs = self.train_step_logs(data)
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in logs}

    def predict_albedo(self, batch):
        """[B, S, S, 3] A' with the evaluation noise (deterministic), inference-mode normalisation."""
        return self.forward(batch, training=False)["albedo"]

    @tf.autograph.experimental.do_not_convert  # plain TF, no Python control flow on tensors: faster traces
    def evaluation_values(self, batch):
        """Per-sample evaluation metrics: {name: [B]}.

        od_* / oc_*: l1, psnr, ssim of R(A', L') and R(A', L) against the photo on M_face (the paper's Table 1
        "Ours_OD" / "Ours_OC"); albedo_si_rmse: scale-invariant RMSE of A' against albedo_gt_uv on the UV chart,
        when the batch has ground truth.
        """
        outputs = self.forward(batch, training=False)
        renders = self.render(batch, outputs, cross=False)
        values = {}
        for name in ("od", "oc"):
            for metric, value in facetex_metrics.image_metrics(renders[name], batch["image"],
                                                               batch["face_mask"]).items():
                values[f"{name}_{metric}"] = value
        if "albedo_gt_uv" in batch:
            mask = self.uv_mask * tf.ones_like(outputs["albedo"][..., :1])
            values["albedo_si_rmse"] = facetex_metrics.albedo_metrics(outputs["albedo"], batch["albedo_gt_uv"],
                                                                      mask)["si_rmse"]
        return values

    @tf.autograph.experimental.do_not_convert  # plain TF, no Python control flow on tensors: faster traces
    def test_step(self, data):
        """Keras `evaluate` entry point: running means of `evaluation_values`."""
        values = self.evaluation_values(data)
        for name, value in values.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in values}

    def visuals(self, batch):
        """Images for TensorBoard: {'input', 'od', 'oc', 'albedo', 'shading', 'texture'} (UV maps at UV size)."""
        outputs = self.forward(batch, training=False)
        renders = self.render(batch, outputs, cross=False)
        return {"input": batch["image"], "od": renders["od"], "oc": renders["oc"],
                "albedo": outputs["albedo"] * self.uv_mask, "shading": renders["shading"] * self.uv_mask,
                "texture": batch["texture_uv"]}


# --------------------------------------------------------------------------------------------------------------
# Albedo evaluation against ground truth (toy world now, the synthetic faces later)
# --------------------------------------------------------------------------------------------------------------


def evaluate_albedo_vs_baselines(predict_albedo: Callable, dataset, uv_mask, max_batches=None) -> dict:
    """Albedo error against ground truth of the refined albedo and of the two inputs it starts from.

    For every batch with `albedo_gt_uv`: the scale-invariant errors (`metrics.albedo_metrics`: per-channel least-
    squares scale, then RMSE / L1, and SSIM) of A' = predict_albedo(batch), of the prior albedo A, and of the
    unwrapped texture T (the photo's colours, lighting baked in, 0 where unseen), on two masks: 'chart' (the UV
    chart) and 'visible' (chart * visibility_uv, where T is defined).

    Args:
      predict_albedo: batch dict -> [B, S, S, 3] (e.g. `FaceTexTrainer.predict_albedo`, tf.function'd).
      dataset: iterable of sample batches with ground truth (`sample_dataset(..., with_ground_truth=True)`).
      uv_mask: [S, S, 1] the chart.
      max_batches: stop after this many batches (None = all).
    Returns:
      {'refined' | 'prior' | 'unwrapped': {'chart' | 'visible': {'si_rmse', 'si_l1', 'ssim'}}, 'num_samples': n},
      means over samples.
    """
    uv_mask = tf.constant(np.asarray(uv_mask, np.float32).reshape(np.shape(uv_mask)[:2] + (1,)))
    sums, count = {}, 0
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        if "albedo_gt_uv" not in batch:
            raise TrainingError("evaluate_albedo_vs_baselines needs samples with albedo_gt_uv (synthetic data)")
        chart = uv_mask * tf.ones_like(batch["visibility_uv"])
        masks = {"chart": chart, "visible": chart * batch["visibility_uv"]}
        candidates = {"refined": predict_albedo(batch), "prior": batch["prior_albedo_uv"],
                      "unwrapped": batch["texture_uv"]}
        for name, albedo in candidates.items():
            for mask_name, mask in masks.items():
                for metric, values in facetex_metrics.albedo_metrics(albedo, batch["albedo_gt_uv"], mask).items():
                    key = (name, mask_name, metric)
                    sums[key] = sums.get(key, 0.0) + float(tf.reduce_sum(values))
        count += int(batch["albedo_gt_uv"].shape[0])
    if not count:
        raise TrainingError("evaluate_albedo_vs_baselines: the dataset is empty")
    report = {"num_samples": count}
    for (name, mask_name, metric), total in sums.items():
        report.setdefault(name, {}).setdefault(mask_name, {})[metric] = total / count
    return report


# --------------------------------------------------------------------------------------------------------------
# Hooks for the parts still being built elsewhere: the face model's UV layout and the identity network
# --------------------------------------------------------------------------------------------------------------

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
        from tf_facetex.training.toy_data import toy_uv_mask

        log(f"[train] --face_model=toy: the toy world's UV chart at {uv_size}x{uv_size}, mirror along W")
        return toy_uv_mask(uv_size), None
    try:
        from tf_facetex.rendering.uv import build_uv_raster
    except ImportError as err:
        raise TrainingError(f"--face_model={face_model}: the UV rasteriser (tf_facetex.rendering) is not available "
                            f"({err}); use --face_model=toy or none") from err
    from tf_facetex.face_model import load_face_model

    model = load_face_model(None if face_model == DEFAULT_FACE_MODEL else face_model, allow_clone=False, log=log)
    raster = build_uv_raster(model, uv_size)
    log(f"[train] --face_model={face_model}: UV chart {int(raster.mask.sum())} of {uv_size}x{uv_size} texels, "
        "texel symmetry from the model")
    return raster.mask[..., None].astype(np.float32), np.asarray(raster.symmetry_index, np.int32)


IDENTITY_BACKENDS = ("none", "dlib", "arcface", "toy")


def make_embed_fn(backend="none", weights_path=None):
    """`embed_fn(images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2]) -> [B, D]` for the cross-perceptual term,
    or None for 'none'. Uses `tf_facetex.identity` (dlib's ResNet by default; ArcFace given its weights); 'toy' is
    the toy world's stand-in (`toy_data.toy_identity_embedding`: lighting-robust detail, no network).
    Call it under the strategy scope (the network's variables are created there)."""
    if backend == "none":
        return None
    if backend == "toy":
        from tf_facetex.training.toy_data import toy_identity_embedding

        return toy_identity_embedding
    if backend not in IDENTITY_BACKENDS:
        raise TrainingError(f"--identity must be one of {IDENTITY_BACKENDS}, got {backend!r}")
    try:
        from tf_facetex.identity import get_identity_encoder

        encoder = get_identity_encoder(backend, weights_path)
    except ImportError as err:
        raise TrainingError(f"--identity={backend}: the identity module is not available ({err})") from err

    def embed_fn(images, landmarks):
        return encoder.embed(images, landmarks)

    return embed_fn


# --------------------------------------------------------------------------------------------------------------
# The training loop (scripts/train.py)
# --------------------------------------------------------------------------------------------------------------

STRATEGIES = ("default", "mirrored", "multi_worker")
# Settings a resumed run must share with the run that wrote the checkpoints.
ARCHITECTURE_KEYS = ("net_preset", "white_prior", "discriminator_ndf", "net_overrides", "discriminator_overrides",
                     "face_model")


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs (scripts/train.py fills it from flags; defaults are the paper's)."""

    train_data: str = ""
    eval_data: str = ""
    model_dir: str = ""
    resume: bool = False
    strategy: str = "default"
    net_preset: str = "paper"
    white_prior: bool = False
    discriminator_ndf: int = 64
    net_overrides: dict = dataclasses.field(default_factory=dict)            # RefinementNet keyword overrides
    discriminator_overrides: dict = dataclasses.field(default_factory=dict)  # AlbedoDiscriminator overrides
    loss_preset: str = "paper"
    weight_overrides: dict = dataclasses.field(default_factory=dict)  # {term: weight} over the preset's
    disabled_terms: tuple = ()
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

    def schedule(self, steps_per_epoch) -> "TrainSchedule":
        from tf_facetex.training.schedule import TrainSchedule

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


def make_strategy(name):
    """tf.distribute strategy by name; create it before any other TensorFlow work (multi-worker needs that)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainingError("--strategy=multi_worker reads the cluster from the TF_CONFIG environment variable, "
                                "which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"--strategy must be one of {STRATEGIES}, got {name!r}")


def is_chief(strategy) -> bool:
    """True on the worker that writes checkpoints and summaries (the only one outside multi-worker runs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def num_workers(strategy) -> int:
    """Number of worker processes (input pipelines) of a strategy: 1 outside multi-worker runs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))


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


def build_trainer(config: TrainConfig, uv_size, uv_mask, symmetry_index, steps_per_epoch, embed_fn=None):
    """Networks, trainer and both optimisers (call under the strategy scope)."""
    from tf_facetex.losses import LossWeights
    from tf_facetex.networks import AlbedoDiscriminator, RefinementNet

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
                             loss_weights=weights, loss_options=config.loss_preset, steps_per_epoch=steps_per_epoch,
                             illumination_mask=config.illumination_mask)
    g_optimizer, d_optimizer = config.schedule(steps_per_epoch).make_optimizers(trainer.epoch)
    trainer.compile(g_optimizer, d_optimizer)
    trainer.build_optimizers()
    return trainer


def _check_run_config(model_dir, record, resume, log):
    """Writes run_config.json on a fresh run; on resume, refuses settings that change the architecture."""
    from tf_facetex.training.checkpoints import write_or_check_run_config

    write_or_check_run_config(model_dir, record, resume, ARCHITECTURE_KEYS + ("uv_size", "image_size"), log, "train")


def restore_trainer(model_dir, checkpoint=None, log=print) -> FaceTexTrainer:
    """A trainer rebuilt from a run folder's run_config.json with a checkpoint's weights (default: the newest).

    For evaluation and inference (`trainer.predict_albedo`, `evaluate_albedo_vs_baselines`); the identity network
    is not loaded (it only serves the cross-perceptual training loss).
    """
    from tf_facetex.training.checkpoints import CHECKPOINT_PREFIX, make_checkpoint

    model_dir = pathlib.Path(model_dir)
    settings_path = model_dir / "run_config.json"
    if not settings_path.is_file():
        raise TrainingError(f"{model_dir}: no run_config.json (not a training run folder)")
    record = json.loads(settings_path.read_text())
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{key: value for key, value in record.items() if key in fields})
    config.disabled_terms = tuple(config.disabled_terms)
    uv_mask, symmetry_index = uv_layout(config.face_model, record["uv_size"], log)
    trainer = build_trainer(config, record["uv_size"], uv_mask, symmetry_index, record["steps_per_epoch"])
    path = checkpoint or tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if path is None:
        raise TrainingError(f"{model_dir / 'checkpoints'}: no {CHECKPOINT_PREFIX}-* checkpoint")
    make_checkpoint(trainer).restore(str(path)).expect_partial().assert_existing_objects_matched()
    log(f"[train] restored {path} (step {int(trainer.step.numpy())})")
    return trainer


def _describe_non_finite(logs):
    return ", ".join(f"{name}={value:.4g}" for name, value in logs.items() if not np.isfinite(value)) or "?"


def evaluate(trainer, dataset, max_batches=None, evaluation_fn=None) -> dict:
    """Means over samples of `FaceTexTrainer.evaluation_values` on a (finite) dataset."""
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


def train(config: TrainConfig, log=print, strategy=None, on_step: Optional[Callable] = None) -> TrainResult:
    """Trains the refinement module per `config` (see scripts/train.py for the flags).

    `on_step(step, logs)` (optional) is called on the chief after every step with the step's logged values (for
    notebooks, custom monitoring, tests).

    Checkpoints go to <model_dir>/checkpoints every `checkpoint_every` steps, at the end, and when SIGTERM/SIGINT
    arrives (then `interrupted` is True). A NaN/Inf loss stops the run with TrainingError before anything is saved;
    a non-finite state is never written, so the newest checkpoint is always good.
    """
    from tqdm import tqdm

    from tf_facetex.prior.samples import count_records, sample_dataset
    from tf_facetex.training import summaries
    from tf_facetex.training import checkpoints
    from tf_facetex.training.checkpoints import CheckpointKeeper, StopSignal

    strategy = strategy or make_strategy(config.strategy)  # first: multi-worker must precede other TF work
    chief = is_chief(strategy)
    log = log if chief else (lambda *_: None)
    if not config.train_data or not config.model_dir:
        raise TrainingError("need --train_data (refinement-sample shards) and --model_dir")
    model_dir = pathlib.Path(config.model_dir)
    info = inspect_samples(config.train_data)
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
        steps_per_epoch = count_records(config.train_data) // config.global_batch_size
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
        _check_run_config(model_dir, record, config.resume, log)
    start_step = checkpoints.resume_step(keeper, config.resume, log, "train")
    if start_step:
        log(f"[train] resumed from {keeper.latest}: step {start_step}, epoch {int(trainer.epoch.numpy())}")
    trainer.update_epoch()

    def dataset_fn(context):
        return sample_dataset(config.train_data, context.get_per_replica_batch_size(config.global_batch_size),
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
    visual_source = eval_dataset or sample_dataset(config.train_data, 4, image_size, uv_size, num_coeffs,
                                                   training=False, deterministic=True)
    visual_batch = {key: value[:4] for key, value in next(iter(visual_source)).items()} if chief else None
    visuals_fn = tf.function(trainer.visuals, autograph=False)
    evaluation_fn = tf.function(trainer.evaluation_values, reduce_retracing=True, autograph=False)
    summary = summaries.TrainingLog(model_dir, enabled=chief)
    total_steps = schedule.total_steps
    log(f"[train] strategy {config.strategy} ({strategy.__class__.__name__}): {replicas} replica(s) on {workers} "
        f"worker(s), global batch {config.global_batch_size}, "
        f"{steps_per_epoch} steps/epoch, steps {start_step} -> {total_steps}; images {image_size}px, UV {uv_size}px; "
        f"generator {trainer.generator.count_params():,} params, loss preset {config.loss_preset}"
        + (f", off: {','.join(config.disabled_terms)}" if config.disabled_terms else ""))

    def write_eval(step):
        return evaluate_and_log(trainer, eval_dataset, config.eval_batches or None, evaluation_fn, summary, step,
                                log, "train")

    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    step, logs, eval_results, interrupted = start_step, {}, {}, False
    last_saved = start_step if config.resume and keeper.latest else None
    last_time, last_step = time.perf_counter(), start_step
    progress = tqdm(total=total_steps, initial=start_step, disable=not (chief and config.progress),
                    dynamic_ncols=True, desc="train")
    try:
        with StopSignal() as stop:
            while step < total_steps:
                poison = 1.0 if config.poison_step and step + 1 == config.poison_step else 0.0
                control = tf.constant([1.0 if stop.requested else 0.0, poison])
                values = distributed_step(iterator, control).numpy()
                step += 1
                logs = dict(zip(names, values[:-1].tolist()))
                if not np.all(np.isfinite(values)):
                    raise TrainingError(
                        f"non-finite loss at step {step} ({_describe_non_finite(logs)}); stopped without saving. "
                        f"Newest checkpoint (finite): {keeper.latest or 'none'}; continue from it with --resume "
                        "(a lower --learning_rate may help)")
                progress.update(1)
                progress.set_postfix(summaries.progress_text(logs), refresh=False)
                if on_step is not None and chief:
                    on_step(step, logs)
                if step % config.log_every == 0 or step == start_step + 1:
                    now = time.perf_counter()
                    epoch = int(trainer.epoch.numpy())
                    summary.scalars(step, logs, "loss")
                    summary.scalars(step, {
                        "learning_rate": float(trainer.g_optimizer.learning_rate), "epoch": epoch,
                        "prior_l1_weight": float(trainer.loss_weights.weight("prior_l1", epoch)),
                        "steps_per_second": (step - last_step) / max(now - last_time, 1e-9)}, "train")
                    last_time, last_step = now, step
                if chief and config.image_every and step % config.image_every == 0:
                    visuals = {key: value.numpy() for key, value in visuals_fn(visual_batch).items()}
                    summary.image(step, "train", summaries.training_grid(visuals))
                if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                    eval_results = write_eval(step)
                stop_now = values[-1] > 0 if multi_worker else stop.requested
                if stop_now or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    keeper.save()
                    last_saved = step
                if stop_now:
                    interrupted = True
                    log(f"\n[train] {stop.signal_name or 'stop request'}: saved step {step} to {keeper.latest}; "
                        "continue with --resume")
                    break
        if not interrupted:
            if last_saved != step:
                keeper.save()
            if chief and visual_batch is not None:
                visuals = {key: value.numpy() for key, value in visuals_fn(visual_batch).items()}
                summary.image(step, "train", summaries.training_grid(visuals))
            eval_results = write_eval(step)
            log(f"[train] done at step {step}; checkpoint {keeper.latest}")
    finally:
        progress.close()
        summary.close()
    return TrainResult(step=step, epoch=int(trainer.epoch.numpy()), interrupted=interrupted,
                       checkpoint=keeper.latest, logs=logs, eval=eval_results,
                       stop_signal=(stop.signal_name or "SIGTERM") if interrupted else None)
