"""`FaceRenderer`: rasterise, shade per texel, render UV maps and unwrap photos for one face model.

It holds the model constants (triangles, UV layout, the UV raster at one UV size) and the image size, so that
the prior module, the training step and the product share one renderer. All methods are TF ops on batches:
they run eagerly, in `tf.function`, under XLA and in SavedModels.

Rendering modes (docs/METHOD.md, "Rendering"):
- per texel ("mode B", default): ``normals_uv = normalize(rasterize_to_uv(camera-frame vertex normals))``,
  ``shading_uv = sh.shading(normals_uv, light)`` with a 27-channel light map [B, S, S, 27] or a global gamma
  [B, 27], ``colour_uv = albedo_uv * shading_uv``, then `render_uv_maps` samples the colour map at every
  pixel's (perspective-correct) UV position;
- per vertex ("mode A", the authors' code): `render_vertex_colors` interpolates per-vertex colours.
Untextured triangles (ICT head and neck) and the background get ``background`` and mask 0.
"""
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tf_facetex import camera, geometry, sh
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.rendering import interpolate, rasterize as rasterize_lib, uv as uv_lib

DEFAULT_IMAGE_SIZE = CROP_SIZE
DEFAULT_UV_SIZE = 256
# Depth test of the unwrap: tolerance = epsilon + (depth change of the texel's triangle over the ~0.7 pixel
# lost by the nearest-pixel lookup), capped. In decimetres: 3 mm and 1 cm, far below the nose/cheek occlusion
# depths (several cm) while grazing surfaces (ears, jaw line) are not rejected in stripes.
DEFAULT_DEPTH_EPSILON = 0.03
MAX_DEPTH_TOLERANCE = 0.1


class Raster(NamedTuple):
    """An image-space rasterisation. ``barycentrics`` is differentiable w.r.t. the vertex positions."""

    triangle_id: tf.Tensor    # [B, H, W] int32, -1 = background
    barycentrics: tf.Tensor   # [B, H, W, 3] perspective-correct, 0 on background
    depth: tf.Tensor          # [B, H, W] z-buffer view depth (constant), 0 on background
    mask: tf.Tensor           # [B, H, W, 1] float32, 1 where any triangle is visible


class Unwrapped(NamedTuple):
    """The unwrapped photo in UV space."""

    texture: tf.Tensor        # [B, S, S, C] image samples at the visible texels, 0 elsewhere
    visibility: tf.Tensor     # [B, S, S, 1] float32 in {0, 1}
    pixels: tf.Tensor         # [B, S, S, 2] texel -> image lookup (x, y) pixel coordinates of every texel
    depth: tf.Tensor          # [B, S, S] view depth of every texel's 3D point


def rasterize_triangles(pixels, depth, triangles, image_size, cull_backfaces=False,
                        **visibility_options) -> Raster:
    """Visibility (constant) + differentiable perspective-correct barycentrics.

    Args:
      pixels: [B, N, 2] pixel coordinates; depth: [B, N] view depth (`camera.project`).
      triangles: [F, 3] int32.
      image_size: int or (H, W).
      cull_backfaces: skip back-facing triangles.
      **visibility_options: passed to `rasterize.visibility` (near, static_shapes, chunk_size).
    Returns:
      a `Raster`.
    """
    triangle_id, zbuffer = rasterize_lib.visibility(pixels, depth, triangles, image_size, cull_backfaces,
                                                    **visibility_options)
    barycentrics = interpolate.perspective_barycentrics(pixels, depth, triangles, triangle_id)
    return Raster(triangle_id, barycentrics, zbuffer, interpolate.foreground(triangle_id))


def unrolled_sh_shading(normals, sh_coeffs):
    """`sh.shading` written as 27 explicit multiply-adds (same result): under XLA it fuses into one pass
    over the 27-channel light map, ~3x faster than the broadcast-and-reduce form on CPU.

    Args:
      normals: [..., 3] unit normals; sh_coeffs: [..., 27] broadcastable (channel-major, Deng's layout).
    Returns:
      [..., 3] shading, ambient 0.8 on the DC terms included.
    """
    # Deng's basis [1, -y, z, -x, xy, -yz, 3z^2 - 1, -xz, x^2 - y^2] (`sh.sh_basis`), term by term: going
    # through a stacked [..., 9] tensor would stop XLA from fusing the whole computation.
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    monomials = [None, -y, z, -x, x * y, -y * z, 3.0 * z * z - 1.0, -x * z, x * x - y * y]
    factors = [float(f) for f in sh.LAMBERTIAN_FACTORS]
    basis = [factors[0]] + [factors[k] * monomials[k] for k in range(1, sh.NUM_BASIS)]
    ambient = sh.AMBIENT_DC * float(sh.LAMBERTIAN_FACTORS[0])                           # 0.8 * Y_0 (constant)
    channels = []
    for channel in range(3):
        total = ambient
        for k in range(sh.NUM_BASIS):
            total = total + sh_coeffs[..., channel * sh.NUM_BASIS + k] * basis[k]
        channels.append(total)
    return tf.stack(channels, axis=-1)


def matvec_sh_shading(normals, sh_coeffs):
    """`sh.shading` for a per-texel light map as one batched 3x9 matrix-vector product per texel (same
    result): without XLA it reads the 27-channel map once instead of once per broadcast op.

    Args:
      normals: [..., 3] unit normals; sh_coeffs: [..., 27] with the same leading shape (channel-major).
    Returns:
      [..., 3] shading, ambient 0.8 on the DC terms included.
    """
    basis = tf.reshape(sh.sh_basis(normals), [-1, sh.NUM_BASIS])                     # [T, 9]
    gamma = tf.reshape(sh_coeffs, [-1, 3, sh.NUM_BASIS])                              # [T, 3, 9]
    ambient = sh.AMBIENT_DC * float(sh.LAMBERTIAN_FACTORS[0])
    return tf.reshape(tf.linalg.matvec(gamma, basis), tf.shape(normals)) + ambient


def _maybe_jit(function, jit):
    """XLA-compiles a fixed-shape stage (fuses its elementwise ops; much faster on CPU) when ``jit``."""
    return tf.function(function, jit_compile=True, autograph=False) if jit else function


class FaceRenderer(tf.Module):
    """Renderer and UV tools for one `MorphableModel` at one image size and one UV size.

    Args:
      model: the `MorphableModel` (triangles, uv_coords, uv_triangles, textured_triangles, symmetry_indices).
      image_size: square image size (224 in the method; 512 works).
      uv_size: UV map size S (256 in the method).
      cull_backfaces: skip back-facing triangles in the image rasterisation (the face meshes are seen from
        outside; faster).
      depth_epsilon: base depth tolerance of the unwrap's visibility test (decimetres), widened by the
        texel's screen-space depth slope over 0.71 px and capped at `MAX_DEPTH_TOLERANCE`.
      gutter: texels filled around the UV coverage (see `uv.build_uv_raster`).
      jit_stages: compile the fixed-shape stages (barycentrics, normal map, shading, UV sampling, unwrap, and
        the fixed-shape parts of the visibility step) with XLA, called from eager code or from a
        `tf.function`. Results are the same. Pass False for graphs that must run without XLA (e.g. a
        SavedModel for a TF Serving binary without XLA:CPU JIT); inside ``jit_compile=True`` it is moot.
        Without XLA (the serving path) every op is a pass over memory, so the stages take other routes to the
        same values: barycentrics and UV sampling at the covered pixels only (`interpolate.foreground_
        barycentrics`, `uv.render_uv_maps_foreground`), per-texel shading as one batched 3x9 mat-vec
        (`matvec_sh_shading`) and early culling in the visibility step (scripts/bench_render.py
        --serving-ratio: ~1.5x the XLA renderer at 224, batch 16, down from ~2.1x).
    """

    def __init__(self, model, image_size=DEFAULT_IMAGE_SIZE, uv_size=DEFAULT_UV_SIZE, cull_backfaces=True,
                 depth_epsilon=DEFAULT_DEPTH_EPSILON, gutter=2, jit_stages=True, name=None):
        super().__init__(name=name)
        self.image_size = int(image_size)
        self.uv_size = int(uv_size)
        self.cull_backfaces = bool(cull_backfaces)
        self.depth_epsilon = float(depth_epsilon)
        self.jit_stages = bool(jit_stages)
        self.uv_raster = uv_lib.build_uv_raster(model, self.uv_size, gutter)
        raster = self.uv_raster
        self.num_vertices = model.num_vertices
        self.triangles = tf.constant(model.triangles, tf.int32)
        self.vertex_triangles = tf.constant(model.vertex_triangles(), tf.int32)
        self.textured_triangles = tf.constant(model.textured_triangles, tf.bool)
        texel_corners = uv_lib.uv_to_texel_np(model.uv_coords[model.uv_triangles], self.uv_size)
        self.texel_corners = tf.constant(texel_corners.astype(np.float32))           # [F, 3, 2]
        self.uv_triangle_id = tf.constant(raster.triangle_id)                          # [S, S]
        self.uv_mask_bool = tf.constant(raster.mask)                                   # [S, S]
        self.uv_mask = tf.constant(raster.mask.astype(np.float32)[..., None])          # [S, S, 1]
        self.uv_corner_vertices = tf.constant(raster.corner_vertices)                  # [S, S, 3]
        self.uv_corner_weights = tf.constant(raster.corner_weights)                    # [S, S, 3]
        self.uv_symmetry_index = tf.constant(raster.symmetry_index)                    # [S * S]
        jit = self.jit_stages
        self._project = _maybe_jit(self._project_impl, jit)
        self._barycentrics = _maybe_jit(self._barycentrics_impl, jit)
        self._vertex_normals = _maybe_jit(self._vertex_normals_impl, jit)
        self._normals_uv = _maybe_jit(self._normals_uv_impl, jit)
        self._shading_uv = _maybe_jit(self._shading_uv_impl, jit)
        self._render_uv_maps = _maybe_jit(self._render_uv_maps_impl, jit)
        self._render = _maybe_jit(self._render_impl, jit)
        self._unwrap = _maybe_jit(self._unwrap_impl, jit)

    # ------------------------------------------------------------------------------------ geometry
    def project(self, posed_vertices):
        """[B, N, 3] posed vertices -> ([B, N, 2] pixels, [B, N] view depth)."""
        return self._project(tf.convert_to_tensor(posed_vertices, tf.float32))

    def _project_impl(self, posed_vertices):
        return camera.project(posed_vertices, self.image_size)

    def vertex_normals(self, posed_vertices):
        """Camera-frame unit vertex normals of posed vertices: [B, N, 3] -> [B, N, 3].

        Equal to the model-frame normals rotated by the pose (Deng's ``n R^T``), the default SH frame.
        """
        return self._vertex_normals(tf.convert_to_tensor(posed_vertices, tf.float32))

    def _vertex_normals_impl(self, posed_vertices):
        return geometry.vertex_normals(posed_vertices, self.triangles, self.vertex_triangles)

    def front_facing(self, pixels):
        """[B, N, 2] projected vertices -> [B, F] bool, the triangle's outside faces the camera.

        In a perspective view this is the sign of the camera-frame normal against the view ray, i.e. the
        winding of the projected triangle.
        """
        return rasterize_lib.front_facing(tf.gather(pixels, self.triangles, axis=1))

    def rasterize(self, posed_vertices, **visibility_options) -> Raster:
        """Rasterises posed vertices [B, N, 3] into a `Raster` of the renderer's image size."""
        pixels, depth = self.project(posed_vertices)
        visibility_options.setdefault("jit_static_parts", self.jit_stages)
        triangle_id, zbuffer = rasterize_lib.visibility(pixels, depth, self.triangles, self.image_size,
                                                        self.cull_backfaces, **visibility_options)
        barycentrics = self._barycentrics(pixels, depth, triangle_id)
        return Raster(triangle_id, barycentrics, zbuffer, interpolate.foreground(triangle_id))

    def _barycentrics_impl(self, pixels, depth, triangle_id):
        if self.jit_stages:
            return interpolate.perspective_barycentrics(pixels, depth, self.triangles, triangle_id)
        # Without XLA (serving): evaluated at the covered pixels only (same values).
        return interpolate.foreground_barycentrics(pixels, depth, self.triangles, triangle_id)

    # ------------------------------------------------------------------------------------ UV space
    def rasterize_to_uv(self, vertex_attributes):
        """Per-vertex attributes [B, N, C] -> UV maps [B, S, S, C] (0 outside the mask and its gutter)."""
        return uv_lib.rasterize_to_uv(vertex_attributes, self.uv_corner_vertices, self.uv_corner_weights)

    def normals_uv(self, posed_vertices=None, vertex_normals=None):
        """Unit camera-frame normal map [B, S, S, 3] from posed vertices or from given vertex normals."""
        if vertex_normals is None:
            return self._normals_uv(tf.convert_to_tensor(posed_vertices, tf.float32), True)
        return self._normals_uv(tf.convert_to_tensor(vertex_normals, tf.float32), False)

    def _normals_uv_impl(self, values, from_vertices):
        vertex_normals = self.vertex_normals(values) if from_vertices else values
        return tf.math.l2_normalize(self.rasterize_to_uv(vertex_normals), axis=-1, epsilon=1e-12)

    def mirror_uv(self, uv_maps):
        """Left-right mirror of UV maps [B, S, S, C] through the model's vertex symmetry."""
        return uv_lib.mirror_uv(uv_maps, self.uv_symmetry_index)

    def shading_uv(self, light, normals_uv):
        """Per-texel SH shading [B, S, S, 3] from a light map [B, S, S, 27] or a global gamma [B, 27]."""
        return self._shading_uv(tf.convert_to_tensor(light, tf.float32), normals_uv)

    def _shading_uv_impl(self, light, normals_uv):
        if not self.jit_stages:
            if light.shape.rank == normals_uv.shape.rank and light.shape[1] is not None and light.shape[1] > 1:
                return matvec_sh_shading(normals_uv, light)          # a per-texel light map, without XLA
            return sh.shading_uv(normals_uv, light)
        if light.shape.rank == 2:
            light = light[:, None, None, :]
        return unrolled_sh_shading(normals_uv, light)   # the same formula, fused by XLA

    # ------------------------------------------------------------------------------------ rendering
    def texel_coords(self, raster: Raster):
        """[B, H, W, 2] texel coordinates of every pixel (differentiable w.r.t. the barycentrics)."""
        return uv_lib.pixel_texel_coords(raster.triangle_id, raster.barycentrics, self.texel_corners)

    def projection_mask(self, raster: Raster):
        """M_proj [B, H, W, 1]: pixels that show a textured triangle."""
        return uv_lib.projection_mask(raster.triangle_id, self.textured_triangles)

    def render_uv_maps(self, uv_maps, raster: Raster, background=0.0):
        """Samples UV maps [B, S, S, C] at every pixel: ([B, H, W, C] image, [B, H, W, 1] M_proj)."""
        return self._render_uv_maps(tf.convert_to_tensor(uv_maps), raster.triangle_id, raster.barycentrics,
                                    tf.convert_to_tensor(background, tf.float32))

    def _render_uv_maps_impl(self, uv_maps, triangle_id, barycentrics, background):
        if not self.jit_stages:
            # Without XLA (serving): sampled at the M_proj pixels only (same values).
            return uv_lib.render_uv_maps_foreground(uv_maps, triangle_id, barycentrics, self.texel_corners,
                                                    self.textured_triangles, tf.cast(background, uv_maps.dtype))
        texel_coords = uv_lib.pixel_texel_coords(triangle_id, barycentrics, self.texel_corners)
        mask = uv_lib.projection_mask(triangle_id, self.textured_triangles)
        return uv_lib.render_uv_maps(uv_maps, texel_coords, mask, tf.cast(background, uv_maps.dtype)), mask

    def render(self, albedo_uv, light, raster: Raster, normals_uv, background=0.0):
        """Lambertian render: ``albedo_uv * shading_uv(light, normals_uv)`` sampled into the image.

        Args:
          albedo_uv: [B, S, S, 3]; light: [B, S, S, 27] per-texel SH or [B, 27] gamma.
          raster: the `Raster` of the posed mesh; normals_uv: [B, S, S, 3] (`normals_uv`).
          background: value of pixels outside M_proj.
        Returns:
          image [B, H, W, 3], M_proj [B, H, W, 1].
        """
        return self._render(tf.convert_to_tensor(albedo_uv, tf.float32), tf.convert_to_tensor(light, tf.float32),
                            raster.triangle_id, raster.barycentrics, normals_uv,
                            tf.convert_to_tensor(background, tf.float32))

    def _render_impl(self, albedo_uv, light, triangle_id, barycentrics, normals_uv, background):
        colour_uv = albedo_uv * self._shading_uv_impl(light, normals_uv)
        return self._render_uv_maps_impl(colour_uv, triangle_id, barycentrics, background)

    def render_vertex_colors(self, vertex_colors, raster: Raster, background=0.0):
        """Per-vertex colours [B, N, C] interpolated into the image (the authors' mode A): (image, M_proj)."""
        channels = vertex_colors.shape[-1]
        background = tf.broadcast_to(tf.cast(background, vertex_colors.dtype), [channels])
        image = interpolate.interpolate_vertex_attributes(vertex_colors, self.triangles, raster.triangle_id,
                                                          raster.barycentrics)
        mask = self.projection_mask(raster)
        return image * mask + background * (1.0 - mask), mask

    # ------------------------------------------------------------------------------------ unwrapping
    def unwrap(self, image, posed_vertices, raster: Raster = None) -> Unwrapped:
        """Unwraps a photo into UV space with its visibility mask and the texel -> image lookup.

        Args:
          image: [B, H, W, C] at the renderer's image size (any dtype; sampled as float32, values kept).
          posed_vertices: [B, N, 3] posed vertices (the camera frame of the image).
          raster: the image `Raster` of the same vertices (rasterised here when None).
        Returns:
          `Unwrapped` (texture, visibility, pixels, depth); see `uv.texel_visibility` for the test.
        """
        if raster is None:
            raster = self.rasterize(posed_vertices)
        return Unwrapped(*self._unwrap(tf.cast(image, tf.float32),
                                       tf.convert_to_tensor(posed_vertices, tf.float32),
                                       raster.triangle_id, raster.depth))

    def _unwrap_impl(self, image, posed_vertices, triangle_id, zbuffer):
        positions_uv = self.rasterize_to_uv(posed_vertices)
        pixels_uv, depth_uv = camera.project(positions_uv, self.image_size)
        pixels, depth = self.project(posed_vertices)
        texel_triangle = tf.maximum(self.uv_triangle_id, 0)
        front_uv = tf.gather(self.front_facing(pixels), texel_triangle, axis=1)            # [B, S, S]
        slope_uv = tf.gather(uv_lib.depth_slopes(pixels, depth, self.triangles), texel_triangle, axis=1)
        tolerance = tf.minimum(self.depth_epsilon + 0.71 * slope_uv, MAX_DEPTH_TOLERANCE)
        visibility = uv_lib.texel_visibility(pixels_uv, depth_uv, front_uv, self.uv_triangle_id,
                                             self.uv_mask_bool, triangle_id, zbuffer, tolerance)
        texture = uv_lib.unwrap_image(image, pixels_uv, visibility)
        return texture, visibility, pixels_uv, depth_uv
