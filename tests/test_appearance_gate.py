"""The appearance gate (tf_facetex.prior.appearance_gate): hue outliers against the coarse render are dropped,
shading and protected features are kept."""
import numpy as np

from tf_facetex.prior import appearance_gate as gate


def _scene(size=64):
    rng = np.random.default_rng(0)
    coarse = np.full((1, size, size, 3), [0.8, 0.6, 0.5], np.float32)
    image = coarse * rng.uniform(0.9, 1.1, (1, size, size, 1)).astype(np.float32)   # grey shading noise
    image[0, :, : size // 3] *= 0.4                      # a hard shadow: every channel scaled alike
    image[0, 20:26, 8:56] = [0.3, 0.2, 0.7]              # a purple bar: a hue the face does not have
    return image, coarse


def test_chroma_deviation_ignores_grey_scaling_and_sees_a_hue_change():
    image, coarse = _scene()
    deviation = gate.chroma_deviation(image, coarse)
    np.testing.assert_allclose(gate.chroma_deviation(coarse * 0.5, coarse), 0.0, atol=0.03)
    assert deviation[0, 22, 30] > 1.0 and deviation[0, 40, 5] < 0.1


def test_the_bar_is_dropped_the_shadow_kept_and_k_zero_keeps_all():
    image, coarse = _scene()
    region = np.ones((1, 64, 64), np.float32)
    keep = gate.appearance_keep(image, coarse, region, None, k=3.5)
    bar = np.zeros((64, 64), bool)
    bar[20:26, 8:56] = True
    assert keep[0][bar].max() == 0.0
    assert keep[0][~bar].mean() > 0.99                   # the shadow and the shading noise stay seen
    np.testing.assert_array_equal(gate.appearance_keep(image, coarse, region, None, k=0.0), 1.0)


def _lips_over_the_bar():
    landmarks = np.full((1, 68, 2), 2.0, np.float32)
    landmarks[0, 48:60] = [[x, y] for x, y in zip(np.linspace(10, 50, 12), np.tile([21, 25], 6))]  # the lips
    return landmarks


def test_feature_regions_are_left_to_the_parser_when_feature_k_is_off():
    image, coarse = _scene()
    landmarks = _lips_over_the_bar()
    keep = gate.appearance_keep(image, coarse, np.ones((1, 64, 64)), landmarks, k=3.5, margin_px=1, feature_k=0.0)
    assert keep[0, 23, 30] == 1.0 and keep[0, 23, 54] == 0.0     # inside the lips' hull vs beyond it
    regions = gate.feature_regions(landmarks, 64, 0)
    assert regions[0, 23, 30] and not regions[0, 40, 40]


def test_brows_keep_their_own_colour_but_not_an_occluder_of_another_hue():
    image, coarse = _scene()
    lip = np.array([0.8, 0.5, 0.45], np.float32)           # redder than the skin render: a feature's own hue
    image[0, 30:34, 8:56] = lip
    brows = np.full((1, 68, 2), 2.0, np.float32)
    brows[0, 17:22] = [[x, y] for x, y in zip(np.linspace(10, 30, 5), [21, 25, 21, 25, 21])]  # over the bar
    brows[0, 22:27] = [[x, y] for x, y in zip(np.linspace(10, 30, 5), [30, 33, 30, 33, 30])]  # over the red patch
    keep = gate.appearance_keep(image, coarse, np.ones((1, 64, 64)), brows, k=3.5, margin_px=1)
    assert keep[0, 31, 20] == 1.0                             # the brow's own kind of colour: kept ...
    assert keep[0, 31, 54] == 0.0                             # ... and dropped outside every feature region
    assert keep[0, 23, 20] == 0.0                             # the purple bar over a brow: dropped
    np.testing.assert_array_equal(gate.appearance_keep(image, coarse, np.ones((1, 64, 64)), brows, k=3.5,
                                                       margin_px=1, feature_k=0.0)[0, 23, 20], 1.0)
    # The eyes and lips are never gated: the same bar inside an eye's or the lips' hull stays.
    for group in (range(36, 42), range(48, 60)):
        feature = np.full((1, 68, 2), 2.0, np.float32)
        feature[0, list(group)] = [[x, y] for x, y in zip(np.linspace(10, 50, len(group)),
                                                            np.tile([21, 25], len(group) // 2))]
        keep = gate.appearance_keep(image, coarse, np.ones((1, 64, 64)), feature, k=3.5, margin_px=1)
        assert keep[0, 23, 30] == 1.0 and keep[0, 23, 54] == 0.0
