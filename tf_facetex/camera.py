"""Pose and perspective camera of Deng et al. 2019, on tensorflow-graphics.

Conventions (the whole project uses them):
- model space: decimetres, face towards +z, y up;
- pose: Euler angles (pitch about x, yaw about y, roll about z), ``R = Rz @ Ry @ Rx`` applied to column
  vectors (Deng's ``S @ (Rz Ry Rx)^T`` for row vectors), then a translation;
- camera: at z = +10 looking down -z, so depth = 10 - z; focal 1015 px for a 224 px image, scaled with
  the image size; principal point at the image centre;
- image coordinates: x right, y down, integer pixel centres (pixel (row i, col j) is centred at
  x = j, y = i), as OpenCV and dlib use. The principal point of a W x H image is ((W-1)/2, (H-1)/2),
  i.e. 111.5 at 224 px (Deng writes 112 with the same integer-centre landmarks: a half-pixel offset).
"""
import tensorflow as tf
from tensorflow_graphics.geometry.transformation import rotation_matrix_3d
from tensorflow_graphics.rendering.camera import perspective

from tf_facetex.conventions import CROP_SIZE

FOCAL_AT_224 = 1015.0
CAMERA_DISTANCE = 10.0
REFERENCE_SIZE = CROP_SIZE            # Deng's focal is defined at the aligned crop size


def focal_length(image_size) -> float:
    """Focal length in pixels for a square image of ``image_size`` px (1015 at 224)."""
    return FOCAL_AT_224 * float(image_size) / REFERENCE_SIZE


def principal_point(image_size) -> float:
    """The image centre in integer-pixel-centre coordinates ((size - 1) / 2)."""
    return (float(image_size) - 1.0) / 2.0


def rotation_matrix(angles):
    """Rotation matrices from Euler angles.

    Args:
      angles: [..., 3] (pitch, yaw, roll) in radians.
    Returns:
      [..., 3, 3] ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``.
    """
    return rotation_matrix_3d.from_euler(tf.convert_to_tensor(angles, tf.float32))


def rigid_transform(vertices, angles, translation):
    """Poses vertices: ``R v + t``.

    Args:
      vertices: [B, N, 3] model-space points.
      angles: [B, 3] Euler angles (radians).
      translation: [B, 3] translation (decimetres).
    Returns:
      [B, N, 3] posed points (still in world space; the camera sits at z = +10).
    """
    rotation = rotation_matrix(angles)
    return tf.einsum("bij,bnj->bni", rotation, vertices) + translation[:, None, :]


def world_to_camera(points):
    """World (y up, camera at z=+10 looking at -z) -> camera frame of tfg (x right, y down, z forward).

    Args:
      points: [..., 3].
    Returns:
      [..., 3] with z = depth = 10 - z_world (positive in front of the camera).
    """
    x, y, z = tf.unstack(points, axis=-1)
    return tf.stack([x, -y, CAMERA_DISTANCE - z], axis=-1)


def project(points, image_size):
    """Perspective projection of posed world points to pixels.

    Args:
      points: [..., 3] posed world points.
      image_size: the square image size in pixels (224 in the method).
    Returns:
      pixels: [..., 2] (x, y) image coordinates (y down, integer pixel centres).
      depth: [...] distance along the viewing axis (10 - z).
    """
    camera_points = world_to_camera(points)
    focal = focal_length(image_size)
    centre = principal_point(image_size)
    batch_shape = tf.shape(camera_points)[:-1]
    focal_xy = tf.fill(tf.concat([batch_shape, [2]], 0), focal)
    centre_xy = tf.fill(tf.concat([batch_shape, [2]], 0), centre)
    pixels = perspective.project(camera_points, focal_xy, centre_xy)
    return pixels, camera_points[..., 2]


def clip_space(points, image_size, near=0.1, far=20.0):
    """[..., 4] homogeneous clip coordinates of posed points, matching `project` after division.

    NDC x = (2 x_px + 1) / size - 1 and NDC y = (2 y_px + 1) / size - 1 (y down), z in [-1, 1] between
    ``near`` and ``far`` depths. Useful for rasterisers that work in clip space.
    """
    camera_points = world_to_camera(points)
    x, y, depth = tf.unstack(camera_points, axis=-1)
    size = float(image_size)
    scale = 2.0 * focal_length(image_size) / size
    offset = (2.0 * principal_point(image_size) + 1.0) / size - 1.0
    clip_x = scale * x + offset * depth
    clip_y = scale * y + offset * depth
    clip_z = ((far + near) * depth - 2.0 * far * near) / (far - near)
    return tf.stack([clip_x, clip_y, clip_z, depth], axis=-1)
