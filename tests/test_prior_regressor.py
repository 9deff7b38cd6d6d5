"""PriorRegressor: zero-initialised head, layout from the face model, save/load, bad weight files."""
import numpy as np
import pytest

from tf_facetex.errors import AssetError
from tf_facetex.face_model.decoder import CoefficientLayout
from tf_facetex.prior.regressor import PriorRegressor


def test_untrained_regressor_predicts_the_mean_face(tiny_model):
    regressor = PriorRegressor.for_model(tiny_model, backbone="tiny")
    coeffs = regressor(np.random.default_rng(0).uniform(size=(2, 224, 224, 3)).astype(np.float32))
    assert coeffs.shape == (2, CoefficientLayout.for_model(tiny_model).size)
    np.testing.assert_array_equal(coeffs.numpy(), 0.0)
    assert set(regressor.split(coeffs)) == {"id", "exp", "tex", "angles", "gamma", "translation"}


def test_compact_backbone_keeps_where_features_are(tiny_model):
    """'compact' flattens its 7x7 map instead of averaging it: moving the same content elsewhere changes the
    features (an average-pooled backbone is nearly blind to that), and its head starts at the mean face too."""
    regressor = PriorRegressor.for_model(tiny_model, backbone="compact", image_size=224)
    image = np.zeros((1, 224, 224, 3), np.float32)
    image[0, 32:96, 32:96] = 1.0
    moved = np.roll(image, (96, 96), axis=(1, 2))
    features = regressor.backbone(np.concatenate([image, moved]) * 2.0 - 1.0).numpy()
    assert features.shape == (2, 256)
    assert np.abs(features[0] - features[1]).max() > 1e-3 * np.abs(features).max()
    np.testing.assert_array_equal(regressor(image).numpy(), 0.0)
    assert 5e5 < regressor.count_params() < 2e6


def test_weights_round_trip_and_missing_file(tiny_model, tmp_path):
    regressor = PriorRegressor.for_model(tiny_model, backbone="tiny")
    images = np.random.default_rng(1).uniform(size=(1, 224, 224, 3)).astype(np.float32)
    regressor(images)
    for weight in regressor.head.weights:
        weight.assign(np.random.default_rng(2).normal(size=weight.shape).astype(np.float32) * 0.01)
    path = tmp_path / "regressor.weights.h5"
    regressor.save_weights(path)
    again = PriorRegressor.for_model(tiny_model, backbone="tiny")
    again(images)
    again.load_weights(path)
    np.testing.assert_allclose(again(images).numpy(), regressor(images).numpy(), atol=1e-6)
    with pytest.raises(AssetError, match="nothing.h5"):
        PriorRegressor.for_model(tiny_model, backbone="tiny", backbone_weights=tmp_path / "nothing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an h5 file")
    with pytest.raises(AssetError, match="garbage.h5"):
        PriorRegressor.for_model(tiny_model, backbone="tiny", backbone_weights=garbage)
