"""The model's parts besides the skin (eyes, teeth, gums and tongue, mouth and eye sockets): shading and rendering.

Parts (``MorphableModel.part_names`` / ``triangle_parts``) are outside the UV albedo chart: the fit never
estimates them, M_proj (`uv.projection_mask`) leaves them out, so every loss and metric on the face is what it
was without them. They only close the renders: wherever the z-buffer shows a part triangle (an eyeball in the
eye opening, the teeth and the mouth socket in an open mouth) its pixel gets the part's flat reflectance
(``part_albedo``) shaded by the global SH light of the face (the coarse gamma, or a preset), with the
interpolated vertex normals. Without parts the eye openings and an open mouth render as background: holes.

Appearance: documented defaults per part (`tf_facetex.face_model.ict.PART_ALBEDO`); the iris, the sclera and the
teeth are estimated from the photo (`estimate_part_albedo`, each group of ``ESTIMATED_GROUPS`` on its own, left
and right pooled): the per-channel median of the photo's pixels that show the fitted part, divided by the light's
shading there, when at least ``min_pixels`` of them are inside the face mask; else the default. (The photo's
sclera is darker than a white default: lids and lashes shadow it, which a flat albedo under SH light cannot
show; the estimate absorbs that.)
"""
import numpy as np
import tensorflow as tf

from tf_facetex import sh
from tf_facetex.rendering import interpolate

ESTIMATED_GROUPS = (("iris_left", "iris_right"), ("sclera_left", "sclera_right"), ("teeth",))
ALBEDO_RANGE = (0.02, 0.95)   # estimated reflectances are clipped to this (no black holes, no blown whites)


def pixel_parts(triangle_parts, triangle_id):
    """Part index of every pixel (0: skin or background): [F] int32, [B, H, W] int32 -> [B, H, W] int32."""
    parts = tf.gather(tf.convert_to_tensor(triangle_parts, tf.int32), interpolate.safe_triangle_id(triangle_id))
    return tf.where(triangle_id >= 0, parts, tf.zeros_like(parts))


def part_pixel_shading(triangles, triangle_parts, raster, gamma, vertex_normals):
    """The part pixels of a render and their shading by a global SH light, computed at those pixels only (they
    are ~1% of a render: interpolating and shading every pixel made a turntable's parts ~10x slower).

    Args:
      triangles: [F, 3] int32; triangle_parts: [F] int32 (the model's); raster: the image `Raster`.
      gamma: [B, 27] SH light; vertex_normals: [B, N, 3] camera-frame unit normals of the posed mesh.
    Returns:
      (pixels [K, 3] int64 (b, y, x) of the part pixels, part [K] int32 (> 0) their part, shading [K, 3]).
    """
    part = pixel_parts(triangle_parts, raster.triangle_id)
    pixels = tf.where(part > 0)                                                           # [K, 3]
    corners = tf.gather(tf.convert_to_tensor(triangles, tf.int32), tf.gather_nd(raster.triangle_id, pixels))
    batch = tf.repeat(pixels[:, :1], 3, axis=1)                                           # [K, 3]
    corner_normals = tf.gather_nd(tf.convert_to_tensor(vertex_normals, tf.float32),
                                  tf.stack([batch, tf.cast(corners, tf.int64)], axis=-1))    # [K, 3, 3]
    barycentrics = tf.cast(tf.gather_nd(raster.barycentrics, pixels), tf.float32)       # [K, 3]
    normals = tf.math.l2_normalize(tf.reduce_sum(corner_normals * barycentrics[..., None], axis=1), axis=-1,
                                   epsilon=1e-12)
    shading = sh.shading(normals, tf.gather(tf.convert_to_tensor(gamma, tf.float32), pixels[:, 0]))
    return pixels, tf.gather_nd(part, pixels), shading


@tf.function(autograph=False, reduce_retracing=True)
def render_parts(triangles, triangle_parts, raster, part_albedo, gamma, vertex_normals):
    """The parts' pixels, shaded by a global SH light.

    Args:
      triangles: [F, 3] int32; triangle_parts: [F] int32 (the model's); raster: the image `Raster`.
      part_albedo: [B, P, 3] (or [P, 3]) flat reflectance per part; gamma: [B, 27] SH light.
      vertex_normals: [B, N, 3] camera-frame unit normals of the posed mesh.
    Returns:
      (image [B, H, W, 3], 0 outside the parts; mask [B, H, W, 1] of the part pixels).
    """
    pixels, part, shading = part_pixel_shading(triangles, triangle_parts, raster, gamma, vertex_normals)
    part_albedo = tf.convert_to_tensor(part_albedo, tf.float32)
    if part_albedo.shape.rank == 2:
        albedo = tf.gather(part_albedo, part)                                             # [K, 3]
    else:
        albedo = tf.gather_nd(part_albedo, tf.stack([pixels[:, 0], tf.cast(part, tf.int64)], axis=-1))
    shape = tf.shape(raster.triangle_id, out_type=tf.int64)
    image = tf.scatter_nd(pixels, albedo * shading, tf.concat([shape, [3]], axis=0))
    mask = tf.scatter_nd(pixels, tf.ones_like(part, tf.float32), shape)[..., None]
    return image, mask


def composite(image, mask, part_image, part_mask):
    """Adds the parts to a render whose pixels outside ``mask`` are 0: -> (image, mask of skin or part)."""
    return image * mask + part_image * part_mask, tf.minimum(mask + part_mask, 1.0)


def estimate_part_albedo(model, raster, images, gamma, vertex_normals, face_mask, min_pixels: int = 12):
    """Per-photo part reflectances, the ``ESTIMATED_GROUPS`` (iris, sclera, teeth) taken from the photo where seen.

    Args:
      model: the `MorphableModel` (part names, defaults); raster: the image `Raster` of the fitted mesh.
      images: [B, H, W, 3] photos in [0, 1]; gamma: [B, 27] the fitted light; vertex_normals: [B, N, 3].
      face_mask: [B, H, W, 1] the face mask (the parsing net's face includes eyes and mouth; occluders are out).
      min_pixels: fewest pixels an estimate needs (per group, left and right pooled).
    Returns:
      (part_albedo [B, P, 3] float32 numpy, pixels {group's first part name: [B] int, 0 = default kept}).
    """
    defaults = np.asarray(model.part_albedo, np.float32)
    batch = int(raster.triangle_id.shape[0])
    out = np.tile(defaults[None], (batch, 1, 1))
    groups = [[model.part_names.index(name) for name in group if name in model.part_names]
              for group in ESTIMATED_GROUPS]
    groups = [(ESTIMATED_GROUPS[k][0], group) for k, group in enumerate(groups) if group]
    used = {name: np.zeros(batch, np.int64) for name, _ in groups}
    if not groups:
        return out, used
    pixels, part, shading = [value.numpy() for value in part_pixel_shading(
        model.triangles, model.triangle_parts, raster, gamma, vertex_normals)]
    colours = np.asarray(images, np.float32)[pixels[:, 0], pixels[:, 1], pixels[:, 2]]          # [K, 3]
    inside = np.asarray(face_mask, np.float32)[pixels[:, 0], pixels[:, 1], pixels[:, 2], 0] > 0.5
    lit = inside & np.all(shading > 0.05, axis=-1)
    for b in range(batch):
        of_photo = lit & (pixels[:, 0] == b)
        for name, indices in groups:
            chosen = of_photo & np.isin(part, indices)
            count = int(chosen.sum())
            if count < min_pixels:
                continue
            out[b, indices] = np.clip(np.median(colours[chosen] / shading[chosen], axis=0), *ALBEDO_RANGE)
            used[name][b] = count
    return out, used
