"""Mesh geometry on tensors: triangle and vertex normals.

Vertex normals use a gather over a padded vertex->triangle table (Deng's ``point_buf``) instead of a
scatter, so they run in XLA, SavedModel and TFLite alike.
"""
import tensorflow as tf


def triangle_normals(vertices, triangles, normalize=False):
    """Per-triangle normals (cross product of two edges, counter-clockwise = outward).

    Args:
      vertices: [B, N, 3].
      triangles: [F, 3] int32.
      normalize: if False the length is twice the triangle area (area weighting for vertex normals).
    Returns:
      [B, F, 3].
    """
    corners = tf.gather(vertices, triangles, axis=1)           # [B, F, 3, 3]
    v0, v1, v2 = corners[:, :, 0], corners[:, :, 1], corners[:, :, 2]
    normals = tf.linalg.cross(v1 - v0, v2 - v0)
    return tf.math.l2_normalize(normals, axis=-1, epsilon=1e-12) if normalize else normals


def vertex_normals(vertices, triangles, vertex_triangles):
    """Area-weighted unit vertex normals.

    Args:
      vertices: [B, N, 3].
      triangles: [F, 3] int32.
      vertex_triangles: [N, K] int32 triangles around each vertex, padded with F
        (`MorphableModel.vertex_triangles()`).
    Returns:
      [B, N, 3] unit normals.
    """
    face_normals = triangle_normals(vertices, triangles)      # [B, F, 3]
    padded = tf.pad(face_normals, [[0, 0], [0, 1], [0, 0]])   # index F -> zero normal
    summed = tf.reduce_sum(tf.gather(padded, vertex_triangles, axis=1), axis=2)
    return tf.math.l2_normalize(summed, axis=-1, epsilon=1e-12)
