"""The prior regressor's loss terms (Deng et al. 2019's R-Net recipe; docs/METHOD.md, "The prior"), each a small
pure function, and their weights (`PriorLossWeights`).

- photometric: mean over the mask of the per-pixel L2 norm ``sqrt(sum_c (I_r - I)^2 + eps)`` (robust: not
  squared), mask = the data's face/skin mask x the rendered face (M_proj) -- `losses.image_loss(form='l2_norm')`;
- landmark: Deng's weighted squared distance of the 68 projected landmark vertices (weight 20 on the nose
  28-30 and the inner mouth 60-67), in pixels of a 224 crop whatever the training size;
- identity (optional): 1 - cos(ID(render over input), ID(input)) with a face-recognition network;
- coefficients: ``w_id |id|^2 + w_exp |exp|^2 + w_tex |tex|^2`` (and, for blend-shape expressions such as ICT's
  ARKit weights, a penalty outside [0, 1]); gamma: Deng's whiteness term (variance of the SH light across RGB);
- reflectance: Deng's flatness of the albedo over the model's skin vertices (left out when the face model has no
  albedo basis);
- pseudo-label (optional): distance to fitted coefficients, identity and expression compared as the face-region
  mesh (mean squared vertex distance / (5 mm)^2), angles and translation per coefficient.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_facetex.conventions import CROP_SIZE
from tf_facetex.face_model.decoder import CoefficientLayout
from tf_facetex.losses import image_loss
from tf_facetex.prior.landmark_fit import deng_landmark_weights

REFERENCE_SIZE = CROP_SIZE    # landmark losses and errors are in pixels of a 224 crop
PHOTOMETRIC_EPS = 1e-8        # inside the per-pixel sqrt (Deng's PyTorch code)


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
