"""The albedo level anchored to the coarse light (`tf_facetex.refinement.level`)."""
import numpy as np
import tensorflow as tf

from tf_facetex import sh
from tf_facetex.refinement.level import (LEVEL_LIMITS, anchor_to_coarse_light, coarse_light_level,
                                         rescale_level)

B, S = 2, 8


def _fields(seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(B, S, S, 3))
    normals[..., 2] = np.abs(normals[..., 2]) + 1.0
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    uv_mask = np.ones((S, S, 1), np.float32)
    uv_mask[:2] = 0.0
    return {"albedo_uv": tf.constant(rng.uniform(0.2, 0.7, (B, S, S, 3)), tf.float32) * uv_mask,
            "light_uv": tf.constant(rng.normal(0.0, 0.2, (B, S, S, 27)), tf.float32) * uv_mask,
            "normals_uv": tf.constant(normals, tf.float32),
            "gamma": tf.constant(rng.normal(0.0, 0.2, (B, 27)), tf.float32),
            "visibility_uv": tf.constant(rng.random((B, S, S, 1)) < 0.7, tf.float32),
            "uv_mask": tf.constant(uv_mask)}


def test_rescaling_keeps_the_detailed_render():
    f = _fields()
    scale = tf.constant([[0.8, 1.1, 1.3], [1.2, 0.9, 1.0]])
    albedo, light = rescale_level(f["albedo_uv"], f["light_uv"], scale, f["uv_mask"])
    before = f["albedo_uv"] * sh.shading_uv(f["normals_uv"], f["light_uv"])
    after = albedo * sh.shading_uv(f["normals_uv"], light)
    np.testing.assert_allclose(after * f["uv_mask"], before * f["uv_mask"], atol=1e-5)
    np.testing.assert_allclose(albedo, f["albedo_uv"] * scale[:, None, None, :] * f["uv_mask"], atol=1e-6)
    assert float(tf.reduce_max(tf.abs(light * (1.0 - f["uv_mask"])))) == 0.0


def test_level_recovers_a_known_drift_and_then_is_one():
    # The photo is exactly the true albedo under the coarse light; an albedo drifted by 1 / s per channel gets s.
    f = _fields(1)
    texture = f["albedo_uv"] * sh.shading_uv(f["normals_uv"], f["gamma"])
    drift = tf.constant([[0.9, 0.95, 1.05], [1.1, 1.0, 0.85]])
    drifted = f["albedo_uv"] / drift[:, None, None, :]
    scale = coarse_light_level(drifted, texture, f["visibility_uv"], f["normals_uv"], f["gamma"], f["uv_mask"])
    np.testing.assert_allclose(scale, drift, rtol=1e-5)
    albedo, _ = anchor_to_coarse_light(drifted, f["light_uv"], texture, f["visibility_uv"], f["normals_uv"],
                                       f["gamma"], f["uv_mask"])
    np.testing.assert_allclose(albedo, f["albedo_uv"], atol=1e-5)
    again = coarse_light_level(albedo, texture, f["visibility_uv"], f["normals_uv"], f["gamma"], f["uv_mask"])
    np.testing.assert_allclose(again, np.ones((B, 3)), atol=1e-5)


def test_level_is_the_least_squares_scale():
    # Brute force: the scale minimises sum_seen (T - s a)^2 per channel.
    f = _fields(2)
    texture = tf.constant(np.random.default_rng(3).uniform(0.1, 0.9, (B, S, S, 3)), tf.float32)
    scale = coarse_light_level(f["albedo_uv"], texture, f["visibility_uv"], f["normals_uv"], f["gamma"],
                               f["uv_mask"]).numpy()
    coarse = (f["albedo_uv"] * sh.shading_uv(f["normals_uv"], f["gamma"])).numpy()
    weight = (f["visibility_uv"] * f["uv_mask"]).numpy()
    grid = np.linspace(*LEVEL_LIMITS, 3001)
    for b in range(B):
        for c in range(3):
            errors = [np.sum(weight[b, ..., 0] * (texture.numpy()[b, ..., c] - s * coarse[b, ..., c]) ** 2)
                      for s in grid]
            assert abs(grid[int(np.argmin(errors))] - scale[b, c]) <= 1e-3


def test_nothing_seen_leaves_the_level_alone_and_extremes_are_clamped():
    f = _fields(4)
    unseen = tf.zeros_like(f["visibility_uv"])
    scale = coarse_light_level(f["albedo_uv"], f["albedo_uv"], unseen, f["normals_uv"], f["gamma"], f["uv_mask"])
    np.testing.assert_array_equal(scale, np.ones((B, 3)))
    huge = coarse_light_level(f["albedo_uv"], 100.0 * tf.ones_like(f["albedo_uv"]), f["visibility_uv"],
                              f["normals_uv"], f["gamma"], f["uv_mask"])
    np.testing.assert_array_equal(huge, np.full((B, 3), LEVEL_LIMITS[1]))
