"""Camera, pose, normals and SH shading against hand-computed values, quadrature and tensorflow-graphics."""
import math

import numpy as np
import tensorflow as tf
from tensorflow_graphics.math import spherical_harmonics as tfg_sh

from tf_facetex import camera, geometry, sh
from tf_facetex.face_model.model import vertex_triangle_table


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_rotation_matches_deng_order():
    angles = np.array([[0.3, -0.5, 0.2]], np.float32)
    expected = _rz(0.2) @ _ry(-0.5) @ _rx(0.3)
    np.testing.assert_allclose(camera.rotation_matrix(angles)[0].numpy(), expected, atol=1e-6)
    # Yaw of +90 degrees turns the face (+z) towards +x.
    turned = camera.rigid_transform(tf.constant([[[0.0, 0.0, 1.0]]]), tf.constant([[0.0, math.pi / 2, 0.0]]),
                                    tf.zeros([1, 3]))
    np.testing.assert_allclose(turned[0, 0].numpy(), [1.0, 0.0, 0.0], atol=1e-6)


def test_projection_hand_computed():
    points = tf.constant([[[0.0, 0.0, 0.0], [1.0, 0.5, 2.0], [-0.2, -0.3, -1.0]]])
    pixels, depth = camera.project(points, 224)
    f, c = 1015.0, 111.5
    expected = [[c, c], [c + f * 1.0 / 8.0, c - f * 0.5 / 8.0], [c - f * 0.2 / 11.0, c + f * 0.3 / 11.0]]
    np.testing.assert_allclose(pixels[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(depth[0].numpy(), [10.0, 8.0, 11.0], rtol=1e-6)
    # Scaling the image scales the focal length: the same point lands proportionally.
    pixels_512, _ = camera.project(points, 512)
    np.testing.assert_allclose((pixels_512[0, 1].numpy() - 255.5) / 512, (pixels[0, 1].numpy() - 111.5) / 224,
                               rtol=1e-5)


def test_clip_space_agrees_with_projection():
    points = tf.random.uniform([2, 50, 3], -1.0, 1.0, seed=1)
    pixels, _ = camera.project(points, 224)
    clip = camera.clip_space(points, 224)
    ndc = clip[..., :2] / clip[..., 3:]
    np.testing.assert_allclose(((ndc + 1.0) * 224 - 1.0) / 2.0, pixels.numpy(), atol=1e-3)


def test_vertex_normals_of_a_sphere_are_radial():
    # Icosphere-like UV sphere: normals must point along the position.
    lat, lon = np.meshgrid(np.linspace(0.2, math.pi - 0.2, 20), np.linspace(0, 2 * math.pi, 40, endpoint=False),
                           indexing="ij")
    points = np.stack([np.sin(lat) * np.cos(lon), np.sin(lat) * np.sin(lon), np.cos(lat)], -1).reshape(-1, 3)
    index = np.arange(points.shape[0]).reshape(20, 40)
    a, b = index[:-1], np.roll(index, -1, axis=1)[:-1]
    c, d = np.roll(index, -1, axis=1)[1:], index[1:]
    # Orientation chosen so that the cross product points outward.
    tris = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    table = vertex_triangle_table(tris, len(points))
    normals = geometry.vertex_normals(tf.constant(points[None], tf.float32), tris, table)[0].numpy()
    interior = (index[1:-1]).reshape(-1)  # rows away from the open poles
    cosine = np.sum(normals[interior] * points[interior], axis=-1)
    assert cosine.min() > 0.995


def test_sh_basis_at_north_pole():
    values = sh.sh_basis(tf.constant([[0.0, 0.0, 1.0]]))[0].numpy()
    np.testing.assert_allclose(values, [0.886227, 0, 1.772454, 0, 0, 0, 1.401248, 0, 0], atol=1e-5)


def _sphere_quadrature(n_theta=24, n_phi=48):
    """Gauss-Legendre in cos(theta) x uniform phi: exact for polynomials of degree < 2 n_theta."""
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * math.pi / n_phi
    cos_t, p = np.meshgrid(nodes, phi, indexing="ij")
    sin_t = np.sqrt(1 - cos_t ** 2)
    dirs = np.stack([sin_t * np.cos(p), sin_t * np.sin(p), cos_t], -1).reshape(-1, 3)
    w = np.repeat(weights, n_phi) * (2 * math.pi / n_phi)
    return dirs, w, np.arccos(cos_t).reshape(-1), p.reshape(-1)


def test_sh_basis_orthonormal_on_sphere():
    dirs, w, _, _ = _sphere_quadrature()
    y = sh.sh_basis_orthonormal(tf.constant(dirs, tf.float32)).numpy().astype(np.float64)
    gram = (y * w[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(9), atol=1e-5)


def test_sh_basis_matches_tensorflow_graphics_up_to_sign():
    dirs, _, theta, phi = _sphere_quadrature(8, 16)
    l, m = tfg_sh.generate_l_m_permutations(2)
    l = tf.broadcast_to(tf.constant(l), [len(dirs), 9])
    m = tf.broadcast_to(tf.constant(m), [len(dirs), 9])
    theirs = tfg_sh.evaluate_spherical_harmonics(l, m, tf.constant(theta[:, None]), tf.constant(phi[:, None])).numpy()
    ours = sh.sh_basis_orthonormal(tf.constant(dirs, tf.float32)).numpy()
    for k in range(9):
        sign = np.sign(np.dot(ours[:, k], theirs[:, k]))
        np.testing.assert_allclose(ours[:, k], sign * theirs[:, k], atol=1e-4, err_msg=f"basis {k}")


def test_shading_is_linear_and_uses_channel_major_layout():
    normals = tf.math.l2_normalize(tf.random.normal([4, 3], seed=2), axis=-1)
    gamma = np.zeros(27, np.float32)
    gamma[9 + 2] = 0.5   # green channel, basis 2 (z)
    shaded = sh.shading(normals, tf.constant(gamma)).numpy()
    ambient = 0.8 * 0.886227
    basis = sh.sh_basis(normals).numpy()
    np.testing.assert_allclose(shaded[:, 0], ambient, atol=1e-5)
    np.testing.assert_allclose(shaded[:, 1], ambient + 0.5 * basis[:, 2], atol=1e-5)
    np.testing.assert_allclose(shaded[:, 2], ambient, atol=1e-5)
    a, b = np.random.default_rng(0).normal(size=(2, 27)).astype(np.float32)
    lhs = sh.shading(normals, a + b) - sh.shading(normals, np.zeros(27, np.float32))
    rhs = (sh.shading(normals, a) - sh.shading(normals, np.zeros(27, np.float32))
           + sh.shading(normals, b) - sh.shading(normals, np.zeros(27, np.float32)))
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), atol=1e-4)


def test_environment_projection_recovers_constant_and_directional_light():
    dirs, w, _, _ = _sphere_quadrature()
    # A uniform white environment of radiance 1 gives irradiance pi everywhere -> shading 1 for albedo 1.
    gamma = sh.project_irradiance_to_sh(dirs, np.ones((len(dirs), 3)), w)
    normals = tf.math.l2_normalize(tf.random.normal([16, 3], seed=3), axis=-1)
    np.testing.assert_allclose(sh.shading(normals, gamma).numpy(), 1.0, atol=1e-4)
    # A smooth lobe max(0, z)^1: irradiance at the pole = integral of cos^2 over the upper hemisphere = 2 pi / 3.
    radiance = np.clip(dirs[:, 2:3], 0, None) * np.ones((1, 3))
    gamma = sh.project_irradiance_to_sh(dirs, radiance, w)
    pole = sh.shading(tf.constant([[0.0, 0.0, 1.0]]), gamma).numpy()[0]
    np.testing.assert_allclose(pole, 2.0 / 3.0, rtol=0.03)  # order-2 SH truncation error only
