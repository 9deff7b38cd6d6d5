"""`PriorTrainer`: the regressor + the fixed decoder, camera and rasteriser, trained with Deng et al.'s losses.

One step, from a batch of the data pipeline (`tf_facetex.data.tfdata.make_dataset`: aligned crops, their 68
landmarks and a face/skin mask; synthetic faces carry their true coefficients as ``gt_coeffs``):

1. The regressor maps the crop to the coefficients ``[id, exp, tex, angles, gamma, translation]``.
2. The fixed decoder (`FaceDecoder`) gives the mesh and the per-vertex albedo; the pose and Deng's camera place it;
   the differentiable rasteriser (`FaceRenderer.rasterize`) and per-vertex SH shading render it (Deng's per-vertex
   colours, "mode A": ``colour = albedo * sh.shading(camera-frame normal, gamma)``).
3. The terms of `tf_facetex.prior.losses`, all logged unweighted.
4. ``total = sum_k weight_k * term_k`` (`losses.weighted_total` with `PriorLossWeights`) updates the regressor.

Method names follow the refinement trainer (`train_step_logs`, `evaluation_values`, `visuals`, `weighted_total`,
`checkpoint_items`, `checkpointed_variables`), so both run on `tf_facetex.training.loop`.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import keras
import numpy as np
import tensorflow as tf

from tf_facetex import camera, metrics, sh, visualize
from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
from tf_facetex.face_model.decoder import is_blendshape_model
from tf_facetex.losses import weighted_total
from tf_facetex.prior.landmark_fit import deng_landmark_weights
from tf_facetex.prior.losses import (PSEUDO_DEFAULT_PARTS, REFERENCE_SIZE, PriorLossWeights, coefficient_regularizer,
                                     gamma_whiteness, identity_loss, landmark_error, landmark_loss,
                                     photometric_loss, pseudo_label_loss, pseudo_label_weights, pseudo_shape_basis,
                                     reflectance_loss)
from tf_facetex.prior.regressor import PriorRegressor


class PriorTrainer(keras.Model):
    """`PriorRegressor` + the fixed decoder, camera and rasteriser, trained with Deng et al.'s losses.

    Args:
      regressor: the `PriorRegressor` (its image size is the data's crop size).
      face_model: the `MorphableModel` it regresses.
      renderer: a `FaceRenderer` for the photometric term (its image size may be smaller than the crop's: the input
        and mask are then area-resized for that term; the landmark term always uses the crop's size).
      loss_weights: `PriorLossWeights`.
      embed_fn: ``embed_fn(images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2]) -> [B, D]`` for the identity term,
        or None (the term is left out).
      pseudo_parts: coefficient parts the pseudo-label term compares (when the batch carries 'pseudo_coeffs').
      steps_per_epoch: epoch = step // steps_per_epoch (drives the learning-rate decay); None keeps epoch 0.
    """

    def __init__(self, regressor: PriorRegressor, face_model, renderer, loss_weights: PriorLossWeights = None,
                 embed_fn: Optional[Callable] = None, pseudo_parts=PSEUDO_DEFAULT_PARTS,
                 steps_per_epoch: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.regressor = regressor
        self.face_model = face_model
        self.renderer = renderer
        self.decoder = FaceDecoder(face_model)
        self.layout = CoefficientLayout.for_model(face_model)
        self.loss_weights = loss_weights or PriorLossWeights()
        self.embed_fn = embed_fn
        self.image_size = int(regressor.image_size)
        self.render_size = int(renderer.image_size)
        self.blendshapes = is_blendshape_model(face_model)
        self.has_reflectance = face_model.num_tex > 0
        self.landmark_indices = tf.constant(face_model.landmark_indices, tf.int32)
        self.skin_mask = tf.constant(face_model.skin_mask.astype(np.float32))
        self.pseudo_weights = tf.constant(pseudo_label_weights(self.layout, pseudo_parts))
        basis = pseudo_shape_basis(face_model, self.layout, pseudo_parts)
        self.pseudo_basis = None if basis is None else tf.constant(basis)
        self.landmark_weights = deng_landmark_weights()
        self.steps_per_epoch = steps_per_epoch
        self.step = keras.Variable(0, dtype="int64", trainable=False, name="step")
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="epoch")
        self.optimizer_ = None

    # -- plumbing ------------------------------------------------------------------------------------------------

    def compile(self, optimizer, **kwargs):
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        self.optimizer_ = optimizer

    def build_all(self):
        """Creates the regressor's weights and the optimiser's slots (needed for an exact restore)."""
        if not self.regressor.built:
            self.regressor(tf.zeros([1, self.image_size, self.image_size, 3]))
        if self.optimizer_ is not None:
            self.optimizer_.build(self.regressor.trainable_variables)

    def call(self, images, training=False):
        return self.regressor(images, training=training)

    def term_names(self, with_pseudo=False):
        names = ["photometric", "landmark"]
        if self.embed_fn is not None:
            names.append("identity")
        names += ["coefficients", "gamma"]
        if self.has_reflectance:
            names.append("reflectance")
        if with_pseudo:
            names.append("pseudo_label")
        return tuple(names)

    def log_names(self, with_pseudo=False):
        return self.term_names(with_pseudo) + ("total", "landmark_px")

    def update_epoch(self):
        if self.steps_per_epoch:
            self.epoch.assign(self.step // self.steps_per_epoch)

    # -- forward -------------------------------------------------------------------------------------------------

    def decode(self, coeffs):
        """Coefficients [B, C] -> dict: 'parts', 'posed' [B, N, 3], 'albedo' [B, N, 3], 'landmarks' [B, 68, 2]
        (pixels of the crop), 'render' [B, R, R, 3] (R = the renderer's size), 'render_mask' [B, R, R, 1] (M_proj)."""
        decoded = self.decoder.pose(coeffs)
        parts, posed = decoded["parts"], decoded["posed"]
        landmarks = camera.project(tf.gather(posed, self.landmark_indices, axis=1), self.image_size)[0]
        raster = self.renderer.rasterize(posed)
        normals = self.renderer.vertex_normals(posed)
        colours = decoded["albedo"] * sh.shading(normals, parts["gamma"][:, None, :])
        render, render_mask = self.renderer.render_vertex_colors(colours, raster)
        return {"parts": parts, "posed": posed, "albedo": decoded["albedo"], "landmarks": landmarks,
                "render": render, "render_mask": render_mask}

    def at_render_size(self, images, masks):
        """The crop and its mask at the renderer's size (area resize; the mask re-binarised)."""
        if self.render_size == self.image_size:
            return images, masks
        size = [self.render_size, self.render_size]
        return (tf.image.resize(images, size, method="area"),
                tf.cast(tf.image.resize(masks, size, method="area") > 0.5, tf.float32))

    def loss_terms(self, batch, coeffs):
        """Unweighted terms (`term_names`) and the decoded outputs, for one batch and its predicted coefficients."""
        out = self.decode(coeffs)
        parts = out["parts"]
        images, masks = self.at_render_size(batch["image"], batch["mask"])
        photo_mask = masks * out["render_mask"]
        terms = {"photometric": photometric_loss(out["render"], images, photo_mask),
                 "landmark": landmark_loss(out["landmarks"], batch["landmarks"], self.landmark_weights,
                                           REFERENCE_SIZE / self.image_size)}
        if self.embed_fn is not None:
            composite = out["render"] * out["render_mask"] + images * (1.0 - out["render_mask"])
            lms = tf.cast(batch["landmarks"], tf.float32) * (self.render_size / self.image_size)
            terms["identity"] = identity_loss(self.embed_fn(composite, lms),
                                              tf.stop_gradient(self.embed_fn(images, lms)))
        w = self.loss_weights
        terms["coefficients"] = coefficient_regularizer(parts["id"], parts["exp"], parts["tex"], w.w_id, w.w_exp,
                                                        w.w_tex, blendshapes=self.blendshapes)
        terms["gamma"] = gamma_whiteness(parts["gamma"])
        if self.has_reflectance:
            terms["reflectance"] = reflectance_loss(out["albedo"], self.skin_mask)
        if "pseudo_coeffs" in batch:
            terms["pseudo_label"] = pseudo_label_loss(coeffs, batch["pseudo_coeffs"], self.pseudo_weights,
                                                      self.pseudo_basis, batch.get("pseudo_valid"))
        return terms, out

    def weighted_total(self, terms):
        """sum_k weight_k * term_k (`PriorLossWeights`)."""
        return weighted_total(terms, {name: getattr(self.loss_weights, name) for name in terms})

    def checkpoint_items(self) -> dict:
        """What a checkpoint holds (`training.checkpoints.CheckpointKeeper`): regressor, optimiser, step, epoch."""
        return {"regressor": self.regressor, "optimizer": self.optimizer_, "step": self.step, "epoch": self.epoch}

    def checkpointed_variables(self) -> list:
        return list(self.regressor.variables) + list(self.optimizer_.variables)

    def train_step_logs(self, batch):
        """One optimisation step: -> dict of the unweighted terms, 'total' and 'landmark_px' (mean px at 224)."""
        with tf.GradientTape() as tape:
            coeffs = self.regressor(batch["image"], training=True)
            terms, out = self.loss_terms(batch, coeffs)
            total = self.weighted_total(terms)
        variables = self.regressor.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer_.apply_gradients(zip(grads, variables))
        self.step.assign_add(1)
        self.update_epoch()
        logs = dict(terms)
        logs["total"] = total
        logs["landmark_px"] = tf.reduce_mean(landmark_error(out["landmarks"], batch["landmarks"],
                                                            REFERENCE_SIZE / self.image_size))
        return logs

    def train_step(self, data):
        """Keras `fit` entry point (as the refinement trainer's): the step's logged values."""
        return self.train_step_logs(data)

    def test_step(self, data):
        """Keras `evaluate` entry point: the batch means of `evaluation_values`."""
        return {name: tf.reduce_mean(value) for name, value in self.evaluation_values(data).items()}

    def evaluation_values(self, batch):
        """Per-sample [B] values of the regressor on a batch: landmark_px (at 224), skin_psnr (dB, render over a
        black background on the data mask), and with ground truth coefficients shape_rmse_mm."""
        coeffs = self.regressor(batch["image"], training=False)
        return prediction_metrics(self, batch, coeffs)

    def visuals(self, batch):
        """Numpy uint8 grid rows: input | render | render over input | landmarks (data green, predicted red)."""
        coeffs = self.regressor(batch["image"], training=False)
        out = self.decode(coeffs)
        images, _ = self.at_render_size(batch["image"], batch["mask"])
        composite = out["render"] * out["render_mask"] + images * (1.0 - out["render_mask"])
        return {"input": batch["image"].numpy(), "render": out["render"].numpy(), "overlay": composite.numpy(),
                "landmarks": out["landmarks"].numpy(), "target_landmarks": np.asarray(batch["landmarks"])}


def prediction_metrics(trainer: PriorTrainer, batch, coeffs):
    """Per-sample metrics of coefficients [B, C] on a batch (see `PriorTrainer.evaluation_values`)."""
    out = trainer.decode(coeffs)
    scale = REFERENCE_SIZE / trainer.image_size
    images, masks = trainer.at_render_size(batch["image"], batch["mask"])
    render = tf.clip_by_value(out["render"], 0.0, 1.0) * out["render_mask"]
    values = {"landmark_px": landmark_error(out["landmarks"], batch["landmarks"], scale),
              "skin_psnr": metrics.masked_psnr(render, images, masks)}
    if "gt_coeffs" in batch:
        values.update(coefficient_errors(trainer, coeffs, batch["gt_coeffs"]))
    return values


def shape_rmse_mm(decoder: FaceDecoder, region_mask, predicted: dict, true: dict):
    """[B] RMSE in mm between the unposed identity + expression meshes of two coefficient sets (dicts with 'id' and
    'exp') over the vertices where ``region_mask`` [N] is set (model units are decimetres)."""
    region = np.flatnonzero(region_mask)
    verts_pred = tf.gather(decoder.shape(predicted["id"], predicted["exp"]), region, axis=1)
    verts_true = tf.gather(decoder.shape(true["id"], true["exp"]), region, axis=1)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(verts_pred - verts_true), -1), -1)) * 100.0


def coefficient_errors(trainer: PriorTrainer, coeffs, gt_coeffs):
    """Per-sample [B] errors against true coefficients: shape_rmse_mm (unposed identity + expression mesh on the
    model's face region), id_rmse / exp_rmse (coefficient RMSE), angle_error_deg (mean |error| of the 3 angles)."""
    layout = trainer.layout
    pred, true = layout.split(coeffs), layout.split(tf.cast(gt_coeffs, tf.float32))
    return {"shape_rmse_mm": shape_rmse_mm(trainer.decoder, trainer.face_model.face_region_mask, pred, true),
            "id_rmse": tf.sqrt(tf.reduce_mean(tf.square(pred["id"] - true["id"]), -1)),
            "exp_rmse": tf.sqrt(tf.reduce_mean(tf.square(pred["exp"] - true["exp"]), -1)),
            "angle_error_deg": tf.reduce_mean(tf.abs(pred["angles"] - true["angles"]), -1) * (180.0 / np.pi)}


def visual_grid(visuals: dict, max_rows=4) -> np.ndarray:
    """uint8 grid from `PriorTrainer.visuals`: a row per sample, columns input | render | overlay | landmarks."""
    size = visuals["input"].shape[1]
    rows = []
    for index in range(min(max_rows, visuals["input"].shape[0])):
        cells = []
        for key in ("input", "render", "overlay"):
            cell = np.clip(visuals[key][index], 0.0, 1.0)
            if cell.shape[0] != size:
                cell = cv2.resize(cell, (size, size), interpolation=cv2.INTER_LINEAR)
            cells.append(visualize.to_uint8(cell))
        marks = cells[0].copy()
        for points, colour in ((visuals["target_landmarks"][index], (0, 255, 0)),
                               (visuals["landmarks"][index], (255, 0, 0))):
            for x, y in points:
                if np.isfinite(x) and np.isfinite(y):
                    cv2.circle(marks, (int(round(x)), int(round(y))), max(1, size // 112), colour, -1)
        cells.append(marks)
        if index == 0:
            titles = ("input", "render", "render over input", "landmarks data/pred")
            cells = [visualize.label(c, t, scale=max(0.25, size / 560)) for c, t in zip(cells, titles)]
        rows.append(cells)
    return visualize.grid(rows)
