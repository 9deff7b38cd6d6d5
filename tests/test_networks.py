"""Refinement network and albedo discriminator: layer table, parameter counts, shapes, ranges, serialisation."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_facetex import networks
from tf_facetex.networks import AlbedoDiscriminator, RefinementNet, build_refinement_net, fill_unseen_with_noise

# A tiny config: 3 stride-2 stages, 8 base filters, 1 residual block (runs in milliseconds at 16^2).
TINY = dict(uv_size=16, base_filters=8, num_down=3, num_res_blocks=1)


CONVS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)


def _trainable_count(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


def _inputs(rng, batch, size):
    return {"texture_uv": tf.constant(rng.random((batch, size, size, 3)), tf.float32),
            "prior_albedo_uv": tf.constant(rng.random((batch, size, size, 3)), tf.float32),
            "gamma": tf.constant(rng.normal(0.0, 0.3, (batch, 27)), tf.float32)}


@pytest.fixture(scope="module")
def paper_net():
    """The authors' configuration, built once (weights created on a 16^2 input; never run at 256^2 here)."""
    return build_refinement_net("paper")


def test_paper_config_parameter_count(paper_net):
    # The authors' UVNet: encoder 2.82 M, res blocks 28.32 M, albedo decoder 2.82 M, light decoder 1.60 M, 35.57 M.
    assert _trainable_count(paper_net) == pytest.approx(35.57e6, abs=0.1e6)
    assert _trainable_count(paper_net) == 35_569_950  # exact: convs 35,553,566 + BN gamma/beta 16,384
    assert _trainable_count(paper_net.encoder) == pytest.approx(2.82e6, abs=0.01e6)
    assert _trainable_count(paper_net.middle) == pytest.approx(28.32e6, abs=0.01e6)
    assert _trainable_count(paper_net.albedo_decoder) == pytest.approx(2.82e6, abs=0.01e6)
    assert _trainable_count(paper_net.light_decoder) == pytest.approx(1.60e6, abs=0.01e6)
    # Moving mean/variance of BatchNorm are non-trainable (PyTorch buffers).
    assert paper_net.count_params() - _trainable_count(paper_net) == 16_384


def test_paper_layer_table(paper_net):
    convs = [layer for layer in paper_net.encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides, c.use_bias) for c in convs] == [
        (64, (3, 3), (1, 1), False), (64, (4, 4), (2, 2), False), (128, (4, 4), (2, 2), False),
        (256, (4, 4), (2, 2), False), (512, (4, 4), (2, 2), False)]
    assert len(paper_net.middle.layers) == 6
    albedo_convs = [layer for layer in paper_net.albedo_decoder.layers if isinstance(layer, CONVS)]
    assert [(type(c).__name__, c.filters, c.kernel_size, c.strides) for c in albedo_convs] == [
        ("Conv2DTranspose", 256, (4, 4), (2, 2)), ("Conv2DTranspose", 128, (4, 4), (2, 2)),
        ("Conv2DTranspose", 64, (4, 4), (2, 2)), ("Conv2DTranspose", 64, (4, 4), (2, 2)),
        ("Conv2D", 3, (3, 3), (1, 1))]
    light_layers = paper_net.light_decoder.layers
    light_convs = [layer for layer in light_layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in light_convs] == [256, 128, 64, 64, 27]
    assert sum(isinstance(layer, keras.layers.UpSampling2D) for layer in light_layers) == 4
    assert albedo_convs[-1].use_bias and light_convs[-1].use_bias
    assert isinstance(paper_net.encoder.layers[1], keras.layers.BatchNormalization)


def test_paper_net_output_shapes_on_small_input(paper_net, rng):
    out = paper_net(_inputs(rng, 1, 32), training=False)
    assert out["albedo"].shape == (1, 32, 32, 3) and out["light"].shape == (1, 32, 32, 27)


@pytest.mark.parametrize("training", [False, True])
def test_small_config_shapes_and_ranges(rng, training):
    net = build_refinement_net("small")
    assert net.uv_size == 64 and net.base_filters == 16 and net.num_res_blocks == 2
    out = net(_inputs(rng, 2, 64), training=training)
    albedo, light = out["albedo"].numpy(), out["light"].numpy()
    assert albedo.shape == (2, 64, 64, 3) and light.shape == (2, 64, 64, 27)
    assert albedo.min() >= 0.0 and albedo.max() <= 1.0
    assert np.all(np.isfinite(light))
    # The light head is linear (no squashing): at Kaiming init it leaves [0, 1] somewhere.
    assert light.min() < 0.0
    # Tuple inputs are accepted too.
    pair = _inputs(rng, 1, 64)
    out_pair = net((pair["texture_uv"], pair["prior_albedo_uv"]), training=False)
    np.testing.assert_allclose(out_pair["albedo"], net(pair, training=False)["albedo"], atol=1e-6)


@pytest.mark.parametrize("norm, layer_type", [("instance", keras.layers.GroupNormalization),
                                              ("none", keras.layers.Identity),
                                              ("batch", keras.layers.BatchNormalization)])
def test_normalisation_options(rng, norm, layer_type):
    net = build_refinement_net(TINY, norm=norm)
    assert isinstance(net.encoder.layers[1], layer_type)
    if norm == "instance":
        assert net.encoder.layers[1].groups == 8  # groups=-1 resolves to one group per channel: instance norm
    assert net.encoder.layers[0].use_bias == (norm == "none")
    out = net(_inputs(rng, 2, 16), training=True)
    assert out["albedo"].shape == (2, 16, 16, 3) and out["light"].shape == (2, 16, 16, 27)


def test_width_and_depth_arguments():
    net = RefinementNet(**TINY)  # layer hyper-parameters are set at construction; no weights needed
    encoder_filters = [layer.filters for layer in net.encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert encoder_filters == [8, 8, 16, 32]
    decoder_filters = [layer.filters for layer in net.albedo_decoder.layers if isinstance(layer, CONVS)]
    assert decoder_filters == [16, 8, 8, 3]
    assert len(net.middle.layers) == 1
    capped = RefinementNet(**TINY, max_filters_multiplier=2)
    assert [layer.filters for layer in capped.encoder.layers if isinstance(layer, keras.layers.Conv2D)] == [
        8, 8, 16, 16]


def test_invalid_sizes_and_options_rejected(rng):
    net = build_refinement_net(TINY)
    with pytest.raises(ValueError):
        net(_inputs(rng, 1, 12))  # not a multiple of 2**3
    with pytest.raises(ValueError):
        RefinementNet(uv_size=100, num_down=4)
    with pytest.raises(ValueError):
        RefinementNet(norm="layer")
    with pytest.raises(ValueError):
        RefinementNet.from_preset("huge")


def test_no_skip_connections_light_and_albedo_depend_only_on_bottleneck(rng):
    # Without skips, the decoders see the input only through the 2^-num_down bottleneck: an input change that
    # the encoder maps to the same bottleneck features cannot change the outputs. Checked via the functional
    # route: decoders applied to the encoder+middle features reproduce the model's outputs exactly.
    net = build_refinement_net(TINY)
    inputs = _inputs(rng, 1, 16)
    out = net(inputs, training=False)
    x = tf.concat([2.0 * inputs["texture_uv"] - 1.0, 2.0 * inputs["prior_albedo_uv"] - 1.0], -1)
    features = net.middle(net.encoder(x, training=False), training=False)
    assert features.shape == (1, 2, 2, 32)
    np.testing.assert_allclose(out["light"], net.light_decoder(features, training=False), atol=1e-6)
    np.testing.assert_allclose(out["albedo"], 0.5 * (np.tanh(net.albedo_decoder(features, training=False)) + 1),
                               atol=1e-6)


def test_serialisation_round_trip(tmp_path, rng):
    net = build_refinement_net(TINY, norm="batch")
    inputs = _inputs(rng, 2, 16)
    net(inputs, training=True)  # move the BN statistics away from their init
    expected = net(inputs, training=False)

    config = net.get_config()
    clone = RefinementNet.from_config(config)
    assert clone.get_config() == config
    clone(inputs, training=False)
    path = str(tmp_path / "refinement.weights.h5")
    net.save_weights(path)
    clone.load_weights(path)
    got = clone(inputs, training=False)
    for key in ("albedo", "light"):
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())

    # The whole model through the .keras format (registered serialisable class).
    model_path = str(tmp_path / "refinement.keras")
    net.save(model_path)
    loaded = keras.saving.load_model(model_path)
    assert isinstance(loaded, RefinementNet) and loaded.get_config()["num_down"] == 3
    np.testing.assert_array_equal(loaded(inputs, training=False)["light"].numpy(), expected["light"].numpy())


def test_white_prior_ablation(rng):
    inputs = _inputs(rng, 1, 16)
    other = dict(inputs, prior_albedo_uv=tf.constant(rng.random((1, 16, 16, 3)), tf.float32))
    white = build_refinement_net(TINY, white_prior=True)
    np.testing.assert_array_equal(white(inputs, training=False)["albedo"].numpy(),
                                  white(other, training=False)["albedo"].numpy())
    # With a UV mask the white map is white inside it only.
    mask = np.zeros((16, 16, 1), np.float32)
    mask[4:12, 4:12] = 1.0
    np.testing.assert_array_equal(networks.white_prior_like(inputs["prior_albedo_uv"], mask).numpy()[0, ..., 0],
                                  mask[..., 0])
    masked_out = white(dict(inputs, uv_mask=mask), training=False)["albedo"].numpy()
    assert np.abs(masked_out - white(inputs, training=False)["albedo"].numpy()).max() > 0
    normal = build_refinement_net(TINY)
    assert np.abs(normal(inputs, training=False)["albedo"].numpy()
                  - normal(other, training=False)["albedo"].numpy()).max() > 0


# --------------------------------------------------------------------------------------------------------------
# Residual outputs (the shipped CPU network)
# --------------------------------------------------------------------------------------------------------------

def _perturb_outputs(net, seed=(1, 2), stddev=0.2):
    """Moves the zero-initialised output convolutions of a residual net (as training does)."""
    for layer in (net.albedo_decoder.layers[-1], net.light_decoder.layers[-1]):
        layer.kernel.assign(tf.random.stateless_normal(layer.kernel.shape, seed, stddev=stddev))
        layer.bias.assign(tf.random.stateless_normal(layer.bias.shape, seed, stddev=stddev))


@pytest.mark.parametrize("training", [False, True])
def test_untrained_residual_net_reproduces_the_prior_exactly(rng, training):
    net = build_refinement_net(TINY, outputs="residual")
    inputs = _inputs(rng, 2, 16)
    out = net(inputs, training=training)
    np.testing.assert_array_equal(out["albedo"].numpy(), inputs["prior_albedo_uv"].numpy())
    np.testing.assert_array_equal(out["light"].numpy(),
                                  np.broadcast_to(inputs["gamma"].numpy()[:, None, None, :], (2, 16, 16, 27)))
    assert net.residual and not build_refinement_net(TINY).residual


def test_residual_outputs_are_bounded_corrections_of_the_prior(rng):
    net = build_refinement_net(TINY, outputs="residual", albedo_delta=0.1)
    _perturb_outputs(net, stddev=2.0)
    inputs = _inputs(rng, 2, 16)
    out = net(inputs, training=False)
    albedo, prior = out["albedo"].numpy(), inputs["prior_albedo_uv"].numpy()
    assert np.abs(albedo - prior).max() > 0.05                       # it does move ...
    assert np.abs(albedo - prior).max() <= 0.1 + 1e-6                 # ... by at most albedo_delta
    assert albedo.min() >= 0.0 and albedo.max() <= 1.0
    # The correction of the light is the light decoder's output on the (gamma-shifted) bottleneck: shifting gamma
    # by c shifts the light by c plus the decoder's response to the new features.
    features = net.encoder(tf.concat([2.0 * inputs["texture_uv"] - 1.0, 2.0 * inputs["prior_albedo_uv"] - 1.0], -1),
                           training=False)
    features = net.middle(features + net.light_embedding(inputs["gamma"])[:, None, None, :], training=False)
    np.testing.assert_allclose(out["light"], inputs["gamma"][:, None, None, :] + net.light_decoder(features),
                               atol=1e-5)
    np.testing.assert_allclose(
        out["albedo"], np.clip(prior + 0.1 * np.tanh(net.albedo_decoder(features, training=False)), 0, 1), atol=1e-5)
    # The coarse light is an input: another gamma, another result.
    other = net(dict(inputs, gamma=inputs["gamma"] + 0.5), training=False)
    assert np.abs(other["albedo"].numpy() - albedo).max() > 1e-4


def test_residual_net_needs_the_coarse_light_and_round_trips(rng, tmp_path):
    net = build_refinement_net(TINY, outputs="residual")
    inputs = _inputs(rng, 1, 16)
    with pytest.raises(ValueError, match="gamma"):
        net({"texture_uv": inputs["texture_uv"], "prior_albedo_uv": inputs["prior_albedo_uv"]})
    _perturb_outputs(net)
    triple = net((inputs["texture_uv"], inputs["prior_albedo_uv"], inputs["gamma"]), training=False)
    np.testing.assert_allclose(triple["light"], net(inputs, training=False)["light"], atol=1e-6)
    clone = build_refinement_net(net.get_config())
    assert clone.get_config()["outputs"] == "residual"
    net.save_weights(str(tmp_path / "r.weights.h5"))
    clone.load_weights(str(tmp_path / "r.weights.h5"))
    np.testing.assert_array_equal(clone(inputs, training=False)["albedo"].numpy(),
                                  net(inputs, training=False)["albedo"].numpy())
    with pytest.raises(ValueError):
        RefinementNet(outputs="relative")
    with pytest.raises(ValueError):
        RefinementNet(outputs="residual", albedo_delta=0.0)


def test_unwrapped_base_is_corrected_instead_of_the_prior(rng):
    net = build_refinement_net(TINY, outputs="residual", albedo_base="unwrapped")
    inputs = _inputs(rng, 2, 16)
    with pytest.raises(ValueError, match="base_albedo_uv"):
        net(inputs)
    base = tf.constant(rng.random((2, 16, 16, 3)), tf.float32)
    np.testing.assert_array_equal(net(dict(inputs, base_albedo_uv=base), training=False)["albedo"].numpy(),
                                  base.numpy())
    _perturb_outputs(net, stddev=2.0)
    out = net(dict(inputs, base_albedo_uv=base), training=False)["albedo"].numpy()
    assert 0.05 < np.abs(out - base.numpy()).max() <= 0.5 + 1e-6
    with pytest.raises(ValueError):
        RefinementNet(outputs="residual", albedo_base="texture")


def test_band_limited_light_correction(rng):
    net = build_refinement_net(TINY, outputs="residual", light_resolution=4)
    _perturb_outputs(net)
    inputs = _inputs(rng, 1, 16)
    light = net(inputs, training=False)["light"].numpy() - inputs["gamma"].numpy()[:, None, None, :]
    features = net.encoder(tf.concat([2.0 * inputs["texture_uv"] - 1.0, 2.0 * inputs["prior_albedo_uv"] - 1.0], -1))
    features = net.middle(features + net.light_embedding(inputs["gamma"])[:, None, None, :])
    full = net.light_decoder(features)
    expected = tf.image.resize(tf.nn.avg_pool2d(full, 4, 4, "VALID"), [16, 16], method="bilinear")
    np.testing.assert_allclose(light, expected.numpy(), atol=1e-5)
    # band-limited: no texel-level detail left (neighbouring texels differ far less than in the decoder's output)
    assert np.abs(np.diff(light, axis=1)).mean() < 0.5 * np.abs(np.diff(full.numpy(), axis=1)).mean()
    assert build_refinement_net(net.get_config()).light_resolution == 4
    with pytest.raises(ValueError, match="light_resolution"):
        RefinementNet(uv_size=16, num_down=3, light_resolution=5)


def test_cpu_preset_is_residual_and_the_paper_preset_is_not():
    assert networks.REFINEMENT_CONFIGS["cpu"]["outputs"] == "residual"
    assert networks.REFINEMENT_CONFIGS["cpu"]["albedo_base"] == "unwrapped"
    assert networks.PAPER_CONFIG["outputs"] == "absolute"
    # A network saved before the option existed (no 'outputs' in its config) loads as the paper's absolute mode.
    legacy = {k: v for k, v in networks.REFINEMENT_CONFIGS["cpu"].items() if k != "outputs"}
    assert RefinementNet.from_config(legacy).outputs == "absolute"


# --------------------------------------------------------------------------------------------------------------
# Gaussian-noise fill
# --------------------------------------------------------------------------------------------------------------

def test_fill_unseen_with_noise(rng):
    size = 64
    texture = rng.random((2, size, size, 3)).astype(np.float32)
    visibility = (rng.random((2, size, size, 1)) > 0.5).astype(np.float32)
    uv_mask = np.ones((size, size, 1), np.float32)
    uv_mask[:8] = 0.0
    filled = fill_unseen_with_noise(texture, visibility, uv_mask, seed=tf.constant([1, 2])).numpy()
    inside = np.broadcast_to(uv_mask, visibility.shape)[..., 0] > 0
    seen = (visibility[..., 0] > 0) & inside
    unseen = (visibility[..., 0] == 0) & inside
    np.testing.assert_array_equal(filled[seen], texture[seen])
    assert np.all(filled[~inside] == 0.0)
    noise = filled[unseen]
    # The authors' N(0, 1) in [0, 1] texture space (~5,000 x 3 samples: mean within 0.05, std within 0.05).
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05
    # Stateless seeds are reproducible; other statistics are honoured.
    again = fill_unseen_with_noise(texture, visibility, uv_mask, seed=tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(filled, again)
    shifted = fill_unseen_with_noise(texture, visibility, uv_mask, seed=tf.random.Generator.from_seed(3),
                                     mean=0.5, stddev=0.25).numpy()[unseen]
    assert abs(shifted.mean() - 0.5) < 0.02 and abs(shifted.std() - 0.25) < 0.02


def test_fill_unseen_without_visibility_uses_zero_texels():
    texture = np.full((1, 4, 4, 3), 0.5, np.float32)
    texture[0, 0, 0] = 0.0  # the authors' rule: unseen texels are stored as exact zeros
    filled = fill_unseen_with_noise(texture, None, None, seed=7).numpy()
    assert filled[0, 0, 0].tolist() != [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(filled[0, 1:], texture[0, 1:])


# --------------------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------------------

def test_discriminator_30x30_logits_for_256_input():
    disc = AlbedoDiscriminator(ndf=8)  # the output size does not depend on the width
    logits = disc(tf.zeros([1, 256, 256, 3]), uv_mask=tf.ones([256, 256, 1]))
    assert logits.shape == (1, 30, 30, 1)


def test_discriminator_default_parameter_count_and_layers():
    disc = AlbedoDiscriminator()
    disc(tf.zeros([1, 32, 32, 3]))
    # pix2pix NLayerDiscriminator(3, 64, n_layers=3, BatchNorm): 2,765,633 trainable.
    assert _trainable_count(disc) == 2_765_633
    convs = [layer for layer in disc.body.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.strides, c.use_bias) for c in convs] == [
        (64, (2, 2), True), (128, (2, 2), False), (256, (2, 2), False), (512, (1, 1), False), (1, (1, 1), True)]


def test_discriminator_ignores_texels_outside_the_mask(rng):
    disc = AlbedoDiscriminator(ndf=8, norm="instance")
    mask = np.zeros((1, 64, 64, 1), np.float32)
    mask[:, 16:48, 16:48] = 1.0
    albedo = rng.random((1, 64, 64, 3)).astype(np.float32)
    changed = albedo.copy()
    changed[:, :8] = 1.0 - changed[:, :8]
    np.testing.assert_array_equal(disc(albedo, uv_mask=mask).numpy(), disc(changed, uv_mask=mask).numpy())
    assert np.abs(disc(albedo).numpy() - disc(changed).numpy()).max() > 0


def test_discriminator_config_round_trip(tmp_path):
    disc = AlbedoDiscriminator(ndf=8, norm="none")
    x = tf.random.uniform([1, 32, 32, 3], seed=0)
    expected = disc(x).numpy()
    clone = AlbedoDiscriminator.from_config(disc.get_config())
    clone(x)
    path = str(tmp_path / "d.weights.h5")
    disc.save_weights(path)
    clone.load_weights(path)
    np.testing.assert_array_equal(clone(x).numpy(), expected)
    assert clone.get_config()["norm"] == "none"
