"""Face-chip alignment for identity networks: landmarks -> chip-to-image affine -> warped chip.

Convention: a "chip matrix" is a [2, 3] affine A that maps a chip pixel (x, y, 1) to the image pixel it
samples, both with integer pixel centres (x right, y down). Warping with A is pure bilinear sampling,
so it is differentiable w.r.t. the image (and A), and composes with the TF warp below.

dlib's chips (``get_face_chip_details(shape, size, padding)`` + ``extract_image_chip``), as dlib computes
them (``dlib/image_transforms/interpolation.h``, ``dlib/geometry/drectangle.h``, ``image_pyramid.h``):

1. least-squares similarity T (chip -> image) from dlib's mean-face template to the landmarks; for 68
   points only the nose, eyes and outer/upper mouth are used (no jaw, brows or lower lip);
2. T is reduced to a rotation angle, a scale s and the image point c = T(size/2, size/2); the chip's
   corner pixels 0 and size-1 land on c -/+ (size*s - 1)/2 along the rotated axes, so the effective
   per-pixel scale is (size*s - 1)/(size - 1) (slightly different from s);
3. when the chip is a strong reduction (source width > about 2 * size), dlib first builds a 2:1 image
   pyramid ([1 4 6 4 1]^2 / 256 filter, integer arithmetic) and samples the coarsest level that is
   still larger than the chip, mapping points down with ``p / 2 - (1.25, 0.75)`` per level (dlib's own
   constant, kept as is so the chips agree); then bilinear sampling, black where the 2x2 neighbourhood
   leaves the image.

ArcFace chips (insightface / deepface layout): 112x112, similarity from 5 points (eye centres, nose tip,
mouth corners) to insightface's fixed template, bilinear ``warpAffine`` without a pyramid.
"""
import math

import cv2
import numpy as np
import tensorflow as tf

from tf_facetex.data.align import estimate_similarity, five_points

DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25

# dlib's mean face for 68-point landmarks 17..67 (x, y in [0, 1]); data from get_face_chip_details.
_DLIB_MEAN_FACE_17_67_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
    0.42689)
_DLIB_MEAN_FACE_17_67_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
    0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
    0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
    0.831803, 0.824182)
# Landmarks dlib aligns on: nose, eyes, mouth outline except the lower lip (indices into the 68 points).
DLIB_ALIGN_INDICES_68 = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
# dlib's template for its own 5-point predictor (shape_predictor_5_face_landmarks), in predictor order.
_DLIB_MEAN_FACE_5 = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
                     (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
                     (0.4901123135679, 0.6277975316475))

ARCFACE_CHIP_SIZE = 112
# insightface's 112x112 ArcFace template: image-left eye, image-right eye, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)

# dlib's pyramid_down<2>: level coordinates = p / 2 - offset (x, y).
_PYRAMID_OFFSET = np.array([1.25, 0.75])
_PYRAMID_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0])


# ----------------------------------------------------------------------------------------------------
# Templates and similarity fits (numpy)


def dlib_template(num_landmarks, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING):
    """dlib's chip-space template for a 68- or 5-point shape.

    Returns:
      (indices, points): the landmark indices used, int [K], and their chip positions, float64 [K, 2].
    """
    if num_landmarks == 68:
        indices = np.array(DLIB_ALIGN_INDICES_68)
        unit = np.stack([np.take(_DLIB_MEAN_FACE_17_67_X, indices - 17),
                         np.take(_DLIB_MEAN_FACE_17_67_Y, indices - 17)], axis=-1)
    elif num_landmarks == 5:
        indices = np.arange(5)
        unit = np.array(_DLIB_MEAN_FACE_5)
    else:
        raise ValueError(f"dlib chips need 68 or 5 landmarks, got {num_landmarks}")
    return indices, (padding + unit) / (2.0 * padding + 1.0) * size


def _dlib_chip_geometry(landmarks, size, padding):
    """dlib's chip_details: (centre c [2], chip width in image pixels, angle, rotation R [2, 2])."""
    landmarks = np.asarray(landmarks, np.float64)
    indices, template = dlib_template(landmarks.shape[0], size, padding)
    similarity = estimate_similarity(template, landmarks[indices])
    linear = similarity[:, :2]
    angle = math.atan2(linear[1, 0], linear[0, 0])
    scale = math.hypot(linear[0, 0], linear[1, 0])
    centre = linear @ np.array([size / 2.0, size / 2.0]) + similarity[:, 2]
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return centre, size * scale, angle, rotation


def dlib_chip_matrix(landmarks, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING):
    """Chip-to-image affine of dlib's ``get_face_chip_details(shape, size, padding)`` at full resolution.

    Args:
      landmarks: [68, 2] or [5, 2] (x, y) image pixels (dlib's 68- or 5-point predictor layout).
    Returns:
      [2, 3] float64 A: image_xy = A @ [chip_x, chip_y, 1].
    """
    centre, width, _, rotation = _dlib_chip_geometry(landmarks, size, padding)
    step = (width - 1.0) / (size - 1.0)
    linear = step * rotation
    return np.concatenate([linear, (centre - linear @ np.full(2, (size - 1) / 2.0))[:, None]], axis=1)


def arcface_chip_matrix(landmarks, size=ARCFACE_CHIP_SIZE):
    """Chip-to-image affine of the insightface ArcFace alignment (5-point template, 112 px scaled to size).

    Args:
      landmarks: [68, 2] (reduced with ``five_points``) or [5, 2] in ARCFACE_TEMPLATE_112's order.
    Returns:
      [2, 3] float64.
    """
    landmarks = np.asarray(landmarks, np.float64)
    points = five_points(landmarks) if landmarks.shape[0] == 68 else landmarks
    if points.shape != (5, 2):
        raise ValueError(f"ArcFace alignment needs 68 or 5 landmarks, got {landmarks.shape}")
    return estimate_similarity(ARCFACE_TEMPLATE_112 * (size / 112.0), points)


# ----------------------------------------------------------------------------------------------------
# Chip extraction (numpy)


def warp_chip(image, chip_matrix, size):
    """Bilinear chip through cv2 (black outside): [H, W, C] -> [size, size, C], same dtype."""
    return cv2.warpAffine(np.ascontiguousarray(image), np.asarray(chip_matrix, np.float64), (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _dlib_pyramid_down(image):
    """One level of dlib's pyramid_down<2> on uint8: 5x5 binomial filter, 'valid', stride 2, integer
    truncation; [H, W, C] -> [(H - 3) // 2, (W - 3) // 2, C] (output pixel (r, c) centred on (2r+2, 2c+2))."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0) + image.shape[2:], np.uint8)
    wide = image.astype(np.int64)
    out_cols = (cols - 3) // 2
    horizontal = sum(int(w) * wide[:, j:j + 2 * out_cols:2] for j, w in enumerate(_PYRAMID_TAPS))
    out_rows = len(range(2, rows - 2, 2))
    vertical = sum(int(w) * horizontal[i:i + 2 * out_rows:2] for i, w in enumerate(_PYRAMID_TAPS))
    return (vertical // 256).astype(np.uint8)


def _bilinear_dlib(image, chip_matrix, size):
    """dlib's transform_image + interpolate_bilinear: black unless all 4 neighbours are inside; values
    truncated to uint8 like dlib's assign_pixel. [H, W, C] uint8 -> [size, size, C] uint8."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = chip_matrix[0, 0] * xs + chip_matrix[0, 1] * ys + chip_matrix[0, 2]
    py = chip_matrix[1, 0] * xs + chip_matrix[1, 1] * ys + chip_matrix[1, 2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    rows, cols = image.shape[:2]
    inside = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    left, top = np.clip(left, 0, max(cols - 2, 0)), np.clip(top, 0, max(rows - 2, 0))
    fx, fy = (px - np.floor(px))[..., None], (py - np.floor(py))[..., None]
    img = image.astype(np.float64)
    value = ((1 - fy) * ((1 - fx) * img[top, left] + fx * img[top, left + 1])
             + fy * ((1 - fx) * img[top + 1, left] + fx * img[top + 1, left + 1]))
    value = np.where(inside[..., None], value, 0.0)
    return np.clip(value, 0, 255).astype(np.uint8)


def extract_dlib_chip(image, landmarks, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING):
    """The chip ``dlib.get_face_chip(image, shape, size, padding)`` returns, computed without dlib.

    Args:
      image: [H, W, 3] uint8 RGB.
      landmarks: [68, 2] or [5, 2] float (x, y).
    Returns:
      [size, size, 3] uint8.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError("extract_dlib_chip reproduces dlib's integer pipeline and needs a uint8 image")
    centre, width, angle, rotation = _dlib_chip_geometry(landmarks, size, padding)
    half = (width - 1.0) / 2.0
    chip_area = float(size * size)

    def rect_area(w):
        return w * w

    # Pyramid depth (dlib: keep halving while the halved chip rectangle is still larger than the chip).
    depth, grow, down_width = 0, 2.0, (width + 1.0) / 2.0        # width of rect_down(rect)
    while rect_area(down_width) > chip_area:
        down_width = (down_width + 1.0) / 2.0
        depth += 1
        grow = grow * 2 + 2
    # Bounding box of the rotated chip, grown for the filter support, clipped, rounded like dlib.
    corners = centre + (np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]]) * half) @ rotation.T
    lo = np.maximum(corners.min(0) - grow, 0.0)
    hi = np.minimum(corners.max(0) + grow, [image.shape[1] - 1, image.shape[0] - 1])
    box_lo, box_hi = np.floor(lo + 0.5).astype(int), np.floor(hi + 0.5).astype(int)
    if np.any(box_hi < box_lo):
        return np.zeros((size, size, 3), np.uint8)
    source = image[box_lo[1]:box_hi[1] + 1, box_lo[0]:box_hi[0] + 1]

    matrix = dlib_chip_matrix(landmarks, size, padding)
    matrix[:, 2] -= box_lo                                        # into the bounding-box sub-image
    level, down_width = -1, width
    while rect_area((down_width + 1.0) / 2.0) > chip_area:
        level += 1
        down_width = (down_width + 1.0) / 2.0
        source = _dlib_pyramid_down(source)
        matrix = np.concatenate([matrix[:, :2] / 2.0, (matrix[:, 2] / 2.0 - _PYRAMID_OFFSET)[:, None]], axis=1)
    return _bilinear_dlib(source, matrix, size)


# ----------------------------------------------------------------------------------------------------
# TensorFlow: differentiable matrices and warps


def fit_similarity_tf(src, dst):
    """Batched least-squares similarity in TF (differentiable w.r.t. dst and src).

    Args:
      src: [K, 2] or [B, K, 2]; dst: [B, K, 2].
    Returns:
      [B, 2, 3] with dst ~= M @ [src; 1].
    """
    dst = tf.convert_to_tensor(dst, tf.float32)
    src = tf.broadcast_to(tf.cast(src, tf.float32), tf.shape(dst))
    src_mean = tf.reduce_mean(src, axis=1, keepdims=True)
    dst_mean = tf.reduce_mean(dst, axis=1, keepdims=True)
    s, d = src - src_mean, dst - dst_mean
    norm = tf.reduce_sum(s ** 2, axis=[1, 2])
    a = tf.reduce_sum(s * d, axis=[1, 2]) / norm
    b = tf.reduce_sum(s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0], axis=1) / norm
    linear = tf.stack([tf.stack([a, -b], -1), tf.stack([b, a], -1)], axis=1)        # [B, 2, 2]
    translation = dst_mean[:, 0] - tf.linalg.matvec(linear, src_mean[:, 0])         # [B, 2]
    return tf.concat([linear, translation[..., None]], axis=-1)


def dlib_chip_matrices_tf(landmarks, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING):
    """TF version of ``dlib_chip_matrix`` for a batch; differentiable w.r.t. the landmarks.

    Args:
      landmarks: [B, 68, 2] or [B, 5, 2] float (static landmark count).
    Returns:
      [B, 2, 3] float32 chip-to-image matrices.
    """
    landmarks = tf.convert_to_tensor(landmarks, tf.float32)
    indices, template = dlib_template(int(landmarks.shape[1]), size, padding)
    similarity = fit_similarity_tf(template.astype(np.float32), tf.gather(landmarks, indices, axis=1))
    linear = similarity[..., :2]
    scale = tf.norm(linear[..., 0], axis=-1)                                         # [B]
    centre = tf.linalg.matvec(linear, tf.constant([size / 2.0, size / 2.0])) + similarity[..., 2]
    rotation = linear / scale[:, None, None]
    step = (size * scale - 1.0) / (size - 1.0)
    chip_linear = step[:, None, None] * rotation
    offset = tf.linalg.matvec(chip_linear, tf.fill([2], (size - 1) / 2.0))
    return tf.concat([chip_linear, (centre - offset)[..., None]], axis=-1)


def arcface_chip_matrices_tf(landmarks, size=ARCFACE_CHIP_SIZE):
    """TF version of ``arcface_chip_matrix``: [B, 68 or 5, 2] -> [B, 2, 3]."""
    landmarks = tf.convert_to_tensor(landmarks, tf.float32)
    if landmarks.shape[1] == 68:
        landmarks = tf.stack([tf.reduce_mean(landmarks[:, 36:42], 1), tf.reduce_mean(landmarks[:, 42:48], 1),
                              landmarks[:, 30], landmarks[:, 48], landmarks[:, 54]], axis=1)
    return fit_similarity_tf((ARCFACE_TEMPLATE_112 * (size / 112.0)).astype(np.float32), landmarks)


def _bilinear_sample_flat(flat, rows, cols, base, chip_matrices, size):
    """Bilinear chips from images stored flat, one (possibly different) image per batch element.

    Args:
      flat: [B, N, C] pixels; batch element b reads its image at flat[b, base[b] : base[b] + rows[b]*cols[b]]
        (row-major, so several pyramid levels can share one tensor).
      rows, cols, base: [B] int32.
      chip_matrices: [B, 2, 3] chip-to-image affines in that image's pixel coordinates.
    Returns:
      [B, size, size, C]; black unless the whole 2x2 neighbourhood is inside the image (dlib's rule).
    """
    ys, xs = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")
    grid = tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), tf.ones([size * size])], axis=0)  # [3, P]
    points = tf.einsum("bij,jp->bpi", chip_matrices, grid)                                      # [B, P, 2]
    px, py = points[..., 0], points[..., 1]
    left, top = tf.floor(px), tf.floor(py)
    fx, fy = (px - left)[..., None], (py - top)[..., None]
    left, top = tf.cast(left, tf.int32), tf.cast(top, tf.int32)
    rows, cols, base = rows[:, None], cols[:, None], base[:, None]
    inside = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    left = tf.clip_by_value(left, 0, tf.maximum(cols - 2, 0))
    top = tf.clip_by_value(top, 0, tf.maximum(rows - 2, 0))
    corner = base + top * cols + left                                                          # [B, P]
    # One gather for the four neighbours: [B, P, 4] indices -> [B, P, 4, C].
    neighbours = tf.gather(flat, tf.stack([corner, corner + 1, corner + cols, corner + cols + 1], -1), batch_dims=1)
    value = ((1 - fy) * ((1 - fx) * neighbours[:, :, 0] + fx * neighbours[:, :, 1])
             + fy * ((1 - fx) * neighbours[:, :, 2] + fx * neighbours[:, :, 3]))
    value = value * tf.cast(inside, value.dtype)[..., None]
    return tf.reshape(value, [tf.shape(flat)[0], size, size, tf.shape(flat)[2]])


def _pyramid_down_tf(images):
    """dlib's 2:1 pyramid step in float: 5x5 binomial, 'valid', stride 2; [B, H, W, C] -> [B, (H-3)//2, ...]."""
    taps = _PYRAMID_TAPS / 16.0
    kernel = tf.constant(np.outer(taps, taps), tf.float32)[:, :, None, None]
    kernel = tf.tile(kernel, [1, 1, images.shape[-1], 1])
    return tf.nn.depthwise_conv2d(images, kernel, strides=[1, 2, 2, 1], padding="VALID")


def _pyramid_level_down(chip_matrices):
    """Chip-to-image affines [B, 2, 3] -> the same into the next pyramid level (dlib's point_down)."""
    offset = tf.constant(_PYRAMID_OFFSET, chip_matrices.dtype)
    return tf.concat([chip_matrices[..., :2] / 2.0, (chip_matrices[..., 2] / 2.0 - offset)[..., None]], axis=-1)


def dlib_pyramid_level(chip_matrices, size, max_levels):
    """dlib's choice of pyramid level for each chip: -1 = full resolution, l = l+1 halvings.

    dlib keeps halving the chip's source rectangle, width w -> (w + 1) / 2 starting from
    w = (size - 1) * step + 1 (step = image pixels per chip pixel), while the halved width still exceeds
    the chip size, and samples the last level reached. [B, 2, 3] -> [B] int32 in [-1, max_levels - 1].
    """
    linear = chip_matrices[:, :, :2]
    step = tf.sqrt(tf.abs(linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]))
    width = (size - 1.0) * step + 1.0
    level = tf.fill(tf.shape(width), -1)
    for _ in range(max_levels):
        width = (width + 1.0) / 2.0
        level += tf.cast(width > size, tf.int32)
    return level


def warp_to_chips(images, chip_matrices, size, antialias=True, max_levels=3):
    """Differentiable batched chip extraction (bilinear, TF ops only; usable inside tf.function / XLA).

    Args:
      images: [B, H, W, C] float.
      chip_matrices: [B, 2, 3] chip-to-image affines (``dlib_chip_matrices_tf`` / ``arcface_...``).
      size: chip side in pixels (static int).
      antialias: like dlib, sample a 2:1 pyramid level when the chip shrinks the face by more than about
        2x (without it, strong reductions alias). The level is chosen per chip by dlib's rule
        (``dlib_pyramid_level``); only that level is sampled and the gradient flows through it.
      max_levels: pyramid levels built (reductions up to about 2**(max_levels+1) are antialiased).
    Returns:
      [B, size, size, C] float32, black (0) where the chip leaves the image.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    chip_matrices = tf.convert_to_tensor(chip_matrices, tf.float32)
    rows, cols = images.shape[1], images.shape[2]
    if rows is not None and cols is not None:
        # dlib stops the pyramid at images of 8 pixels or less; so do we (static shapes only).
        side, usable = min(rows, cols), 0
        while usable < max_levels and side > 8:
            side, usable = (side - 3) // 2, usable + 1
        max_levels = usable
    if not antialias:
        max_levels = 0
    levels, matrices = [images], [chip_matrices]
    for _ in range(max_levels):
        levels.append(_pyramid_down_tf(levels[-1]))
        matrices.append(_pyramid_level_down(matrices[-1]))
    # All levels flattened into one tensor so each chip reads its own level with a single gather.
    batch, channels = tf.shape(images)[0], tf.shape(images)[3]
    flat = tf.concat([tf.reshape(level, [batch, -1, channels]) for level in levels], axis=1)
    level_rows = tf.stack([tf.shape(level)[1] for level in levels])
    level_cols = tf.stack([tf.shape(level)[2] for level in levels])
    level_base = tf.math.cumsum(level_rows * level_cols, exclusive=True)
    choice = dlib_pyramid_level(chip_matrices, size, max_levels) + 1                         # [B] in [0, L]
    chosen = tf.gather(tf.stack(matrices, axis=1), choice, batch_dims=1)                      # [B, 2, 3]
    return _bilinear_sample_flat(flat, tf.gather(level_rows, choice), tf.gather(level_cols, choice),
                                 tf.gather(level_base, choice), chosen, size)
