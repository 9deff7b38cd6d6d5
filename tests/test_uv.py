"""UV raster, attributes into UV, symmetry map, rendering UV maps, unwrapping (round trip on the face mesh),
per-texel shading and gradients."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from tf_facetex import camera, sh
from tf_facetex.rendering import FaceRenderer, interpolate, rasterize, uv
from tf_facetex.rendering.renderer import matvec_sh_shading, unrolled_sh_shading


def posed_batch(model, angles, translation=(0.0, 0.0, -1.0)):
    angles = tf.constant(angles, tf.float32)
    batch = angles.shape[0]
    vertices = tf.constant(np.repeat(model.mean_shape[None], batch, 0))
    return camera.rigid_transform(vertices, angles, tf.constant([translation] * batch, tf.float32))


def smooth_texture(rng, batch, size, sigma=4.0):
    noise = ndimage.gaussian_filter(rng.uniform(size=(batch, size, size, 3)), (0, sigma, sigma, 0))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return tf.constant(noise.astype(np.float32))


def projected(function, outputs=6):
    """``function`` then a fixed random projection to a few outputs (fewer backward passes in
    `tf.test.compute_gradient`, same Jacobian checked along random directions)."""
    def wrapped(value):
        result = tf.reshape(function(value), [-1])
        directions = tf.random.stateless_normal([result.shape[0], outputs], [7, 1], dtype=result.dtype)
        return tf.linalg.matvec(directions, result, transpose_a=True)
    return wrapped


def psnr(a, b, mask):
    error = np.mean((np.asarray(a) - np.asarray(b))[mask] ** 2)
    return 10.0 * np.log10(1.0 / error)


@pytest.fixture(scope="module")
def tiny_renderer(tiny_model):
    return FaceRenderer(tiny_model, image_size=64, uv_size=64, jit_stages=False)


@pytest.fixture(scope="module")
def ict_renderer(ict_model):
    return FaceRenderer(ict_model, image_size=224, uv_size=256, jit_stages=False)


def test_uv_raster_matches_brute_force_and_barycentrics(tiny_model):
    size = 64
    raster = uv.build_uv_raster(tiny_model, size, gutter=2)
    texel_uv = uv.uv_to_texel_np(tiny_model.uv_coords, size).astype(np.float32)
    expected, _, ties = rasterize.reference_visibility(texel_uv[None], np.ones((1, len(texel_uv)), np.float32),
                                                       tiny_model.uv_triangles, size)
    mismatch = (raster.triangle_id != expected[0]) & ~ties[0]
    assert not mismatch.any()
    assert raster.mask.sum() > 0.8 * size * size
    # Barycentrics reproduce the texel centres.
    rows, cols = np.nonzero(raster.mask)
    corners = uv.uv_to_texel_np(tiny_model.uv_coords[tiny_model.uv_triangles[raster.triangle_id[rows, cols]]], size)
    centres = np.einsum("tk,tkc->tc", raster.barycentrics[rows, cols], corners)
    np.testing.assert_allclose(centres, np.stack([cols, rows], 1), atol=1e-3)
    # The gutter extends the fill by up to two texels, never beyond.
    distance = ndimage.distance_transform_edt(~raster.mask)
    filled = raster.fill_triangle_id >= 0
    assert np.all(filled[(distance > 0) & (distance <= 2)]) and not filled[distance > 2].any()
    np.testing.assert_allclose(raster.corner_weights[filled].sum(-1), 1.0, atol=1e-5)
    assert np.all(raster.corner_weights[filled] >= 0.0)


def test_texel_convention():
    # col = u (S - 1), row = (1 - v)(S - 1): u right, v up.
    texel = uv.uv_to_texel(tf.constant([[0.0, 0.0], [1.0, 1.0], [0.25, 0.75]]), 256).numpy()
    np.testing.assert_allclose(texel, [[0.0, 255.0], [255.0, 0.0], [63.75, 63.75]])


def test_rasterize_to_uv_interpolates_positions_linearly(tiny_model, tiny_renderer):
    # In the procedural model u, v and x, y are affine in the grid coordinates, so the UV map of the vertex
    # positions is affine in the texel coordinates inside the mask.
    positions_uv = tiny_renderer.rasterize_to_uv(tf.constant(tiny_model.mean_shape[None])).numpy()[0]
    mask = tiny_renderer.uv_raster.mask
    rows, cols = np.nonzero(mask)
    design = np.stack([cols, rows, np.ones_like(rows)], 1).astype(np.float64)
    for channel in (0, 1):
        coefficients, *_ = np.linalg.lstsq(design, positions_uv[rows, cols, channel], rcond=None)
        np.testing.assert_allclose(design @ coefficients, positions_uv[rows, cols, channel], atol=1e-5)
    assert np.all(positions_uv[~(tiny_renderer.uv_raster.fill_triangle_id >= 0)] == 0.0)


def test_uv_symmetry_index(tiny_model, tiny_renderer):
    index = tiny_renderer.uv_raster.symmetry_index
    mask = tiny_renderer.uv_raster.mask.reshape(-1)
    size = tiny_renderer.uv_size
    flat = np.arange(size * size)
    flipped = (flat // size) * size + (size - 1 - flat % size)
    # The procedural layout is exactly symmetric about u = 0.5: the gather map is the horizontal flip.
    np.testing.assert_array_equal(index[mask], flipped[mask])
    maps = tf.random.stateless_uniform([1, size, size, 2], [1, 2])
    twice = tiny_renderer.mirror_uv(tiny_renderer.mirror_uv(maps)).numpy().reshape(-1, 2)
    np.testing.assert_array_equal(twice[mask], maps.numpy().reshape(-1, 2)[mask])


def test_uv_symmetry_index_on_the_face_mesh(ict_model, ict_renderer):
    raster = ict_renderer.uv_raster
    index, mask = raster.symmetry_index, raster.mask.reshape(-1)
    size = raster.size
    flat = np.arange(size * size)
    flipped = (flat // size) * size + (size - 1 - flat % size)
    assert np.mean(np.abs(index[mask] - flipped[mask]) <= 1) > 0.99        # ICT's layout is symmetric
    assert np.mean(index[index[mask]] == flat[mask]) > 0.99                  # an involution


def test_render_uv_maps_of_a_position_map_matches_interpolation(tiny_model, tiny_renderer):
    # Rendering the UV map of the model-space positions must give, at every pixel, the (perspective-
    # correct) surface point: the same as interpolating the positions directly.
    posed = posed_batch(tiny_model, [[0.2, 0.5, 0.1]], (0.0, 0.0, -2.0))
    raster = tiny_renderer.rasterize(posed)
    positions_uv = tiny_renderer.rasterize_to_uv(tf.constant(tiny_model.mean_shape[None]))
    image, mask = tiny_renderer.render_uv_maps(positions_uv, raster, background=-7.0)
    direct = interpolate.interpolate_vertex_attributes(tf.constant(tiny_model.mean_shape[None]),
                                                       tiny_model.triangles, raster.triangle_id,
                                                       raster.barycentrics)
    covered = mask.numpy()[..., 0] > 0
    assert covered.mean() > 0.2
    # Exact where the bilinear footprint is inside the UV mask; at the atlas border the gutter holds values
    # clamped onto the nearest triangle (no extrapolation), so only approximately there.
    texels = tiny_renderer.texel_coords(raster).numpy()
    low = np.floor(texels).astype(int)
    inner = np.ones_like(covered)
    for dy in (0, 1):
        for dx in (0, 1):
            rows = np.clip(low[..., 1] + dy, 0, 63)
            cols = np.clip(low[..., 0] + dx, 0, 63)
            inner &= tiny_renderer.uv_raster.mask[rows, cols]
    inner &= covered
    assert inner.sum() > 0.9 * covered.sum()
    # x and y are affine in UV (exact up to float error); z is a curved height field: bilinear error only.
    np.testing.assert_allclose(image.numpy()[inner][:, :2], direct.numpy()[inner][:, :2], atol=1e-4)
    np.testing.assert_allclose(image.numpy()[inner][:, 2], direct.numpy()[inner][:, 2], atol=0.02)
    np.testing.assert_allclose(image.numpy()[covered], direct.numpy()[covered], atol=0.03)
    assert np.all(image.numpy()[~covered] == -7.0)


def test_projection_mask_excludes_untextured_triangles(ict_model, ict_renderer):
    posed = posed_batch(ict_model, [[0.0, 0.9, 0.0]], (0.0, 0.3, -1.0))    # a profile shows head and neck
    raster = ict_renderer.rasterize(posed)
    _, mask = ict_renderer.render_uv_maps(tf.ones([1, 256, 256, 1]), raster)
    triangle_id = raster.triangle_id.numpy()
    textured = ict_model.textured_triangles[np.maximum(triangle_id, 0)] & (triangle_id >= 0)
    np.testing.assert_array_equal(mask.numpy()[..., 0] > 0, textured)
    assert ((triangle_id >= 0) & ~textured).sum() > 100                       # some head is visible


@pytest.mark.parametrize("yaw", [0.0, 0.6])
def test_round_trip_on_the_face_mesh(ict_model, ict_renderer, yaw):
    rng = np.random.default_rng(0)
    texture = smooth_texture(rng, 1, 256)
    posed = posed_batch(ict_model, [[0.0, yaw, 0.0]], (0.0, 0.3, -1.0))
    raster = ict_renderer.rasterize(posed)
    image, _ = ict_renderer.render_uv_maps(texture, raster)
    unwrapped = ict_renderer.unwrap(image, posed, raster)
    visible = unwrapped.visibility.numpy()[0, ..., 0] > 0
    eroded = ndimage.binary_erosion(visible, np.ones((3, 3)))
    value = psnr(unwrapped.texture.numpy()[0], texture.numpy()[0], eroded)
    print(f"round trip yaw={yaw}: {visible.sum()} visible texels, {eroded.sum()} eroded, PSNR {value:.2f} dB")
    assert eroded.sum() > 0.4 * ict_renderer.uv_raster.mask.sum() * (0.6 if yaw else 1.0)
    assert value > 30.0
    # Unseen texels are exactly zero; every visible texel is in the UV mask and projects into the image.
    assert np.all(unwrapped.texture.numpy()[0][~visible] == 0.0)
    assert not visible[~ict_renderer.uv_raster.mask].any()
    pixels = unwrapped.pixels.numpy()[0][visible]
    assert pixels.min() >= 0.0 and pixels.max() <= 223.0


def test_unwrap_hides_the_far_side(ict_model, ict_renderer):
    frontal = ict_renderer.unwrap(tf.zeros([1, 224, 224, 3]), posed_batch(ict_model, [[0.0, 0.0, 0.0]],
                                                                           (0.0, 0.3, -1.0)))
    turned = ict_renderer.unwrap(tf.zeros([1, 224, 224, 3]), posed_batch(ict_model, [[0.0, 1.0, 0.0]],
                                                                         (0.0, 0.3, -1.0)))
    half = ict_renderer.uv_size // 2
    frontal_halves = [frontal.visibility.numpy()[0, :, :half].sum(), frontal.visibility.numpy()[0, :, half:].sum()]
    turned_halves = [turned.visibility.numpy()[0, :, :half].sum(), turned.visibility.numpy()[0, :, half:].sum()]
    assert abs(frontal_halves[0] - frontal_halves[1]) < 0.05 * sum(frontal_halves)    # symmetric when frontal
    assert min(turned_halves) < 0.3 * max(turned_halves)                               # one side is hidden


def test_per_texel_shading_agrees_with_per_vertex_shading(ict_model, ict_renderer):
    posed = posed_batch(ict_model, [[0.1, 0.3, 0.0]], (0.0, 0.3, -1.0))
    raster = ict_renderer.rasterize(posed)
    gamma = tf.constant([[0.3, -0.2, 0.4, 0.1, 0.0, 0.05, -0.1, 0.0, 0.02] * 3], tf.float32)
    normals_uv = ict_renderer.normals_uv(posed)
    albedo_uv = tf.fill([1, 256, 256, 3], 0.7)
    image_b, mask = ict_renderer.render(albedo_uv, gamma, raster, normals_uv)              # mode B, map path
    light_uv = tf.broadcast_to(gamma[:, None, None, :], [1, 256, 256, 27])
    image_map, _ = ict_renderer.render(albedo_uv, light_uv, raster, normals_uv)
    np.testing.assert_allclose(image_map.numpy(), image_b.numpy(), atol=1e-5)
    colours = 0.7 * sh.shading(ict_renderer.vertex_normals(posed), gamma[:, None, :])
    image_a, _ = ict_renderer.render_vertex_colors(colours, raster)                       # mode A
    covered = mask.numpy()[0, ..., 0] > 0
    difference = np.abs(image_a.numpy()[0] - image_b.numpy()[0])[covered]
    assert np.median(difference) < 0.01 and np.mean(difference) < 0.03
    np.testing.assert_allclose(np.linalg.norm(normals_uv.numpy()[0][ict_renderer.uv_raster.mask], axis=-1), 1.0,
                               atol=1e-5)


def test_unrolled_shading_equals_sh_shading():
    normals = tf.math.l2_normalize(tf.random.stateless_normal([2, 5, 7, 3], [1, 9]), axis=-1)
    light_map = tf.random.stateless_normal([2, 5, 7, 27], [2, 9])
    gamma = tf.random.stateless_normal([2, 1, 1, 27], [3, 9])
    for light in (light_map, gamma):
        np.testing.assert_allclose(unrolled_sh_shading(normals, light).numpy(), sh.shading(normals, light).numpy(),
                                   atol=1e-5)


def test_matvec_shading_equals_sh_shading():
    normals = tf.math.l2_normalize(tf.random.stateless_normal([2, 5, 7, 3], [1, 8]), axis=-1)
    light_map = tf.random.stateless_normal([2, 5, 7, 27], [2, 8])
    np.testing.assert_allclose(matvec_sh_shading(normals, light_map).numpy(),
                               sh.shading(normals, light_map).numpy(), atol=1e-5)


def test_foreground_stages_equal_the_full_image_ones(ict_model, ict_renderer):
    """The serving (no-XLA) stages evaluated at the covered pixels only give the full-image values."""
    posed = posed_batch(ict_model, [[0.0, 0.0, 0.0], [0.1, 0.8, 0.0]], (0.0, 0.3, -1.0))
    pixels, depth = ict_renderer.project(posed)
    triangle_id, _ = rasterize.visibility(pixels, depth, ict_renderer.triangles, 224, True)
    full = interpolate.perspective_barycentrics(pixels, depth, ict_renderer.triangles, triangle_id)
    compact = interpolate.foreground_barycentrics(pixels, depth, ict_renderer.triangles, triangle_id)
    np.testing.assert_allclose(compact.numpy(), full.numpy(), atol=1e-6)
    assert (triangle_id.numpy() >= 0).mean() > 0.3
    maps = tf.random.stateless_uniform([2, 256, 256, 3], [4, 4])
    texel_coords = uv.pixel_texel_coords(triangle_id, full, ict_renderer.texel_corners)
    mask = uv.projection_mask(triangle_id, ict_renderer.textured_triangles)
    expected = uv.render_uv_maps(maps, texel_coords, mask, background_value=0.3)
    image, compact_mask = uv.render_uv_maps_foreground(maps, triangle_id, full, ict_renderer.texel_corners,
                                                       ict_renderer.textured_triangles, background_value=0.3)
    np.testing.assert_array_equal(compact_mask.numpy(), mask.numpy())
    np.testing.assert_allclose(image.numpy(), expected.numpy(), atol=1e-6)


def test_foreground_stages_gradients():
    """Gradients of the foreground-only barycentrics and UV sampling equal those of the full-image ones."""
    from tf_facetex.face_model.procedural import make_procedural_model
    model = make_procedural_model()
    renderer = FaceRenderer(model, image_size=32, uv_size=16, jit_stages=False)
    posed = posed_batch(model, [[0.1, 0.2, 0.0]], (0.0, 0.0, -2.0))
    pixels, depth = renderer.project(posed)
    triangle_id, _ = rasterize.visibility(pixels, depth, renderer.triangles, 32, True)
    maps = tf.random.stateless_uniform([1, 16, 16, 2], [5, 5])
    variables = [tf.Variable(pixels), tf.Variable(depth), tf.Variable(maps)]
    gradients = []
    for barycentrics_of, render in (
            (interpolate.perspective_barycentrics,
             lambda m, t, b: uv.render_uv_maps(m, uv.pixel_texel_coords(t, b, renderer.texel_corners),
                                               uv.projection_mask(t, renderer.textured_triangles))),
            (interpolate.foreground_barycentrics,
             lambda m, t, b: uv.render_uv_maps_foreground(m, t, b, renderer.texel_corners,
                                                          renderer.textured_triangles)[0])):
        with tf.GradientTape() as tape:
            barycentrics = barycentrics_of(variables[0], variables[1], renderer.triangles, triangle_id)
            image = render(variables[2], triangle_id, barycentrics)
            loss = tf.reduce_sum(image * tf.random.stateless_normal(image.shape, [6, 6]))
        gradients.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)])
    for full, compact in zip(*gradients):
        assert np.abs(full).max() > 0.0
        np.testing.assert_allclose(compact, full, atol=1e-5)


def test_render_gradients(tiny_model, tiny_renderer):
    posed = tf.Variable(posed_batch(tiny_model, [[0.1, 0.2, 0.0]], (0.0, 0.0, -2.0)))
    albedo_uv = tf.Variable(tf.fill([1, 64, 64, 3], 0.5))
    light_uv = tf.Variable(tf.random.stateless_normal([1, 64, 64, 27], [3, 4]) * 0.1)
    target = tf.random.stateless_uniform([1, 64, 64, 3], [5, 6])
    with tf.GradientTape() as tape:
        raster = tiny_renderer.rasterize(posed)
        image, mask = tiny_renderer.render(albedo_uv, light_uv, raster, tiny_renderer.normals_uv(posed))
        loss = tf.reduce_sum(mask * (image - target) ** 2)
    gradients = tape.gradient(loss, [posed, albedo_uv, light_uv])
    for gradient in gradients:
        assert gradient is not None
        values = tf.convert_to_tensor(gradient).numpy()
        assert np.all(np.isfinite(values)) and np.abs(values).max() > 0.0
    # Texels never sampled get no gradient.
    far = ~ndimage.binary_dilation(tiny_renderer.uv_raster.fill_triangle_id >= 0, iterations=2)
    assert np.all(tf.convert_to_tensor(gradients[1]).numpy()[0][far] == 0.0)


def test_render_uv_maps_gradient_check():
    rng = np.random.default_rng(2)
    uv_maps = rng.uniform(size=(1, 4, 4, 1))
    coords = tf.constant(rng.uniform(0.2, 2.8, size=(1, 3, 4, 2)))
    mask = tf.constant((rng.uniform(size=(1, 3, 4, 1)) > 0.3).astype(np.float64))

    def by_maps(m):
        return uv.render_uv_maps(m, coords, mask, background_value=0.25)

    def by_coords(c):
        return uv.render_uv_maps(tf.constant(uv_maps), c, mask)

    for function, value in ((by_maps, uv_maps), (by_coords, coords.numpy())):
        theoretical, numerical = tf.test.compute_gradient(projected(function), [tf.constant(value)])
        assert np.max(np.abs(theoretical[0] - numerical[0])) < 1e-6
        assert np.abs(theoretical[0]).max() > 0.0


def test_jit_stages_give_the_same_results(tiny_model, tiny_renderer):
    jitted = FaceRenderer(tiny_model, image_size=64, uv_size=64, jit_stages=True)
    posed = posed_batch(tiny_model, [[0.1, 0.3, 0.0], [0.0, -0.2, 0.1]], (0.0, 0.0, -2.0))
    albedo_uv = tf.random.stateless_uniform([2, 64, 64, 3], [1, 1])
    gamma = tf.random.stateless_normal([2, 27], [2, 2]) * 0.2
    light_uv = gamma[:, None, None, :] + tf.random.stateless_normal([2, 64, 64, 27], [3, 3]) * 0.05
    outputs = []
    for renderer in (tiny_renderer, jitted):
        raster = renderer.rasterize(posed)
        images = [renderer.render(albedo_uv, light, raster, renderer.normals_uv(posed))[0].numpy()
                  for light in (gamma, light_uv)]
        outputs.append((raster.triangle_id.numpy(), raster.barycentrics.numpy(), images))
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_allclose(outputs[0][1], outputs[1][1], atol=1e-5)
    for no_xla, xla in zip(outputs[0][2], outputs[1][2]):
        np.testing.assert_allclose(no_xla, xla, atol=1e-4)     # (the slow tests unwrap with XLA)
