"""Closed-form initial pose from 2D-3D landmark correspondences (scaled orthographic, "POS").

The affine camera that maps the mean face's 3D landmarks to the detected 2D landmarks is solved by least
squares (as Deng et al.'s alignment does), its rows are turned into the nearest rotation, and the scale
gives the depth through the perspective camera (scale = focal / (10 - t_z)). Good enough to start the
iterative fit inside the basin of the right pose, even at large yaw.
"""
import numpy as np

from tf_facetex import camera


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """[..., 3, 3] ``Rz @ Ry @ Rx`` -> [..., 3] (pitch, yaw, roll) in radians (inverse of camera.rotation_matrix)."""
    r = np.asarray(rotation, np.float64)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], axis=-1)


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """[3, 3] -> the closest proper rotation (SVD projection)."""
    u, _, vt = np.linalg.svd(matrix)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def initial_pose(landmarks_2d: np.ndarray, landmarks_3d: np.ndarray, image_size: int, weights=None):
    """Pose that projects ``landmarks_3d`` close to ``landmarks_2d``.

    Args:
      landmarks_2d: [B, K, 2] pixel coordinates (y down, integer pixel centres).
      landmarks_3d: [K, 3] model-space landmarks (e.g. the mean face's).
      image_size: square image size in pixels.
      weights: optional [K] per-landmark weights.
    Returns:
      angles [B, 3] and translation [B, 3] (float32) in `camera` conventions.
    """
    landmarks_2d = np.asarray(landmarks_2d, np.float64)
    points = np.asarray(landmarks_3d, np.float64)
    k = points.shape[0]
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    focal, centre = camera.focal_length(image_size), camera.principal_point(image_size)
    design = np.concatenate([points, np.ones((k, 1))], axis=1) * np.sqrt(w)[:, None]   # [K, 4]
    angles, translations = [], []
    for target in landmarks_2d:
        # World-oriented image coordinates: x right, y up, origin at the principal point.
        xy = np.stack([target[:, 0] - centre, centre - target[:, 1]], axis=1) * np.sqrt(w)[:, None]
        affine, *_ = np.linalg.lstsq(design, xy, rcond=None)                                # [4, 2]
        row1, row2 = affine[:3, 0], affine[:3, 1]
        scale = 0.5 * (np.linalg.norm(row1) + np.linalg.norm(row2))
        r1 = row1 / np.linalg.norm(row1)
        r2 = row2 / np.linalg.norm(row2)
        rotation = nearest_rotation(np.stack([r1, r2, np.cross(r1, r2)]))
        depth = focal / scale
        # Points at model depth z project with scale focal / (depth_of_origin - z); the origin's depth is
        # 10 - t_z. The affine offset is scale * t_xy.
        t_z = camera.CAMERA_DISTANCE - depth
        t_xy = affine[3] / scale
        angles.append(euler_from_rotation(rotation))
        translations.append([t_xy[0], t_xy[1], t_z])
    return np.array(angles, np.float32), np.array(translations, np.float32)
