"""FaceTexTrainer: the detail refinement module's training step (paper sections 5-6), keras-io GAN style.

One step, from a batch of refinement samples (`tf_facetex.prior.samples`):

1. Unseen texels of the unwrapped texture T are filled with fresh Gaussian noise (re-drawn every step).
2. The RefinementNet maps (T, prior albedo A) to the detailed albedo A' and the 27-channel light map L'.
3. Rendering is a lookup, no rasteriser (the geometry is frozen): per texel colour A' * shading(normals, light),
   bilinearly sampled at each pixel's texel position and masked by M_proj (`refinement.objective`):
   R(A', L') ("OD", detailed light), R(A', L) ("OC", the coarse gamma), and for the cross-perceptual term
   R(A'_b, L'_a) with the batch rolled by one (b's albedo, normals and lookup; a's light map).
4. Generator terms (unweighted values all logged): illumination regularisation, cross-perceptual (when an
   identity embedding is given), symmetry, edge-aware smoothness, prior L1 (weight by epoch), GAN generator term,
   image gradient and image losses on M_face (`refinement.objective.uv_terms`, shared with the per-image fit).
   The weighted total (`losses.weighted_total` with `LossWeights` by epoch) updates the generator.
5. The PatchGAN discriminator learns real = prior albedo A, fake = stop_gradient(A') with its own optimiser.

Distribution: every term is a mean over the replica's local batch; the optimisers all-reduce gradients by SUM, so
the loss each replica differentiates is divided by the number of replicas. With equal local batches that is
sum over the local samples / global batch size, i.e. the gradient of the global-batch mean (what Keras 3's own
`compile`/`fit` do, `keras.src.losses.loss.scale_loss_for_distribution`). Logged values are the unscaled means.

The epoch lives in a variable derived from the step counter (epoch = step // steps_per_epoch), so the prior-L1
schedule and the learning-rate decay (`schedule.EpochDecay`) follow a resumed run exactly.

`tf_facetex.refinement.train` runs it (scripts/train.py) on the generic loop of `tf_facetex.training`.
"""
from __future__ import annotations

from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from tf_facetex import metrics as facetex_metrics
from tf_facetex import sh
from tf_facetex.errors import TrainingError
from tf_facetex.losses import (LossOptions, LossWeights, cross_perceptual_loss, gan_discriminator_loss,
                               gan_generator_loss, roll_batch, weighted_total)
from tf_facetex.networks import fill_unseen_with_noise
from tf_facetex.refinement.level import anchor_to_coarse_light
from tf_facetex.refinement.network import network_inputs, unseen_noise
from tf_facetex.refinement.objective import UV_TERM_NAMES, render_from_lookup, uv_terms
from tf_facetex.training.distribute import num_replicas_in_context
from tf_facetex.training.schedule import scheduled_weights

ILLUMINATION_MASKS = ("uv", "visibility")


# --------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------


class FaceTexTrainer(keras.Model):
    """RefinementNet + AlbedoDiscriminator trained with the paper's losses (module docstring).

    Args:
      generator: a `RefinementNet` ({'texture_uv', 'prior_albedo_uv', 'gamma'[, 'uv_mask']} -> {'albedo', 'light'}).
      discriminator: an `AlbedoDiscriminator` ((albedo [B, S, S, 3], uv_mask) -> patch logits).
      uv_mask: [S, S, 1] (or [S, S]) the face model's UV chart M_uv (1 inside); toy data uses all ones or the
        toy world's chart (`refinement.train.uv_layout`).
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
        # The fixed unseen-texel fill of evaluation and inference (N(0, 1) by default: the product's exactly).
        self.eval_noise = self.noise_mean + self.noise_stddev * unseen_noise(int(self.uv_mask.shape[0]))
        # Steps completed and the current epoch: checkpointed, and read by the schedules inside the step. Only the
        # first replica's update counts (they all agree).
        self.step = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica", name="step")
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, aggregation="only_first_replica",
                                    name="epoch")
        self.log_names = self.generator_term_names() + ("total", "d_loss")
        self.eval_names = tuple(f"{render}_{metric}" for render in ("od", "oc") for metric in ("l1", "psnr", "ssim"))
        self.eval_loss_names = tuple(f"loss_{name}" for name in UV_TERM_NAMES) + ("loss_uv_total",)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.log_names + self.eval_names
                          + self.eval_loss_names + ("albedo_si_rmse",)}
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
            self.generator({"texture_uv": zeros, "prior_albedo_uv": zeros, "base_albedo_uv": zeros,
                            "gamma": tf.zeros([1, 27]), "uv_mask": self.uv_mask}, training=False)
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
        """`network_inputs` ('texture_uv' noise-filled, 'prior_albedo_uv', 'gamma', 'uv_mask'[, 'base_albedo_uv']):
        fresh noise when training; otherwise the
        product's fixed draw (`refinement.network.unseen_noise`, scaled by the trainer's noise statistics), filled
        as `refine_with_network` fills it, so that the evaluation sees what inference sees."""
        if training:
            texture = fill_unseen_with_noise(batch["texture_uv"], batch["visibility_uv"], self.uv_mask,
                                             mean=self.noise_mean, stddev=self.noise_stddev)
        else:
            seen = tf.cast(batch["visibility_uv"], tf.float32)
            texture = (seen * tf.cast(batch["texture_uv"], tf.float32) + (1.0 - seen) * self.eval_noise) * self.uv_mask
        return network_inputs(self.generator, batch, texture, self.uv_mask)

    def forward(self, batch, training=True):
        """batch -> {'albedo' [B, S, S, 3] in [0, 1], 'light' [B, S, S, 27]}; not training, the level anchored to
        the coarse light and masked to the chart as inference does it (`refine_with_network`)."""
        outputs = self.generator(self.generator_inputs(batch, training), training=training)
        if training:
            return outputs
        albedo, light = anchor_to_coarse_light(outputs["albedo"] * self.uv_mask, outputs["light"] * self.uv_mask,
                                               batch["texture_uv"], batch["visibility_uv"], batch["normals_uv"],
                                               batch["gamma"], self.uv_mask)
        return {**outputs, "albedo": albedo, "light": light}

    def render(self, batch, outputs, cross=None):
        """Renders by lookup.

        Returns:
          {'shading': S(L') [B, S, S, 3], 'od': R(A', L') [B, H, W, 3], 'oc': R(A', L) [B, H, W, 3]} and, when
          cross (default: an identity embedding is set), 'cross': R(A'_b, L'_{b - shift}) [B, H, W, 3].
        """
        albedo, light = outputs["albedo"], outputs["light"]
        normals, pixel_uv, proj_mask = batch["normals_uv"], batch["pixel_uv"], batch["proj_mask"]
        shading = sh.shading_uv(normals, light)
        renders = {
            "shading": shading,
            "od": render_from_lookup(albedo * shading, pixel_uv, proj_mask),
            "oc": render_from_lookup(albedo * sh.shading_uv(normals, batch["gamma"]), pixel_uv, proj_mask),
        }
        with_cross = self.embed_fn is not None if cross is None else cross
        if with_cross:
            # b keeps its albedo, normals and lookup; only the light map comes from a = (b - shift) mod B.
            cross_shading = sh.shading_uv(normals, roll_batch(light, self.cross_shift))
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
        terms = uv_terms(albedo, light, renders["od"], batch, self.uv_mask, self._illumination_mask(batch),
                         self.symmetry_index, options)
        if self.embed_fn is not None:
            landmarks = batch["landmarks"]
            terms["cross_perceptual"] = cross_perceptual_loss(
                lambda images: self.embed_fn(images, landmarks), renders["cross"], batch["image"],
                face_mask=batch["face_mask"])
        terms["gan"] = gan_generator_loss(self.discriminator(albedo, self.uv_mask, training=True),
                                          kind=options.gan_kind)
        return terms

    def weighted_total(self, terms):
        """sum_t w_t(epoch) * term_t over the terms with a non-zero weight (prior L1 by epoch)."""
        return weighted_total(terms, scheduled_weights(self.loss_weights, self.epoch))

    def checkpoint_items(self) -> dict:
        """What a checkpoint holds (`training.checkpoints.CheckpointKeeper`): both nets, both optimisers, step,
        epoch; `refinement.checkpoint.load_refinement_net` reads the 'generator' entry."""
        return {"generator": self.generator, "discriminator": self.discriminator, "g_optimizer": self.g_optimizer,
                "d_optimizer": self.d_optimizer, "step": self.step, "epoch": self.epoch}

    def checkpointed_variables(self) -> list:
        """Every variable a checkpoint holds (nets incl. BatchNorm statistics, optimiser slots, counters)."""
        return (list(self.generator.variables) + list(self.discriminator.variables)
                + list(self.g_optimizer.variables) + list(self.d_optimizer.variables))

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
        replica_scale = 1.0 / num_replicas_in_context()
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
        when the batch has ground truth; loss_<term> and loss_uv_total: the generator's UV terms and their
        weighted sum (the objective without the GAN and cross-perceptual terms, which need the discriminator in
        training mode and a population: the validation loss of the learning curves), batch values per sample.
        """
        outputs = self.forward(batch, training=False)
        renders = self.render(batch, outputs, cross=False)
        terms = uv_terms(outputs["albedo"], outputs["light"], renders["od"], batch, self.uv_mask,
                         self._illumination_mask(batch), self.symmetry_index, self.loss_options)
        per_sample = tf.ones_like(batch["image"][:, 0, 0, 0])
        values = {f"loss_{name}": value * per_sample for name, value in terms.items()}
        values["loss_uv_total"] = self.weighted_total(terms) * per_sample
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
# Albedo evaluation against ground truth (toy world, synthetic faces)
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
