"""Grey photos have grey faces: the albedo and the light of a reconstruction from a grayscale photo.

A grey photo (R = G = B) says nothing about colour, but the fit has three colour channels and a coloured
prior: it may explain the grey pixels as a tinted albedo under a light of the complementary tint. Neither
tint is real. `grey_where` replaces both, for the faces of a batch that came from grey photos, by their
channel means: the albedo by its mean over R, G, B and the spherical-harmonics light by the mean of its
three channel blocks (Deng layout [R0..R8, G0..G8, B0..B8]; shading is linear in the coefficients, so
this is the mean shading). The render A x S then changes only by the covariance of the two tints
across channels, which is what was not in the photo.
"""
import numpy as np

from tf_facetex import sh


def grey_albedo(albedo, grey):
    """albedo [B, ..., 3]; grey [B] bools -> albedo with the grey items' channels replaced by their mean."""
    import tensorflow as tf

    albedo = tf.convert_to_tensor(albedo, tf.float32)
    mean = tf.repeat(tf.reduce_mean(albedo, axis=-1, keepdims=True), 3, axis=-1)
    return _select(grey, mean, albedo)


def grey_light(light, grey):
    """SH light [B, ..., 27] (Deng layout); grey [B] bools -> the grey items' three channel blocks averaged."""
    import tensorflow as tf

    light = tf.convert_to_tensor(light, tf.float32)
    blocks = tf.reshape(light, tf.concat([tf.shape(light)[:-1], [3, sh.NUM_BASIS]], axis=0))
    mean = tf.reshape(tf.repeat(tf.reduce_mean(blocks, axis=-2, keepdims=True), 3, axis=-2), tf.shape(light))
    return _select(grey, mean, light)


def grey_where(grey, albedo, *lights):
    """(albedo, *lights) with `grey_albedo` / `grey_light` applied to the items where ``grey`` [B] is True."""
    return (grey_albedo(albedo, grey),) + tuple(grey_light(light, grey) for light in lights)


def _select(grey, if_grey, otherwise):
    import tensorflow as tf

    grey = np.asarray(grey, bool).reshape([-1] + [1] * (len(otherwise.shape) - 1))
    return tf.where(tf.constant(grey), if_grey, otherwise)
