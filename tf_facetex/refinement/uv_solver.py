"""The per-photo UV fit (the no-weights detail stage) as pure tensor functions, solved in one compiled loop.

Same objective as `tf_facetex.refinement.fit.UVFitRefiner` (docs/METHOD.md, "Detail refinement"): the detailed albedo A' [B, S, S, 3] and the light
L' = L + upsample(residual) (residual [B, r, r, 27]) minimise
    w_img L_img + w_grad L_grad + w_illu L_reg-illu + w_symm L_symm + w_smooth L_smooth (+ w_L1 L_L1)
with A' clipped to [0, 1] after each step, from A' = the unwrapped texture divided by the coarse shading where
the photo shows the texel (the prior albedo elsewhere) and a zero residual.

What differs is the schedule, not the problem: `UVFitRefiner` with ``solver='adam'`` runs one eager-dispatched
`tf.function` per Adam step and builds new variables and a new function per photo (it retraces for every
photo); `fit_uv_maps` runs all the steps of Adam inside one XLA-compiled ``tf.while_loop`` (the loss, its
gradient and the update fuse into a few kernels) and is traced once per (batch, UV size, steps): later photos
reuse the compiled program. ``learning_rate`` and ``steps`` are the knobs that trade time for the objective
reached (scripts/bench_uv_fit.py measures both and the albedo error on synthetic faces).

Adam is the Keras 3 update (beta1 0.9, beta2 0.999, epsilon 1e-7), written out so that it lives in the loop.

Several photos of one person (``groups``): ONE albedo variable per group, gathered per photo into each photo's
render, and one light residual per photo. The objective is the mean over the group's photos of each photo's terms
(image, image gradient, its light's regulariser; each photo's own face mask and visibility) plus the albedo
terms once, on the group's albedo (symmetry confidence: the best of its photos'). A group of identical photos
therefore gives the single-photo fit, and so does a group of one.
"""
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from tf_facetex import losses as L
from tf_facetex import sh
from tf_facetex.prior.landmark_fit import group_index
from tf_facetex.refinement import objective

# The prior-output fields the fit reads (the refinement-sample keys).
SAMPLE_KEYS = ("image", "face_mask", "proj_mask", "pixel_uv", "texture_uv", "visibility_uv", "prior_albedo_uv",
               "normals_uv", "gamma")
# Order of the weight vector of `weighted_total`.
TERM_NAMES = ("image", "image_gradient", "illumination", "symmetry", "smoothness", "prior_l1")
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-7
MIN_INIT_SHADING = 0.05     # the unwrapped texture is divided by max(shading, this) for the initial albedo
PHOTO_ALBEDO = ("seen", "all")   # `fit_terms`: the texels whose albedo the photo terms move


def term_weights(weights, prior_weight=0.0):
    """The fit's term weights -> [6] float32 in `TERM_NAMES` order: a mapping {term: weight} (as
    `refinement.fit.UVFitRefiner.weights`, terms absent = 0), or a `losses.LossWeights` preset whose L1-to-prior
    weight is replaced by ``prior_weight`` (as the fit does)."""
    if isinstance(weights, Mapping):
        return tf.constant([float(weights.get(name, 0.0)) for name in TERM_NAMES], tf.float32)
    return tf.constant([prior_weight if name == "prior_l1" else weights.weight(name, 0)
                        for name in TERM_NAMES], tf.float32)


def bilinear_upsampling_matrix(size, resolution):
    """[S, r] float32 K such that ``tf.image.resize(x, [S, S], 'bilinear') = K x K^T`` per channel (TF2's
    half-pixel-centre bilinear resize is separable; the matrix is obtained by resizing the identity)."""
    identity = tf.eye(resolution, dtype=tf.float32)[None, :, None, :]                  # [1, r, 1, r]
    return tf.image.resize(identity, [size, 1], method="bilinear")[0, :, 0, :]


def upsampled_light(base_light, residual, size):
    """L' = base + bilinear upsampling of the residual grid: base [B, 27] (the coarse gamma, constant over the
    chart) or [B, S, S, 27] (a light map, e.g. the network's), residual [B, r, r, 27] -> [B, S, S, 27].

    As two small matrix products (the same values as `tf.image.resize`): their gradient is two matrix
    products too, where the resize's gradient under XLA becomes a slow strided convolution."""
    upsampling = bilinear_upsampling_matrix(size, residual.shape[1])
    rows = tf.einsum("yi,bijc->byjc", upsampling, residual)
    if base_light.shape.rank == 2:
        base_light = base_light[:, None, None, :]
    return base_light + tf.einsum("xj,byjc->byxc", upsampling, rows)


# The symmetry term's form as (weighting, seen_weight, seen_scale, unseen_mirror_weight) (`losses.LossOptions`'
# symmetry_* fields): a tuple of Python values, so that the compiled loop traces once per form.
UNIFORM_SYMMETRY = ("uniform", 0.0, 0.0, 0.0)


def symmetry_form(weighting="uniform", seen_weight=0.0, seen_scale=0.0, unseen_mirror_weight=0.0):
    """(weighting, seen_weight, seen_scale, unseen_mirror_weight) as the hashable tuple the solver takes
    (validated)."""
    form = (str(weighting), float(seen_weight), float(seen_scale), float(unseen_mirror_weight))
    loss_options(form)
    return form


def loss_options(symmetry=UNIFORM_SYMMETRY):
    """The `losses.LossOptions` of the fit: the paper's forms, with the symmetry term's (`symmetry_form`)."""
    weighting, seen_weight, seen_scale, unseen_mirror_weight = symmetry
    return L.LossOptions(symmetry_weighting=weighting, symmetry_seen_weight=float(seen_weight),
                         symmetry_seen_scale=float(seen_scale),
                         symmetry_unseen_mirror_weight=float(unseen_mirror_weight))


def group_albedo_inputs(sample, groups, num_groups, symmetry=UNIFORM_SYMMETRY):
    """What the albedo terms of a group's ONE albedo read: {'prior_albedo_uv' [G, S, S, 3] (the mean of its
    photos' priors, which share the coefficients), 'confidence_uv' [G, S, S, 1] or None (per texel the best of its
    photos' symmetry confidences: a texel one photo shows well is seen)}. groups: [B] int32 (0..G-1)."""
    prior = tf.math.unsorted_segment_mean(sample["prior_albedo_uv"], groups, num_groups)
    confidence = objective.symmetry_confidence(sample, loss_options(symmetry))
    if confidence is not None:
        confidence = tf.math.unsorted_segment_max(confidence, groups, num_groups)
    return {"prior_albedo_uv": prior, "confidence_uv": confidence}


def fit_terms(albedo_uv, light_uv, sample, uv_mask, symmetry_index, symmetry=UNIFORM_SYMMETRY, groups=None,
              group_inputs=None, photo_albedo="seen"):
    """The unweighted terms of the UV-fit objective (dict of scalars; `TERM_NAMES`): the shared
    `refinement.objective.uv_terms` of R(A', L'), exactly what `refinement.fit.UVFitRefiner.terms` computes.

    Args:
      albedo_uv: [B, S, S, 3], or [G, S, S, 3] with ``groups``; light_uv: [B, S, S, 27]; sample: dict with
      `SAMPLE_KEYS`; uv_mask: [S, S, 1]; symmetry_index: [S * S] int32 or None;
      symmetry: the symmetry term's form (`symmetry_form`);
      groups: None, or [B] int32 photo -> albedo row, with ``group_inputs`` (`group_albedo_inputs`): the photo
        terms are means over the B photos, the albedo terms over the G albedos.
      photo_albedo: which texels' albedo the photo terms move: "seen" (those each photo showed;
        `objective.seen_albedo`) or "all" (every texel a face-mask pixel is rendered from).
    """
    if photo_albedo not in PHOTO_ALBEDO:
        raise ValueError(f"photo_albedo must be one of {PHOTO_ALBEDO}, got {photo_albedo!r}")
    options = loss_options(symmetry)

    def photo_view(albedo_per_photo):
        if photo_albedo == "seen":
            return objective.seen_albedo(albedo_per_photo, sample["visibility_uv"])
        return albedo_per_photo

    if groups is None:
        rendered = objective.render_lit(sample, photo_view(albedo_uv), light_uv)
        return objective.uv_terms(albedo_uv, light_uv, rendered, sample, uv_mask,
                                  sample["visibility_uv"] * uv_mask, symmetry_index, options)
    rendered = objective.render_lit(sample, photo_view(tf.gather(albedo_uv, groups)), light_uv)
    terms = objective.photo_terms(light_uv, rendered, sample, sample["visibility_uv"] * uv_mask, options)
    terms.update(objective.albedo_terms(albedo_uv, group_inputs["prior_albedo_uv"], group_inputs["confidence_uv"],
                                        uv_mask, symmetry_index, options))
    return terms


def weighted_total(terms, weights):
    """sum_k weights[k] * terms[TERM_NAMES[k]]: dict of scalars, [6] tensor -> scalar (`losses.weighted_total`;
    the weights stay one tensor so that changing them does not retrace the compiled loop)."""
    return L.weighted_total(terms, {name: weights[k] for k, name in enumerate(TERM_NAMES)})


def initial_albedo(sample, use_unwrapped_init=True, groups=None, num_groups=None):
    """A' at step 0: unwrapped texture / coarse shading where seen, the prior albedo elsewhere, in [0, 1].

    With ``groups`` ([B] int32, 0..num_groups-1), one albedo per group: where its photos see a texel, the
    least-squares albedo of their observations, sum_k v_k s_k T_k / sum_k v_k s_k^2 (s_k = max(shading_k, 0.05):
    a photo that shows the texel in shadow counts little; one photo gives T / s); the prior elsewhere.

    Returns [B, S, S, 3], or [G, S, S, 3] with groups."""
    prior = sample["prior_albedo_uv"]
    if groups is not None:
        prior = tf.math.unsorted_segment_mean(prior, groups, num_groups)
    if not use_unwrapped_init:
        return prior
    shading = tf.maximum(sh.shading(sample["normals_uv"], sample["gamma"][:, None, None, :]), MIN_INIT_SHADING)
    seen = sample["visibility_uv"]
    if groups is None:
        observed = tf.math.divide_no_nan(sample["texture_uv"], shading)
        return tf.clip_by_value(observed * seen + prior * (1.0 - seen), 0.0, 1.0)
    numerator = tf.math.unsorted_segment_sum(seen * shading * sample["texture_uv"], groups, num_groups)
    denominator = tf.math.unsorted_segment_sum(seen * tf.square(shading), groups, num_groups)
    observed = tf.math.divide_no_nan(numerator, denominator)
    seen = tf.math.unsorted_segment_max(seen, groups, num_groups)
    return tf.clip_by_value(observed * seen + prior * (1.0 - seen), 0.0, 1.0)


EXPOSURE_REFERENCE_QUANTILE = 0.9   # the lit skin's level: a side light leaves more than half the face in shadow


def luminance_quantile(image, mask, quantile=EXPOSURE_REFERENCE_QUANTILE):
    """Per photo, the ``quantile`` of the luminance (mean of RGB) of the masked pixels (the value at sorted index
    floor(quantile x count)): [B, H, W, 3], [B, H, W, 1] -> [B] (0 for an empty mask)."""
    luminance = tf.reshape(tf.reduce_mean(image, axis=-1), [tf.shape(image)[0], -1])
    inside = tf.reshape(mask[..., 0] > 0.5, tf.shape(luminance))
    ordered = tf.sort(tf.where(inside, luminance, float("inf")), axis=-1)
    count = tf.reduce_sum(tf.cast(inside, tf.int32), axis=-1)
    index = tf.minimum(tf.cast(tf.floor(quantile * tf.cast(count, tf.float32)), tf.int32), tf.maximum(count - 1, 0))
    return tf.where(count > 0, tf.gather(ordered, index, batch_dims=1), 0.0)


def exposure_weight(colours, reference, dark_fraction, saturation):
    """How far the photo's values can be trusted as albedo x smooth shading: 0 in deep shadow (luminance below
    ``dark_fraction`` x the photo's lit-skin level ``reference``, `luminance_quantile`; cast shadows, which an SH
    light cannot make) and where a
    channel reaches ``saturation`` (clipped), ramping to 1 at 2.5 x ``dark_fraction`` and 0.03 below saturation.

    colours [B, ..., 3], reference [B] -> [B, ..., 1] in [0, 1]; dark_fraction 0 and saturation > 1 give 1."""
    extra = [1] * (len(colours.shape) - 2)
    reference = tf.reshape(reference, [-1] + extra + [1])
    weight = tf.ones_like(colours[..., :1])
    if dark_fraction > 0:
        relative = tf.reduce_mean(colours, axis=-1, keepdims=True) / tf.maximum(reference, 1e-6)
        weight *= tf.clip_by_value((relative - dark_fraction) / (1.5 * dark_fraction), 0.0, 1.0)
    if saturation <= 1.0:
        weight *= tf.clip_by_value((saturation - tf.reduce_max(colours, -1, keepdims=True)) / 0.03, 0.0, 1.0)
    return weight


def shadow_weight(sample, shading_fraction):
    """Texels in the coarse light's attached shadow: [B, S, S, 1], 0 where the coarse shading (mean of RGB) is below
    ``shading_fraction`` x its level on the lit side (`luminance_quantile` over the seen texels), ramping to 1 at
    2.5 x that. It reads the light, not the photo's values, so dark albedo (brows, a beard) is not taken for shadow."""
    shading = tf.reduce_mean(sh.shading(sample["normals_uv"], sample["gamma"][:, None, None, :]), -1, keepdims=True)
    reference = luminance_quantile(shading, sample["visibility_uv"])
    relative = shading / tf.maximum(tf.reshape(reference, [-1, 1, 1, 1]), 1e-6)
    return tf.clip_by_value((relative - shading_fraction) / (1.5 * shading_fraction), 0.0, 1.0)


def exposure_weighted(sample, dark_fraction, saturation, shading_fraction=0.0):
    """The sample with the photo's untrustworthy values (`exposure_weight`, `shadow_weight`) taken out of what the
    albedo is fitted to: face_mask (the image terms) and visibility_uv (the initial albedo, the symmetry
    confidence: such texels are filled like unseen ones, and the light's regulariser) are multiplied by the
    weight."""
    if dark_fraction <= 0 and saturation > 1.0 and shading_fraction <= 0:
        return sample
    reference = luminance_quantile(sample["image"], sample["face_mask"])
    image_weight = exposure_weight(sample["image"], reference, dark_fraction, saturation)
    texel_weight = exposure_weight(sample["texture_uv"], reference, dark_fraction, saturation)
    if shading_fraction > 0:
        shadow = shadow_weight(sample, shading_fraction)
        texel_weight *= shadow
        image_weight *= objective.render_from_lookup(shadow, sample["pixel_uv"], sample["proj_mask"])
    return {**sample, "face_mask": sample["face_mask"] * image_weight,
            "visibility_uv": sample["visibility_uv"] * texel_weight}


def _adam_update(value, gradient, m, v, step, learning_rate):
    """One Keras-3 Adam update at 1-based ``step`` -> (value, m, v)."""
    m = m + (gradient - m) * (1.0 - ADAM_BETA1)
    v = v + (tf.square(gradient) - v) * (1.0 - ADAM_BETA2)
    rate = learning_rate * tf.sqrt(1.0 - ADAM_BETA2 ** step) / (1.0 - ADAM_BETA1 ** step)
    return value - rate * m / (tf.sqrt(v) + ADAM_EPSILON), m, v


def _adam_loop(albedo, residual, base_light, sample, uv_mask, symmetry_index, weights, learning_rate, decay, steps,
               symmetry=UNIFORM_SYMMETRY, groups=None, group_inputs=None, albedo_rate=None, photo_albedo="seen"):
    """``steps`` (a tensor) Adam steps on (albedo [B, S, S, 3] (or [G, ...] with ``groups``), residual
    [B, r, r, 27]); the light is base_light ([B, 27] or [B, S, S, 27]) + the upsampled residual.

    symmetry (`symmetry_form`) and photo_albedo hold Python values: one trace per form. groups / group_inputs /
    photo_albedo: `fit_terms`'.
    albedo_rate: None or a scalar tensor scaling the albedo's learning rate (0: the albedo stays as given and only
    the light is fitted).

    Returns (albedo, residual, first loss, last loss): the objective before the first and before the last
    step (scalars; the trip count is a tensor, so one compiled program serves every step count)."""
    size = albedo.shape[1]

    def objective(albedo, residual):
        light = upsampled_light(base_light, residual, size)
        return weighted_total(fit_terms(albedo, light, sample, uv_mask, symmetry_index, symmetry, groups,
                                        group_inputs, photo_albedo), weights)

    # The terms are batch means: differentiating batch * mean (the per-photo sum) gives every photo the gradient
    # it gets alone, so a batched fit follows the one-at-a-time trajectories (Adam's epsilon included). With
    # groups (of one size), the albedo's rows are the groups: the same scaling gives each group's objective.
    batch = tf.cast(tf.shape(albedo)[0], tf.float32)

    def body(i, albedo, residual, m_a, v_a, m_r, v_r, first, last):
        with tf.GradientTape() as tape:
            tape.watch([albedo, residual])
            total = objective(albedo, residual)
            per_photo_sum = total * batch
        grad_a, grad_r = tape.gradient(per_photo_sum, [albedo, residual])
        step = tf.cast(i + 1, tf.float32)
        # Geometric decay from learning_rate to learning_rate * decay over the run (decay 1: constant).
        rate = learning_rate * decay ** (tf.cast(i, tf.float32) / tf.maximum(tf.cast(steps - 1, tf.float32), 1.0))
        albedo, m_a, v_a = _adam_update(albedo, grad_a, m_a, v_a, step,
                                        rate if albedo_rate is None else rate * albedo_rate)
        residual, m_r, v_r = _adam_update(residual, grad_r, m_r, v_r, step, rate)
        first = tf.where(tf.equal(i, 0), total, first)
        return i + 1, tf.clip_by_value(albedo, 0.0, 1.0), residual, m_a, v_a, m_r, v_r, first, total

    zeros_a, zeros_r = tf.zeros_like(albedo), tf.zeros_like(residual)
    nothing = tf.constant(float("nan"))
    state = (tf.constant(0), albedo, residual, zeros_a, zeros_a, zeros_r, zeros_r, nothing, nothing)
    _, albedo, residual, _, _, _, _, first, last = tf.while_loop(lambda i, *_: i < steps, body, state)
    return albedo, residual, first, last


# Traced once per input shape (batch, S, r) and reused for every later photo, step count and learning rate.
# No reduce_retracing: after a second shape it would trace with unknown dimensions, and the loop needs S and r
# as Python ints (the upsampling matrix); a program per shape is what XLA compiles anyway.
_adam_loop_xla = tf.function(_adam_loop, jit_compile=True, autograph=False)
_adam_loop_graph = tf.function(_adam_loop, autograph=False)


def trace_count() -> int:
    """How many times the compiled fit loops have been traced in this process (for retracing checks)."""
    return sum(int(f.experimental_get_tracing_count()) for f in (_adam_loop_xla, _adam_loop_graph))


def fit_uv_maps(sample, uv_mask, symmetry_index, weights, steps=150, learning_rate=0.01, decay=1.0,
                light_resolution=8, use_unwrapped_init=True, jit_compile=True, symmetry=UNIFORM_SYMMETRY,
                start=None, groups=None, fit_albedo=True, dark_fraction=0.0, saturation=1.01, shading_fraction=0.0,
                photo_albedo="seen"):
    """Per-photo fit of A' and L' (see the module docstring).

    Args:
      sample: dict of [B, ...] tensors with `SAMPLE_KEYS` (a `PriorModule` output or refinement sample).
      uv_mask: [S, S, 1] float32; symmetry_index: [S * S] int32 (`FaceRenderer.uv_symmetry_index`) or None.
      weights: [6] float32 (`term_weights`).
      steps, learning_rate: Adam's step count and step size (tensor arguments: changing them does not
        retrace).
      decay: the learning rate decays geometrically to ``learning_rate * decay`` at the last step.
      light_resolution: r, the residual light grid.
      use_unwrapped_init: start from the unwrapped texture (`initial_albedo`).
      jit_compile: run the loop under XLA (False: the same loop as a plain graph).
      start: None, or {'albedo_uv' [B, S, S, 3], 'light_uv' [B, S, S, 27]} (e.g. the network's A', L'): the fit
        starts from this albedo, and its light is this map + the residual (instead of gamma + the residual);
        ``use_unwrapped_init`` is then ignored. The objective is unchanged (its light term still pulls towards
        the coarse gamma).
      symmetry: the symmetry term's form, (weighting, seen_weight, seen_scale, unseen_mirror_weight)
        (`symmetry_form`; weighting
        'uniform', 'visibility' or 'confidence').
      groups: None (each photo its own albedo), or [B] ints 0..G-1, every group of the same size: photos of one
        person fit ONE albedo (module docstring; `initial_albedo`); ``start['albedo_uv']`` is then [G, ...].
      fit_albedo: False keeps the albedo as started (give ``start``) and fits only each photo's light.
      dark_fraction, saturation, shading_fraction: deep shadows, clipped values and the coarse light's attached
        shadow count less (`exposure_weighted`; 0, > 1 and 0: off).
      photo_albedo: "seen" / "all", the texels whose albedo the photo terms move (`fit_terms`).
    Returns:
      dict: albedo_uv [B, S, S, 3] ([G, ...] with groups) and light_uv [B, S, S, 27] (both x uv_mask),
      loss_first / loss_last (the objective before the first and the last step, scalars), terms (the
      unweighted terms at the result).
    """
    sample = {key: tf.convert_to_tensor(sample[key], tf.float32) for key in SAMPLE_KEYS}
    sample = exposure_weighted(sample, dark_fraction, saturation, shading_fraction)
    uv_mask = tf.convert_to_tensor(uv_mask, tf.float32)
    if symmetry_index is not None:
        symmetry_index = tf.convert_to_tensor(symmetry_index, tf.int32)
    symmetry = symmetry_form(*symmetry)
    batch = int(sample["image"].shape[0])
    group_inputs = num_groups = order = None
    if groups is not None:
        groups, num_groups = group_index(groups, batch)
        if num_groups == batch:
            # Every photo alone: the single-photo fit itself (the same program), its albedos in group order.
            if start is not None:
                start = {**start, "albedo_uv": tf.gather(start["albedo_uv"], groups)}
            order, groups = np.argsort(groups), None
    if groups is not None:
        if len(set(np.bincount(groups).tolist())) > 1:
            raise ValueError(f"the groups of one fit must have one size (the photo terms are one mean), got "
                             f"{np.bincount(groups).tolist()}; fit unequal groups one at a time")
        groups = tf.constant(groups)
        group_inputs = group_albedo_inputs(sample, groups, num_groups, symmetry)
    if not fit_albedo and start is None:
        raise ValueError("fit_albedo=False fits the light to a given albedo: pass start={'albedo_uv', 'light_uv'}")
    if start is None:
        # always rank 4 ([B, 1, 1, 27] broadcasts): the loop's relaxed trace must not see two ranks
        albedo = initial_albedo(sample, use_unwrapped_init, groups, num_groups)
        base_light = sample["gamma"][:, None, None, :]
    else:
        albedo = tf.clip_by_value(tf.convert_to_tensor(start["albedo_uv"], tf.float32), 0.0, 1.0)
        base_light = tf.convert_to_tensor(start["light_uv"], tf.float32)
    size = albedo.shape[1]
    residual = tf.zeros([batch, light_resolution, light_resolution, 27], tf.float32)
    loop = _adam_loop_xla if jit_compile else _adam_loop_graph
    albedo, residual, first, last = loop(albedo, residual, base_light, sample, uv_mask, symmetry_index,
                                         tf.convert_to_tensor(weights, tf.float32),
                                         tf.constant(learning_rate, tf.float32), tf.constant(decay, tf.float32),
                                         tf.constant(int(steps)), symmetry, groups, group_inputs,
                                         None if fit_albedo else tf.constant(0.0), photo_albedo)
    light = upsampled_light(base_light, residual, size)
    terms = fit_terms(albedo, light, sample, uv_mask, symmetry_index, symmetry, groups, group_inputs, photo_albedo)
    if order is not None:
        albedo = tf.gather(albedo, order)
    return {"albedo_uv": albedo * uv_mask, "light_uv": light * uv_mask, "loss_first": first, "loss_last": last,
            "terms": terms}
