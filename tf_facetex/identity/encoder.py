"""Identity encoders: face image + landmarks -> L2-normalised identity embedding, all in TF ops.

Used by the cross-perceptual (identity) loss on rendered faces and by the identity metric in
evaluation. ``embed`` aligns (differentiable warp) and encodes; ``embed_chips`` encodes chips that are
already aligned. Everything is differentiable w.r.t. the input pixels and runs inside ``tf.function``.

Pixel convention (project-wide): float images are RGB in [0, 1]; uint8 images are RGB in [0, 255].

Backends:
- ``DlibIdentityEncoder`` (default): dlib's face-recognition ResNet, 128-d, weights read from the
  ``dlib_face_recognition_resnet_model_v1.dat`` shipped with ``face_recognition_models``.
- ``ArcFaceIdentityEncoder``: deepface's Keras ArcFace (ResNet-34, 512-d) given its
  ``arcface_weights.h5``; nothing is downloaded.
"""
import abc
import functools
import os
import pathlib

import numpy as np
import tensorflow as tf
import keras
from keras import layers

from tf_facetex.errors import AssetError
from tf_facetex.identity import alignment
from tf_facetex.identity.dlib_resnet import CHIP_SIZE as DLIB_CHIP_SIZE, load_dlib_face_resnet


def identity_similarity(a, b):
    """Cosine similarity of identity embeddings.

    Args:
      a, b: [B, D] embeddings (need not be normalised).
    Returns:
      [B] in [-1, 1]; 1 = same direction.
    """
    a = tf.math.l2_normalize(tf.convert_to_tensor(a, tf.float32), axis=-1, epsilon=1e-12)
    b = tf.math.l2_normalize(tf.convert_to_tensor(b, tf.float32), axis=-1, epsilon=1e-12)
    return tf.reduce_sum(a * b, axis=-1)


def _to_unit_range(images):
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


class IdentityEncoder(abc.ABC):
    """Face-identity embedding network with its own chip alignment.

    Attributes:
      name: short backend name.
      chip_size: side of the aligned chip the network takes.
      embedding_dim: D.
    """
    name = "identity"
    chip_size = None
    embedding_dim = None

    @abc.abstractmethod
    def chip_matrices(self, landmarks):
        """Chip-to-image affines for this backend's alignment.

        Args:
          landmarks: [B, 68, 2] (iBUG layout) or [B, 5, 2] (backend's 5-point order), image pixels.
        Returns:
          [B, 2, 3] float32 (differentiable w.r.t. landmarks).
        """

    @abc.abstractmethod
    def _encode(self, chips01, training=False):
        """[B, S, S, 3] float RGB in [0, 1] -> [B, D] raw (unnormalised) network output."""

    def embed_chips(self, chips, training=False):
        """Embeds aligned chips.

        Args:
          chips: [B, S, S, 3] (S = chip_size), uint8 in [0, 255] or float in [0, 1], RGB.
        Returns:
          [B, D] L2-normalised embeddings.
        """
        chips = _to_unit_range(chips)
        if chips.shape[1] is not None and chips.shape[1] != self.chip_size:
            raise ValueError(f"{self.name} chips must be {self.chip_size}x{self.chip_size}, got {chips.shape[1:3]}")
        return tf.math.l2_normalize(self._encode(chips, training=training), axis=-1, epsilon=1e-12)

    def extract_chips(self, images, landmarks=None, chip_matrices=None, antialias=True):
        """Differentiable aligned chips: [B, H, W, 3] -> [B, S, S, 3] float in [0, 1].

        Give ``landmarks`` ([B, 68|5, 2]) or precomputed ``chip_matrices`` ([B, 2, 3], chip -> image).
        """
        if (landmarks is None) == (chip_matrices is None):
            raise ValueError("give exactly one of landmarks or chip_matrices")
        matrices = self.chip_matrices(landmarks) if chip_matrices is None else chip_matrices
        return alignment.warp_to_chips(_to_unit_range(images), matrices, self.chip_size, antialias=antialias)

    def embed(self, images, landmarks=None, chip_matrices=None, antialias=True, training=False):
        """Aligns and embeds faces.

        Args:
          images: [B, H, W, 3] RGB, uint8 in [0, 255] or float in [0, 1] (e.g. renderings).
          landmarks: [B, 68, 2] or [B, 5, 2] image-pixel landmarks, or
          chip_matrices: [B, 2, 3] chip-to-image affines (e.g. from ``chip_matrices``).
          antialias: pyramid-sample strong reductions like dlib (see ``alignment.warp_to_chips``).
        Returns:
          [B, D] L2-normalised embeddings.
        """
        chips = self.extract_chips(images, landmarks, chip_matrices, antialias)
        return self.embed_chips(chips, training=training)


class DlibIdentityEncoder(IdentityEncoder):
    """dlib's face-recognition ResNet (128-d; 99.38% LFW with jitter, 99.13% without).

    ``descriptors`` gives dlib's raw descriptors, on which dlib's "same person" rule is a Euclidean
    distance below 0.6 (``DLIB_SAME_PERSON_DISTANCE``).
    """
    name = "dlib"
    chip_size = DLIB_CHIP_SIZE
    embedding_dim = 128

    def __init__(self, model_path=None, padding=alignment.DLIB_CHIP_PADDING):
        self.model_path = model_path
        self.padding = padding
        self.model = load_dlib_face_resnet(model_path)
        self.model.trainable = False

    def chip_matrices(self, landmarks):
        return alignment.dlib_chip_matrices_tf(landmarks, self.chip_size, self.padding)

    def _encode(self, chips01, training=False):
        return self.model(chips01 * 255.0, training=training)

    def descriptors(self, chips):
        """dlib's raw 128-d descriptors of aligned chips (uint8 [0, 255] or float [0, 1]) -> [B, 128]."""
        return self._encode(_to_unit_range(chips))

    def chip_numpy(self, image, landmarks):
        """Bit-exact ``dlib.get_face_chip(image, shape, 150, padding)`` for preprocessing: uint8 [150, 150, 3]."""
        return alignment.extract_dlib_chip(image, landmarks, self.chip_size, self.padding)


# ----------------------------------------------------------------------------------------------------
# ArcFace (deepface's Keras ResNet-34 layout)

ARCFACE_NORMALIZATIONS = ("base", "arcface")


def _arcface_block(x, filters, stride=1, conv_shortcut=True, name=""):
    """deepface's ArcFace residual block (pre-activation style with PReLU), layer names as deepface's."""
    bn = dict(axis=3, epsilon=2e-5, momentum=0.9)
    if conv_shortcut:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=name + "_0_conv")(x)
        shortcut = layers.BatchNormalization(**bn, name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.BatchNormalization(**bn, name=name + "_1_bn")(x)
    x = layers.ZeroPadding2D(1, name=name + "_1_pad")(x)
    x = layers.Conv2D(filters, 3, strides=1, use_bias=False, name=name + "_1_conv")(x)
    x = layers.BatchNormalization(**bn, name=name + "_2_bn")(x)
    x = layers.PReLU(shared_axes=[1, 2], name=name + "_1_prelu")(x)
    x = layers.ZeroPadding2D(1, name=name + "_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=name + "_2_conv")(x)
    x = layers.BatchNormalization(**bn, name=name + "_3_bn")(x)
    return layers.Add(name=name + "_add")([shortcut, x])


def build_arcface_model():
    """deepface's ArcFace architecture (``deepface/models/facial_recognition/ArcFace.py``), untrained.

    Input [B, 112, 112, 3] as deepface feeds it (BGR; see ``ArcFaceIdentityEncoder`` for the scaling),
    output [B, 512] embedding. Layer order and weight shapes match deepface's ``arcface_weights.h5``.
    """
    image = keras.Input((112, 112, 3), name="chip_bgr")
    x = layers.ZeroPadding2D(1, name="conv1_pad")(image)
    x = layers.Conv2D(64, 3, strides=1, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=2e-5, momentum=0.9, name="conv1_bn")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="conv1_prelu")(x)
    for stage, (filters, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=2):
        x = _arcface_block(x, filters, stride=2, name=f"conv{stage}_block1")
        for block in range(2, blocks + 1):
            x = _arcface_block(x, filters, conv_shortcut=False, name=f"conv{stage}_block{block}")
    x = layers.BatchNormalization(momentum=0.9, epsilon=2e-5, name="batch_normalization")(x)
    x = layers.Dropout(0.4, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, use_bias=True, name="dense")(x)
    embedding = layers.BatchNormalization(momentum=0.9, epsilon=2e-5, scale=True, name="embedding")(x)
    return keras.Model(image, embedding, name="ResNet34")


def save_arcface_weights_h5(model, path):
    """Writes ``model``'s weights in the legacy Keras-2 ``.h5`` layout deepface's file uses (root attr
    ``layer_names``, one group per layer with ``weight_names`` such as ``conv1_conv/kernel:0`` and the
    arrays stored under those names). Used to test the loader without deepface's real file."""
    import h5py
    with h5py.File(os.fspath(path), "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.15.0"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{weight.name}:0" for weight in layer.weights]
            group.attrs["weight_names"] = [n.encode("utf8") for n in names]
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(weight.numpy()))


def load_arcface_model(weights_path):
    """deepface's ArcFace with weights from a local ``arcface_weights.h5``.

    Raises:
      AssetError: the file is missing, not HDF5, or its layers/shapes do not fit the architecture.
    """
    path = pathlib.Path(os.fspath(weights_path)).expanduser()
    if not path.is_file():
        raise AssetError(f"{path}: ArcFace weights file not found (deepface's arcface_weights.h5; "
                         "it is not downloaded automatically)")
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" not in handle.attrs:
                raise AssetError(f"{path}: not a Keras .h5 weights file (no layer_names attribute)")
    except OSError as err:
        raise AssetError(f"{path}: not a readable HDF5 weights file ({err})") from err
    model = build_arcface_model()
    try:
        # Legacy .h5: weights are matched to layers in topological order, so only the layout matters.
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as err:
        message = str(err).splitlines()[0][:200]
        raise AssetError(f"{path}: weights do not fit deepface's ArcFace ({message})") from err
    return model


class ArcFaceIdentityEncoder(IdentityEncoder):
    """deepface's Keras ArcFace (ResNet-34 backbone, 512-d) from a local ``arcface_weights.h5``.

    Alignment: insightface's 5-point template on a 112x112 chip. Input to the network as deepface feeds
    it: channels reversed to BGR, then ``normalization="base"`` (deepface's default: [0, 1]) or
    ``"arcface"`` ((x*255 - 127.5) / 128, the original insightface scaling).
    """
    name = "arcface"
    chip_size = alignment.ARCFACE_CHIP_SIZE
    embedding_dim = 512

    def __init__(self, weights_path, normalization="base", bgr=True):
        if normalization not in ARCFACE_NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {ARCFACE_NORMALIZATIONS}, got {normalization!r}")
        self.weights_path = weights_path
        self.normalization = normalization
        self.bgr = bgr
        self.model = load_arcface_model(weights_path)
        self.model.trainable = False

    def chip_matrices(self, landmarks):
        return alignment.arcface_chip_matrices_tf(landmarks, self.chip_size)

    def _encode(self, chips01, training=False):
        x = chips01[..., ::-1] if self.bgr else chips01
        if self.normalization == "arcface":
            x = (x * 255.0 - 127.5) / 128.0
        return self.model(x, training=training)


@functools.lru_cache(maxsize=4)
def _cached_encoder(backend, weights_path):
    if backend == "dlib":
        return DlibIdentityEncoder(weights_path)
    if backend == "arcface":
        if weights_path is None:
            raise AssetError("the ArcFace backend needs weights_path (deepface's arcface_weights.h5)")
        return ArcFaceIdentityEncoder(weights_path)
    raise ValueError(f"unknown identity backend {backend!r} (dlib or arcface)")


def get_identity_encoder(backend="dlib", weights_path=None) -> IdentityEncoder:
    """A shared encoder instance per (backend, weights file): models are loaded once per process."""
    return _cached_encoder(backend, None if weights_path is None else os.fspath(weights_path))


IDENTITY_BACKENDS = ("none", "dlib", "arcface")


def make_embed_fn(backend="none", weights_path=None):
    """`embed_fn(images [B, H, W, 3] in [0, 1], landmarks [B, 68, 2]) -> [B, D]` for the identity / cross-perceptual
    terms, or None for 'none'. dlib's ResNet by default; ArcFace given its weights. Call it under the strategy
    scope (the network's variables are created there)."""
    if backend == "none":
        return None
    if backend not in IDENTITY_BACKENDS:
        raise ValueError(f"--identity must be one of {IDENTITY_BACKENDS}, got {backend!r}")
    encoder = get_identity_encoder(backend, weights_path or None)

    def embed_fn(images, landmarks):
        return encoder.embed(images, landmarks)

    return embed_fn
