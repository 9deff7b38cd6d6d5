"""Visibility against a brute-force z-buffer, perspective-correct barycentrics against 3D ray casting and
tensorflow-graphics, gradient checks, XLA and SavedModel. Fast tests: small meshes only.

Ties (pixels excluded from the exact comparison) are defined in `rasterize.reference_visibility`: the pixel
centre lies within 1e-4 px of an edge of a triangle that (nearly) covers it, or the two nearest covering
triangles have depths within 1e-5 (relative). Their count is asserted to be small.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_facetex import camera
from tf_facetex.rendering import interpolate, rasterize


def random_mesh(rng, num_triangles, height, width, num_huge=0, near_violations=0):
    """Unshared random triangles: mostly small ones around the image, a few huge ones covering all of it,
    some partly off-screen, optionally the last ones crossing the near plane. Returns pixels [1, 3T, 2], depth
    [1, 3T], triangles [T, 3]."""
    corners = []
    for t in range(num_triangles):
        if t < num_huge:      # contains the whole image
            big = np.array([[-width, -height], [3 * width, -height], [-width, 3 * height]], np.float64)
            big = big[[0, 2, 1]] if t % 2 == 0 else big            # even ones front-facing
            corners.append(big + rng.uniform(-3.0, 3.0, (3, 2)))
            continue
        else:
            centre = rng.uniform([-8, -8], [width + 8, height + 8])
            spread = rng.uniform(0.3, 9.0)
        corners.append(centre + rng.normal(0.0, spread, (3, 2)))
    pixels = np.asarray(corners, np.float32).reshape(1, -1, 2)
    depth = rng.uniform(4.0, 16.0, (1, pixels.shape[1])).astype(np.float32)
    if near_violations:
        depth[0, -3 * near_violations::3] = 1e-3          # the last triangles cross the near plane
    triangles = np.arange(pixels.shape[1], dtype=np.int32).reshape(-1, 3)
    return pixels, depth, triangles


def assert_matches_reference(pixels, depth, triangles, image_size, cull, static_shapes=False, max_tie_fraction=0.01):
    triangle_id, zbuffer = rasterize.visibility(pixels, depth, triangles, image_size, cull_backfaces=cull,
                                                static_shapes=static_shapes)
    expected_id, expected_depth, ties = rasterize.reference_visibility(pixels, depth, triangles, image_size,
                                                                       cull_backfaces=cull)
    triangle_id = triangle_id.numpy()
    mismatch = (triangle_id != expected_id) & ~ties
    assert not mismatch.any(), (f"{mismatch.sum()} pixels differ from the brute-force z-buffer, e.g. at "
                                f"{np.argwhere(mismatch)[:5].tolist()}")
    assert ties.mean() <= max_tie_fraction
    clear = ~ties & (expected_id >= 0)
    np.testing.assert_allclose(zbuffer.numpy()[clear], expected_depth[clear], rtol=1e-5)
    assert np.all(zbuffer.numpy()[triangle_id < 0] == 0.0)
    return triangle_id, ties


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("cull", [False, True])
def test_visibility_matches_brute_force_on_random_meshes(static_shapes, cull):
    rng = np.random.default_rng(1 + 2 * static_shapes + cull)
    pixels, depth, triangles = random_mesh(rng, 250, 40, 56, num_huge=3, near_violations=2)
    triangle_id, _ = assert_matches_reference(pixels, depth, triangles, (40, 56), cull, static_shapes)
    # The huge triangles are larger than any window: they cover the image wherever nothing is in front.
    assert np.isin(np.arange(3), triangle_id).sum() >= 1
    if not cull:
        assert (triangle_id >= 0).all()
    # Triangles crossing the near plane are not drawn.
    assert not np.isin([len(triangles) - 2, len(triangles) - 1], triangle_id).any()


def assert_early_culling_changes_nothing(pixels, depth, triangles, image_size, cull):
    """Early culling (`triangle_jobs(compact=True)`) against the full job list: the same ids everywhere
    except at pixels the brute-force reference flags as float32 ties, the same depths (1 ulp: different
    vector lanes)."""
    late = rasterize.visibility(pixels, depth, triangles, image_size, cull_backfaces=cull, cull_early=False)
    early = rasterize.visibility(pixels, depth, triangles, image_size, cull_backfaces=cull, cull_early=True)
    _, _, ties = rasterize.reference_visibility(pixels, depth, triangles, image_size, cull_backfaces=cull)
    late_id, early_id = late[0].numpy(), early[0].numpy()
    assert not ((late_id != early_id) & ~ties).any()
    assert (late_id != early_id).mean() < 1e-3
    same = late_id == early_id
    np.testing.assert_allclose(early[1].numpy()[same], late[1].numpy()[same], rtol=1e-6)
    return early_id


@pytest.mark.parametrize("cull", [False, True])
def test_early_culling_equals_no_early_culling_on_random_meshes(cull):
    rng = np.random.default_rng(21 + cull)
    meshes = [random_mesh(rng, 200, 40, 56, num_huge=2, near_violations=3) for _ in range(2)]
    pixels = np.concatenate([m[0] for m in meshes])
    depth = np.concatenate([m[1] for m in meshes])
    triangle_id = assert_early_culling_changes_nothing(pixels, depth, meshes[0][2], (40, 56), cull)
    assert (triangle_id >= 0).mean() > 0.3
    # and both match the brute force (the default, cull_early=None, is early culling in eager code)
    assert_matches_reference(pixels, depth, meshes[0][2], (40, 56), cull)


def test_early_culling_equals_no_early_culling_on_the_face_mesh(ict_model):
    angles = tf.constant([[0.0, 0.0, 0.0], [0.1, 0.7, -0.1], [-0.2, -1.2, 0.05]], tf.float32)
    posed = camera.rigid_transform(tf.constant(np.repeat(ict_model.mean_shape[None], 3, 0)), angles,
                                   tf.constant([[0.0, 0.3, -1.0]] * 3, tf.float32))
    # A small image keeps the float64 reference fast; the face also runs partly off-screen in the third view.
    pixels, depth = camera.project(posed, 96)
    pixels = pixels + tf.constant([[[0.0, 0.0]], [[0.0, 0.0]], [[40.0, 0.0]]])
    triangle_id = assert_early_culling_changes_nothing(pixels.numpy(), depth.numpy(), ict_model.triangles, 96,
                                                       cull=True)
    assert (triangle_id >= 0).mean() > 0.3


def test_visibility_batched_and_square_sizes():
    rng = np.random.default_rng(5)
    meshes = [random_mesh(rng, 120, 33, 33, num_huge=1) for _ in range(3)]
    pixels = np.concatenate([m[0] for m in meshes])
    depth = np.concatenate([m[1] for m in meshes])
    assert_matches_reference(pixels, depth, meshes[0][2], 33, cull=False)


def test_visibility_on_the_procedural_face(tiny_model):
    angles = tf.constant([[0.0, 0.0, 0.0], [0.2, 0.6, -0.1]], tf.float32)
    posed = camera.rigid_transform(tf.constant(np.repeat(tiny_model.mean_shape[None], 2, 0)), angles,
                                   tf.constant([[0.0, 0.0, -1.0]] * 2, tf.float32))
    pixels, depth = camera.project(posed, 64)
    for index, cull in ((0, False), (1, True)):
        triangle_id, _ = assert_matches_reference(pixels.numpy()[index:index + 1], depth.numpy()[index:index + 1],
                                                  tiny_model.triangles, 64, cull)
        assert (triangle_id >= 0).mean() > 0.2


def test_depth_order_and_tie_break():
    # Two identical squares' halves at different depths, then at the same depth.
    square = np.array([[2, 2], [30, 2], [30, 30], [2, 30]], np.float32)
    pixels = np.concatenate([square, square])[None]
    triangles = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]], np.int32)
    far_then_near = np.array([[9.0] * 4 + [5.0] * 4], np.float32)
    triangle_id, zbuffer = rasterize.visibility(pixels, far_then_near, triangles, 32)
    inside = triangle_id.numpy()[0, 5:28, 5:28]
    assert set(np.unique(inside)) == {2, 3}
    np.testing.assert_allclose(zbuffer.numpy()[0, 10, 20], 5.0, rtol=1e-6)
    same_depth = np.full((1, 8), 7.0, np.float32)
    triangle_id, _ = rasterize.visibility(pixels, same_depth, triangles, 32)
    assert set(np.unique(triangle_id.numpy()[0, 5:28, 5:28])) == {0, 1}       # ties go to the smaller id
    assert triangle_id.numpy()[0, 0, 0] == rasterize.BACKGROUND_ID


def test_back_face_culling_uses_the_mesh_winding():
    # Counter-clockwise seen from the camera in a y-up world = front-facing.
    world = tf.constant([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]], tf.float32)
    pixels, depth = camera.project(world, 32)
    triangle_id, _ = rasterize.visibility(pixels, depth, [[0, 1, 2]], 32, cull_backfaces=True)
    assert (triangle_id.numpy() == 0).sum() > 50
    triangle_id, _ = rasterize.visibility(pixels, depth, [[0, 2, 1]], 32, cull_backfaces=True)
    assert (triangle_id.numpy() == 0).sum() == 0
    assert bool(rasterize.front_facing(tf.gather(pixels, [[0, 1, 2]], axis=1))[0, 0])


def test_window_class_is_exact_at_powers_of_two():
    counts = np.concatenate([np.arange(1, 70), 2 ** np.arange(1, 22), 2 ** np.arange(1, 22) + 1]).astype(np.int32)
    expected = np.ceil(np.log2(counts.astype(np.float64))).astype(np.int32)
    np.testing.assert_array_equal(rasterize.window_class(tf.constant(counts)).numpy(), expected)


def test_depth_keys_round_trip_and_order():
    depth = tf.constant([0.5, 7.25, 7.25, 1e4], tf.float32)
    ids = tf.constant([3, 9, 2, 70000], tf.int32)
    keys = rasterize.pack_depth_keys(depth, ids)
    back_id, back_depth = rasterize.unpack_depth_keys(keys)
    np.testing.assert_array_equal(back_id.numpy(), ids.numpy())
    np.testing.assert_array_equal(back_depth.numpy(), depth.numpy())
    assert list(np.argsort(keys.numpy())) == [0, 2, 1, 3]


def test_visibility_under_xla_equals_eager():
    rng = np.random.default_rng(11)
    # Small image: XLA compiles one loop per window class (log2(H * W) + 1 of them).
    pixels, depth, triangles = random_mesh(rng, 80, 12, 14, num_huge=2)
    size = (12, 14)
    # Eager calls run the dynamic schedule as a traced graph; the renderer tests cover jit_static_parts.
    eager = rasterize.visibility(pixels, depth, triangles, size, cull_backfaces=True)
    xla = tf.function(lambda p, d: rasterize.visibility(p, d, triangles, size, cull_backfaces=True),
                      jit_compile=True)(pixels, depth)
    assert (eager[0].numpy() >= 0).mean() > 0.5
    for other in (xla,):
        np.testing.assert_array_equal(other[0].numpy(), eager[0].numpy())
        np.testing.assert_allclose(other[1].numpy(), eager[1].numpy(), rtol=1e-5)   # XLA fuses differently


# ------------------------------------------------------------------------------------------ barycentrics
def ray_cast_barycentrics(pixels, depth, triangles, triangle_id, focal=100.0):
    """Reference: unproject the corners to 3D (any focal), intersect each pixel's ray with its triangle's
    plane in float64 and return the 3D barycentrics of the hit point."""
    height, width = triangle_id.shape[1:]
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    pixels = pixels.astype(np.float64)
    depth = depth.astype(np.float64)
    points = np.concatenate([(pixels - centre) * depth[..., None] / focal, depth[..., None]], -1)
    result = np.zeros(triangle_id.shape + (3,))
    for b, i, j in np.argwhere(triangle_id >= 0):
        v0, v1, v2 = points[b, triangles[triangle_id[b, i, j]]]
        ray = np.array([(j - centre[0]) / focal, (i - centre[1]) / focal, 1.0])
        # t * ray = v0 + s (v1 - v0) + u (v2 - v0)
        t, s, u = np.linalg.solve(np.stack([ray, v0 - v1, v0 - v2], 1), v0)
        result[b, i, j] = [1.0 - s - u, s, u]
    return result


def test_perspective_barycentrics_match_ray_casting_and_tfg(tiny_model):
    from tensorflow_graphics.rendering import barycentrics as tfg_barycentrics

    posed = camera.rigid_transform(tf.constant(tiny_model.mean_shape[None]), tf.constant([[0.3, 0.5, 0.1]]),
                                   tf.constant([[0.0, 0.0, -3.0]]))
    pixels, depth = camera.project(posed, 48)
    triangle_id, _ = rasterize.visibility(pixels, depth, tiny_model.triangles, 48)
    ours = interpolate.perspective_barycentrics(pixels, depth, tiny_model.triangles, triangle_id).numpy()
    expected = ray_cast_barycentrics(pixels.numpy(), depth.numpy(), tiny_model.triangles, triangle_id.numpy())
    np.testing.assert_allclose(ours, expected, atol=2e-4)
    np.testing.assert_allclose(ours.sum(-1)[triangle_id.numpy() >= 0], 1.0, atol=1e-5)
    # tensorflow-graphics' clip-space formulation on the same framebuffer.
    framebuffer = interpolate.to_framebuffer(triangle_id, tf.constant(ours), tiny_model.triangles)
    theirs = tfg_barycentrics.differentiable_barycentrics(
        framebuffer, camera.clip_space(posed, 48)[0], tiny_model.triangles).barycentrics.value.numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_interpolation_reproduces_linear_attributes(tiny_model):
    # An attribute linear in 3D (the camera-frame position itself) interpolates exactly with 3D barycentrics.
    posed = camera.rigid_transform(tf.constant(tiny_model.mean_shape[None]), tf.constant([[0.1, -0.4, 0.0]]),
                                   tf.constant([[0.0, 0.0, -2.0]]))
    pixels, depth = camera.project(posed, 40)
    triangle_id, zbuffer = rasterize.visibility(pixels, depth, tiny_model.triangles, 40)
    weights = interpolate.perspective_barycentrics(pixels, depth, tiny_model.triangles, triangle_id)
    interpolated = interpolate.interpolate_vertex_attributes(camera.world_to_camera(posed), tiny_model.triangles,
                                                             triangle_id, weights)
    covered = triangle_id.numpy() >= 0
    # The interpolated camera-frame point projects back onto its pixel centre and has the z-buffer depth.
    point = interpolated.numpy()[covered]
    focal, centre = camera.focal_length(40), camera.principal_point(40)
    rows, cols = np.nonzero(covered[0])
    np.testing.assert_allclose(focal * point[:, 0] / point[:, 2] + centre, cols, atol=2e-3)
    np.testing.assert_allclose(focal * point[:, 1] / point[:, 2] + centre, rows, atol=2e-3)
    np.testing.assert_allclose(point[:, 2], zbuffer.numpy()[covered], rtol=1e-5)
    assert np.all(interpolated.numpy()[~covered] == 0.0)


def _small_problem():
    rng = np.random.default_rng(3)
    pixels = np.array([[[2.0, 3.0], [17.0, 4.5], [6.0, 15.0], [15.5, 14.0]]])
    pixels = pixels + rng.uniform(-0.3, 0.3, pixels.shape)
    depth = np.array([[5.0, 6.5, 4.0, 7.0]])
    triangles = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    triangle_id, _ = rasterize.visibility(pixels.astype(np.float32), depth.astype(np.float32), triangles, 18)
    return pixels, depth, triangles, triangle_id


def _projected(function, outputs=6, seed=0):
    """``function`` followed by a fixed random projection to a few outputs: `tf.test.compute_gradient` then
    needs one backward pass per output instead of one per pixel, and still checks the whole Jacobian along
    random directions."""
    def projected(value):
        result = tf.reshape(function(value), [-1])
        directions = tf.random.stateless_normal([result.shape[0], outputs], [seed, 1], dtype=result.dtype)
        return tf.linalg.matvec(directions, result, transpose_a=True)
    return projected


def _check_gradient(function, value):
    theoretical, numerical = tf.test.compute_gradient(_projected(function), [tf.constant(value, tf.float64)])
    error = np.max(np.abs(theoretical[0] - numerical[0]))
    scale = np.abs(theoretical[0]).max()
    assert scale > 1e-3, "the gradient is trivially zero"
    assert error < 1e-6 * max(scale, 1.0), error
    return error


def test_gradient_of_barycentrics_wrt_vertex_positions_and_depth():
    pixels, depth, triangles, triangle_id = _small_problem()
    assert (triangle_id.numpy() >= 0).sum() > 60
    _check_gradient(lambda p: interpolate.perspective_barycentrics(p, tf.constant(depth), triangles, triangle_id),
                    pixels)
    _check_gradient(lambda d: interpolate.perspective_barycentrics(tf.constant(pixels), d, triangles, triangle_id),
                    depth)


def test_gradient_of_interpolation_wrt_attributes_and_vertices():
    pixels, depth, triangles, triangle_id = _small_problem()
    attributes = np.random.default_rng(4).normal(size=(1, 4, 3))

    def by_attributes(a):
        weights = interpolate.perspective_barycentrics(tf.constant(pixels), tf.constant(depth), triangles,
                                                       triangle_id)
        return interpolate.interpolate_vertex_attributes(a, triangles, triangle_id, weights)

    def by_vertices(p):
        weights = interpolate.perspective_barycentrics(p, tf.constant(depth), triangles, triangle_id)
        return interpolate.interpolate_vertex_attributes(tf.constant(attributes), triangles, triangle_id, weights)

    _check_gradient(by_attributes, attributes)
    _check_gradient(by_vertices, pixels)


def test_gradient_flows_to_3d_vertices_through_the_camera(tiny_model):
    vertices = tf.Variable(tiny_model.mean_shape[None] + np.array([0.0, 0.0, -1.0], np.float32))
    colours = tf.constant(np.random.default_rng(0).uniform(size=(1, tiny_model.num_vertices, 3)), tf.float32)
    with tf.GradientTape() as tape:
        pixels, depth = camera.project(vertices, 32)
        triangle_id, _ = rasterize.visibility(pixels, depth, tiny_model.triangles, 32)
        weights = interpolate.perspective_barycentrics(pixels, depth, tiny_model.triangles, triangle_id)
        image = interpolate.interpolate_vertex_attributes(colours, tiny_model.triangles, triangle_id, weights)
        loss = tf.reduce_sum(image * tf.random.stateless_normal(image.shape, [1, 2]))
    gradient = tape.gradient(loss, vertices).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0.0


def test_bilinear_sample_matches_hand_computation_and_gradient():
    image = np.arange(2 * 4 * 5 * 1, dtype=np.float64).reshape(2, 4, 5, 1) ** 1.5
    coords = np.array([[[1.25, 2.5], [0.0, 0.0], [4.0, 3.0]], [[3.5, 0.75], [-2.0, 1.0], [9.0, 9.0]]])
    sampled = interpolate.bilinear_sample(tf.constant(image), tf.constant(coords)).numpy()
    x, y = 1.25, 2.5
    expected = ((1 - 0.25) * (1 - 0.5) * image[0, 2, 1] + 0.25 * (1 - 0.5) * image[0, 2, 2]
                + (1 - 0.25) * 0.5 * image[0, 3, 1] + 0.25 * 0.5 * image[0, 3, 2])
    np.testing.assert_allclose(sampled[0, 0], expected)
    np.testing.assert_allclose(sampled[0, 2], image[0, 3, 4])            # the last pixel exactly
    np.testing.assert_allclose(sampled[1, 1], image[1, 1, 0])            # clamped to the border
    np.testing.assert_allclose(sampled[1, 2], image[1, 3, 4])
    inner = np.array([[[1.3, 2.4], [2.6, 0.7]], [[0.2, 1.9], [3.3, 2.2]]])
    _check_gradient(lambda v: interpolate.bilinear_sample(v, tf.constant(inner)), image)
    _check_gradient(lambda v: interpolate.bilinear_sample(tf.constant(image), v), inner)


def test_savedmodel_export_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    pixels, depth, triangles = random_mesh(rng, 60, 20, 20, num_huge=1)

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 2], tf.float32),
                                      tf.TensorSpec([None, None], tf.float32)])
        def __call__(self, p, d):
            triangle_id, zbuffer = rasterize.visibility(p, d, tf.constant(triangles), 20, cull_backfaces=False)
            return {"triangle_id": triangle_id, "depth": zbuffer,
                    "barycentrics": interpolate.perspective_barycentrics(p, d, tf.constant(triangles), triangle_id)}

    tf.saved_model.save(Module(), str(tmp_path / "raster"))
    loaded = tf.saved_model.load(str(tmp_path / "raster"))
    outputs = loaded(tf.constant(pixels), tf.constant(depth))
    expected_id, _ = rasterize.visibility(pixels, depth, triangles, 20)
    np.testing.assert_array_equal(outputs["triangle_id"].numpy(), expected_id.numpy())
    graph_ops = {node.op for function in loaded.__call__.concrete_functions
                 for node in function.graph.as_graph_def().node}
    assert "EagerPyFunc" not in graph_ops and "PyFunc" not in graph_ops
