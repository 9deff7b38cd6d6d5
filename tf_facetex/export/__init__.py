"""Exports: meshes and textures for renderers, SavedModels for TF Serving, TFLite models.

- ``mesh``: OBJ + MTL + PNG writer (textured triangles, metres, half-texel-exact ``vt``) and texture dilation
  (numpy only; imported eagerly).
- ``serving``: the SavedModel module with the ``serving_default`` (aligned uint8 crops -> albedo, illumination,
  coefficients, re-render) and ``refine`` signatures, TF Serving version folders.
- ``tflite``: the refinement network (float32 / dynamic-range int8) and the prior regressor as TFLite, and a
  runner that compares them with Keras.
``serving`` and ``tflite`` import TensorFlow; import them explicitly.
"""
from tf_facetex.export.mesh import (DECIMETRES_TO_METRES, TexturedMesh, fill_outside_mask, mtl_text, obj_text,
                                    texel_centre_uvs, textured_mesh, write_textured_obj)

__all__ = ["DECIMETRES_TO_METRES", "TexturedMesh", "fill_outside_mask", "mtl_text", "obj_text", "texel_centre_uvs",
           "textured_mesh", "write_textured_obj"]
