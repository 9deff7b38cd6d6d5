"""tf_facetex: one in-the-wild face photo -> detailed albedo UV texture, per-texel SH illumination, 3D face.

Implements Yang et al., "Self-supervised Reconstruction of Re-renderable Facial Textures from Single
Image" (2024) in TensorFlow/Keras, with a per-image fitting path that needs no trained weights.
"""
__version__ = "0.1.0"
