"""Losses of the detail refinement module (paper section 5, eq. 1-16; docs/METHOD.md, "Loss terms").

One function per formula, pure TF, no model state. Conventions shared by every function:

- Maps are NHWC: UV maps [B, S, S, C] (v up, row 0 = v = 1), images [B, H, W, C].
- Masks are [B, H, W, 1], [H, W, 1] or [H, W] (broadcast over the batch), 0/1 or soft.
- **Normalisation: per sample, sum over the mask divided by (mask area x channels), then mean over the batch**,
  i.e. a masked per-element mean. The paper writes plain sums / squared norms (eq. 1, 4, 5, 7, 13, 14), whose
  scale grows with the resolution and the face size, so its weights (1.0 ... 5.0) cannot refer to raw sums; the
  authors' code divides every term by the mask area; the per-element means used here follow
  from that (docs/METHOD.md, "Loss terms"). Dividing by the channels as well keeps a loss's scale the same whatever C is
  (3 for albedo, 27 for light). Neighbour-difference losses (smoothness, image gradient) sum over the valid
  neighbour pairs and divide by the same area x channels, so "normalised by the mask area" holds for all terms.
- Empty masks give exactly 0 (and zero gradients), never NaN: divisions are `tf.math.divide_no_nan`.
- Penalties ('norm'/'form' arguments): 'l2' (alias 'mse') = squared difference per element (the paper's ||.||^2),
  'l1' = absolute difference per element, 'l2_norm' = per-texel Euclidean norm over the channels, not squared
  (the authors' and Deng's photometric form; eps inside the square root keeps its gradient finite at 0).
- Inputs keep their float dtype (float64 works, for gradient checks); integer inputs become float32.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional

import tensorflow as tf

NORMS = ("l1", "l2", "mse", "l2_norm")
GAN_KINDS = ("lsgan", "vanilla")
SMOOTHNESS_VARIANTS = ("paper", "authors")
L2_NORM_EPS = 1e-8  # Deng PyTorch's eps inside the photometric sqrt

# --------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------


def _float(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def _mask_like(mask, values):
    """A [H, W], [H, W, 1] or [B, H, W, 1] mask -> [B, H, W, 1] in values' dtype."""
    mask = tf.cast(tf.convert_to_tensor(mask), values.dtype)
    if mask.shape.rank == 2:
        mask = mask[..., tf.newaxis]
    return mask * tf.ones_like(values[..., :1])


def _penalty(diff, norm, eps=L2_NORM_EPS):
    """[..., C] difference -> [..., C] ('l1', 'l2'/'mse') or [..., 1] ('l2_norm') penalty."""
    if norm == "l1":
        return tf.abs(diff)
    if norm in ("l2", "mse"):
        return tf.square(diff)
    if norm == "l2_norm":
        return tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1, keepdims=True) + eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _per_sample_sum(values):
    return tf.reduce_sum(values, axis=tf.range(1, tf.rank(values)))


def _channels(x):
    """The channel count of [..., C], static when known."""
    return x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]


def _normalise(per_sample_sum, mask, channels):
    """mean_b [sum_b / (channels * sum(mask_b))]; 0 for an empty mask."""
    area = _per_sample_sum(mask) * tf.cast(channels, mask.dtype)
    return tf.reduce_mean(tf.math.divide_no_nan(per_sample_sum, area))


def masked_mean(values, mask):
    """Masked per-element mean, averaged over the batch.

    Args:
      values: [B, H, W, C].
      mask: [B, H, W, 1], [H, W, 1] or [H, W].
    Returns:
      scalar mean_b [sum_{h,w,c} M * values / (C * sum_{h,w} M)]; 0 where a sample's mask is empty.
    """
    values = _float(values)
    mask = _mask_like(mask, values)
    return _normalise(_per_sample_sum(mask * values), mask, _channels(values))


def _forward_differences(x):
    """[B, H, W, C] -> (x[:, :, j+1] - x[:, :, j]  [B, H, W-1, C],  x[:, i+1] - x[:, i]  [B, H-1, W, C])."""
    return x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1]


def _pair_masks(mask):
    """[B, H, W, 1] -> masks of the x pairs [B, H, W-1, 1] and y pairs [B, H-1, W, 1]: both texels inside."""
    return mask[:, :, 1:] * mask[:, :, :-1], mask[:, 1:] * mask[:, :-1]


# --------------------------------------------------------------------------------------------------------------
# Illumination disentanglement (paper 5.1)
# --------------------------------------------------------------------------------------------------------------


def illumination_regularization(light_uv, gamma, uv_mask, norm="mse", rgb_consistency=0.0):
    """L_reg-illu = ||M_uv * (L' - L)||^2 (paper eq. 1), as a masked per-element mean.

    L' and gamma share Deng's parameterisation (27 channel-major coefficients, no 0.8 ambient;
    docs/METHOD.md, "Conventions"), so they are compared directly. The paper's M_uv is "the facial regions visible to the camera"; the
    authors use the UV chart mask: pass whichever (visibility_uv or uv_mask).

    Args:
      light_uv: [B, S, S, 27] detailed light map L'.
      gamma: [B, 27] coarse SH coefficients (broadcast over the map) or an expanded map [B, S, S, 27].
      uv_mask: [B, S, S, 1], [S, S, 1] or [S, S].
      norm: 'mse' (paper, default) or 'l1' (authors' LightRegLoss).
      rgb_consistency: weight of the authors' extra term, the same penalty on L' - mean_rgb(L') per SH
        coefficient (pushes the light towards monochrome); 0 in the paper's form, 1.0 in the authors'.
    Returns:
      scalar: mean over masked texels and the 27 channels, averaged over the batch.
    """
    if norm not in ("mse", "l2", "l1"):
        raise ValueError(f"norm must be 'mse' or 'l1', got {norm!r}")
    light_uv = _float(light_uv)
    gamma = tf.cast(gamma, light_uv.dtype)
    if gamma.shape.rank == 2:
        gamma = gamma[:, tf.newaxis, tf.newaxis, :]
    loss = masked_mean(_penalty(light_uv - gamma, norm), uv_mask)
    if rgb_consistency:
        # [..., 27] -> [..., 3 (RGB), 9 (SH)]; deviation of each colour from the mean colour, per SH coefficient.
        rgb = tf.reshape(light_uv, tf.concat([tf.shape(light_uv)[:-1], [3, 9]], 0))
        deviation = rgb - tf.reduce_mean(rgb, axis=-2, keepdims=True)
        deviation = tf.reshape(deviation, tf.shape(light_uv))
        loss += rgb_consistency * masked_mean(_penalty(deviation, norm), uv_mask)
    return loss


def roll_batch(x, shift=1):
    """Cross pairs inside a batch: roll_batch(x, shift)[b] = x[(b - shift) mod B]. [B, ...] -> [B, ...].

    With shift = 1, sample b is paired with sample b - 1 (b = 0 with the last one). A batch of one pairs a
    sample with itself (the cross loss then degenerates to a self-identity loss).
    """
    return tf.roll(x, shift=shift, axis=0)


def cross_perceptual_loss(embed_fn: Callable, rendered_cross, images, *, albedo_uv=None, light_uv=None, shift=1,
                          face_mask=None, image_embeddings=None):
    """L_cross-percp = 1 - cos(ID(R(A'_b, L'_a)), ID(I_b)) (paper eq. 2), averaged over the batch.

    Pairs come from rolling the batch (`roll_batch`): image b is re-rendered with its own albedo, geometry and
    pose but with the light map of sample a = (b - shift) mod B. Rendering happens outside this module.

    Args:
      embed_fn: images [B, H, W, 3] in [0, 1] -> [B, D] identity embeddings (ArcFace in the paper; does its own
        alignment and input normalisation). Embeddings are L2-normalised here again, so raw ones work too.
      rendered_cross: [B, H, W, 3] the cross renders R(A'_b, L'_{(b - shift) mod B}), or a callable
        render_fn(albedo_uv, light_uv) -> [B, H, W, 3] rendering sample b's geometry; it is then called with
        (albedo_uv, roll_batch(light_uv, shift)).
      images: [B, H, W, 3] the input photos I_b in [0, 1].
      albedo_uv, light_uv: [B, S, S, 3], [B, S, S, 27]; needed only when rendered_cross is a callable.
      shift: the batch roll.
      face_mask: optional [B, H, W, 1]; if given the render is composited over the photo (R*M + I*(1-M)) so the
        identity network sees a whole face (docs/METHOD.md, "Loss terms").
      image_embeddings: optional precomputed [B, D] embeddings of `images`.
    Returns:
      scalar in [0, 2]. The real-image embedding is a constant (stop-gradient).
    """
    images = _float(images)
    if callable(rendered_cross):
        if albedo_uv is None or light_uv is None:
            raise ValueError("a render callable needs albedo_uv and light_uv")
        rendered_cross = rendered_cross(albedo_uv, roll_batch(light_uv, shift))
    rendered_cross = tf.cast(rendered_cross, images.dtype)
    if face_mask is not None:
        mask = _mask_like(face_mask, images)
        rendered_cross = rendered_cross * mask + images * (1.0 - mask)
    if image_embeddings is None:
        image_embeddings = embed_fn(images)
    target = tf.stop_gradient(tf.math.l2_normalize(tf.cast(image_embeddings, images.dtype), axis=-1))
    prediction = tf.math.l2_normalize(tf.cast(embed_fn(rendered_cross), images.dtype), axis=-1)
    return tf.reduce_mean(1.0 - tf.reduce_sum(prediction * target, axis=-1))


# --------------------------------------------------------------------------------------------------------------
# Albedo regularisation (paper 5.2)
# --------------------------------------------------------------------------------------------------------------


def mirror_uv(maps_uv, symmetry_index=None):
    """The left-right mirror of UV maps: [B, S, S, C] -> [B, S, S, C].

    Args:
      maps_uv: [B, S, S, C].
      symmetry_index: None for a layout symmetric about u = 0.5 (ICT: reverse along W, the paper's "flipped
        along the y-axis"), or [S * S] int: texel t (row-major) -> its mirrored texel, -1 where there is none
        (the result is 0 there).
    """
    if symmetry_index is None:
        return tf.reverse(maps_uv, axis=[2])
    index = tf.reshape(tf.cast(symmetry_index, tf.int32), [-1])
    shape = tf.shape(maps_uv)
    flat = tf.reshape(maps_uv, [shape[0], shape[1] * shape[2], shape[3]])
    mirrored = tf.gather(flat, tf.maximum(index, 0), axis=1)
    mirrored *= tf.cast(index >= 0, maps_uv.dtype)[tf.newaxis, :, tf.newaxis]
    return tf.reshape(mirrored, shape)


SYMMETRY_WEIGHTINGS = ("uniform", "visibility", "confidence")
VIEW_GRAZING_COS = 0.1   # cos of the view angle at which a seen texel's confidence reaches 0 (~84 degrees)
VIEW_FULL_COS = 0.35     # ... and 1 (~70 degrees): nearer the silhouette the photo shows a texel smeared


def view_confidence(visibility_uv, normals_uv, grazing_cos=VIEW_GRAZING_COS, full_cos=VIEW_FULL_COS):
    """How well the photo shows each texel: c = M_uv * clip((n_z - grazing_cos) / (full_cos - grazing_cos), 0, 1).

    The camera looks down -z from far away (docs/METHOD.md, "Conventions"), so the cosine of a texel's view angle
    is about n_z of its camera-frame normal; texels seen at a grazing angle are foreshortened (one pixel covers
    many texels) and carry the silhouette's mix of face and background.

    Args:
      visibility_uv: [B, S, S, 1] in {0, 1} (or soft) M_uv.
      normals_uv: [B, S, S, 3] unit camera-frame normals.
    Returns:
      [B, S, S, 1] in [0, 1], constant (no gradient).
    """
    visibility_uv = tf.stop_gradient(_float(visibility_uv))
    n_z = tf.cast(tf.stop_gradient(normals_uv), visibility_uv.dtype)[..., 2:3]
    return visibility_uv * tf.clip_by_value((n_z - grazing_cos) / (full_cos - grazing_cos), 0.0, 1.0)


def symmetry_weights(confidence_uv, uv_mask, symmetry_index=None, seen_weight=0.0, unseen_mirror_weight=0.0):
    """Per-texel weights of the confidence-weighted symmetry term: the mirror fills what the photo did not show.

    w_fill(t) = M_sym(t) * [(1 - c(t)) + unseen_mirror_weight * c(t) * (1 - c(m(t)))],
    w_seen(t) = M_sym(t) * seen_weight * c(t) * c(m(t)),  M_sym = M * flip(M),
    with c the confidence of each texel (`view_confidence`, or visibility_uv itself) and m(t) its mirror texel.
    An unseen texel (c = 0) is pulled towards its mirror as by the uniform term (w_fill = 1) whether or not the
    mirror is seen; a well-seen texel (c = 1) is pulled towards an unseen mirror with ``unseen_mirror_weight``
    (0: the photo wins), and towards a seen one with ``seen_weight`` (0: the photo alone decides seen texels;
    1: the uniform term's pull). w_fill + w_seen = M_sym when c = 0 everywhere, or when both weights are 1.

    Args:
      confidence_uv: [B, S, S, 1] in [0, 1].
      uv_mask: [B, S, S, 1], [S, S, 1] or [S, S] the chart.
      symmetry_index: None (flip along W) or [S * S] int texel -> mirrored texel, -1 where none (`mirror_uv`).
      seen_weight: the pull between two seen texels; unseen_mirror_weight: that of a seen texel to an unseen one.
    Returns:
      (w_fill [B, S, S, 1], w_seen [B, S, S, 1], M_sym [B, S, S, 1]), constants.
    """
    confidence = tf.stop_gradient(_float(confidence_uv))
    mask = _mask_like(uv_mask, confidence)
    mask = mask * mirror_uv(mask, symmetry_index)
    mirrored = mirror_uv(confidence, symmetry_index)
    w_fill = (1.0 - confidence) + unseen_mirror_weight * confidence * (1.0 - mirrored)
    return mask * w_fill, mask * seen_weight * confidence * mirrored, mask


def saturating_l1(diff, scale):
    """s |d| / (s + |d|) per element: L1 for |d| << s (slope 1 at 0), bounded by s, so a large difference (an
    occluder against skin) pulls little (slope s^2 / (s + |d|)^2). [..., C] -> [..., C]."""
    magnitude = tf.abs(diff)
    return scale * magnitude / (scale + magnitude)


def symmetry_loss(albedo_uv, uv_mask, symmetry_index=None, norm="l1", stop_gradient_mirror=True,
                  confidence_uv=None, seen_weight=0.0, seen_scale=0.0, unseen_mirror_weight=0.0):
    """L_symm = ||M_uv * (A' - flip(A'))|| (paper eq. 4), as a masked mean; optionally confidence-weighted.

    Choices (docs/METHOD.md, "Loss terms"; the paper gives neither): the L1 penalty per element (robust to
    genuinely asymmetric details; the paper's eq. 4 is squared, norm='l2'), the mirrored copy detached as in the
    authors' MapSymmetryLoss (each texel is pulled towards its mirror, not both towards the middle; the loss value
    is the same), and the mask M_sym = M * flip(M), so texels whose mirror is off the chart do not count.

    With ``confidence_uv`` (None: the uniform term above), the penalty is weighted per texel by `symmetry_weights`
    (unseen texels are filled from their mirror, seen ones keep what the photo shows): sum_t [w_fill(t) pen(d_t)
    + w_seen(t) pen_seen(d_t)] / (C * sum_t M_sym(t)), d_t = A'(t) - sg(A'(m(t))); dividing by the M_sym area
    keeps an unseen texel's pull exactly the uniform term's. pen_seen is ``norm``'s penalty, or with
    ``seen_scale`` > 0 `saturating_l1` (two seen texels that differ a lot, a strand against skin, barely pull).

    Args:
      albedo_uv: [B, S, S, 3] detailed albedo A'.
      uv_mask: [B, S, S, 1], [S, S, 1] or [S, S].
      symmetry_index: None (flip along W) or [S * S] int texel -> mirrored texel, -1 where none (`mirror_uv`).
      norm: 'l1' (default), 'l2' (paper's square) or 'l2_norm' (authors' per-texel norm).
      stop_gradient_mirror: detach the mirrored copy (authors).
      confidence_uv: None or [B, S, S, 1] in [0, 1] how well the photo shows each texel.
      seen_weight: `symmetry_weights`' pull between two seen texels (only with confidence_uv).
      seen_scale: 0 (the seen pairs' penalty is ``norm``'s) or the scale s of `saturating_l1`.
      unseen_mirror_weight: `symmetry_weights`' pull of a seen texel towards an unseen mirror.
    Returns:
      scalar mean over M_sym texels and channels, averaged over the batch.
    """
    albedo_uv = _float(albedo_uv)
    mirrored = mirror_uv(albedo_uv, symmetry_index)
    if stop_gradient_mirror:
        mirrored = tf.stop_gradient(mirrored)
    diff = albedo_uv - mirrored
    penalty = _penalty(diff, norm)
    if confidence_uv is None:
        mask = _mask_like(uv_mask, albedo_uv)
        return masked_mean(penalty, mask * mirror_uv(mask, symmetry_index))
    w_fill, w_seen, mask = symmetry_weights(tf.cast(confidence_uv, albedo_uv.dtype), uv_mask, symmetry_index,
                                            seen_weight, unseen_mirror_weight)
    total = _per_sample_sum(w_fill * penalty)
    if seen_weight:
        if seen_scale > 0:
            # Per element like 'l1'; a per-texel-norm penalty ([..., 1]) counts once per channel here.
            seen_penalty = saturating_l1(diff, seen_scale) * tf.cast(_channels(penalty), diff.dtype) / tf.cast(
                _channels(diff), diff.dtype)
        else:
            seen_penalty = penalty
        total += _per_sample_sum(w_seen * seen_penalty)
    return _normalise(total, mask, _channels(penalty))


def smoothness_weights(prior_uv, alpha=80.0):
    """Paper eq. 6 on the 4-neighbourhood: w_ij = exp(-alpha ||A(i) - A(j)||^2), squared norm over RGB.

    Args:
      prior_uv: [B, S, S, 3] prior albedo A.
    Returns:
      (w_x [B, S, S-1, 1] for the pairs (i, j) -> (i, j+1), w_y [B, S-1, S, 1] for (i, j) -> (i+1, j)), constants.
    """
    prior_uv = tf.stop_gradient(_float(prior_uv))
    dx, dy = _forward_differences(prior_uv)
    w_x = tf.exp(-alpha * tf.reduce_sum(tf.square(dx), axis=-1, keepdims=True))
    w_y = tf.exp(-alpha * tf.reduce_sum(tf.square(dy), axis=-1, keepdims=True))
    return w_x, w_y


def _authors_gradient_magnitude(x):
    """The authors' ChromaSmoothLoss: g = sqrt(3) |sum_c d f_c|, d_x f = f(i, j+1) - f(i, j), d_y f = f(i-1, j) - f(i, j),
    replication padding (0 on the last column / first row). [B, H, W, C] -> ([B, H, W, 1], [B, H, W, 1])."""
    summed = tf.reduce_sum(x, axis=-1, keepdims=True)
    dx, dy = _forward_differences(summed)
    g_x = tf.pad(math.sqrt(3.0) * tf.abs(dx), [[0, 0], [0, 0], [0, 1], [0, 0]])   # assigned to texel (i, j)
    g_y = tf.pad(math.sqrt(3.0) * tf.abs(dy), [[0, 0], [1, 0], [0, 0], [0, 0]])   # assigned to texel (i+1, j)
    return g_x, g_y


def edge_aware_smoothness(albedo_uv, prior_uv, uv_mask, alpha=80.0, variant="paper"):
    """L_smooth = sum_i sum_{j in N(i)} w_ij ||A'(i) - A'(j)||^2 (paper eq. 5-6), normalised by the mask area.

    'paper' (default; docs/METHOD.md, "Loss terms"): 4-neighbourhood, each unordered pair counted once (the double sum
    counts it twice; the factor 2 is absorbed by the weight), a pair counts when both texels are in the mask,
    w_ij = exp(-alpha ||A(i) - A(j)||^2) with the squared norm over RGB, constant (stop-gradient). Normalised as
    sum / (3 * sum M): a map whose every texel differs from its right and lower neighbours by d (per channel,
    with a flat prior) scores ~2 d^2.
    'authors' (`ChromaSmoothLoss`): per texel g = sqrt(3) |sum_c d f_c| on channel-summed
    forward differences with replication padding, w = exp(-alpha g(A)), penalty w_x g_x(A') + w_y g_y(A')
    (not squared), masked per texel, divided by sum M.

    Args:
      albedo_uv: [B, S, S, 3] detailed albedo A'.
      prior_uv: [B, S, S, 3] prior albedo A (only its edges are used; no gradient).
      uv_mask: [B, S, S, 1], [S, S, 1] or [S, S].
      alpha: the paper's 80.
      variant: 'paper' or 'authors'.
    Returns:
      scalar, averaged over the batch.
    """
    albedo_uv = _float(albedo_uv)
    prior_uv = tf.cast(prior_uv, albedo_uv.dtype)
    mask = _mask_like(uv_mask, albedo_uv)
    if variant == "paper":
        w_x, w_y = smoothness_weights(prior_uv, alpha)
        d_x, d_y = _forward_differences(albedo_uv)
        m_x, m_y = _pair_masks(mask)
        total = _per_sample_sum(m_x * w_x * tf.square(d_x)) + _per_sample_sum(m_y * w_y * tf.square(d_y))
        return _normalise(total, mask, _channels(albedo_uv))
    if variant == "authors":
        p_x, p_y = _authors_gradient_magnitude(tf.stop_gradient(prior_uv))
        g_x, g_y = _authors_gradient_magnitude(albedo_uv)
        per_texel = tf.exp(-alpha * p_x) * g_x + tf.exp(-alpha * p_y) * g_y
        return _normalise(_per_sample_sum(mask * per_texel), mask, 1)
    raise ValueError(f"variant must be one of {SMOOTHNESS_VARIANTS}, got {variant!r}")


def prior_l1_loss(albedo_uv, prior_uv, uv_mask, norm="l1"):
    """L_L1 = |M_uv * (A' - A)| (paper eq. 7), as a masked per-element mean.

    The paper sets its weight to 0 after the first epoch; that schedule is `LossWeights.prior_l1_epochs`, applied
    by `total_generator_loss`, not here.

    Args:
      albedo_uv: [B, S, S, 3] detailed albedo A'.
      prior_uv: [B, S, S, 3] prior albedo A.
      uv_mask: [B, S, S, 1], [S, S, 1] or [S, S].
      norm: 'l1' (paper) or 'l2_norm' (authors' RegDetailMapLoss).
    Returns:
      scalar.
    """
    albedo_uv = _float(albedo_uv)
    return masked_mean(_penalty(albedo_uv - tf.cast(prior_uv, albedo_uv.dtype), norm), uv_mask)


def gan_discriminator_loss(d_real_logits, d_fake_logits, kind="lsgan"):
    """Discriminator loss (paper eq. 8), to minimise; real = prior albedo A, fake = detailed albedo A'.

    'lsgan' (default; the authors ship LSGANLoss; docs/METHOD.md, "Loss terms"): 1/2 [mean (D(A) - 1)^2 +
    mean D(A')^2]. 'vanilla' (the paper's log form, as binary cross-entropy on logits): 1/2 [-mean log s(D(A))
    - mean log(1 - s(D(A')))]. The 1/2 is pix2pix's. Pass the fake logits of a detached A' (or let only D's
    variables be updated).

    Args:
      d_real_logits, d_fake_logits: [B, P, P, 1] patch logits (any shape).
    Returns:
      scalar; lsgan 0 at real = 1, fake = 0; vanilla log 2 at logits 0.
    """
    real = _float(d_real_logits)
    fake = tf.cast(d_fake_logits, real.dtype)
    if kind == "lsgan":
        return 0.5 * (tf.reduce_mean(tf.square(real - 1.0)) + tf.reduce_mean(tf.square(fake)))
    if kind == "vanilla":
        # -log s(x) = softplus(-x), -log(1 - s(x)) = softplus(x): stable for large logits.
        return 0.5 * (tf.reduce_mean(tf.nn.softplus(-real)) + tf.reduce_mean(tf.nn.softplus(fake)))
    raise ValueError(f"kind must be one of {GAN_KINDS}, got {kind!r}")


def gan_generator_loss(d_fake_logits, kind="lsgan"):
    """Generator loss (paper eq. 9), to minimise: 'lsgan' mean (D(A') - 1)^2; 'vanilla' -mean log s(D(A')).

    The vanilla form is the non-saturating minimisation form of eq. 9's E log D(G(z)) (maximised).

    Args:
      d_fake_logits: [B, P, P, 1] patch logits of the detailed albedo.
    Returns:
      scalar.
    """
    fake = _float(d_fake_logits)
    if kind == "lsgan":
        return tf.reduce_mean(tf.square(fake - 1.0))
    if kind == "vanilla":
        return tf.reduce_mean(tf.nn.softplus(-fake))
    raise ValueError(f"kind must be one of {GAN_KINDS}, got {kind!r}")


# --------------------------------------------------------------------------------------------------------------
# Detail preservation (paper 5.3), image space
# --------------------------------------------------------------------------------------------------------------


def image_gradient_loss(rendered, image, face_mask, norm="l2"):
    """L_grad = sum ||M_face * (grad(I_r) - grad(I))||^2 (paper eq. 13), normalised by the mask area.

    x and y forward differences per channel (the paper: "two directional gradients along the x-axis and y-axis
    ... then ... the summation"); a difference counts when both of its pixels are in the mask (so the mask's own
    edge is never compared). Normalised as (sum_x + sum_y) / (C * sum M).

    Args:
      rendered: [B, H, W, C] re-rendered image I_r.
      image: [B, H, W, C] input image I.
      face_mask: [B, H, W, 1], [H, W, 1] or [H, W] M_face = M_parsing * M_proj (eq. 12).
      norm: 'l2' (paper) or 'l1'.
    Returns:
      scalar.
    """
    if norm not in ("l1", "l2", "mse"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    rendered = _float(rendered)
    image = tf.cast(image, rendered.dtype)
    mask = _mask_like(face_mask, rendered)
    r_x, r_y = _forward_differences(rendered)
    i_x, i_y = _forward_differences(image)
    m_x, m_y = _pair_masks(mask)
    total = (_per_sample_sum(m_x * _penalty(r_x - i_x, norm)) + _per_sample_sum(m_y * _penalty(r_y - i_y, norm)))
    return _normalise(total, mask, _channels(rendered))


def image_loss(rendered, image, face_mask, form="mse", eps=L2_NORM_EPS):
    """L_img = sum ||M_face * (I_r - I)||^2 (paper eq. 14), normalised by the mask area.

    Args:
      rendered: [B, H, W, C] re-rendered image I_r.
      image: [B, H, W, C] input image I.
      face_mask: [B, H, W, 1], [H, W, 1] or [H, W].
      form: 'mse' (paper; masked per-element mean of squares) or 'l2_norm' (authors' MaskPhotoLoss and Deng's
        photometric loss: mean over masked pixels of sqrt(sum_c (I_r - I)^2 + eps)).
    Returns:
      scalar.
    """
    if form not in ("mse", "l2", "l2_norm"):
        raise ValueError(f"form must be 'mse' or 'l2_norm', got {form!r}")
    rendered = _float(rendered)
    return masked_mean(_penalty(rendered - tf.cast(image, rendered.dtype), form, eps), face_mask)


# --------------------------------------------------------------------------------------------------------------
# Weights and the total
# --------------------------------------------------------------------------------------------------------------

# Generator terms, in the paper's order of weights (section 6).
TERMS = ("illumination", "cross_perceptual", "symmetry", "smoothness", "prior_l1", "extra", "gan",
         "image_gradient", "image")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the generator terms, the prior-L1 schedule and ablation switches.

    "paper" (section 6 lists nine numbers for eight lambdas: 1.0, 0.5, 5.0, 5.0, 1, 1.0, 0.001, 1.0, 5.0; read from
    both ends, docs/METHOD.md, "Loss weights"): illumination 1.0, cross_perceptual 0.5, symmetry 5.0,
    smoothness 5.0, prior_l1 1.0 for the first epoch only, extra (the unexplained sixth number, 1.0 in the paper;
    the authors' yml has an unused style_coeff 1.0 there) 0.0, gan 0.001, image_gradient 1.0, image 5.0.
    "authors" (their models/config_with_gl.yml): image (photo) 1.0, cross_perceptual (percep) 0.2,
    symmetry 0.1, smoothness (chroma) 0.1, illumination (reg_light) 1.0, prior_l1 (reg_detail) 1.0 with no
    schedule in their code, gan (uv_gan) 0.001, image_gradient (grad) 1.0, extra (style, whose loss class cannot
    run) 0.0.

    prior_l1_epochs: the prior L1 weight applies while epoch (0-based) < prior_l1_epochs; None = always.
    disabled: names of terms switched off (ablations); their weight is 0 whatever the value above.
    """

    illumination: float = 1.0
    cross_perceptual: float = 0.5
    symmetry: float = 5.0
    smoothness: float = 5.0
    prior_l1: float = 1.0
    extra: float = 0.0
    gan: float = 0.001
    image_gradient: float = 1.0
    image: float = 5.0
    prior_l1_epochs: Optional[int] = 1
    disabled: tuple = ()

    def __post_init__(self):
        unknown = set(self.disabled) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; terms are {TERMS}")
        object.__setattr__(self, "disabled", tuple(self.disabled))

    @classmethod
    def preset(cls, name="paper"):
        if name not in LOSS_WEIGHT_PRESETS:
            raise ValueError(f"unknown loss-weight preset {name!r}; choose from {sorted(LOSS_WEIGHT_PRESETS)}")
        return LOSS_WEIGHT_PRESETS[name]

    def without(self, *terms):
        """A copy with these terms switched off (e.g. .without('symmetry') for an ablation)."""
        return dataclasses.replace(self, disabled=tuple(dict.fromkeys(self.disabled + tuple(terms))))

    def weight(self, term, epoch=0):
        """The weight of `term` at `epoch` (0-based Python int)."""
        if term not in TERMS:
            raise ValueError(f"unknown loss term {term!r}; terms are {TERMS}")
        if term in self.disabled:
            return 0.0
        if term == "prior_l1" and self.prior_l1_epochs is not None and epoch >= self.prior_l1_epochs:
            return 0.0
        return float(getattr(self, term))

    def at_epoch(self, epoch=0):
        """{term: weight} at `epoch`."""
        return {term: self.weight(term, epoch) for term in TERMS}


LOSS_WEIGHT_PRESETS = {
    "paper": LossWeights(),
    "authors": LossWeights(illumination=1.0, cross_perceptual=0.2, symmetry=0.1, smoothness=0.1, prior_l1=1.0,
                           extra=0.0, gan=0.001, image_gradient=1.0, image=1.0, prior_l1_epochs=None),
}


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """Which form of each term a preset uses (the arguments of the loss functions above).

    "paper": the paper's formulas with the resolutions of docs/METHOD.md, "Loss terms" (MSE illumination, L1 symmetry with the
    detached mirror, squared-difference smoothness with exp(-80 d^2) weights, L1 prior, MSE image and image
    gradient, LSGAN). "authors": the forms of the authors' loss classes: L1 illumination
    + RGB consistency, per-texel-norm symmetry / prior / photometric, their smoothness, L1 image gradient
    (their ImgGrad's reduction is not released).
    """

    illumination_norm: str = "mse"
    illumination_rgb_consistency: float = 0.0
    symmetry_norm: str = "l1"
    # 'uniform': every chart texel pulled to its mirror (the paper); 'visibility' / 'confidence': weighted by
    # `symmetry_weights` with c = visibility_uv / `view_confidence` (the mirror fills only what the photo did
    # not show); symmetry_seen_weight: the pull between two seen texels in the weighted forms.
    symmetry_weighting: str = "uniform"
    symmetry_seen_weight: float = 0.0
    symmetry_seen_scale: float = 0.0   # > 0: the seen pairs' penalty is `saturating_l1` with this scale
    symmetry_unseen_mirror_weight: float = 0.0   # the pull of a seen texel towards an unseen mirror
    smoothness_variant: str = "paper"
    smoothness_alpha: float = 80.0
    prior_norm: str = "l1"
    image_form: str = "mse"
    image_gradient_norm: str = "l2"
    gan_kind: str = "lsgan"

    def __post_init__(self):
        if self.symmetry_weighting not in SYMMETRY_WEIGHTINGS:
            raise ValueError(f"symmetry_weighting must be one of {SYMMETRY_WEIGHTINGS}, "
                             f"got {self.symmetry_weighting!r}")

    @classmethod
    def preset(cls, name="paper"):
        if name not in LOSS_OPTION_PRESETS:
            raise ValueError(f"unknown loss-option preset {name!r}; choose from {sorted(LOSS_OPTION_PRESETS)}")
        return LOSS_OPTION_PRESETS[name]


LOSS_OPTION_PRESETS = {
    "paper": LossOptions(),
    "authors": LossOptions(illumination_norm="l1", illumination_rgb_consistency=1.0, symmetry_norm="l2_norm",
                           smoothness_variant="authors", prior_norm="l2_norm", image_form="l2_norm",
                           image_gradient_norm="l1", gan_kind="lsgan"),
}


def _as_weights(weights):
    if isinstance(weights, LossWeights):
        return weights
    if isinstance(weights, str):
        return LossWeights.preset(weights)
    if isinstance(weights, Mapping):
        return LossWeights(**weights)
    raise TypeError(f"weights must be a LossWeights, a preset name or a mapping, got {type(weights).__name__}")


def total_generator_loss(terms: Mapping, weights="paper", epoch=0):
    """Weighted sum of the generator terms (paper eq. 3, 10-11, 15, 16).

    Args:
      terms: {term name (see TERMS): scalar loss}; terms not computed may be left out.
      weights: LossWeights, a preset name ('paper', 'authors') or a mapping of LossWeights fields.
      epoch: 0-based epoch (Python int) for the prior-L1 schedule.
    Returns:
      (total scalar, {term: weighted scalar}). A term whose weight is 0 (disabled, or prior L1 after its epochs)
      contributes an exact 0 even if its value is not finite.
    """
    weights = _as_weights(weights)
    unknown = set(terms) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; terms are {TERMS}")
    weighted = {}
    for name, value in terms.items():
        value = _float(value)
        weight = weights.weight(name, epoch)
        weighted[name] = weight * value if weight else tf.zeros_like(value)
    total = tf.add_n(list(weighted.values())) if weighted else tf.constant(0.0)
    return total, weighted
