"""`PriorRegressor`: image -> morphable-model coefficients (Deng et al. 2019's R-Net, in Keras).

A ResNet-50 backbone (keras.applications; random init, or ImageNet weights from a local file — nothing
is downloaded) with global average pooling and one linear head sized from the face model's
`CoefficientLayout`. For CPU budgets there is 'compact' (~0.9M parameters): a conv-BN stack down to 7x7
whose features keep their position (1x1 conv, flatten, one hidden layer) instead of being averaged away —
with average pooling a small network cannot place the face precisely enough to read its shape.

As in Deng et al., the head starts at zero (weights and bias), so an untrained regressor predicts the mean
face, frontal and centred, with ambient light — a sane starting point (Deep3DFaceReconstruction issue #116
explains why this matters).
"""
import json
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tf_facetex import io_utils, paths
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.errors import AssetError
from tf_facetex.face_model.decoder import CoefficientLayout

SHIPPED_CONFIG = paths.PRIOR_REGRESSOR_CONFIG
SHIPPED_WEIGHTS = paths.PRIOR_REGRESSOR_WEIGHTS
BACKBONES = ("resnet50", "mobilenetv2", "compact", "tiny")
COMPACT_CHANNELS = (16, 32, 64, 96, 128)


def _conv_bn_relu(x, filters, kernel=3, strides=1):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))


def _compact(shape) -> keras.Model:
    """Strided conv-BN-ReLU stages (two convolutions from the second on) down to ~S/32, then a 1x1 conv to 32
    channels, flatten and a 256-unit hidden layer: [B, S, S, 3] -> [B, 256]."""
    inputs = keras.Input(shape)
    x = _conv_bn_relu(inputs, COMPACT_CHANNELS[0], 5, 2)
    for filters in COMPACT_CHANNELS[1:]:
        x = _conv_bn_relu(x, filters, 3, 2)
        x = _conv_bn_relu(x, filters, 3, 1)
    x = keras.layers.Flatten()(_conv_bn_relu(x, 32, 1, 1))
    return keras.Model(inputs, keras.layers.Dense(256, activation="relu")(x), name="compact_backbone")


def _backbone(name: str, image_size: int, weights_path=None) -> keras.Model:
    """A feature extractor [B, S, S, 3] (preprocessed) -> [B, D]."""
    shape = (image_size, image_size, 3)
    if name == "resnet50":
        net = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape, pooling="avg")
    elif name == "mobilenetv2":
        net = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=shape, pooling="avg",
                                             alpha=0.35)
    elif name == "compact":
        net = _compact(shape)
    elif name == "tiny":  # a few strided convolutions: CPU smoke tests only
        inputs = keras.Input(shape)
        x = inputs
        for filters in (16, 32, 64, 128):
            x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        net = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny_backbone")
    else:
        raise ValueError(f"unknown backbone '{name}', expected one of {BACKBONES}")
    if weights_path:
        path = pathlib.Path(weights_path)
        if not path.is_file():
            raise AssetError(f"{path}: backbone weights file not found")
        try:
            net.load_weights(str(path), skip_mismatch=False)
        except Exception as err:  # noqa: BLE001 - Keras raises several types for bad files
            raise AssetError(f"{path}: cannot load {name} weights ({type(err).__name__}: {err})") from err
    return net


def preprocess(images, backbone: str):
    """[B, S, S, 3] RGB in [0, 1] -> the backbone's expected input."""
    images = tf.convert_to_tensor(images, tf.float32)
    if backbone == "resnet50":
        # keras.applications ResNet50 ('caffe' mode): BGR, 0-255, ImageNet mean subtracted.
        bgr = images[..., ::-1] * 255.0
        return bgr - tf.constant([103.939, 116.779, 123.68])
    return images * 2.0 - 1.0


@keras.saving.register_keras_serializable(package="tf_facetex")
class PriorRegressor(keras.Model):
    """Images [B, S, S, 3] in [0, 1] -> coefficients [B, C] in the face model's layout."""

    def __init__(self, layout_sizes: dict, backbone: str = "resnet50", image_size: int = CROP_SIZE,
                 backbone_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.layout_sizes = dict(layout_sizes)
        self.layout = CoefficientLayout(layout_sizes["id"], layout_sizes["exp"], layout_sizes["tex"])
        self.backbone_name = backbone
        self.image_size = image_size
        self.backbone = _backbone(backbone, image_size, backbone_weights)
        self.head = keras.layers.Dense(self.layout.size, kernel_initializer="zeros", bias_initializer="zeros",
                                       name="coefficients")

    @classmethod
    def for_model(cls, model, **kwargs) -> "PriorRegressor":
        return cls(CoefficientLayout.for_model(model).to_dict(), **kwargs)

    def call(self, images, training=False):
        features = self.backbone(preprocess(images, self.backbone_name), training=training)
        return self.head(features)

    def split(self, coeffs):
        """[B, C] -> dict of named parts ('id', 'exp', 'tex', 'angles', 'gamma', 'translation')."""
        return self.layout.split(coeffs)

    def get_config(self):
        return {**super().get_config(), "layout_sizes": self.layout_sizes, "backbone": self.backbone_name,
                "image_size": self.image_size}


def build_regressor(model, backbone="resnet50", image_size=CROP_SIZE) -> PriorRegressor:
    """An untrained `PriorRegressor` for ``model`` with its weights created (ready to load or export)."""
    regressor = PriorRegressor.for_model(model, backbone=backbone, image_size=image_size)
    regressor(np.zeros((1, image_size, image_size, 3), np.float32))
    return regressor


def load_regressor(model, weights_path, backbone="resnet50", image_size=CROP_SIZE) -> PriorRegressor:
    """A `PriorRegressor` for ``model`` with trained weights from ``weights_path`` (AssetError if unusable)."""
    if not weights_path:
        raise AssetError("the regressor prior needs trained weights (--regressor_weights); "
                         "train them with scripts/train_prior.py or use the fitting prior")
    path = pathlib.Path(weights_path)
    if not path.is_file():
        raise AssetError(f"{path}: regressor weights not found")
    regressor = build_regressor(model, backbone, image_size)
    try:
        regressor.load_weights(str(path))
    except Exception as err:  # noqa: BLE001 - Keras raises several types for bad files
        raise AssetError(f"{path}: cannot load regressor weights ({type(err).__name__}: {err})") from err
    return regressor


def shipped_regressor_or_none():
    """The shipped regressor folder (``$TF_FACETEX_PRIOR_REGRESSOR`` or saved_models/prior_regressor/: regressor.json
    + regressor.weights.h5, written by scripts/ship_prior_regressor.py) when it exists, else None."""
    return paths.prior_regressor_dir() if paths.shipped_prior_regressor_present() else None


def save_shipped_regressor(regressor, out_dir, record, float16=False):
    """Writes ``regressor`` as a shipped folder: regressor.weights.h5 (float16 storage when ``float16``; check with
    `tf_facetex.networks.precision.float16_output_error` first) and regressor.json (``record`` plus the backbone,
    crop size and coefficient layout). Atomic per file. Returns the weights path."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / SHIPPED_WEIGHTS
    staging = out_dir / f".{SHIPPED_WEIGHTS}.partial.weights.h5"
    regressor.save_weights(str(staging))
    if float16:
        io_utils.store_h5_float16(staging)
    os.replace(staging, weights)
    io_utils.write_json(out_dir / SHIPPED_CONFIG, {**record, "backbone": regressor.backbone_name,
                                                   "image_size": regressor.image_size,
                                                   "layout_sizes": regressor.layout_sizes})
    return weights


def load_shipped_regressor(model, folder, log=print):
    """The regressor of a shipped folder (`save_shipped_regressor`) for ``model``.

    Returns (regressor, record). Raises AssetError when the folder is unreadable or was trained for another
    coefficient layout (another face model)."""
    folder = pathlib.Path(folder)
    try:
        record = json.loads((folder / SHIPPED_CONFIG).read_text())
        backbone, image_size = record["backbone"], int(record["image_size"])
        trained_for = dict(record["layout_sizes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AssetError(f"{folder / SHIPPED_CONFIG}: unreadable or not a prior regressor ({err})") from err
    wanted = CoefficientLayout.for_model(model).to_dict()
    if trained_for != wanted:
        raise AssetError(f"{folder}: the regressor was trained for coefficients {trained_for}, the face model "
                         f"{model.name} has {wanted}; use the face model it was trained with or --regressor_weights")
    regressor = load_regressor(model, folder / SHIPPED_WEIGHTS, backbone=backbone, image_size=image_size)
    log(f"[tf_facetex] prior regressor: shipped {record.get('name', folder.name)} ({backbone} backbone, "
        f"{regressor.count_params():,} parameters, trained {record.get('steps', '?')} steps), weights "
        f"{folder / SHIPPED_WEIGHTS} (sha256 {io_utils.file_sha256(folder / SHIPPED_WEIGHTS)[:16]}...)")
    return regressor, record


def resolve_regressor(model, weights_path=None, backbone="resnet50", log=print):
    """The regressor a prior or an export uses: ``weights_path`` (with ``backbone``), else the shipped one, else a
    randomly initialised ``backbone`` network (the caller decides whether that is acceptable).

    Returns (regressor, description of the weights, or None when randomly initialised)."""
    if weights_path:
        return load_regressor(model, weights_path, backbone=backbone), str(weights_path)
    shipped = shipped_regressor_or_none()
    if shipped is not None:
        return load_shipped_regressor(model, shipped, log)[0], str(shipped)
    return build_regressor(model, backbone), None
