"""Self-supervised training of the `PriorRegressor` (Deng et al. 2019's R-Net recipe; SPEC section 5, issue 6.3).

One step, from a batch of the data pipeline (`tf_facetex.data.tfrecords.make_dataset`: aligned crops, their 68
landmarks and a face/skin mask; synthetic faces carry their true coefficients as ``gt_coeffs``):

1. The regressor maps the crop to the coefficients ``[id, exp, tex, angles, gamma, translation]``.
2. The fixed decoder (`FaceDecoder`) gives the mesh and the per-vertex albedo; the pose and Deng's camera place it;
   the differentiable rasteriser (`FaceRenderer.rasterize`) and per-vertex SH shading render it (Deng's per-vertex
   colours, "mode A": ``colour = albedo * sh.shading(camera-frame normal, gamma)``).
3. Terms (each a small pure function below, all logged unweighted):
   - photometric: mean over the mask of the per-pixel L2 norm ``sqrt(sum_c (I_r - I)^2 + eps)`` (robust: not
     squared), mask = the data's face/skin mask x the rendered face (M_proj) -- `losses.image_loss(form='l2_norm')`;
   - landmark: Deng's weighted squared distance of the 68 projected landmark vertices (weight 20 on the nose
     28-30 and the inner mouth 60-67), in pixels of a 224 crop whatever the training size;
   - identity (optional, `embed_fn`): 1 - cos(ID(render over input), ID(input)) with a face-recognition network
     (`tf_facetex.identity`, dlib's ResNet or ArcFace);
   - coefficients: ``w_id |id|^2 + w_exp |exp|^2 + w_tex |tex|^2`` (and, for blend-shape expressions such as ICT's
     ARKit weights, a penalty outside [0, 1]); gamma: Deng's whiteness term (variance of the SH light across RGB);
   - reflectance: Deng's flatness of the albedo over the model's skin vertices -- left out (not computed, not
     logged) when the face model has no albedo basis (ICT-FaceKit), where the albedo cannot vary;
   - pseudo-label (optional): distance to fitted coefficients (the records' ``gt_coeffs``, e.g. written by a
     fitting run, or the landmark fit run on the fly): identity and expression compared as the face-region mesh
     (mean squared vertex distance / (5 mm)^2), angles and translation per coefficient (`pseudo_label_loss`).
     The default parts leave translation out: a landmark fit cannot tell a larger face from a nearer one (its
     depth error on synthetic faces, 0.38 dm, exceeds their spread, 0.23 dm); the landmark term places the face.
4. ``total = sum_k weight_k * term_k`` (`PriorLossWeights`, Deng's values by default) updates the regressor (Adam).

`train_prior(PriorTrainConfig)` is the loop scripts/train_prior.py runs, in the refinement trainer's patterns
(`tf_facetex.training`): run_config.json, checkpoints (regressor, optimiser, step, epoch) every N steps, at the end
and on SIGTERM/Ctrl-C (`StopSignal`), ``--resume``, a NaN/Inf guard that stops before saving a bad state,
TensorBoard scalars (loss/*, train/*, eval/*) and image grids (input | render | render over input | landmarks,
data in green, prediction in red), metrics.jsonl. `evaluate_prior` compares the trained regressor with the mean
face on held-out synthetic faces (landmark, shape, coefficient and photometric errors).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Optional

import cv2
import keras
import numpy as np
import tensorflow as tf

from tf_facetex import camera, metrics, sh, visualize
from tf_facetex.errors import TrainingError
from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
from tf_facetex.losses import image_loss
from tf_facetex.prior.landmark_fit import deng_landmark_weights, is_blendshape_model
from tf_facetex.prior.regressor import BACKBONES, PriorRegressor
from tf_facetex.training import checkpoints
from tf_facetex.training.checkpoints import CHECKPOINT_PREFIX, CheckpointKeeper, StopSignal, non_finite_variables

REFERENCE_SIZE = 224          # landmark losses and errors are in pixels of a 224 crop
PHOTOMETRIC_EPS = 1e-8        # inside the per-pixel sqrt (Deng's PyTorch code)
PSEUDO_LABEL_SOURCES = ("none", "dataset", "fit")


# --------------------------------------------------------------------------------------------------------------
# The loss terms (pure functions)
# --------------------------------------------------------------------------------------------------------------


def photometric_loss(rendered, image, mask, eps=PHOTOMETRIC_EPS):
    """Deng's robust photometric loss: masked mean of the per-pixel L2 norm of the colour difference.

    Args:
      rendered: [B, H, W, 3] the render I_r.
      image: [B, H, W, 3] the input I (same size), in [0, 1].
      mask: [B, H, W, 1] (or [H, W, 1] / [H, W]) weights, typically skin mask x M_proj.
    Returns:
      scalar: mean_b [sum_p M_p sqrt(|I_r,p - I_p|^2 + eps) / sum_p M_p] (0 for an empty mask).
    """
    return image_loss(rendered, image, mask, form="l2_norm", eps=eps)


def landmark_loss(predicted, target, weights=None, scale=1.0):
    """Deng's landmark loss: weighted mean squared distance of the 68 landmarks.

    Args:
      predicted, target: [B, K, 2] pixel coordinates.
      weights: [K] per-landmark weights (default `deng_landmark_weights()`: 20 on the nose and inner mouth).
      scale: pixels are multiplied by this first (REFERENCE_SIZE / image size: distances in 224-crop pixels).
    Returns:
      scalar: mean over b and k of w_k |scale (p_bk - t_bk)|^2 (px^2).
    """
    predicted = tf.convert_to_tensor(predicted, tf.float32)
    target = tf.cast(target, tf.float32)
    if weights is None:
        weights = deng_landmark_weights()
    squared = tf.reduce_sum(tf.square((predicted - target) * scale), axis=-1)          # [B, K]
    return tf.reduce_mean(squared * tf.constant(weights, tf.float32))


def landmark_error(predicted, target, scale=1.0):
    """[B, K, 2] x2 -> [B] mean Euclidean landmark distance (unweighted), in pixels x ``scale``."""
    distance = tf.norm((tf.convert_to_tensor(predicted, tf.float32) - tf.cast(target, tf.float32)) * scale, axis=-1)
    return tf.reduce_mean(distance, axis=-1)


def identity_loss(embedding_render, embedding_image):
    """Deng's perceptual (identity) loss: [B, D] x2 -> scalar mean_b (1 - cos(e_r, e_i))."""
    a = tf.math.l2_normalize(tf.convert_to_tensor(embedding_render, tf.float32), axis=-1, epsilon=1e-12)
    b = tf.math.l2_normalize(tf.convert_to_tensor(embedding_image, tf.float32), axis=-1, epsilon=1e-12)
    return tf.reduce_mean(1.0 - tf.reduce_sum(a * b, axis=-1))


def coefficient_regularizer(id_coeffs, exp_coeffs, tex_coeffs, w_id=1.0, w_exp=0.8, w_tex=1.7e-2,
                            blendshapes=False, box_weight=100.0):
    """Deng's coefficient prior: mean_b [w_id |id|^2 + w_exp |exp|^2 + w_tex |tex|^2].

    Args:
      id_coeffs: [B, I]; exp_coeffs: [B, E]; tex_coeffs: [B, T] (T may be 0).
      blendshapes: expression coefficients are blend-shape weights in [0, 1] (ICT): add
        ``box_weight * |distance to [0, 1]|^2``.
    Returns:
      scalar.
    """
    total = (w_id * tf.reduce_sum(tf.square(id_coeffs), -1) + w_exp * tf.reduce_sum(tf.square(exp_coeffs), -1)
             + w_tex * tf.reduce_sum(tf.square(tex_coeffs), -1))
    if blendshapes:
        outside = tf.nn.relu(-exp_coeffs) + tf.nn.relu(exp_coeffs - 1.0)
        total += box_weight * tf.reduce_sum(tf.square(outside), -1)
    return tf.reduce_mean(total)


def gamma_whiteness(gamma):
    """Deng's light regulariser: [B, 27] channel-major SH -> scalar mean of (gamma_c - mean_c gamma)^2."""
    gamma = tf.reshape(tf.convert_to_tensor(gamma, tf.float32), [-1, 3, 9])
    return tf.reduce_mean(tf.square(gamma - tf.reduce_mean(gamma, axis=1, keepdims=True)))


def reflectance_loss(albedo, skin_mask):
    """Deng's reflectance flatness: the albedo's spread over the skin vertices.

    Args:
      albedo: [B, N, 3] per-vertex albedo; skin_mask: [N] (bool or weights).
    Returns:
      scalar: sum_b,n,c m_n (a_bnc - mean_skin a_bc)^2 / (B * sum_n m_n).
    """
    albedo = tf.convert_to_tensor(albedo, tf.float32)
    m = tf.cast(tf.reshape(skin_mask, [1, -1, 1]), tf.float32)
    area = tf.maximum(tf.reduce_sum(m), 1.0)
    mean = tf.reduce_sum(albedo * m, axis=1, keepdims=True) / area
    batch = tf.cast(tf.shape(albedo)[0], tf.float32)
    return tf.reduce_sum(tf.square((albedo - mean) * m)) / (batch * area)


def pseudo_label_loss(predicted, target, weights, shape_basis=None, valid=None):
    """Distance to fitted coefficients, the shape compared as a mesh.

    Args:
      predicted, target: [B, C] coefficients.
      weights: [C] per-coefficient weights of ``(p - t)^2`` (`pseudo_label_weights`).
      shape_basis: optional [C, K] (e.g. the identity and expression rows of the bases over K = 3 x face-region
        vertices, divided by a scale; zero rows elsewhere): adds ``mean_k ((p - t) @ shape_basis)_k^2 x 3``, the
        mean squared vertex distance. Comparing coefficients one by one would weigh a mode that barely moves the
        face like the one that sets its width.
      valid: optional [B] per-sample weights.
    Returns:
      scalar, the mean over the batch of ``sum_c w_c (p - t)_c^2`` (+ the shape term).
    """
    diff = tf.convert_to_tensor(predicted, tf.float32) - tf.cast(target, tf.float32)
    per_sample = tf.reduce_sum(tf.cast(weights, tf.float32) * tf.square(diff), axis=-1)
    if shape_basis is not None:
        offsets = tf.matmul(diff, tf.cast(shape_basis, tf.float32))                   # [B, K]
        per_sample += 3.0 * tf.reduce_mean(tf.square(offsets), axis=-1)
    if valid is not None:
        per_sample *= tf.cast(valid, tf.float32)
    return tf.reduce_mean(per_sample)


# --------------------------------------------------------------------------------------------------------------
# Weights and the trainer
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PriorLossWeights:
    """Deng et al. 2019's weights (their PyTorch release: w_color 1.92, w_lm 1.6e-3, w_feat 0.2, w_reg 3e-4 with
    w_id 1, w_exp 0.8, w_tex 1.7e-2, w_gamma 10, w_reflc 5). ``pseudo_label`` is ours (0 = off)."""

    photometric: float = 1.92
    landmark: float = 1.6e-3
    identity: float = 0.2
    coefficients: float = 3e-4
    gamma: float = 10.0
    reflectance: float = 5.0
    pseudo_label: float = 0.0
    w_id: float = 1.0
    w_exp: float = 0.8
    w_tex: float = 1.7e-2

    TERMS = ("photometric", "landmark", "identity", "coefficients", "gamma", "reflectance", "pseudo_label")

    def with_overrides(self, overrides: dict) -> "PriorLossWeights":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; known: {', '.join(self.TERMS)}, "
                             "w_id, w_exp, w_tex")
        return dataclasses.replace(self, **{k: float(v) for k, v in overrides.items()})


# Scales of the pseudo-label term: an error of this size costs 1. Shape: about the mean face's error on ICT synthetic
# faces; angles: 5.7 degrees; translation: 5 mm (model units are decimetres).
PSEUDO_SHAPE_SCALE = 0.05
PSEUDO_ANGLE_SCALE = 0.1
PSEUDO_TRANSLATION_SCALE = 0.05
PSEUDO_DEFAULT_PARTS = ("id", "exp", "angles")


def _check_parts(layout: CoefficientLayout, parts):
    for name in parts:
        if name not in layout.slices:
            raise ValueError(f"unknown coefficient part {name!r}; known: {', '.join(layout.slices)}")


def pseudo_label_weights(layout: CoefficientLayout, parts=PSEUDO_DEFAULT_PARTS) -> np.ndarray:
    """[C] weights of the per-coefficient part of `pseudo_label_loss` for the parts named in ``parts``: 1 / scale^2
    on angles and translation, 1 on tex and gamma, 0 on id and exp (compared as a mesh by `pseudo_shape_basis`)."""
    _check_parts(layout, parts)
    weights = np.zeros(layout.size, np.float32)
    scales = {"angles": PSEUDO_ANGLE_SCALE, "translation": PSEUDO_TRANSLATION_SCALE, "tex": 1.0, "gamma": 1.0}
    for name in parts:
        if name in scales:
            weights[layout.slices[name]] = 1.0 / scales[name] ** 2
    return weights


def pseudo_shape_basis(model, layout: CoefficientLayout, parts=PSEUDO_DEFAULT_PARTS,
                       scale=PSEUDO_SHAPE_SCALE) -> Optional[np.ndarray]:
    """[C, 3 x R] the identity / expression basis rows (those in ``parts``) over the model's R face-region vertices,
    divided by ``scale``; None when neither is in ``parts``."""
    _check_parts(layout, parts)
    region = np.flatnonzero(model.face_region_mask)
    basis = np.zeros((layout.size, 3 * region.size), np.float32)
    for name, rows in (("id", model.id_basis), ("exp", model.exp_basis)):
        if name in parts and layout.sizes[name]:
            basis[layout.slices[name]] = rows[:, region].reshape(rows.shape[0], -1) / scale
    return basis if basis.any() else None


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
        parts = self.layout.split(coeffs)
        decoded = self.decoder(coeffs)
        posed = camera.rigid_transform(decoded["vertices"], parts["angles"], parts["translation"])
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
        return tf.add_n([getattr(self.loss_weights, name) * value for name, value in terms.items()])

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
        return self.train_step_logs(data)

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


class PriorCheckpointKeeper(CheckpointKeeper):
    """`CheckpointKeeper` for a `PriorTrainer`: regressor, optimiser, step and epoch; never a non-finite state."""

    def __init__(self, directory, trainer: PriorTrainer, max_to_keep=3):
        self.directory = pathlib.Path(directory)
        self.trainer = trainer
        self.is_chief = True
        self.checkpoint = tf.train.Checkpoint(regressor=trainer.regressor, optimizer=trainer.optimizer_,
                                              step=trainer.step, epoch=trainer.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=max_to_keep,
                                                  checkpoint_name=CHECKPOINT_PREFIX)

    def save(self) -> str:
        step = int(self.trainer.step.numpy())
        bad = non_finite_variables(list(self.trainer.regressor.variables) + list(self.trainer.optimizer_.variables))
        if bad:
            raise TrainingError(f"not saving step {step}: non-finite values in {len(bad)} variables (e.g. {bad[0]}); "
                                f"last good checkpoint: {self.latest or 'none'}")
        return self.manager.save(checkpoint_number=step)


# --------------------------------------------------------------------------------------------------------------
# Config, data and the loop (scripts/train_prior.py)
# --------------------------------------------------------------------------------------------------------------

ARCHITECTURE_KEYS = ("backbone", "face_model", "image_size")


@dataclasses.dataclass
class PriorTrainConfig:
    """Everything `train_prior` needs (scripts/train_prior.py fills it from flags)."""

    train_data: str = ""              # data-pipeline TFRecords (glob); empty: synthetic faces (synthetic_count)
    eval_data: str = ""
    model_dir: str = ""
    resume: bool = False
    face_model: str = "default"       # 'default' (load_face_model), a model path, or 'procedural' (tests only)
    backbone: str = "tiny"
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
        from tf_facetex.face_model.procedural import make_procedural_model

        log("[train_prior] face model: procedural test model (tests and smoke runs only)")
        return make_procedural_model()
    from tf_facetex.face_model import load_face_model

    return load_face_model(None if spec in ("", "default") else spec, log=log)


def ensure_synthetic_data(config: PriorTrainConfig, model, log=print):
    """Writes `synthetic_count` synthetic faces (with TFRecords) once; -> (train glob, test glob, folder)."""
    from tf_facetex.data.synthetic import SyntheticConfig, write_synthetic_dataset

    folder = pathlib.Path(config.synthetic_dir or pathlib.Path(config.model_dir) / "synthetic")
    train_glob, test_glob = str(folder / "tfrecords" / "train-*.tfrecord"), str(folder / "tfrecords" / "test-*.tfrecord")
    if tf.io.gfile.glob(train_glob):
        log(f"[train_prior] synthetic faces: using {folder}")
        return train_glob, test_glob, folder
    size = config.image_size or REFERENCE_SIZE
    log(f"[train_prior] writing {config.synthetic_count} synthetic faces ({size}px) to {folder}")
    write_synthetic_dataset(model, SyntheticConfig(image_size=size, uv_size=config.synthetic_uv_size), folder,
                            config.synthetic_count, seed=config.synthetic_seed, tfrecord=True, num_shards=2,
                            progress=config.progress)
    return train_glob, test_glob, folder


def _coefficient_fields(files):
    """The optional TFRecord fields to parse: only 'coeffs' (skips the large albedo/irradiance ground truth)."""
    from tf_facetex.data.tfrecords import discover_optional_fields

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
    from tf_facetex.data.tfrecords import _list_files, make_dataset

    files = _list_files(pattern)
    return make_dataset(files, batch_size, training=training, deterministic=not training or seed is not None,
                        seed=seed, shuffle_buffer=shuffle_buffer, optional_fields=_coefficient_fields(files),
                        drop_remainder=training, crop_size=crop_size_of(files))


def count_records(pattern) -> int:
    from tf_facetex.data.tfrecords import _list_files

    return sum(1 for path in _list_files(pattern) for _ in tf.data.TFRecordDataset(path))


def make_embed_fn(backend, weights_path=None):
    if backend == "none":
        return None
    from tf_facetex.identity import get_identity_encoder

    encoder = get_identity_encoder(backend, weights_path or None)

    def embed_fn(images, landmarks):
        return encoder.embed(images, landmarks)

    return embed_fn


class LandmarkPseudoLabels:
    """Pseudo-labels from the landmark fit (`LandmarkFitter`: id, exp, pose from the batch's 68 landmarks)."""

    def __init__(self, model, image_size, steps):
        from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter

        self.fitter = LandmarkFitter(model, LandmarkFitConfig(image_size=image_size, steps=steps))
        self.layout = CoefficientLayout.for_model(model)

    def __call__(self, landmarks):
        fit = self.fitter(np.asarray(landmarks))
        return self.layout.join({k: tf.constant(fit[k]) for k in ("id", "exp", "angles", "translation")})


def build_prior_trainer(config: PriorTrainConfig, model, image_size, steps_per_epoch, embed_fn=None):
    from tf_facetex.rendering import FaceRenderer
    from tf_facetex.training.schedule import EpochDecay

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


def _check_run_config(model_dir, record, resume, log):
    """Writes run_config.json on a fresh run; on resume, refuses settings that change the architecture."""
    from tf_facetex.training.checkpoints import write_or_check_run_config

    write_or_check_run_config(model_dir, record, resume, ARCHITECTURE_KEYS, log, "train_prior")


def baseline_coefficients(trainer: PriorTrainer, batch, landmark_fitter=None) -> dict:
    """{method: [B, C]} the mean-face baselines for a batch.

    - mean_face: all zeros (what the untrained regressor predicts: mean shape, frontal, centred, ambient light);
    - mean_face_pos_pose: mean shape, ambient light, the closed-form (scaled-orthographic "POS") pose from the
      batch's 68 landmarks -- no ground truth used, what any landmark detector gives;
    - mean_face_gt_pose_light (needs gt_coeffs): mean shape with the TRUE pose and SH light (an oracle: only the
      shape and albedo are the mean's);
    - landmark_fit (with ``landmark_fitter``, a `LandmarkPseudoLabels`): identity, expression and pose fitted to the
      batch's 68 landmarks -- the fitting prior's first stage and the teacher of ``--pseudo_labels=fit``; no light
      (ambient), so its skin_psnr is not comparable.
    """
    from tf_facetex.prior.pose_init import initial_pose

    layout = trainer.layout
    landmarks = np.asarray(batch["landmarks"])
    batch_size = landmarks.shape[0]
    zeros = np.zeros((batch_size, layout.size), np.float32)
    angles, translation = initial_pose(landmarks, trainer.face_model.mean_landmarks(), trainer.image_size)
    pos = zeros.copy()
    pos[:, layout.slices["angles"]] = angles
    pos[:, layout.slices["translation"]] = translation
    out = {"mean_face": zeros, "mean_face_pos_pose": pos}
    if "gt_coeffs" in batch:
        gt = np.asarray(batch["gt_coeffs"], np.float32)
        oracle = zeros.copy()
        for name in ("angles", "translation", "gamma"):
            oracle[:, layout.slices[name]] = gt[:, layout.slices[name]]
        out["mean_face_gt_pose_light"] = oracle
    if landmark_fitter is not None:
        out["landmark_fit"] = landmark_fitter(landmarks)
    return out


def evaluate_prior(trainer: PriorTrainer, dataset, max_batches=None, with_baselines=True,
                   landmark_fit_steps=300) -> dict:
    """The trained regressor vs the mean-face baselines (`baseline_coefficients`) and the true coefficients (an
    upper reference for the render: true shape, pose and light with the model's mean albedo) on a held-out set.

    Returns:
      {'num_images': n, 'methods': {method: {metric: mean}}} with metrics landmark_px (mean px at 224), skin_psnr
      (dB on the data's face mask, the render over black so that a misplaced face is penalised) and, with ground
      truth, shape_rmse_mm, id_rmse, exp_rmse, angle_error_deg; and 'regressor_vs_mean_face'
      (`paired_comparison`). ``landmark_fit_steps`` > 0 adds the landmark fit.
    """
    fitter = (LandmarkPseudoLabels(trainer.face_model, trainer.image_size, landmark_fit_steps)
              if with_baselines and landmark_fit_steps > 0 else None)
    metric_fn = tf.function(lambda batch, coeffs: prediction_metrics(trainer, batch, coeffs), reduce_retracing=True)
    per_sample, count = {}, 0                                         # method -> metric -> list of [B] arrays
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        batch = {k: v for k, v in batch.items() if k in ("image", "mask", "landmarks", "gt_coeffs")}
        methods = {"regressor": trainer.regressor(batch["image"], training=False)}
        if with_baselines:
            methods.update(baseline_coefficients(trainer, batch, fitter))
            if "gt_coeffs" in batch:
                methods["true_coefficients"] = batch["gt_coeffs"]
        for method, coeffs in methods.items():
            values = metric_fn(batch, tf.convert_to_tensor(coeffs, tf.float32))
            bucket = per_sample.setdefault(method, {})
            for name, value in values.items():
                bucket.setdefault(name, []).append(np.asarray(value, np.float64))
        count += int(batch["image"].shape[0])
    per_sample = {m: {k: np.concatenate(v) for k, v in values.items()} for m, values in per_sample.items()}
    results = {"num_images": count,
               "methods": {m: {k: float(v.mean()) for k, v in values.items()} for m, values in per_sample.items()}}
    if "mean_face" in per_sample:
        results["regressor_vs_mean_face"] = paired_comparison(per_sample["regressor"], per_sample["mean_face"])
    return results


# Metrics where lower is better (the others, skin_psnr, higher).
LOWER_IS_BETTER = ("landmark_px", "shape_rmse_mm", "id_rmse", "exp_rmse", "angle_error_deg")


def paired_comparison(values: dict, baseline: dict, resamples=2000, seed=0) -> dict:
    """Per metric, a paired comparison of two methods on the same faces ({metric: [N]} each): the mean difference
    (method - baseline), its 95% bootstrap interval (faces resampled with replacement) and the share of faces on
    which the method is better -- so that "beats the mean face" is a statement with an error bar."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(set(values) & set(baseline)):
        diff = np.asarray(values[name], np.float64) - np.asarray(baseline[name], np.float64)
        if not diff.size:
            continue
        means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
        better = diff < 0 if name in LOWER_IS_BETTER else diff > 0
        out[name] = {"mean_difference": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)),
                                                                     float(np.percentile(means, 97.5))],
                     "share_better": float(better.mean()), "lower_is_better": name in LOWER_IS_BETTER}
    return out


def _describe(logs):
    return ", ".join(f"{name}={value:.4g}" for name, value in logs.items() if not np.isfinite(value)) or "?"


def train_prior(config: PriorTrainConfig, log=print, on_step: Optional[Callable] = None) -> PriorTrainResult:
    """Trains the prior regressor per `config` (flags in scripts/train_prior.py); see the module docstring."""
    from tqdm import tqdm

    from tf_facetex import io_utils
    from tf_facetex.training import summaries
    from tf_facetex.training.trainer import evaluate_and_log

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
    from tf_facetex.data.tfrecords import _list_files

    files = _list_files(train_data)
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
    keeper = PriorCheckpointKeeper(model_dir / "checkpoints", trainer, config.keep_checkpoints)
    checkpoints.refuse_to_overwrite(keeper, config.resume)
    record = {**dataclasses.asdict(config), "train_data": train_data, "eval_data": eval_data,
              "image_size": image_size, "steps_per_epoch": steps_per_epoch, "num_coeffs": trainer.layout.size,
              "layout": trainer.layout.to_dict(), "face_model_source": model.source}
    model_dir.mkdir(parents=True, exist_ok=True)
    _check_run_config(model_dir, record, config.resume, log)
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
    def step_fn(batch):
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

    step, logs, eval_results, interrupted = start_step, {}, {}, False
    last_saved = start_step if config.resume and keeper.latest else None
    last_time, last_step = time.perf_counter(), start_step
    progress = tqdm(total=total_steps, initial=start_step, disable=not config.progress, dynamic_ncols=True,
                    desc="train_prior")
    stop = None
    try:
        with StopSignal() as stop:
            while step < total_steps:
                batch = next(iterator)
                if config.poison_step and step + 1 == config.poison_step:
                    batch = dict(batch, image=tf.fill(tf.shape(batch["image"]), np.nan))
                if config.pseudo_labels == "dataset":
                    batch = dict(batch)
                    batch["pseudo_coeffs"] = batch.pop("gt_coeffs")
                elif fitter is not None:
                    batch = dict(batch, pseudo_coeffs=fitter(batch["landmarks"]))
                values = step_fn(batch).numpy()
                step += 1
                logs = dict(zip(names, values.tolist()))
                if not np.all(np.isfinite(values)):
                    raise TrainingError(
                        f"non-finite loss at step {step} ({_describe(logs)}); stopped without saving. Newest "
                        f"checkpoint (finite): {keeper.latest or 'none'}; continue from it with --resume (a lower "
                        "--learning_rate may help)")
                progress.update(1)
                progress.set_postfix({k: f"{logs[k]:.4g}" for k in ("total", "landmark_px", "photometric")},
                                     refresh=False)
                if on_step is not None:
                    on_step(step, logs)
                if step % config.log_every == 0 or step == start_step + 1:
                    now = time.perf_counter()
                    summary.scalars(step, logs, "loss")
                    summary.scalars(step, {"learning_rate": float(trainer.optimizer_.learning_rate),
                                           "epoch": int(trainer.epoch.numpy()),
                                           "steps_per_second": (step - last_step) / max(now - last_time, 1e-9)},
                                    "train")
                    last_time, last_step = now, step
                if config.image_every and step % config.image_every == 0:
                    write_images(step)
                if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                    eval_results = write_eval(step)
                if stop.requested or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    keeper.save()
                    last_saved = step
                if stop.requested:
                    interrupted = True
                    log(f"\n[train_prior] {stop.signal_name or 'stop request'}: saved step {step} to "
                        f"{keeper.latest}; continue with --resume")
                    break
        weights_path, results = None, None
        if not interrupted:
            if last_saved != step:
                keeper.save()
            write_images(step)
            eval_results = write_eval(step)
            weights_path = save_regressor_weights(trainer.regressor, model_dir / "regressor.weights.h5")
            log(f"[train_prior] done at step {step}; checkpoint {keeper.latest}; weights {weights_path}")
            if config.results_json and eval_dataset is not None:
                # Rebuilt from the checkpoint, rendering at the crop size whatever the training render size.
                results = evaluate_run(model_dir, eval_data, config.results_json, render_size=image_size,
                                       batch_size=config.batch_size, log=log)
    finally:
        progress.close()
        summary.close()
    return PriorTrainResult(step=step, epoch=int(trainer.epoch.numpy()), interrupted=interrupted,
                            checkpoint=keeper.latest, weights=weights_path, logs=logs, eval=eval_results,
                            stop_signal=(stop.signal_name or "SIGTERM") if interrupted and stop else None,
                            results=results)


def save_regressor_weights(regressor, path) -> str:
    """Writes the regressor's weights atomically (Keras needs the .weights.h5 suffix; `load_regressor` reads it)."""
    import os

    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.partial.weights.h5")
    regressor.save_weights(str(tmp))
    os.replace(tmp, path)
    return str(path)


def format_results(results: dict) -> str:
    """A small text table of `evaluate_prior` results."""
    methods = results["methods"]
    metric_names = sorted({k for values in methods.values() for k in values})
    lines = [f"{'method':28s} " + " ".join(f"{m:>15s}" for m in metric_names)]
    for method, values in methods.items():
        lines.append(f"{method:28s} " + " ".join(f"{values.get(m, float('nan')):15.4f}" for m in metric_names))
    for name, paired in results.get("regressor_vs_mean_face", {}).items():
        low, high = paired["ci95"]
        lines.append(f"regressor - mean_face {name}: {paired['mean_difference']:+.4f} (95% CI {low:+.4f} .. "
                     f"{high:+.4f}), better on {100 * paired['share_better']:.1f}% of the faces")
    return "\n".join(lines)


def restore_prior_trainer(model_dir, checkpoint=None, log=print, render_size=None) -> PriorTrainer:
    """A `PriorTrainer` rebuilt from a run folder's run_config.json with a checkpoint's weights (default newest);
    ``render_size`` overrides the photometric render size (e.g. evaluate at the crop size)."""
    model_dir = pathlib.Path(model_dir)
    path = model_dir / "run_config.json"
    if not path.is_file():
        raise TrainingError(f"{model_dir}: no run_config.json (not a train_prior run folder)")
    record = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(PriorTrainConfig)}
    config = PriorTrainConfig(**{k: v for k, v in record.items() if k in fields})
    if render_size is not None:
        config.render_size = int(render_size)
    model = load_model_for_training(config.face_model, log)
    trainer = build_prior_trainer(config, model, record["image_size"], record["steps_per_epoch"])
    ckpt = checkpoint or tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    if ckpt is None:
        raise TrainingError(f"{model_dir / 'checkpoints'}: no checkpoint")
    tf.train.Checkpoint(regressor=trainer.regressor, optimizer=trainer.optimizer_, step=trainer.step,
                        epoch=trainer.epoch).restore(ckpt).expect_partial()
    log(f"[train_prior] restored {ckpt} (step {int(trainer.step.numpy())})")
    return trainer


def evaluate_run(model_dir, eval_data="", results_json="", render_size=None, max_batches=None, batch_size=16,
                 log=print) -> dict:
    """Evaluates a finished run (newest checkpoint) against the mean face (`evaluate_prior`) on ``eval_data``
    (default: the run's eval data), rendering at ``render_size`` (default: the crop size); writes ``results_json``."""
    from tf_facetex import io_utils

    record = json.loads((pathlib.Path(model_dir) / "run_config.json").read_text())
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
