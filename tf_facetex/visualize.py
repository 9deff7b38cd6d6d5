"""Figures for people: image grids with labels, and a quick face-model preview.

Everything returns uint8 RGB arrays or writes PNGs atomically (`io_utils.write_image`).
"""
import cv2
import numpy as np

from tf_facetex import io_utils
from tf_facetex.conventions import CROP_SIZE

PREVIEW_LIGHT = np.array([0.2, 0.0, 0.35, 0.0, 0.0, 0.0, -0.05, 0.0, 0.0] * 3, np.float32)  # from above-front


def to_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def label(image, text, scale=0.4) -> np.ndarray:
    """Draws ``text`` on a dark band at the top of a uint8 RGB image (returns a copy)."""
    image = to_uint8(image).copy()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    cv2.rectangle(image, (0, 0), (image.shape[1], int(16 * scale / 0.4)), (0, 0, 0), -1)
    cv2.putText(image, text, (3, int(12 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return image


def grid(rows, pad=2, background=255) -> np.ndarray:
    """Stacks a list of rows (lists of equally sized HxWx3 images) into one uint8 image."""
    rows = [[to_uint8(cell) for cell in row] for row in rows]
    h, w = rows[0][0].shape[:2]
    cols = max(len(row) for row in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell.ndim == 2:
                cell = np.repeat(cell[..., None], 3, axis=-1)
            out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = cell[..., :3]
    return out


def splat_render(vertices, normals, albedo, size=CROP_SIZE, light=PREVIEW_LIGHT, background=0.15):
    """A point-splat preview of a posed mesh (no rasteriser): vertices drawn as discs, far to near.

    Args:
      vertices: [N, 3] posed world points; normals: [N, 3]; albedo: [N, 3] in [0, 1].
    Returns:
      [size, size, 3] uint8.
    """
    # Lazy: the figure helpers above are numpy / OpenCV only; TensorFlow loads when a face is rendered.
    import tensorflow as tf

    from tf_facetex import camera, sh

    pixels, depth = camera.project(tf.constant(vertices[None], tf.float32), size)
    colour = sh.shade(tf.constant(albedo, tf.float32), tf.constant(normals, tf.float32), light).numpy()
    pixels, depth = pixels[0].numpy(), depth[0].numpy()
    facing = normals[:, 2] > 0
    image = np.full((size, size, 3), background, np.float32)
    radius = max(1, int(round(size / 224 * 1.5)))
    for i in np.argsort(-depth):
        if facing[i]:
            cv2.circle(image, (int(round(pixels[i, 0])), int(round(pixels[i, 1]))), radius,
                       tuple(float(v) for v in np.clip(colour[i], 0, 1)), -1)
    return to_uint8(image)


def face_model_grid(model, out_path, num_modes=3, size=CROP_SIZE):
    """Writes a PNG: the mean face, then rows of -s / 0 / +s for the first identity and expression modes.

    s = 3 (sigma) for PCA modes; for blend-shape expressions (ICT's ARKit shapes, weights in [0, 1]) the
    row shows weights -1 / 0 / +1.
    """
    from tf_facetex.face_model import FaceDecoder

    decoder = FaceDecoder(model)
    layout = decoder.layout
    blendshapes = bool(model.exp_names) and not model.exp_names[0].startswith("exp_")
    rows, names = [], []
    for kind, count, step in (("id", model.num_id, 3.0), ("exp", model.num_exp, 1.0 if blendshapes else 3.0)):
        for k in range(min(num_modes, count)):
            coeffs = np.zeros((3, layout.size), np.float32)
            coeffs[:, layout.slices[kind].start + k] = [-step, 0.0, step]
            decoded = decoder(coeffs)
            cells = []
            for b, weight in enumerate((-step, 0.0, step)):
                cell = splat_render(decoded["vertices"][b].numpy(), decoded["normals"][b].numpy(),
                                    decoded["albedo"][b].numpy(), size)
                name = model.exp_names[k] if kind == "exp" and model.exp_names else f"{kind}[{k}]"
                cells.append(label(cell, f"{name} {weight:+g}"))
            rows.append(cells)
            names.append(kind)
    return io_utils.write_image(out_path, grid(rows))
