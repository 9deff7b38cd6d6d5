"""PatchGAN discriminator on UV albedo maps (paper eq. 8-9: real = prior albedo A, fake = detailed albedo A').

The paper gives no architecture; the authors' released building block is pix2pix's `NLayerDiscriminator`
("basic" 70x70 PatchGAN, n_layers 3, ndf 64; docs/METHOD.md, "The refinement network"):

    conv4 s2 ndf + LReLU(0.2)                       (bias, no norm)
    conv4 s2 2 ndf + norm + LReLU(0.2)
    conv4 s2 4 ndf + norm + LReLU(0.2)
    conv4 s1 8 ndf + norm + LReLU(0.2)
    conv4 s1 1                                       (bias; raw logits)

Every conv has PyTorch padding 1, reproduced by ZeroPadding2D(1) + 'valid' (Keras 'same' would pad the two
stride-1 layers asymmetrically and give 32x32), so a 256^2 map gives 30x30 patch logits. With BatchNorm and a
3-channel input it has 2,765,633 trainable parameters (~2.77 M).

The input is unconditional and masked by the UV mask so that D cannot use the (constant) background
(docs/METHOD.md, "The refinement network"); albedo in [0, 1] is mapped to [-1, 1] first, as the generator's input is.
"""
from __future__ import annotations

import copy

import keras
import tensorflow as tf

from tf_facetex.networks.refinement import NORMALIZATIONS, make_norm

PATCHGAN_CONFIG = dict(ndf=64, n_layers=3, max_filters_multiplier=8, norm="batch")


@keras.saving.register_keras_serializable(package="tf_facetex")
class AlbedoDiscriminator(keras.Model):
    """PatchGAN: [B, S, S, 3] albedo in [0, 1] (masked by uv_mask) -> [B, S', S', 1] logits (S' = 30 for S = 256).

    Args:
      ndf: filters of the first layer (authors 64).
      n_layers: normalised conv layers after the first one, as in pix2pix: n_layers - 1 of stride 2, then one of
        stride 1 (3 -> 70x70 receptive field, 30x30 logits at 256^2).
      max_filters_multiplier: cap on the width, in units of ndf (pix2pix 8).
      norm: 'batch' (pix2pix default), 'instance' (GroupNormalization(groups=-1)) or 'none'.
    """

    def __init__(self, ndf=64, n_layers=3, max_filters_multiplier=8, norm="batch", **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMALIZATIONS:
            raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
        self.ndf = ndf
        self.n_layers = n_layers
        self.max_filters_multiplier = max_filters_multiplier
        self.norm = norm

        def conv(filters, strides, use_bias, name):
            return [keras.layers.ZeroPadding2D(1, name=f"{name}_pad"),
                    keras.layers.Conv2D(filters, 4, strides=strides, padding="valid", use_bias=use_bias,
                                        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
                                        name=f"{name}_conv")]

        normed_bias = norm == "none"  # pix2pix: no conv bias in front of an affine norm
        layers = conv(ndf, 2, True, "d0") + [keras.layers.LeakyReLU(0.2, name="d0_lrelu")]
        for k in range(1, n_layers + 1):
            # The last of these has stride 1 (pix2pix: n_layers - 1 stride-2 layers, then one stride-1 layer).
            strides = 2 if k < n_layers else 1
            filters = ndf * min(2 ** k, max_filters_multiplier)
            layers += conv(filters, strides, normed_bias, f"d{k}") + [
                make_norm(norm, f"d{k}_norm"), keras.layers.LeakyReLU(0.2, name=f"d{k}_lrelu")]
        layers += conv(1, 1, True, "logits")
        self.body = keras.Sequential(layers, name="patchgan")

    def call(self, albedo_uv, uv_mask=None, training=None):
        """albedo_uv: [B, S, S, 3] in [0, 1]; uv_mask: [B, S, S, 1], [S, S, 1] or None -> [B, S', S', 1] logits."""
        x = 2.0 * albedo_uv - 1.0
        if uv_mask is not None:
            x = x * tf.cast(uv_mask, x.dtype)
        return self.body(x, training=training)

    def get_config(self):
        return {**super().get_config(), "ndf": self.ndf, "n_layers": self.n_layers,
                "max_filters_multiplier": self.max_filters_multiplier, "norm": self.norm}

    @classmethod
    def from_config(cls, config):
        return cls(**copy.deepcopy(config))
