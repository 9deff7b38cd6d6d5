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


def test_shipped_regressor_round_trip_float16_and_wrong_face_model(tiny_model, tmp_path, monkeypatch):
    import json

    from tf_facetex.networks.precision import float16_output_error
    from tf_facetex.prior import regressor as reg

    trained = reg.build_regressor(tiny_model, "tiny")
    rng = np.random.default_rng(0)
    for variable in trained.weights:    # not the zero head: a load must really read the weights
        variable.assign(variable + rng.normal(0.0, 0.01, variable.shape).astype(np.float32))
    images = rng.random((2, 224, 224, 3)).astype(np.float32)
    error = float16_output_error(trained, images)
    assert 0.0 < error < 1e-2
    np.testing.assert_array_equal(trained(images).numpy(), trained(images).numpy())   # weights restored after
    weights = reg.save_shipped_regressor(trained, tmp_path / "reg", {"name": "t", "steps": 5}, float16=True)
    assert json.loads((tmp_path / "reg" / reg.SHIPPED_CONFIG).read_text())["backbone"] == "tiny"
    monkeypatch.setenv("TF_FACETEX_PRIOR_REGRESSOR", str(tmp_path / "reg"))
    logged = []
    loaded, source = reg.resolve_regressor(tiny_model, log=logged.append)
    assert source == str(tmp_path / "reg") and "shipped t" in logged[0] and "sha256" in logged[0]
    assert loaded.backbone_name == "tiny"                   # from regressor.json, not the export's flag default
    np.testing.assert_allclose(loaded(images).numpy(), trained(images).numpy(), atol=max(2 * error, 1e-6))
    assert np.abs(loaded(images).numpy()).max() > 1e-3
    record = json.loads((tmp_path / "reg" / reg.SHIPPED_CONFIG).read_text())
    record["layout_sizes"]["id"] += 1                       # trained for another face model: refused by name
    (tmp_path / "reg" / reg.SHIPPED_CONFIG).write_text(json.dumps(record))
    with pytest.raises(AssetError, match="trained for coefficients"):
        reg.load_shipped_regressor(tiny_model, tmp_path / "reg", log=lambda *_: None)
    monkeypatch.setenv("TF_FACETEX_PRIOR_REGRESSOR", str(tmp_path / "none"))
    assert reg.shipped_regressor_or_none() is None
    assert reg.resolve_regressor(tiny_model, backbone="tiny")[1] is None
    assert weights.stat().st_size > 0
