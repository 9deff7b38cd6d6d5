"""Long comparisons (minutes): the face mesh against the brute-force z-buffer at 224 and 512, large random meshes
with image-covering triangles, the XLA schedule on the face mesh, and the round trip at 512.
Run with ``pytest -m slow tests/test_render_slow.py``."""
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from tf_facetex import camera
from tf_facetex.rendering import FaceRenderer, rasterize

pytestmark = pytest.mark.slow


def face_poses(model, angles, size):
    angles = tf.constant(angles, tf.float32)
    vertices = tf.constant(np.repeat(model.mean_shape[None], angles.shape[0], 0))
    posed = camera.rigid_transform(vertices, angles, tf.constant([[0.0, 0.3, -1.0]] * angles.shape[0], tf.float32))
    pixels, depth = camera.project(posed, size)
    return posed, pixels.numpy(), depth.numpy()


def compare(pixels, depth, triangles, size, cull, **options):
    triangle_id, zbuffer = rasterize.visibility(pixels, depth, triangles, size, cull_backfaces=cull, **options)
    expected, expected_depth, ties = rasterize.reference_visibility(pixels, depth, triangles, size,
                                                                    cull_backfaces=cull)
    mismatch = (triangle_id.numpy() != expected) & ~ties
    print(f"size {size} cull {cull} {options}: {int((expected >= 0).sum())} covered pixels, "
          f"{int(ties.sum())} ties, {int(mismatch.sum())} mismatches")
    assert not mismatch.any()
    assert ties.mean() < 0.005
    clear = ~ties & (expected >= 0)
    np.testing.assert_allclose(zbuffer.numpy()[clear], expected_depth[clear], rtol=1e-5)


@pytest.mark.parametrize("cull", [False, True])
def test_face_mesh_matches_brute_force_at_224(ict_model, cull):
    _, pixels, depth = face_poses(ict_model, [[0.0, 0.0, 0.0], [0.2, 0.7, -0.1], [-0.3, -1.2, 0.2]], 224)
    compare(pixels, depth, ict_model.triangles, 224, cull)


def test_face_mesh_matches_brute_force_at_512(ict_model):
    _, pixels, depth = face_poses(ict_model, [[0.1, -0.4, 0.05]], 512)
    compare(pixels, depth, ict_model.triangles, 512, cull=True)


def test_face_mesh_xla_schedule_matches_brute_force(ict_model):
    _, pixels, depth = face_poses(ict_model, [[0.0, 0.5, 0.0], [0.3, -0.2, 0.0]], 224)
    function = tf.function(lambda p, d: rasterize.visibility(p, d, ict_model.triangles, 224, cull_backfaces=False),
                           jit_compile=True)
    triangle_id, _ = function(pixels, depth)
    expected, _, ties = rasterize.reference_visibility(pixels, depth, ict_model.triangles, 224)
    assert not ((triangle_id.numpy() != expected) & ~ties).any()


def test_large_random_mesh_with_image_covering_triangles():
    rng = np.random.default_rng(0)
    size = 512
    corners = [rng.uniform(0, size, 2) + rng.normal(0, rng.choice([0.7, 3.0, 30.0]), (3, 2)) for _ in range(4000)]
    big = np.array([[-size, -size], [3 * size, -size], [-size, 3 * size]], np.float64)
    corners = [big[[0, 2, 1]] + rng.uniform(-5, 5, (3, 2)) for _ in range(3)] + corners
    pixels = np.asarray(corners, np.float32).reshape(1, -1, 2)
    depth = rng.uniform(4.0, 16.0, (1, pixels.shape[1])).astype(np.float32)
    depth[0, :9] = 15.5 + rng.uniform(0, 0.4, 9)                       # the covering triangles behind
    triangles = np.arange(pixels.shape[1], dtype=np.int32).reshape(-1, 3)
    compare(pixels, depth, triangles, size, cull=False)
    compare(pixels, depth, triangles, size, cull=True)
    triangle_id, _ = tf.function(lambda p, d: rasterize.visibility(p, d, triangles, size), jit_compile=True)(
        pixels, depth)
    expected, _, ties = rasterize.reference_visibility(pixels, depth, triangles, size)
    assert not ((triangle_id.numpy() != expected) & ~ties).any()
    assert (triangle_id.numpy() >= 0).all()


def test_full_render_xla_equals_function(ict_model):
    renderer = FaceRenderer(ict_model)
    posed, _, _ = face_poses(ict_model, [[0.0, 0.2, 0.0], [0.1, -0.5, 0.1]], 224)
    rng = np.random.default_rng(1)
    albedo_uv = tf.constant(rng.uniform(size=(2, 256, 256, 3)), tf.float32)
    light_uv = tf.constant(rng.normal(0, 0.1, (2, 256, 256, 27)), tf.float32)

    def render(p, a, l):
        raster = renderer.rasterize(p)
        return renderer.render(a, l, raster, renderer.normals_uv(p))

    image, mask = tf.function(render)(posed, albedo_uv, light_uv)
    image_xla, mask_xla = tf.function(render, jit_compile=True)(posed, albedo_uv, light_uv)
    np.testing.assert_array_equal(mask.numpy(), mask_xla.numpy())
    # XLA rounds differently (fused multiply-adds in the projection: ~3e-5 px); pixels on sliver triangles
    # (area ~1e-3 px^2) amplify that into visible barycentric differences, so compare all but a handful.
    difference = np.abs(image.numpy() - image_xla.numpy())
    assert np.mean(difference > 1e-3) < 1e-4 and np.median(difference) < 1e-5


@pytest.mark.parametrize("size", [224, 512])
def test_round_trip_psnr_with_xla_stages(ict_model, size):
    renderer = FaceRenderer(ict_model, image_size=size, jit_stages=True)
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.uniform(size=(256, 256, 3)), (4, 4, 0))
    texture = tf.constant(((noise - noise.min()) / (noise.max() - noise.min()))[None], tf.float32)
    posed, _, _ = face_poses(ict_model, [[0.0, 0.0, 0.0]], size)
    raster = renderer.rasterize(posed)
    image, _ = renderer.render_uv_maps(texture, raster)
    unwrapped = renderer.unwrap(image, posed, raster)
    visible = unwrapped.visibility.numpy()[0, ..., 0] > 0
    eroded = ndimage.binary_erosion(visible, np.ones((3, 3)))
    error = np.mean((unwrapped.texture.numpy()[0] - texture.numpy()[0])[eroded] ** 2)
    value = 10 * np.log10(1.0 / error)
    print(f"round trip at {size}: {eroded.sum()} texels, PSNR {value:.2f} dB")
    assert value > (30.0 if size == 224 else 35.0)
