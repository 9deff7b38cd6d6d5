"""Visibility (z-buffer rasterisation) in plain TensorFlow ops.

tensorflow-graphics' compiled rasteriser does not load on TF 2.21, so the visibility step is ours. It runs
eagerly, inside `tf.function`, under XLA (``jit_compile=True``), on CPU and GPU, and exports in a SavedModel:
only core ops, no ``py_function`` and no numpy at call time.

Conventions (those of `tf_facetex.camera`):
- pixel coordinates x right, y down, integer pixel centres: pixel (row i, col j) is centred at x = j, y = i;
- ``depth`` is the view depth (10 - z for the project's camera), positive in front of the camera;
- a triangle counter-clockwise seen from outside (the mesh convention, y up) is clockwise in y-down pixel
  coordinates, so it is front-facing iff its `signed_area` is negative;
- coverage is inclusive: a pixel centre exactly on an edge belongs to both triangles; the nearest depth wins,
  and exact depth ties go to the smaller triangle id. Background pixels get triangle id -1.

Algorithm ("sorted windows"). Every (image, triangle) pair is a *job* whose candidate pixels are the pixel
centres of its clipped bounding box, ``count = width * height`` of them. Jobs are grouped into classes by
``window = 2**ceil(log2(count))`` so that a class is a dense ``[jobs, window]`` block in which pixel ``k`` of a
job is ``(k mod width, k div width)`` of its box: the per-job data broadcasts along the window (no per-pixel
gather) and the padding wastes less than half of each window. Each candidate evaluates three edge functions and
its perspective-correct depth, packs ``(float32 depth bits << 32) | triangle id`` into one int64 key (positive
floats order like their bit patterns) and a per-pixel minimum of the keys is the z-buffer. There is one class
per power of two up to the whole image, so a triangle of any size is rasterised: none is ever dropped (except
triangles crossing the ``near`` plane, which this renderer does not clip, and degenerate ones).

Two schedules compute the same keys:
- dynamic (eager and `tf.function`): `tf.dynamic_partition` splits the jobs by class, every class is evaluated
  in one block and a single `tf.math.unsorted_segment_min` reduces all candidates;
- static (XLA, where shapes must be static): jobs are sorted by class and each pair of classes is evaluated in
  fixed-size chunks inside a `tf.while_loop`, reduced with `tf.tensor_scatter_nd_min` into a loop-carried
  z-buffer. (On CPU the sort dominates: this schedule is for XLA graphs and GPUs.)
The schedule is picked automatically (static inside an XLA context) or forced with ``static_shapes``.
In the plain-TF dynamic schedule the jobs with nothing to draw (back faces, off-screen or empty boxes,
near-plane crossings, degenerate triangles: ~30-40% of a face crop's jobs) are culled right after the cheap
box and winding tests, before the edge/depth setup and the partition (``cull_early``; same result).

Precision: edge functions are evaluated relative to a corner (``(end - start) x (p - start)``), whose
differences are exact in float32 for nearby points, then extended linearly over the box, so the coverage
decision of a pixel centre matches a float64 reference except within ~1e-5 (relative) of an edge.
"""
import math

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # to detect an XLA context (no public API)

BACKGROUND_ID = -1
_EMPTY_KEY = (1 << 63) - 1          # the key of a pixel that no triangle covers
_TRIANGLE_ID_BITS = 32
DEFAULT_NEAR = 1e-2                 # decimetres: triangles with a vertex nearer than this are not drawn
DEFAULT_CHUNK = 1 << 15             # candidates per chunk in the static (XLA) schedule


def image_hw(image_size):
    """``224`` or ``(H, W)`` -> (H, W) Python ints."""
    if isinstance(image_size, (tuple, list)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (``jit_compile=True``)."""
    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


# ----------------------------------------------------------------------------------------- triangle formulas
def signed_area(corners_xy):
    """Twice the signed area of screen triangles.

    Args:
      corners_xy: [..., 3, 2] pixel coordinates (y down) of the three corners.
    Returns:
      [...] ``(x1 - x0)(y2 - y0) - (y1 - y0)(x2 - x0)``; negative for a mesh triangle seen from outside.
    """
    x, y = corners_xy[..., 0], corners_xy[..., 1]
    return (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])


def front_facing(corners_xy):
    """[..., 3, 2] screen corners -> [...] bool: the outside of the (CCW-outside) triangle faces the camera."""
    return signed_area(corners_xy) < 0.0


def edge_function(start, end, points):
    """Edge function ``(end - start) x (points - start)`` (z of the 2D cross product).

    Evaluated relative to ``start`` so that nearby coordinates subtract exactly. For the edge opposite corner
    ``i`` (from corner i+1 to i+2) it equals ``signed_area * barycentric_i``.

    Args:
      start, end: [..., 2] edge end points.
      points: [..., 2] query points (broadcastable).
    Returns:
      [...] the edge function.
    """
    return ((end[..., 0] - start[..., 0]) * (points[..., 1] - start[..., 1])
            - (end[..., 1] - start[..., 1]) * (points[..., 0] - start[..., 0]))


def window_class(count):
    """``ceil(log2(count))`` for positive int32 counts (0 for count 1), exactly, via the float32 exponent.

    Args:
      count: [...] int32 >= 1 (< 2**24).
    Returns:
      [...] int32 class L such that 2**(L-1) < count <= 2**L.
    """
    bits = tf.bitcast(tf.cast(count - 1, tf.float32), tf.int32)
    exponent = tf.bitwise.right_shift(bits, 23) - 127          # floor(log2(count - 1)); -127 for count == 1
    return tf.maximum(exponent + 1, 0)


def pack_depth_keys(depth, triangle_id):
    """Orderable z-buffer keys: smaller key = nearer, ties broken by the smaller triangle id.

    Args:
      depth: [...] float32 > 0.
      triangle_id: [...] int32 >= 0.
    Returns:
      [...] int64 ``(bits(depth) << 32) | triangle_id``.
    """
    depth_bits = tf.cast(tf.bitcast(tf.cast(depth, tf.float32), tf.int32), tf.int64)
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(depth_bits, _TRIANGLE_ID_BITS),
                                 tf.cast(triangle_id, tf.int64))


def unpack_depth_keys(keys):
    """Inverse of `pack_depth_keys`; the empty key gives (-1, 0).

    Args:
      keys: [...] int64.
    Returns:
      triangle_id: [...] int32 (-1 for background); depth: [...] float32 (0 for background).
    """
    empty = tf.equal(keys, _EMPTY_KEY)
    triangle_id = tf.cast(tf.bitwise.bitwise_and(keys, (1 << _TRIANGLE_ID_BITS) - 1), tf.int32)
    depth = tf.bitcast(tf.cast(tf.bitwise.right_shift(keys, _TRIANGLE_ID_BITS), tf.int32), tf.float32)
    return (tf.where(empty, BACKGROUND_ID, triangle_id), tf.where(empty, tf.zeros_like(depth), depth))


# ----------------------------------------------------------------------------------------- jobs and windows
# Per-job float columns: for each edge i its value at the box origin and its x / y slopes (9), the same for the
# inverse depth (3), then the box width, 1 / box width and box height (3).
_FLOAT_COLUMNS = 15
# Per-job int columns: flat index of the box origin (b * H * W + y0 * W + x0), triangle id.
_INT_COLUMNS = 2


def num_window_classes(height, width) -> int:
    """Window classes 0..L with 2**L >= height * width (a box never holds more pixels than the image)."""
    return int(math.ceil(math.log2(max(height * width, 1)))) + 1


def triangle_jobs(pixels, depth, triangles, height, width, cull_backfaces=False, near=DEFAULT_NEAR,
                  compact=False):
    """Per (triangle, image) data for the window evaluation, as columns (job j = f * B + b).

    Edge functions and the inverse depth are affine in the pixel position, so each is stored as its value at
    the box origin and its x / y slopes; edges are sign-normalised so that "inside" is "all three >= 0" and
    the inverse depth is ``sum_i edge_i / (|area| z_i)`` (perspective-correct). Everything is elementwise on
    [F, B] tensors (reductions over tiny axes and stacks along the last axis are slow on CPU).

    Args:
      pixels: [B, N, 2] float32 pixel coordinates.
      depth: [B, N] float32 view depths.
      triangles: [F, 3] int32.
      height, width: image size.
      cull_backfaces: drop triangles whose `signed_area` is >= 0.
      near: triangles with a corner depth below this are dropped (no clipping).
      compact: cull before the setup (dynamic shapes only): the jobs with nothing to draw (back faces when
        culling, off-screen or empty boxes, near-plane crossings, degenerate triangles) are removed right
        after the cheap bounding-box and winding tests, so the edge and depth setup, the class partition and
        everything after touch only the J drawable jobs. The drawn keys are the same.
    Returns:
      float_columns: list of 15 [J] float32 (see `_FLOAT_COLUMNS`); int_columns: list of 2 [J] int32 (flat
      pixel index of the box origin, triangle id); job_class: [J] int32 window class, or
      ``num_window_classes(height, width)`` for jobs with nothing to draw. J = F*B, or the number of
      drawable jobs when ``compact``.
    """
    pixels = tf.convert_to_tensor(pixels, tf.float32)
    depth = tf.convert_to_tensor(depth, tf.float32)
    batch = tf.shape(pixels)[0]
    num_triangles = tf.shape(triangles)[0]
    # Vertex-major [N, B] coordinates: gathering whole rows is much faster than gathering along axis 1.
    by_vertex = [tf.transpose(pixels[..., 0]), tf.transpose(pixels[..., 1]), tf.transpose(depth)]
    xs, ys, zs = [[tf.gather(values, triangles[:, i]) for i in range(3)] for values in by_vertex]

    area = (xs[1] - xs[0]) * (ys[2] - ys[0]) - (ys[1] - ys[0]) * (xs[2] - xs[0])
    x0, box_width = _pixel_span(tf.minimum(tf.minimum(xs[0], xs[1]), xs[2]),
                                tf.maximum(tf.maximum(xs[0], xs[1]), xs[2]), width)
    y0, box_height = _pixel_span(tf.minimum(tf.minimum(ys[0], ys[1]), ys[2]),
                                 tf.maximum(tf.maximum(ys[0], ys[1]), ys[2]), height)
    count = box_width * box_height
    nearest = tf.minimum(tf.minimum(zs[0], zs[1]), zs[2])
    drawable = (count > 0) & tf.not_equal(area, 0.0) & (nearest > near) & tf.math.is_finite(area)
    if cull_backfaces:
        drawable &= area < 0.0
    image_offset = tf.range(batch)[None, :] * (height * width)
    triangle_id = tf.broadcast_to(tf.range(num_triangles)[:, None], tf.shape(count))
    box_origin = image_offset + y0 * width + x0
    if compact:
        # Job j = f * B + b of the [F, B] layout; about a third of a face mesh's jobs are back faces.
        kept = tf.where(tf.reshape(drawable, [-1]))[:, 0]
        xs, ys, zs = [[tf.gather(tf.reshape(v, [-1]), kept) for v in values] for values in (xs, ys, zs)]
        area, x0, y0, box_width, box_height, box_origin, triangle_id = [
            tf.gather(tf.reshape(v, [-1]), kept)
            for v in (area, x0, y0, box_width, box_height, box_origin, triangle_id)]
        count = box_width * box_height
        drawable = tf.ones_like(count, tf.bool)

    ox, oy = tf.cast(x0, tf.float32), tf.cast(y0, tf.float32)
    sign = tf.where(area < 0.0, -1.0, 1.0)
    inverse_area = 1.0 / tf.maximum(tf.abs(area), 1e-30)
    columns = []
    plane = [0.0, 0.0, 0.0]
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        slope_x = sign * (ys[j] - ys[k])
        slope_y = sign * (xs[k] - xs[j])
        value = sign * ((xs[k] - xs[j]) * (oy - ys[j]) - (ys[k] - ys[j]) * (ox - xs[j]))
        columns += [value, slope_x, slope_y]
        weight = inverse_area / tf.maximum(zs[i], near)
        plane = [plane[0] + value * weight, plane[1] + slope_x * weight, plane[2] + slope_y * weight]
    box_width_f = tf.cast(box_width, tf.float32)
    columns += plane + [box_width_f, 1.0 / tf.maximum(box_width_f, 1.0), tf.cast(box_height, tf.float32)]
    # Kept as separate columns: stacking or transposing them costs more than the arithmetic on CPU.
    float_columns = [tf.reshape(column, [-1]) for column in columns]

    int_columns = [tf.reshape(box_origin, [-1]), tf.reshape(triangle_id, [-1])]
    job_class = tf.where(drawable, window_class(tf.maximum(count, 1)), num_window_classes(height, width))
    return float_columns, int_columns, tf.reshape(job_class, [-1])


def _pixel_span(low, high, size):
    """Integer pixel centres in [low, high] clipped to [0, size): (first, count) as int32 (count >= 0)."""
    # Clip before the float -> int conversion so that far-away corners cannot overflow int32.
    first = tf.maximum(tf.math.ceil(tf.clip_by_value(low, -1.0, float(size))), 0.0)
    last = tf.minimum(tf.math.floor(tf.clip_by_value(high, -1.0, float(size))), float(size - 1))
    return tf.cast(first, tf.int32), tf.cast(tf.maximum(last - first + 1.0, 0.0), tf.int32)


def window_coverage(float_columns, window, width):
    """Which candidate pixels of a block of jobs lie in their triangles, and their inverse depth.

    Candidate ``k`` of a job is pixel ``(k mod box_width, k div box_width)`` of its box (computed in float32,
    exact for boxes below 2**22 pixels).

    Args:
      float_columns: 15 [n] columns from `triangle_jobs`.
      window: Python int >= the jobs' box pixel counts.
      width: image width.
    Returns:
      inside: [n, window] bool; inverse_depth: [n, window] float32; offset: [n, window] int32 pixel offset of
      the candidate from its box origin (``dy * width + dx``).
    """
    f = [column[:, None] for column in float_columns]
    k = tf.range(window, dtype=tf.float32)[None, :]
    dy = tf.floor((k + 0.5) * f[13])
    dx = k - dy * f[12]
    # min over the three edge functions (and the box's last row) >= 0: fewer passes than three tests.
    nearest_edge = f[14] - 1.0 - dy
    for i in range(3):
        nearest_edge = tf.minimum(nearest_edge, f[3 * i] + f[3 * i + 1] * dx + f[3 * i + 2] * dy)
    inside = nearest_edge >= 0.0
    inverse_depth = f[9] + f[10] * dx + f[11] * dy
    offset = tf.cast(dy * float(width) + dx, tf.int32)
    return inside, inverse_depth, offset


def window_keys(float_columns, int_columns, window, width, num_pixels, job_valid=None):
    """Z-buffer keys of every candidate pixel of a block of jobs (static shapes).

    Args:
      float_columns: 15 [n], int_columns: 2 [n] columns from `triangle_jobs`.
      window: Python int, the candidate pixels per job (>= the jobs' box pixel counts).
      width: image width; num_pixels: B * H * W (the segment of rejected candidates).
      job_valid: optional [n] bool (padding jobs of the static schedule are False).
    Returns:
      keys: [n * window] int64 (`_EMPTY_KEY` where the pixel centre is outside the triangle);
      segments: [n * window] int32 flat pixel index b * H * W + y * W + x (``num_pixels`` when rejected).
    """
    inside, inverse_depth, offset = window_coverage(float_columns, window, width)
    if job_valid is not None:
        inside &= job_valid[:, None]
    keys = pack_depth_keys(1.0 / tf.maximum(inverse_depth, 1e-30), int_columns[1][:, None])
    keys = tf.where(inside, keys, tf.constant(_EMPTY_KEY, tf.int64))
    segments = tf.where(inside, int_columns[0][:, None] + offset, num_pixels)
    return tf.reshape(keys, [-1]), tf.reshape(segments, [-1])


def covered_keys(float_columns, int_columns, window, width):
    """Z-buffer keys of the covered candidate pixels only (dynamic shapes: rejected candidates are dropped
    before the key packing and the reduction, which then touch ~1/3 of the candidates).

    Returns:
      keys: [M] int64; segments: [M] int32 flat pixel indices.
    """
    inside, inverse_depth, offset = window_coverage(float_columns, window, width)
    hits = tf.where(tf.reshape(inside, [-1]))[:, 0]
    job = tf.cast(tf.bitwise.right_shift(hits, int(math.log2(window))), tf.int32)
    keys = pack_depth_keys(1.0 / tf.maximum(tf.gather(tf.reshape(inverse_depth, [-1]), hits), 1e-30),
                           tf.gather(int_columns[1], job))
    segments = tf.gather(int_columns[0], job) + tf.gather(tf.reshape(offset, [-1]), hits)
    return keys, segments


def _zbuffer_dynamic(float_columns, int_columns, job_class, num_classes, width, num_pixels):
    """Dynamic-shape schedule: one block per window class, one segment-min over all covered candidates."""
    # Partitioning each column costs less than gathering rows (which would need a transpose first).
    float_parts = [tf.dynamic_partition(column, job_class, num_classes + 1) for column in float_columns]
    int_parts = [tf.dynamic_partition(column, job_class, num_classes + 1) for column in int_columns]
    all_keys, all_segments = [], []
    for level in range(num_classes):
        keys, segments = covered_keys([part[level] for part in float_parts], [part[level] for part in int_parts],
                                      1 << level, width)
        all_keys.append(keys)
        all_segments.append(segments)
    # Pixels that receive nothing hold the dtype's maximum, which is `_EMPTY_KEY`.
    return tf.math.unsorted_segment_min(tf.concat(all_keys, 0), tf.concat(all_segments, 0), num_pixels)


def _zbuffer_static(float_columns, int_columns, job_class, num_classes, width, num_pixels, chunk):
    """Static-shape schedule (XLA): jobs sorted by class, fixed-size chunks in while loops, scatter-min.

    Pairs of window classes share a loop (windows of 4**L candidates): half the loops to compile, at the
    price of windows up to 4x (instead of 2x) a job's box.
    """
    num_jobs = tf.shape(job_class)[0]
    order = tf.argsort(job_class, stable=True)
    float_columns = [tf.gather(column, order) for column in float_columns]
    int_columns = [tf.gather(column, order) for column in int_columns]
    counts = tf.reduce_sum(tf.cast(tf.equal(job_class[:, None], tf.range(num_classes + 1)[None, :]), tf.int32),
                           axis=0)
    starts = tf.cumsum(counts, exclusive=True)
    zbuffer = tf.fill([num_pixels + 1], tf.constant(_EMPTY_KEY, tf.int64))
    for level in range(num_classes // 2 + 1):
        window = 1 << (2 * level)
        first, last = max(2 * level - 1, 0), min(2 * level, num_classes - 1)   # classes with count <= window
        jobs_per_chunk = max(1, chunk // window)
        start = starts[first]
        count = tf.reduce_sum(counts[first:last + 1])
        num_chunks = (count + jobs_per_chunk - 1) // jobs_per_chunk

        def body(i, buffer, start=start, count=count, window=window, jobs_per_chunk=jobs_per_chunk):
            index = i * jobs_per_chunk + tf.range(jobs_per_chunk)
            valid = index < count
            rows = tf.minimum(start + index, num_jobs - 1)
            keys, segments = window_keys([tf.gather(column, rows) for column in float_columns],
                                         [tf.gather(column, rows) for column in int_columns], window, width,
                                         num_pixels, job_valid=valid)
            return i + 1, tf.tensor_scatter_nd_min(buffer, segments[:, None], keys)

        _, zbuffer = tf.while_loop(lambda i, _b, n=num_chunks: i < n, body, (tf.constant(0), zbuffer))
    return zbuffer[:num_pixels]


_triangle_jobs_xla = tf.function(triangle_jobs, jit_compile=True, autograph=False)
_unpack_depth_keys_xla = tf.function(unpack_depth_keys, jit_compile=True, autograph=False)


def visibility(pixels, depth, triangles, image_size, cull_backfaces=False, near=DEFAULT_NEAR,
               static_shapes=None, chunk_size=DEFAULT_CHUNK, jit_static_parts=False, cull_early=None):
    """Nearest triangle per pixel (z-buffer), batched. Not differentiable (inputs are stop-gradient'ed).

    Args:
      pixels: [B, N, 2] pixel coordinates (x right, y down, integer pixel centres), e.g. `camera.project`.
      depth: [B, N] view depth (> 0 in front of the camera).
      triangles: [F, 3] int32 vertex indices (F < 2**31).
      image_size: int or (H, W).
      cull_backfaces: skip triangles facing away from the camera (see `front_facing`).
      near: triangles with a vertex nearer than this are skipped (no near-plane clipping).
      static_shapes: None = automatic (static inside XLA), True/False to force a schedule.
      chunk_size: candidates per chunk of the static schedule.
      jit_static_parts: in the dynamic schedule, compile the fixed-shape parts (per-triangle setup, key
        unpacking) with XLA; the dynamic-shape middle stays in plain TF ops.
      cull_early: drop the jobs with nothing to draw before the per-triangle setup (`triangle_jobs`'
        ``compact``; same result). None = automatic: on in the plain-TF dynamic schedule, off where the setup
        must keep static shapes (XLA: the static schedule or ``jit_static_parts``), where it is ignored.
    Returns:
      triangle_id: [B, H, W] int32, -1 for background.
      zbuffer: [B, H, W] float32 perspective-correct depth of the visible surface at each pixel centre,
        0 for background.
    """
    height, width = image_hw(image_size)
    pixels = tf.stop_gradient(tf.convert_to_tensor(pixels, tf.float32))
    depth = tf.stop_gradient(tf.convert_to_tensor(depth, tf.float32))
    triangles = tf.convert_to_tensor(triangles, tf.int32)
    options = dict(image_size=(height, width), cull_backfaces=bool(cull_backfaces), near=float(near),
                   static_shapes=static_shapes, chunk_size=int(chunk_size), jit_static_parts=bool(jit_static_parts),
                   cull_early=cull_early)
    if tf.executing_eagerly():
        # Hundreds of small ops: run them as one graph (traced once per shape and options) instead of one by one.
        return _visibility_graph(pixels, depth, triangles, **options)
    return _visibility(pixels, depth, triangles, **options)


def _visibility(pixels, depth, triangles, image_size, cull_backfaces, near, static_shapes, chunk_size,
                jit_static_parts, cull_early):
    """`visibility` on tensors, in a graph."""
    height, width = image_size
    batch = tf.shape(pixels)[0]
    num_pixels = batch * height * width
    num_classes = num_window_classes(height, width)
    if static_shapes is None:
        static_shapes = in_xla_context()
    jit = bool(jit_static_parts) and not static_shapes
    compact = (not jit if cull_early is None else bool(cull_early)) and not static_shapes and not jit
    if jit:
        float_columns, int_columns, job_class = _triangle_jobs_xla(pixels, depth, triangles, height, width,
                                                                   bool(cull_backfaces), float(near))
    else:
        float_columns, int_columns, job_class = triangle_jobs(pixels, depth, triangles, height, width,
                                                              bool(cull_backfaces), float(near), compact)
    if static_shapes:
        keys = _zbuffer_static(float_columns, int_columns, job_class, num_classes, width, num_pixels, chunk_size)
    else:
        keys = _zbuffer_dynamic(float_columns, int_columns, job_class, num_classes, width, num_pixels)
    unpack = _unpack_depth_keys_xla if jit else unpack_depth_keys
    return unpack(tf.reshape(keys, [batch, height, width]))


_visibility_graph = tf.function(_visibility, autograph=False, reduce_retracing=True)


# ----------------------------------------------------------------------------------------- numpy reference
def reference_visibility(pixels, depth, triangles, image_size, cull_backfaces=False, near=DEFAULT_NEAR,
                         edge_tolerance=1e-4, depth_tolerance=1e-5):
    """Brute-force z-buffer in float64 numpy (a loop over triangles), for tests and benchmarks only.

    Same rules as `visibility` (inclusive coverage of pixel centres, nearest perspective-correct depth, ties to
    the smaller id), evaluated exactly on the float32 inputs. It also flags the pixels whose answer is not
    well defined at float32 precision ("ties"):
    - the pixel centre lies within ``edge_tolerance`` pixels of an edge of a triangle that covers it or misses
      it by less than that distance;
    - the two nearest covering triangles have depths within ``depth_tolerance`` (relative) of each other.

    Args:
      pixels: [B, N, 2], depth: [B, N], triangles: [F, 3] (numpy or tensors), image_size: int or (H, W).
    Returns:
      triangle_id: [B, H, W] int32 (-1 = background); zbuffer: [B, H, W] float64; ties: [B, H, W] bool.
    """

    height, width = image_hw(image_size)
    pixels = np.asarray(pixels, np.float32).astype(np.float64)
    depth = np.asarray(depth, np.float32).astype(np.float64)
    triangles = np.asarray(triangles, np.int64)
    batch = pixels.shape[0]
    best_id = np.full((batch, height, width), -1, np.int32)
    best_depth = np.full((batch, height, width), np.inf)
    second_depth = np.full((batch, height, width), np.inf)
    ties = np.zeros((batch, height, width), bool)
    for b in range(batch):
        for t, (i0, i1, i2) in enumerate(triangles):
            corners = pixels[b, [i0, i1, i2]]
            z = depth[b, [i0, i1, i2]]
            if not np.all(np.isfinite(corners)) or np.any(z <= near):
                continue
            area = ((corners[1, 0] - corners[0, 0]) * (corners[2, 1] - corners[0, 1])
                    - (corners[1, 1] - corners[0, 1]) * (corners[2, 0] - corners[0, 0]))
            if area == 0.0 or (cull_backfaces and area > 0.0):
                continue
            low = np.maximum(np.ceil(corners.min(0) - edge_tolerance), 0).astype(int)
            high = np.minimum(np.floor(corners.max(0) + edge_tolerance), [width - 1, height - 1]).astype(int)
            if np.any(high < low):
                continue
            ys, xs = np.mgrid[low[1]:high[1] + 1, low[0]:high[0] + 1]
            xs, ys = xs.reshape(-1).astype(np.float64), ys.reshape(-1).astype(np.float64)
            distances = []
            weights = []
            for i in range(3):
                start, end = corners[(i + 1) % 3], corners[(i + 2) % 3]
                edge = (end[0] - start[0]) * (ys - start[1]) - (end[1] - start[1]) * (xs - start[0])
                weights.append(edge / area)
                distances.append(np.sign(area) * edge / max(np.hypot(*(end - start)), 1e-300))
            weights = np.stack(weights, 1)
            nearest_edge = np.min(np.stack(distances, 1), axis=1)
            inside = nearest_edge >= 0.0
            near_edge = np.abs(nearest_edge) < edge_tolerance
            inside_box = ((xs >= np.ceil(corners[:, 0].min())) & (xs <= np.floor(corners[:, 0].max()))
                          & (ys >= np.ceil(corners[:, 1].min())) & (ys <= np.floor(corners[:, 1].max())))
            rows, cols = ys.astype(int), xs.astype(int)
            ties[b, rows[near_edge], cols[near_edge]] = True
            inside &= inside_box
            if not np.any(inside):
                continue
            rows, cols = rows[inside], cols[inside]
            pixel_depth = 1.0 / np.sum(weights[inside] / z, axis=1)
            current = best_depth[b, rows, cols]
            better = pixel_depth < current     # strict: equal depths keep the earlier (smaller) id
            second_depth[b, rows, cols] = np.where(better, current,
                                                   np.minimum(second_depth[b, rows, cols], pixel_depth))
            best_depth[b, rows[better], cols[better]] = pixel_depth[better]
            best_id[b, rows[better], cols[better]] = t
    with np.errstate(invalid="ignore"):
        close = (second_depth - best_depth) <= depth_tolerance * np.where(np.isfinite(best_depth), best_depth, 1.0)
    ties |= close & np.isfinite(second_depth)
    best_depth[best_id < 0] = 0.0
    return best_id, best_depth, ties
