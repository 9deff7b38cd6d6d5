"""The albedo's per-channel level, anchored to the coarse light (docs/METHOD.md, "Albedo level").

A render is albedo x shading, so scaling a colour channel of A' by s and that channel of L' (with its ambient)
by 1 / s gives the same re-render: the split of a photo's colour between albedo and light is only known up to
one scale per channel. The per-image fit inherits its level from its start (the photo over the coarse shading),
so its A' under the coarse light L still explains the photo. The trained network has no such anchor and drifts:
on held-out faces its albedo came out 5-11% too bright per channel with a light map correspondingly darker
(docs/results/issue18_albedo_level.md), which leaves the detailed re-render intact but makes A' under L, and
under any other light, too bright. `anchor_to_coarse_light` removes that drift after the forward pass: the
level is the least-squares scale at which L explains the photo on the seen texels, and L' takes the inverse
scale, so R(A', L') is unchanged.
"""
import tensorflow as tf

from tf_facetex import sh

LEVEL_LIMITS = (0.5, 2.0)     # a scale outside this range means a broken input, not drift: clamped
_MIN_ENERGY = 1e-6             # below this (no seen texels) the level is left alone (scale 1)


def coarse_light_level(albedo_uv, texture_uv, visibility_uv, normals_uv, gamma, uv_mask):
    """The per-channel scale s at which the coarse light explains the photo: [B, 3].

    s_c = sum_seen T_c a_c / sum_seen a_c^2 with a = A'_c x shading(normals, gamma)_c (least squares of
    s a against the unwrapped photo T on the seen texels, weighted by the visibility); 1 where no texel was
    seen, clamped to `LEVEL_LIMITS`.

    Args:
      albedo_uv [B, S, S, 3]; texture_uv [B, S, S, 3] (the unwrapped photo); visibility_uv [B, S, S, 1];
      normals_uv [B, S, S, 3]; gamma [B, 27] (the coarse light); uv_mask [S, S, 1].
    """
    seen = tf.cast(visibility_uv, tf.float32) * tf.cast(uv_mask, tf.float32)
    coarse = tf.cast(albedo_uv, tf.float32) * sh.shading_uv(tf.cast(normals_uv, tf.float32), gamma)
    numerator = tf.reduce_sum(seen * tf.cast(texture_uv, tf.float32) * coarse, axis=[1, 2])
    energy = tf.reduce_sum(seen * coarse * coarse, axis=[1, 2])
    scale = tf.where(energy > _MIN_ENERGY, numerator / tf.maximum(energy, _MIN_ENERGY), tf.ones_like(energy))
    return tf.clip_by_value(scale, *LEVEL_LIMITS)


def rescale_level(albedo_uv, light_uv, scale, uv_mask):
    """A' x s and L' (ambient included) / s per channel: the same re-render, another level.

    Args:
      albedo_uv [B, S, S, 3]; light_uv [B, S, S, 27]; scale [B, 3]; uv_mask [S, S, 1].
    Returns:
      (albedo_uv clipped to [0, 1], light_uv), both 0 outside the chart. Only the clip (a texel pushed past 1)
      changes R(A', L').
    """
    scale = tf.cast(scale, tf.float32)
    albedo = tf.clip_by_value(tf.cast(albedo_uv, tf.float32) * scale[:, None, None, :], 0.0, 1.0) * uv_mask
    light_with_ambient = sh.coeffs_to_matrix(sh.with_ambient(light_uv))             # [B, S, S, 3, 9]
    light = tf.reshape(light_with_ambient / scale[:, None, None, :, None], tf.shape(light_uv))
    light = (light - sh.with_ambient(tf.zeros([sh.NUM_COEFFS]))) * uv_mask
    return albedo, light


def anchor_to_coarse_light(albedo_uv, light_uv, texture_uv, visibility_uv, normals_uv, gamma, uv_mask):
    """`rescale_level` by `coarse_light_level`: (albedo_uv [B, S, S, 3], light_uv [B, S, S, 27])."""
    scale = coarse_light_level(albedo_uv, texture_uv, visibility_uv, normals_uv, gamma, uv_mask)
    return rescale_level(albedo_uv, light_uv, scale, uv_mask)
