"""Second-order spherical-harmonics (SH) Lambertian shading in Deng et al. 2019's parameterisation.

- 9 real SH basis functions (bands 0-2) with the Lambertian convolution constants folded in
  (``A_l * c_l``), in Deng's order and signs: [1, -y, z, -x, xy, -yz, 3z^2 - 1, -xz, x^2 - y^2].
- 27 coefficients per colour image, channel-major ``[R0..R8, G0..G8, B0..B8]`` (the layout of
  Deng's gamma and of the paper's 27-channel light map).
- An ambient 0.8 is added to the DC coefficient of every channel at shading time, so zero coefficients
  shade to a uniform grey 0.8 * 0.886 instead of black; the stored coefficients never carry it.
- Shading = sum_k Y_k(n) * gamma_{c,k}; colour = albedo * shading. No clamping.

`sh_basis_orthonormal` is the same basis without the Lambertian constants; it is orthonormal on the
sphere (tested by quadrature) and equals tensorflow-graphics' real SH up to the sign convention.
"""
import math

import numpy as np
import tensorflow as tf

NUM_BANDS = 3
NUM_BASIS = 9
NUM_COEFFS = 27
AMBIENT_DC = 0.8

# Deng's band constants a_l and SH normalisations c_l. Note: Deng's a_1 = 2 pi / sqrt(3) and
# a_2 = 2 pi / sqrt(8) are not the exact Lambertian kernel A_l = (pi, 2 pi / 3, pi / 4) of Ramamoorthi &
# Hanrahan; we keep Deng's so that gamma means what it means in the Deng et al. line of work, and account
# for the difference where a physical environment is projected (`project_irradiance_to_sh`).
_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
LAMBERTIAN_KERNEL = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
      3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
# Per-basis factors of Deng's shading basis (a_l c_l with the band-2 sub-factors).
LAMBERTIAN_FACTORS = np.array([
    _A[0] * _C[0],
    _A[1] * _C[1], _A[1] * _C[1], _A[1] * _C[1],
    _A[2] * _C[2], _A[2] * _C[2], _A[2] * _C[2] / (2.0 * math.sqrt(3.0)), _A[2] * _C[2], _A[2] * _C[2] / 2.0,
], np.float64)
# Factors turning the monomials below into the orthonormal real SH (same signs as Deng).
ORTHONORMAL_FACTORS = np.array([
    _C[0], _C[1], _C[1], _C[1], _C[2], _C[2], _C[2] / (2.0 * math.sqrt(3.0)), _C[2], _C[2] / 2.0,
], np.float64)


def _monomials(normals):
    """[..., 3] unit normals -> [..., 9] [1, -y, z, -x, xy, -yz, 3z^2 - 1, -xz, x^2 - y^2]."""
    x, y, z = tf.unstack(normals, axis=-1)
    return tf.stack([tf.ones_like(x), -y, z, -x, x * y, -y * z, 3.0 * z * z - 1.0, -x * z, x * x - y * y], axis=-1)


def sh_basis(normals):
    """Deng's Lambertian-folded SH basis.

    Args:
      normals: [..., 3] unit normals (camera frame for the method's default).
    Returns:
      [..., 9] basis values; at n = (0, 0, 1): [0.8862, 0, 1.7725, 0, 0, 0, 1.4012, 0, 0].
    """
    normals = tf.convert_to_tensor(normals, tf.float32)
    return _monomials(normals) * tf.constant(LAMBERTIAN_FACTORS, tf.float32)


def sh_basis_orthonormal(normals):
    """The orthonormal real SH basis (no Lambertian constants), same order and signs: [..., 3] -> [..., 9]."""
    normals = tf.convert_to_tensor(normals, tf.float32)
    return _monomials(normals) * tf.constant(ORTHONORMAL_FACTORS, tf.float32)


def coeffs_to_matrix(sh_coeffs):
    """[..., 27] channel-major coefficients -> [..., 3, 9] (RGB x basis), without the ambient offset."""
    sh_coeffs = tf.convert_to_tensor(sh_coeffs, tf.float32)
    return tf.reshape(sh_coeffs, tf.concat([tf.shape(sh_coeffs)[:-1], [3, NUM_BASIS]], 0))


def with_ambient(sh_coeffs):
    """Adds the 0.8 ambient to the DC term of each colour channel: [..., 27] -> [..., 27]."""
    offset = np.zeros(NUM_COEFFS, np.float32)
    offset[0::NUM_BASIS] = AMBIENT_DC
    return tf.convert_to_tensor(sh_coeffs, tf.float32) + offset


def shading(normals, sh_coeffs):
    """Lambertian SH irradiance per colour channel.

    Args:
      normals: [..., 3] unit normals.
      sh_coeffs: [..., 27] coefficients broadcastable against ``normals[..., :1]`` (a global gamma
        [B, 1, 27] for [B, N, 3] normals, or a per-texel map [B, H, W, 27] for [B, H, W, 3] normals).
    Returns:
      [..., 3] shading (multiply by albedo to get the colour).
    """
    basis = sh_basis(normals)[..., None, :]                     # [..., 1, 9]
    gamma = coeffs_to_matrix(with_ambient(sh_coeffs))          # [..., 3, 9]
    return tf.reduce_sum(basis * gamma, axis=-1)


def shading_uv(normals_uv, light):
    """Per-texel SH shading of a normal map: normals_uv [B, S, S, 3] with a light map [B, S, S, 27] or a global
    gamma [B, 27] -> [B, S, S, 3] (`shading`, the 0.8 ambient added there)."""
    light = tf.convert_to_tensor(light, tf.float32)
    if light.shape.rank == 2:
        light = light[:, tf.newaxis, tf.newaxis, :]
    return shading(normals_uv, light)


def shade(albedo, normals, sh_coeffs):
    """Lambertian colour ``albedo * shading(normals, sh_coeffs)``: [..., 3] each -> [..., 3]."""
    return albedo * shading(normals, sh_coeffs)


def project_irradiance_to_sh(directions, radiance, solid_angles):
    """Projects an environment's radiance onto Deng's 27 coefficients (for relighting).

    The irradiance of a Lambertian surface is E(n) = sum_k A_l L_k Y_k(n) with L_k = sum_w L(w) Y_k(w) dw
    over the orthonormal basis Y_k and the exact kernel A_l. Deng's shading basis is a_l Y_k with his
    constants a_l, and a surface of albedo rho reflects rho E / pi, so gamma_k = A_l L_k / (a_l pi)
    (minus the ambient offset added at shading).

    Args:
      directions: [M, 3] unit directions of environment samples (camera/world frame, y up).
      radiance: [M, 3] linear RGB radiance.
      solid_angles: [M] solid angle of each sample (they sum to 4 pi).
    Returns:
      [27] coefficients (ambient offset removed).
    """
    basis = sh_basis_orthonormal(directions)                               # [M, 9]
    weights = tf.convert_to_tensor(solid_angles, tf.float32)[:, None, None]
    radiance = tf.convert_to_tensor(radiance, tf.float32)[:, :, None]      # [M, 3, 1]
    lm = tf.reduce_sum(weights * basis[:, None, :] * radiance, axis=0)     # [3, 9]
    band = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
    kernel_ratio = np.array([LAMBERTIAN_KERNEL[b] / _A[b] for b in band], np.float32)
    gamma = tf.reshape(lm * kernel_ratio / math.pi, [NUM_COEFFS])
    return gamma - with_ambient(tf.zeros([NUM_COEFFS]))
