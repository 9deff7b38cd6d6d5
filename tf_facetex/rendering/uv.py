"""UV space: the texel raster of a model, per-vertex attributes into UV, unwrapping, and rendering UV maps.

UV-map convention (the authors'): a map is an S x S image with v up; texel (row i, col j) is centred at
``u = j / (S - 1)``, ``v = 1 - i / (S - 1)``, i.e. ``col = u (S - 1)``, ``row = (1 - v)(S - 1)``. Texel
coordinates below are (x, y) = (col, row) with integer texel centres, the same convention as image pixels, so
`interpolate.bilinear_sample` serves both.

The UV raster (which triangle and which barycentrics every texel centre falls in) depends only on the model and
S: `build_uv_raster` computes it once with numpy (and the TF visibility step), and the results are constants.
Only the ``textured_triangles`` (inside the [0, 1]^2 atlas) are rasterised. A ``gutter`` of a few texels
around the covered texels is filled from the nearest triangle (barycentrics clamped to it), so that bilinear
lookups next to chart borders do not blend in zeros; ``mask`` stays the exact coverage.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_facetex.rendering import interpolate, rasterize


def uv_to_texel(uv, size):
    """(u, v) with v up -> texel (x = col, y = row) of an S x S map: [..., 2] -> [..., 2]."""
    scale = float(size - 1)
    return tf.stack([uv[..., 0] * scale, (1.0 - uv[..., 1]) * scale], axis=-1)


def uv_to_texel_np(uv, size):
    """numpy version of `uv_to_texel`."""
    uv = np.asarray(uv, np.float64)
    scale = float(size - 1)
    return np.stack([uv[..., 0] * scale, (1.0 - uv[..., 1]) * scale], axis=-1)


@dataclasses.dataclass
class UVRaster:
    """The texel raster of a model at one UV size (numpy constants). S = ``size``."""

    size: int
    triangle_id: np.ndarray        # [S, S] int32 textured triangle covering the texel centre, -1 outside
    barycentrics: np.ndarray       # [S, S, 3] float32 barycentrics in that triangle (0 outside)
    mask: np.ndarray               # [S, S] bool, triangle_id >= 0 (the uv_mask)
    fill_triangle_id: np.ndarray   # [S, S] int32 like triangle_id, extended over the gutter
    corner_vertices: np.ndarray    # [S, S, 3] int32 geometry vertices of fill_triangle_id (0 where none)
    corner_weights: np.ndarray     # [S, S, 3] float32 barycentrics in fill_triangle_id (clamped onto the
                                   # triangle in the gutter), 0 where no triangle
    symmetry_index: np.ndarray     # [S * S] int32 flat texel index of each texel's left-right mirror


def _primary_uv(model):
    """[N, 2] one UV coordinate per geometry vertex (from a textured triangle when there is one)."""
    primary = np.zeros((model.num_vertices, 2), np.float64)
    order = np.argsort(model.textured_triangles, kind="stable")    # textured last: they win the assignment
    primary[model.triangles[order].reshape(-1)] = model.uv_coords[model.uv_triangles[order].reshape(-1)]
    return primary


def _barycentrics_np(corners, points):
    """Affine barycentrics of points in 2D triangles (float64): [..., 3, 2], [..., 2] -> [..., 3]."""
    edges = []
    for i in range(3):
        start, end = corners[..., (i + 1) % 3, :], corners[..., (i + 2) % 3, :]
        edges.append((end[..., 0] - start[..., 0]) * (points[..., 1] - start[..., 1])
                     - (end[..., 1] - start[..., 1]) * (points[..., 0] - start[..., 0]))
    edges = np.stack(edges, axis=-1)
    total = edges.sum(axis=-1, keepdims=True)
    return np.divide(edges, total, out=np.zeros_like(edges), where=total != 0)


def _symmetry_index(model, size, triangle_id, barycentrics, mask):
    """[S*S] flat index of each texel's mirror (see `build_uv_raster`)."""
    rows, cols = np.mgrid[0:size, 0:size]
    flipped = rows * size + (size - 1 - cols)                # the horizontal flip: the default mirror
    index = flipped.reshape(-1).astype(np.int32)
    if not mask.any():
        return index
    triangles = model.triangles
    lookup = {tuple(sorted(t)): f for f, t in enumerate(triangles.tolist())}
    # Per triangle: UV of the mirrored corners, in corner order. Where the mirrored triangle exists, use its
    # own UV corners (the right side of any seam); otherwise one UV per vertex.
    mirrored_vertices = model.symmetry_indices[triangles]                           # [F, 3]
    mirrored_uv = _primary_uv(model)[mirrored_vertices]                             # [F, 3, 2]
    for f, vertices in enumerate(mirrored_vertices.tolist()):
        g = lookup.get(tuple(sorted(vertices)))
        if g is not None:
            position = {v: k for k, v in enumerate(triangles[g].tolist())}
            mirrored_uv[f] = model.uv_coords[model.uv_triangles[g][[position[v] for v in vertices]]]
    texel_rows, texel_cols = np.nonzero(mask)
    weights = barycentrics[texel_rows, texel_cols].astype(np.float64)
    mirrored_uv = mirrored_uv[triangle_id[texel_rows, texel_cols]]                 # [T, 3, 2]
    target = uv_to_texel_np(np.einsum("tk,tkc->tc", weights, mirrored_uv), size)
    target = np.clip(np.rint(target), 0, size - 1).astype(np.int64)
    index[texel_rows * size + texel_cols] = target[:, 1] * size + target[:, 0]
    return index


def build_uv_raster(model, size=256, gutter=2) -> UVRaster:
    """Rasterises the model's textured triangles into an S x S UV map (once per model and size).

    Ties between overlapping UV triangles (if any) go to the smaller triangle id. Texels within ``gutter``
    texels of the coverage take the nearest covered texel's triangle with barycentrics clamped to it.

    The symmetry map sends a texel at barycentrics b in triangle t to the texel at the same b on the mirrored
    triangle (the model's ``symmetry_indices`` applied to t's corners), which works for only approximately
    symmetric layouts too; texels outside the mask map to their horizontal flip.
    """
    from scipy import ndimage

    textured = np.flatnonzero(model.textured_triangles).astype(np.int32)
    triangles = model.triangles
    texel_uv = uv_to_texel_np(model.uv_coords, size).astype(np.float32)
    if textured.size:
        ids, _ = rasterize.visibility(texel_uv[None], np.ones((1, texel_uv.shape[0]), np.float32),
                                      model.uv_triangles[textured], size, static_shapes=False)
        ids = ids.numpy()[0]
        triangle_id = np.where(ids >= 0, textured[np.maximum(ids, 0)], -1).astype(np.int32)
    else:
        triangle_id = np.full((size, size), -1, np.int32)
    mask = triangle_id >= 0

    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([cols, rows], axis=-1).astype(np.float64)
    corners = uv_to_texel_np(model.uv_coords[model.uv_triangles[np.maximum(triangle_id, 0)]], size)
    barycentrics = np.where(mask[..., None], _barycentrics_np(corners, centres), 0.0)

    fill_id = triangle_id.copy()
    if mask.any() and gutter > 0:
        distance, (near_rows, near_cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
        ring = (~mask) & (distance <= gutter)
        fill_id[ring] = triangle_id[near_rows[ring], near_cols[ring]]
    filled = fill_id >= 0
    corners = uv_to_texel_np(model.uv_coords[model.uv_triangles[np.maximum(fill_id, 0)]], size)
    fill_barycentrics = _barycentrics_np(corners, centres)
    # Clamp gutter texels onto their triangle (a point of the triangle near the texel, never an extrapolation).
    fill_barycentrics = np.clip(fill_barycentrics, 0.0, None)
    total = fill_barycentrics.sum(-1, keepdims=True)
    fill_barycentrics = np.divide(fill_barycentrics, total, out=np.full_like(fill_barycentrics, 1.0 / 3.0),
                                  where=total > 0)
    fill_barycentrics = np.where(mask[..., None], barycentrics, fill_barycentrics)
    fill_barycentrics = np.where(filled[..., None], fill_barycentrics, 0.0)

    corner_vertices = np.where(filled[..., None], triangles[np.maximum(fill_id, 0)], 0).astype(np.int32)
    return UVRaster(
        size=size,
        triangle_id=triangle_id,
        barycentrics=barycentrics.astype(np.float32),
        mask=mask,
        fill_triangle_id=fill_id.astype(np.int32),
        corner_vertices=corner_vertices,
        corner_weights=fill_barycentrics.astype(np.float32),
        symmetry_index=_symmetry_index(model, size, triangle_id, barycentrics, mask))


# --------------------------------------------------------------------------------------------- TF functions
def rasterize_to_uv(vertex_attributes, corner_vertices, corner_weights):
    """Per-vertex attributes -> UV maps (barycentric interpolation at every texel centre).

    Args:
      vertex_attributes: [B, N, C] per geometry vertex (prior albedo, camera-frame normals, posed positions).
      corner_vertices: [S, S, 3] int32, corner_weights: [S, S, 3] (`UVRaster` constants).
    Returns:
      [B, S, S, C]; zero where no triangle (outside the mask and its gutter). Differentiable w.r.t. the
      attributes.
    """
    vertex_attributes = tf.convert_to_tensor(vertex_attributes)
    size = corner_vertices.shape[0]
    channels = vertex_attributes.shape[-1]
    # Vertex-major layout: one row gather of B*C values per corner instead of B*C scalar gathers.
    by_vertex = tf.transpose(vertex_attributes, [1, 0, 2])                         # [N, B, C]
    corners = tf.gather(by_vertex, tf.reshape(corner_vertices, [-1]))              # [S*S*3, B, C]
    corners = tf.reshape(corners, [size * size, 3, -1])
    weights = tf.reshape(tf.cast(corner_weights, vertex_attributes.dtype), [size * size, 3, 1])
    texels = tf.reduce_sum(corners * weights, axis=1)                              # [S*S, B*C]
    texels = tf.reshape(texels, [size, size, -1, channels])
    return tf.transpose(texels, [2, 0, 1, 3])


def mirror_uv(uv_maps, symmetry_index):
    """Left-right mirror of UV maps through the model's symmetry: [B, S, S, C], [S*S] -> [B, S, S, C]."""
    shape = tf.shape(uv_maps)
    flat = tf.reshape(uv_maps, [shape[0], -1, shape[3]])
    return tf.reshape(tf.gather(flat, symmetry_index, axis=1), shape)


def gather_pixels(image_values, pixel_xy):
    """Nearest-pixel lookup: image_values [B, H, W] (any dtype), pixel_xy [B, ..., 2] -> [B, ...]."""
    height, width = tf.shape(image_values)[1], tf.shape(image_values)[2]
    index = tf.cast(tf.round(pixel_xy), tf.int32)
    col = tf.clip_by_value(index[..., 0], 0, width - 1)
    row = tf.clip_by_value(index[..., 1], 0, height - 1)
    flat = tf.reshape(image_values, [tf.shape(image_values)[0], -1])
    batch = tf.shape(pixel_xy)[0]
    linear = tf.reshape(row * width + col, [batch, -1])
    return tf.reshape(tf.gather(flat, linear, batch_dims=1), tf.shape(pixel_xy)[:-1])


def min_bilinear_taps(image_values, pixel_xy):
    """Smallest value among the bilinear taps with non-zero weight (as `interpolate.bilinear_sample` reads them).

    image_values [B, H, W] float, pixel_xy [B, ..., 2] (clamped to the image) -> [B, ...]. A texel sampled
    from a mask is "inside" only when every pixel its colour is mixed from is.
    """
    image_values = tf.convert_to_tensor(image_values, tf.float32)
    height, width = tf.shape(image_values)[1], tf.shape(image_values)[2]
    max_xy = tf.cast(tf.stack([width - 1, height - 1]), tf.float32)
    coords = tf.clip_by_value(tf.cast(pixel_xy, tf.float32), 0.0, max_xy)
    low = tf.floor(coords)
    frac = coords - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, tf.cast(max_xy, tf.int32))
    flat = tf.reshape(image_values, [tf.shape(image_values)[0], -1])
    batch = tf.shape(pixel_xy)[0]
    big = tf.constant(np.inf, tf.float32)

    def tap(x, y, weight):
        linear = tf.reshape(y * width + x, [batch, -1])
        values = tf.reshape(tf.gather(flat, linear, batch_dims=1), tf.shape(weight))
        return tf.where(weight > 0.0, values, big)

    fx, fy = frac[..., 0], frac[..., 1]
    taps = [tap(low[..., 0], low[..., 1], (1.0 - fx) * (1.0 - fy)), tap(high[..., 0], low[..., 1], fx * (1.0 - fy)),
            tap(low[..., 0], high[..., 1], (1.0 - fx) * fy), tap(high[..., 0], high[..., 1], fx * fy)]
    return tf.reduce_min(tf.stack(taps, axis=0), axis=0)


def depth_slopes(pixels, depth, triangles):
    """Screen-space depth slope of every triangle, |d depth / d pixel| at its centroid.

    With ``1/z`` affine in the screen (``grad(1/z) = sum_i grad(b_i) / z_i``), ``|grad z| = z^2 |grad(1/z)|``.

    Args:
      pixels: [B, N, 2]; depth: [B, N]; triangles: [F, 3].
    Returns:
      [B, F] view-depth change per pixel (0 for degenerate triangles).
    """
    corners = tf.gather(pixels, triangles, axis=1)                          # [B, F, 3, 2]
    corner_depth = tf.gather(depth, triangles, axis=1)                      # [B, F, 3]
    area = rasterize.signed_area(corners)
    gradient = 0.0
    for i in range(3):
        start, end = corners[..., (i + 1) % 3, :], corners[..., (i + 2) % 3, :]
        edge_gradient = tf.stack([start[..., 1] - end[..., 1], end[..., 0] - start[..., 0]], axis=-1)
        gradient += edge_gradient / corner_depth[..., i:i + 1]
    gradient = tf.math.divide_no_nan(gradient, area[..., None])
    centroid_depth = 3.0 / tf.reduce_sum(1.0 / corner_depth, axis=-1)
    return centroid_depth ** 2 * tf.norm(gradient, axis=-1)


def texel_visibility(pixels_uv, depth_uv, front_uv, texel_triangle_id, uv_mask, image_triangle_id, zbuffer,
                     depth_tolerance):
    """Which texels the camera sees (the unwrap's visibility mask).

    A texel is visible iff it is in the UV mask, its triangle faces the camera, its projection is inside the
    image, and it passes the depth test at the nearest pixel: that pixel shows the texel's own triangle, or
    the z-buffer depth there is within ``depth_tolerance`` of the texel's depth.

    Args:
      pixels_uv: [B, S, S, 2] projected texel positions; depth_uv: [B, S, S] their view depth.
      front_uv: [B, S, S] bool, the texel's triangle is front-facing.
      texel_triangle_id: [S, S] int32 texel triangles (-1 outside).
      uv_mask: [S, S] bool.
      image_triangle_id: [B, H, W] int32, zbuffer: [B, H, W] float32 (`rasterize.visibility`).
      depth_tolerance: scalar or [B, S, S] tolerance in view-depth units (decimetres).
    Returns:
      [B, S, S, 1] float32 in {0, 1}.
    """
    height, width = tf.shape(image_triangle_id)[1], tf.shape(image_triangle_id)[2]
    x, y = pixels_uv[..., 0], pixels_uv[..., 1]
    inside_image = ((x >= 0.0) & (y >= 0.0) & (x <= tf.cast(width - 1, x.dtype))
                    & (y <= tf.cast(height - 1, y.dtype)))
    seen_triangle = gather_pixels(image_triangle_id, pixels_uv)
    seen_depth = gather_pixels(zbuffer, pixels_uv)
    same_triangle = tf.equal(seen_triangle, texel_triangle_id[None])
    close_depth = (seen_triangle >= 0) & (tf.abs(depth_uv - seen_depth) <= depth_tolerance)
    visible = uv_mask[None] & front_uv & inside_image & (same_triangle | close_depth)
    return tf.cast(visible, tf.float32)[..., None]


def unwrap_image(image, pixels_uv, visibility_uv):
    """Unwrapped texture: bilinear samples of the image at the texels' projections, zero where unseen.

    Args:
      image: [B, H, W, C]; pixels_uv: [B, S, S, 2]; visibility_uv: [B, S, S, 1].
    Returns:
      [B, S, S, C].
    """
    return interpolate.bilinear_sample(image, pixels_uv) * tf.cast(visibility_uv, image.dtype)


def pixel_texel_coords(triangle_id, barycentrics, texel_corners):
    """Texel coordinates of every pixel: perspective-correct interpolation of its triangle's UV corners.

    Args:
      triangle_id: [B, H, W] int32 (-1 = background); barycentrics: [B, H, W, 3].
      texel_corners: [F, 3, 2] texel coordinates of each triangle's UV corners (`uv_to_texel` of
        ``uv_coords[uv_triangles]``); may be a variable (gradients flow to it).
    Returns:
      [B, H, W, 2] (x = col, y = row) texel coordinates; 0 on background.
    """
    corners = tf.gather(texel_corners, interpolate.safe_triangle_id(triangle_id))     # [B, H, W, 3, 2]
    return tf.reduce_sum(corners * tf.cast(barycentrics, texel_corners.dtype)[..., None], axis=-2)


def projection_mask(triangle_id, textured_triangles):
    """M_proj: pixels showing a textured triangle. [B, H, W] ids, [F] bool -> [B, H, W, 1] float32."""
    textured = tf.gather(textured_triangles, interpolate.safe_triangle_id(triangle_id))
    return tf.cast((triangle_id >= 0) & textured, tf.float32)[..., None]


def render_uv_maps(uv_maps, texel_coords, mask, background_value=0.0):
    """Renders UV maps into the image: bilinear samples at each pixel's texel coordinates.

    Args:
      uv_maps: [B, S, S, C]; texel_coords: [B, H, W, 2] (`pixel_texel_coords`); mask: [B, H, W, 1] M_proj.
      background_value: scalar or [C], used where mask is 0.
    Returns:
      [B, H, W, C]; differentiable w.r.t. the maps and the texel coordinates.
    """
    sampled = interpolate.bilinear_sample(uv_maps, texel_coords)
    mask = tf.cast(mask, sampled.dtype)
    return sampled * mask + tf.cast(background_value, sampled.dtype) * (1.0 - mask)


def render_uv_maps_foreground(uv_maps, triangle_id, barycentrics, texel_corners, textured_triangles,
                              background_value=0.0):
    """`pixel_texel_coords` + `projection_mask` + `render_uv_maps` evaluated at the M_proj pixels only.

    The same bilinear formula as `interpolate.bilinear_sample` (the same float32 values); it is the serving
    path without XLA, where each op is one pass over memory and ~40% of a face crop is background.

    Args:
      uv_maps: [B, S, S, C]; triangle_id: [B, H, W] int32; barycentrics: [B, H, W, 3];
      texel_corners: [F, 3, 2]; textured_triangles: [F] bool; background_value: scalar or [C].
    Returns:
      image [B, H, W, C] (differentiable w.r.t. the maps and the barycentrics), M_proj [B, H, W, 1].
    """
    uv_maps = tf.convert_to_tensor(uv_maps)
    batch, size = tf.shape(uv_maps)[0], tf.shape(uv_maps)[1]
    channels = uv_maps.shape[-1]
    height, width = triangle_id.shape[1], triangle_id.shape[2]
    safe_id = interpolate.safe_triangle_id(triangle_id)
    mask_bool = (triangle_id >= 0) & tf.gather(textured_triangles, safe_id)              # [B, H, W]
    flat, image, _, _ = interpolate.foreground_pixels(mask_bool)
    visible = tf.gather(tf.reshape(triangle_id, [-1]), flat)
    weights = tf.gather(tf.reshape(tf.cast(barycentrics, texel_corners.dtype), [-1, 3]), flat)     # [P, 3]
    coords = tf.reduce_sum(tf.gather(texel_corners, visible) * weights[..., None], axis=-2)      # [P, 2]
    coords = tf.cast(coords, uv_maps.dtype)
    max_xy = tf.cast(tf.stack([size - 1, size - 1]), uv_maps.dtype)
    coords = tf.clip_by_value(coords, tf.zeros([2], uv_maps.dtype), max_xy)
    low = tf.floor(coords)
    frac = coords - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, size - 1)
    flat_maps = tf.reshape(uv_maps, [-1, channels])
    base = image * (size * size)

    def tap(x, y):
        return tf.gather(flat_maps, base + y * size + x)

    fx, fy = frac[:, 0:1], frac[:, 1:2]
    top = tap(low[:, 0], low[:, 1]) * (1.0 - fx) + tap(high[:, 0], low[:, 1]) * fx
    bottom = tap(low[:, 0], high[:, 1]) * (1.0 - fx) + tap(high[:, 0], high[:, 1]) * fx
    sampled = interpolate.scatter_foreground(flat, top * (1.0 - fy) + bottom * fy, [batch, height, width, channels])
    mask = tf.cast(mask_bool, uv_maps.dtype)[..., None]
    return sampled + tf.cast(background_value, uv_maps.dtype) * (1.0 - mask), mask
