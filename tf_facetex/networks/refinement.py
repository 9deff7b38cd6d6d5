"""Detail refinement network (paper section 5-6): unwrapped texture + prior albedo -> detailed albedo + SH light map.

The paper describes it only as "the basic pix2pix network ... [without] the skip-connection ... extended with two
decoders [that] share the same structure but with different output layers" (section 6). The layer table follows the
authors' `UVNet` (docs/METHOD.md, "The refinement network"); at the default ("paper") config:

    input  concat(2T - 1, 2A - 1)                                   [B, 256, 256, 6]
    enc-0  conv3x3 s1 64 + norm + LReLU(0.2)                        [B, 256, 256, 64]
    enc-k  4 x (conv4x4 s2 + norm + LReLU(0.2)), 64/128/256/512     [B, 16, 16, 512]
    mid    6 x residual block (conv3x3 + norm + ReLU + conv3x3 + norm, identity skip, no ReLU after the add)
    albedo 4 x (ConvTranspose4x4 s2 + norm + ReLU), 256/128/64/64 -> conv3x3 3 + tanh -> (x + 1) / 2  in [0, 1]
    light  4 x (bilinear up x2 + conv3x3 + norm + ReLU), 256/128/64/64 -> conv3x3 27, linear

The 27 light channels are Deng's gamma layout [R0..8, G0..8, B0..8] without the 0.8 ambient (`tf_facetex.sh`).

Output modes. ``outputs='absolute'`` (the paper's and the authors'): the albedo decoder's tanh gives A' from scratch
and the light decoder gives L' itself. ``outputs='residual'`` (the shipped CPU network; docs/METHOD.md, "The shipped
CPU network"): the decoders give corrections of a base estimate, A' = clip(B + d tanh(a), 0, 1) and
L' = gamma + l (gamma broadcast over the map), with both output convolutions initialised to zero, so that an
untrained network reproduces its base exactly and training only has to learn the corrections. The albedo base B
(``albedo_base``) is the prior albedo A ('prior'), or the per-image fit's starting albedo ('unwrapped': the photo
divided by the coarse shading where the texel was seen, A elsewhere; `refinement.uv_solver.initial_albedo`, computed
by the caller and passed as 'base_albedo_uv'), which carries the photo's detail at full resolution past the
bottleneck. The coarse light gamma [B, 27] is an input: it is added to the light decoder's output and, through one
dense layer, to the bottleneck features (the network knows which light the prior assumed). The structure (shared
encoder without skips, residual blocks, albedo decoder 3 ch, light decoder 27 ch) is the same in both modes.
Trainable parameters: 35,569,950 (~35.57 M, as the authors' network); `count_params()` also counts the
16,384 BatchNorm moving statistics (PyTorch buffers), 35,586,334 in all.

Known deviation: Keras' bilinear `UpSampling2D` uses half-pixel centres, PyTorch's `UpsamplingBilinear2d` aligns
corners (harmless when training from scratch; docs/METHOD.md, "The refinement network").
"""
from __future__ import annotations

import copy

import keras
import tensorflow as tf

NUM_LIGHT_CHANNELS = 27
NUM_ALBEDO_CHANNELS = 3
NORMALIZATIONS = ("batch", "instance", "none")
OUTPUT_MODES = ("absolute", "residual")
ALBEDO_BASES = ("prior", "unwrapped")

# The authors' UVNet (docs/METHOD.md, "The refinement network"): ngf 64, 4 stride-2 stages capped at 8 * 64 = 512, 6 residual blocks, BN.
PAPER_CONFIG = dict(uv_size=256, base_filters=64, num_down=4, max_filters_multiplier=8, num_res_blocks=6,
                    norm="batch", white_prior=False, outputs="absolute")
# For CPU smoke runs and tests: same topology, 16 base filters, 2 residual blocks, 64^2 UV maps (1.05 M params).
SMALL_CONFIG = dict(uv_size=64, base_filters=16, num_down=4, max_filters_multiplier=8, num_res_blocks=2,
                    norm="batch", white_prior=False, outputs="absolute")
# The shipped CPU network (saved_models/refinement_net): same topology at 128^2 UV maps; width and depth chosen by
# timing training steps on 2 CPU cores; residual outputs around the prior (docs/METHOD.md, "The shipped CPU network").
CPU_CONFIG = dict(uv_size=128, base_filters=24, num_down=4, max_filters_multiplier=8, num_res_blocks=4,
                  norm="batch", white_prior=False, outputs="residual", albedo_base="unwrapped")
REFINEMENT_CONFIGS = {"paper": PAPER_CONFIG, "small": SMALL_CONFIG, "cpu": CPU_CONFIG}


# --------------------------------------------------------------------------------------------------------------
# Input preparation (pure functions; the data pipeline calls them, the network does not).
# --------------------------------------------------------------------------------------------------------------

def _gaussian_noise(shape, dtype, seed, mean, stddev):
    """N(mean, stddev^2) noise from a stateless seed pair, a tf.random.Generator, an int op seed, or None."""
    if isinstance(seed, tf.random.Generator):
        return seed.normal(shape, mean=mean, stddev=stddev, dtype=dtype)
    if seed is None or isinstance(seed, int):
        return tf.random.normal(shape, mean=mean, stddev=stddev, dtype=dtype, seed=seed)
    # A shape-[2] integer tensor: stateless, so tf.data pipelines can re-draw per epoch deterministically.
    return tf.random.stateless_normal(shape, seed=seed, mean=mean, stddev=stddev, dtype=dtype)


def fill_unseen_with_noise(texture_uv, visibility_uv, uv_mask, seed=None, mean=0.0, stddev=1.0):
    """Fills the texels the camera did not see with Gaussian noise (paper section 5, after Deng's [51]).

    The authors draw N(0, 1) in the [0, 1] texture space (so N(-1, 2^2) after the network's 2x - 1) on unseen
    texels, then multiply by the UV mask (docs/METHOD.md, "Unseen texels"); those are the defaults. Noise is
    re-drawn every call, i.e. every time a sample is loaded.

    Args:
      texture_uv: [B, S, S, 3] (or [S, S, 3]) unwrapped texture in [0, 1], any value on unseen texels.
      visibility_uv: [B, S, S, 1] (or [S, S, 1]) 1 where the texel was seen. None: a texel is unseen when its RGB
        sums to exactly 0, the authors' rule (store unseen texels as exact zeros).
      uv_mask: [B, S, S, 1], [S, S, 1] or None (no masking); 1 inside the face's UV chart.
      seed: None (global RNG), an int op seed, a tf.random.Generator, or a shape-[2] int tensor (stateless).
      mean, stddev: noise statistics in [0, 1] texture space; (0.5, 0.25) is the
        in-range alternative.
    Returns:
      [B, S, S, 3] (same shape as texture_uv): seen texels unchanged, unseen ones noise, outside the mask 0.
    """
    texture_uv = tf.convert_to_tensor(texture_uv)
    if not texture_uv.dtype.is_floating:
        texture_uv = tf.cast(texture_uv, tf.float32)
    dtype = texture_uv.dtype
    if visibility_uv is None:
        seen = tf.cast(tf.reduce_sum(tf.abs(texture_uv), axis=-1, keepdims=True) > 0, dtype)
    else:
        seen = tf.cast(tf.convert_to_tensor(visibility_uv), dtype)
    noise = _gaussian_noise(tf.shape(texture_uv), dtype, seed, mean, stddev)
    filled = seen * texture_uv + (1.0 - seen) * noise
    if uv_mask is not None:
        filled = filled * tf.cast(tf.convert_to_tensor(uv_mask), dtype)
    return filled


def white_prior_like(prior_albedo_uv, uv_mask=None):
    """The paper's Fig. 5 ablation input: a white albedo map (no prior information) on the face's UV chart.

    Args:
      prior_albedo_uv: [B, S, S, 3] prior albedo (only its shape and dtype are used).
      uv_mask: [B, S, S, 1], [S, S, 1] or None; white inside, 0 outside (as the prior itself is masked).
    Returns:
      [B, S, S, 3] ones (times uv_mask).
    """
    white = tf.ones_like(prior_albedo_uv)
    if uv_mask is not None:
        white = white * tf.cast(uv_mask, white.dtype)
    return white


# --------------------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------------------

def _conv_kernel_initializer():
    # PyTorch kaiming_normal_(a=0, mode='fan_in') (docs/METHOD.md, "The refinement network").
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def make_norm(norm, name=None):
    """'batch' (authors; PyTorch momentum 0.1 = Keras 0.9, eps 1e-5, gamma ~ N(1, 0.02)), 'instance', or 'none'."""
    if norm == "batch":
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), name=name)
    if norm == "instance":
        # Instance norm without tensorflow-addons: one group per channel.
        return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)
    if norm == "none":
        return keras.layers.Identity(name=name)
    raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")


def _conv(filters, kernel_size, strides=1, use_bias=False, name=None, transpose=False):
    layer = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    # 'same' equals PyTorch's padding 1 for k3 s1, k4 s2 and ConvTranspose k4 s2 p1 at even sizes.
    return layer(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
                 kernel_initializer=_conv_kernel_initializer(), name=name)


def _output_conv(channels, zero=False, name=None):
    """The decoders' last 3x3 conv (with bias); ``zero`` initialises it to zero (residual outputs start at the prior)."""
    if not zero:
        return _conv(channels, 3, use_bias=True, name=name)
    return keras.layers.Conv2D(channels, 3, padding="same", use_bias=True, kernel_initializer="zeros",
                               bias_initializer="zeros", name=name)


@keras.saving.register_keras_serializable(package="tf_facetex")
class ResidualBlock(keras.layers.Layer):
    """x + [conv3x3 -> norm -> ReLU -> conv3x3 -> norm](x); no activation after the add (pix2pix ResnetBlock).

    [B, H, W, C] -> [B, H, W, C]; C is fixed by the input.
    """

    def __init__(self, filters, norm="batch", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.norm = norm
        use_bias = norm == "none"
        self.conv1 = _conv(filters, 3, use_bias=use_bias, name="conv1")
        self.norm1 = make_norm(norm, name="norm1")
        self.conv2 = _conv(filters, 3, use_bias=use_bias, name="conv2")
        self.norm2 = make_norm(norm, name="norm2")

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        x = self.norm1(x, training=training)
        x = tf.nn.relu(x)
        x = self.conv2(x)
        x = self.norm2(x, training=training)
        return inputs + x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "norm": self.norm}


# --------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tf_facetex")
class RefinementNet(keras.Model):
    """Encoder (no skips) -> residual middle -> albedo decoder and light decoder (see module docstring).

    Inputs (call): a dict {'texture_uv', 'prior_albedo_uv'[, 'gamma'][, 'uv_mask']} or a tuple (texture_uv,
    prior_albedo_uv[, gamma]):
      texture_uv: [B, S, S, 3] unwrapped texture in [0, 1], unseen texels noise-filled (`fill_unseen_with_noise`).
      prior_albedo_uv: [B, S, S, 3] prior (3DMM) albedo in [0, 1].
      gamma: [B, 27] the prior's coarse SH light (Deng layout, no ambient); required with outputs='residual',
        ignored otherwise.
      base_albedo_uv: [B, S, S, 3] the albedo the corrections apply to; required with albedo_base='unwrapped'
        (`refinement.network.network_inputs` computes it), ignored otherwise.
      uv_mask: [B, S, S, 1] or [S, S, 1], only used with white_prior (the white map is white inside it).
      S must be a multiple of 2**num_down (the network is fully convolutional; uv_size is the intended S).
    Outputs: {'albedo': [B, S, S, 3] in [0, 1], 'light': [B, S, S, 27] (Deng gamma layout, no ambient)}.

    Args:
      uv_size: the UV resolution S the data uses (authors 256); used by `example_inputs`.
      base_filters: width of enc-0 (authors' ngf 64); stage k has base * 2**(k-1) filters, capped at
        base * max_filters_multiplier (pix2pix's cap, 8).
      num_down: number of stride-2 stages in the encoder and of x2 stages in each decoder (authors 4).
      num_res_blocks: residual blocks at the bottleneck (authors 6).
      norm: 'batch' (authors), 'instance' (GroupNormalization(groups=-1)) or 'none' (convs get biases then).
      white_prior: the paper's Fig. 5 ablation; the prior albedo input is replaced by a white map.
      outputs: 'absolute' (the paper's: A' and L' from the decoders alone) or 'residual' (corrections of the prior:
        A' = clip(A + albedo_delta tanh(a), 0, 1), L' = gamma + l, zero-initialised output convolutions; see the
        module docstring).
      albedo_delta: the largest albedo correction of the residual mode (in albedo units).
      albedo_base: what the residual mode's albedo corrects: 'prior' (A) or 'unwrapped' (the input
        'base_albedo_uv', the fit's starting albedo).
      light_resolution: residual mode, > 0: the light correction is band-limited like the per-image fit's light
        residual: the light decoder's output averaged to a light_resolution^2 grid, then upsampled bilinearly (so the
        light map cannot carry texel detail that belongs to the albedo); 0: at full resolution.
    """

    def __init__(self, uv_size=256, base_filters=64, num_down=4, max_filters_multiplier=8, num_res_blocks=6,
                 norm="batch", white_prior=False, outputs="absolute", albedo_delta=0.5, albedo_base="prior",
                 light_resolution=0, **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMALIZATIONS:
            raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
        if outputs not in OUTPUT_MODES:
            raise ValueError(f"outputs must be one of {OUTPUT_MODES}, got {outputs!r}")
        if albedo_base not in ALBEDO_BASES:
            raise ValueError(f"albedo_base must be one of {ALBEDO_BASES}, got {albedo_base!r}")
        if not albedo_delta > 0:
            raise ValueError(f"albedo_delta must be > 0, got {albedo_delta!r}")
        if num_down < 1 or base_filters < 1 or num_res_blocks < 0:
            raise ValueError("need num_down >= 1, base_filters >= 1, num_res_blocks >= 0")
        if uv_size % (2 ** num_down):
            raise ValueError(f"uv_size {uv_size} is not a multiple of 2**num_down = {2 ** num_down}")
        self.uv_size = uv_size
        self.base_filters = base_filters
        self.num_down = num_down
        self.max_filters_multiplier = max_filters_multiplier
        self.num_res_blocks = num_res_blocks
        self.norm = norm
        self.white_prior = white_prior
        self.outputs = outputs
        self.albedo_delta = float(albedo_delta)
        self.albedo_base = albedo_base
        if light_resolution < 0 or (light_resolution and uv_size % light_resolution):
            raise ValueError(f"light_resolution must be 0 or divide uv_size {uv_size}, got {light_resolution}")
        self.light_resolution = int(light_resolution)
        residual = outputs == "residual"

        use_bias = norm == "none"
        max_filters = base_filters * max_filters_multiplier
        # stage_filters[0] is enc-0; stage_filters[k] the k-th stride-2 stage: 64, 64, 128, 256, 512 (authors).
        stage_filters = [base_filters] + [min(base_filters * 2 ** k, max_filters) for k in range(num_down)]
        bottleneck = stage_filters[-1]
        # Each decoder mirrors the encoder: x2 stage k outputs stage_filters[num_down - k] (256, 128, 64, 64).
        decoder_filters = stage_filters[-2::-1]

        encoder = [_conv(stage_filters[0], 3, use_bias=use_bias, name="enc0_conv"), make_norm(norm, "enc0_norm"),
                   keras.layers.LeakyReLU(0.2, name="enc0_lrelu")]
        for k, filters in enumerate(stage_filters[1:], start=1):
            encoder += [_conv(filters, 4, strides=2, use_bias=use_bias, name=f"enc{k}_conv"),
                        make_norm(norm, f"enc{k}_norm"), keras.layers.LeakyReLU(0.2, name=f"enc{k}_lrelu")]
        self.encoder = keras.Sequential(encoder, name="encoder")
        self.middle = keras.Sequential(
            [ResidualBlock(bottleneck, norm, name=f"res{k}") for k in range(num_res_blocks)], name="middle")
        # Residual mode: the coarse light the prior assumed, as a per-channel shift of the bottleneck features.
        self.light_embedding = (keras.layers.Dense(bottleneck, name="light_embedding") if residual else None)

        albedo = []
        light = []
        for k, filters in enumerate(decoder_filters, start=1):
            albedo += [_conv(filters, 4, strides=2, use_bias=use_bias, transpose=True, name=f"up{k}_convt"),
                       make_norm(norm, f"up{k}_norm"), keras.layers.ReLU(name=f"up{k}_relu")]
            light += [keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"up{k}_bilinear"),
                      _conv(filters, 3, use_bias=use_bias, name=f"up{k}_conv"),
                      make_norm(norm, f"up{k}_norm"), keras.layers.ReLU(name=f"up{k}_relu")]
        albedo.append(_output_conv(NUM_ALBEDO_CHANNELS, zero=residual, name="albedo_out"))
        light.append(_output_conv(NUM_LIGHT_CHANNELS, zero=residual, name="light_out"))
        self.albedo_decoder = keras.Sequential(albedo, name="albedo_decoder")
        self.light_decoder = keras.Sequential(light, name="light_decoder")

    @classmethod
    def from_preset(cls, preset="paper", **overrides):
        """'paper' (authors' UVNet, ~35.57 M) or 'small' (CPU smoke runs), with keyword overrides."""
        if preset not in REFINEMENT_CONFIGS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(REFINEMENT_CONFIGS)}")
        return cls(**{**REFINEMENT_CONFIGS[preset], **overrides})

    @property
    def residual(self) -> bool:
        """Whether the outputs are corrections of the prior (and the coarse light is an input)."""
        return self.outputs == "residual"

    def example_inputs(self, batch_size=1, size=None):
        """Zero inputs at the configured UV size (or ``size``): {'texture_uv', 'prior_albedo_uv', 'base_albedo_uv'}
        [batch, S, S, 3] and 'gamma' [batch, 27]."""
        size = size or self.uv_size
        zeros = tf.zeros([batch_size, size, size, 3])
        return {"texture_uv": zeros, "prior_albedo_uv": zeros, "base_albedo_uv": zeros,
                "gamma": tf.zeros([batch_size, NUM_LIGHT_CHANNELS])}

    def _split_inputs(self, inputs):
        if isinstance(inputs, dict):
            texture_uv, prior_albedo_uv, uv_mask = inputs["texture_uv"], inputs["prior_albedo_uv"], inputs.get("uv_mask")
            gamma = inputs.get("gamma")
        else:
            texture_uv, prior_albedo_uv, *rest = inputs
            gamma, uv_mask = (rest[0] if rest else None), None
        if self.residual and gamma is None:
            raise ValueError("a residual RefinementNet needs the coarse light: pass inputs['gamma'] [B, 27]")
        return texture_uv, prior_albedo_uv, gamma, uv_mask

    def _albedo_base(self, inputs, prior_input):
        if self.albedo_base == "prior":
            return prior_input
        base = inputs.get("base_albedo_uv") if isinstance(inputs, dict) else None
        if base is None:
            raise ValueError("albedo_base='unwrapped' needs inputs['base_albedo_uv'] [B, S, S, 3] "
                             "(refinement.network.network_inputs computes it)")
        return tf.cast(base, prior_input.dtype)

    def call(self, inputs, training=None):
        texture_uv, prior_albedo_uv, gamma, uv_mask = self._split_inputs(inputs)
        size = texture_uv.shape[1:3]
        if any(s is not None and s % (2 ** self.num_down) for s in size):
            raise ValueError(f"UV size {tuple(size)} is not a multiple of 2**num_down = {2 ** self.num_down}")
        prior_input = white_prior_like(prior_albedo_uv, uv_mask) if self.white_prior else prior_albedo_uv
        # Authors' input order and range (docs/METHOD.md, "The refinement network"): [2T - 1, 2A - 1].
        x = tf.concat([2.0 * texture_uv - 1.0, 2.0 * prior_input - 1.0], axis=-1)
        features = self.encoder(x, training=training)
        if self.residual:
            gamma = tf.cast(gamma, features.dtype)
            features = features + self.light_embedding(gamma)[:, None, None, :]
        features = self.middle(features, training=training)
        albedo_out = self.albedo_decoder(features, training=training)
        light_out = self.light_decoder(features, training=training)
        if not self.residual:
            return {"albedo": 0.5 * (tf.tanh(albedo_out) + 1.0), "light": light_out}
        # Corrections of the base: zero outputs (the untrained network) give A' = base and L' = gamma exactly.
        base = self._albedo_base(inputs, prior_input)
        albedo = tf.clip_by_value(base + self.albedo_delta * tf.tanh(albedo_out), 0.0, 1.0)
        if self.light_resolution:
            size = light_out.shape[1]
            pooled = tf.nn.avg_pool2d(light_out, size // self.light_resolution, size // self.light_resolution, "VALID")
            light_out = tf.image.resize(pooled, tf.shape(light_out)[1:3], method="bilinear")
        return {"albedo": albedo, "light": gamma[:, None, None, :] + light_out}

    def get_config(self):
        return {**super().get_config(), "uv_size": self.uv_size, "base_filters": self.base_filters,
                "num_down": self.num_down, "max_filters_multiplier": self.max_filters_multiplier,
                "num_res_blocks": self.num_res_blocks, "norm": self.norm, "white_prior": self.white_prior,
                "outputs": self.outputs, "albedo_delta": self.albedo_delta, "albedo_base": self.albedo_base,
                "light_resolution": self.light_resolution}

    @classmethod
    def from_config(cls, config):
        return cls(**copy.deepcopy(config))


def build_refinement_net(config="paper", **overrides):
    """A RefinementNet from a preset name or a config dict (e.g. a saved `get_config()`), weights created.

    The weights are created by one call on a [1, 2**num_down, 2**num_down] input (cheap at any width), so
    `count_params()` works straight away.
    """
    if isinstance(config, str):
        model = RefinementNet.from_preset(config, **overrides)
    else:
        model = RefinementNet.from_config({**config, **overrides})
    model(model.example_inputs(1, size=2 ** model.num_down), training=False)
    return model
