"""Differentiable rendering and UV unwrapping in TensorFlow ops (no compiled rasteriser needed).

- `rasterize.visibility`: per-pixel nearest triangle id and z-buffer (constant), batched, XLA-compatible.
- `interpolate`: perspective-correct differentiable barycentrics, attribute interpolation, bilinear sampling.
- `uv`: the UV raster of a model, per-vertex attributes into UV, unwrapping and rendering of UV maps.
- `renderer.FaceRenderer`: all of it for one face model, image size and UV size.
"""
from tf_facetex.rendering.rasterize import BACKGROUND_ID, front_facing, reference_visibility, visibility
from tf_facetex.rendering.interpolate import (bilinear_sample, interpolate_vertex_attributes,
                                              perspective_barycentrics)
from tf_facetex.rendering.uv import UVRaster, build_uv_raster, rasterize_to_uv, render_uv_maps
from tf_facetex.rendering.renderer import FaceRenderer, Raster, Unwrapped, rasterize_triangles

__all__ = ["BACKGROUND_ID", "FaceRenderer", "Raster", "UVRaster", "Unwrapped", "bilinear_sample",
           "build_uv_raster", "front_facing", "interpolate_vertex_attributes", "perspective_barycentrics",
           "rasterize_to_uv", "rasterize_triangles", "reference_visibility", "render_uv_maps", "visibility"]
