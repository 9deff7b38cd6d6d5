"""A small face-parsing network (binary face / not face) in the aligned crop, as a ``FaceMasker``.

The paper multiplies a face-parsing network's mask with the projected-face mask. No pretrained parser is
reachable here, so this module trains one: a small U-Net on CelebAMask-HQ-mini's labels (face = skin,
nose, brows, eyes, lips, mouth; ``masks.CELEBAMASK_FACE_CLASSES``), on aligned crops resampled to
``input_size`` (160 px by default), trained by ``scripts/train_parsing_net.py`` on the first 800 of the
1,000 images (sorted by name) and measured by ``scripts/eval_masks.py`` on the other 200.

The same TensorFlow resampling (``resample_crops``) makes the network's input in training (with random
similarity augmentation) and in ``ParsingNetMasker`` (without), so train and inference see identical
pixels. The saved file is a whole Keras model (``.keras``: architecture + weights); it is a build output,
never committed.

``masker_from_name("parsing", weights_path)`` falls back to ``LandmarkSkinMasker`` with a log line when
the weights file is missing, so a default that names the parser keeps working without trained weights.
"""
import pathlib

import numpy as np

from tf_facetex.data.masks import FaceMasker, LandmarkHullMasker, LandmarkSkinMasker, _fill_holes, _largest_component
from tf_facetex.errors import AssetError

DEFAULT_INPUT_SIZE = 160


def base_transform(crop_size: int, input_size: int) -> np.ndarray:
    """Projective transform [8] mapping input-grid pixels to crop pixels (a plain resize, pixel centres kept).

    ``ImageProjectiveTransformV3`` convention: output (x, y) samples the source at
    (a0 x + a1 y + a2, b0 x + b1 y + b2) (last two entries 0: affine), integer pixel centres; a resize by
    r = crop / input maps x -> (x + 0.5) r - 0.5.
    """
    r = crop_size / float(input_size)
    return np.array([r, 0.0, 0.5 * r - 0.5, 0.0, r, 0.5 * r - 0.5, 0.0, 0.0], np.float32)


def resample_crops(images, transforms, output_size, fill_mode: str = "CONSTANT"):
    """Bilinear warp of a batch: float32 [B, H, W, C], [B, 8] (output -> source), S -> [B, S, S, C].

    Outside the source: 0 (``CONSTANT``, like the black padding of aligned crops) or the nearest edge.
    """
    import tensorflow as tf

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.convert_to_tensor(images, tf.float32), transforms=tf.convert_to_tensor(transforms, tf.float32),
        output_shape=tf.cast(tf.stack([output_size, output_size]), tf.int32), fill_value=tf.constant(0.0),
        interpolation="BILINEAR", fill_mode=fill_mode)


def build_parsing_unet(input_size: int = DEFAULT_INPUT_SIZE, base_filters: int = 16, depth: int = 4,
                       max_filters: int = 128):
    """U-Net: float32 [B, S, S, 3] RGB in [0, 255] -> [B, S, S, 1] face logits.

    ``depth`` 2x downsamplings (S must be divisible by 2^depth); two 3x3 conv + BN + ReLU per level,
    bilinear upsampling and skip concatenation on the way up. 16 / 4 / 128 at 160 px: ~1.9 M parameters.
    """
    import keras
    from keras import layers

    if input_size % (2 ** depth):
        raise ValueError(f"input_size {input_size} must be divisible by 2**depth = {2 ** depth}")

    def block(x, filters, name):
        for i in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((input_size, input_size, 3), name="rgb_0_255")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
    skips, filters = [], base_filters
    for level in range(depth):
        x = block(x, min(filters, max_filters), f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
        filters *= 2
    x = block(x, min(filters, max_filters), "bottleneck")
    for level in reversed(range(depth)):
        filters //= 2
        x = layers.UpSampling2D(interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, min(filters, max_filters), f"dec{level}")
    logits = layers.Conv2D(1, 1, name="face_logits")(x)
    return keras.Model(inputs, logits, name="parsing_unet")


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Keeps the largest connected component and fills its holes: uint8 [H, W] -> uint8 [H, W]."""
    return _fill_holes(_largest_component(np.ascontiguousarray(mask, np.uint8)))


class ParsingNetMasker(FaceMasker):
    """``FaceMasker`` from a trained parsing network (``scripts/train_parsing_net.py``).

    Args:
      weights_path: the ``.keras`` file written by the training script.
      threshold: probability above which a pixel is face.
      postprocess: keep the largest component and fill holes. Off by default: on the validation images
        it lowered the mean IoU (0.9432 -> 0.9418) because hole filling turns the glasses that
        CelebAMask-HQ excludes back into face, and glasses frames can cut the forehead off the largest
        component.
    Works on aligned crops of any size (trained on 224 crops); landmarks are not used (the crop's
    alignment already encodes them).
    Raises:
      AssetError: when the file is missing or not a loadable Keras model.
    """

    def __init__(self, weights_path, threshold: float = 0.5, postprocess: bool = False):
        import keras
        import tensorflow as tf

        path = pathlib.Path(weights_path)
        if not path.is_file():
            raise AssetError(f"{path}: parsing-net weights not found (train them with scripts/train_parsing_net.py)")
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as err:  # noqa: BLE001 - Keras raises many types for a bad file
            raise AssetError(f"{path}: cannot load the parsing network ({type(err).__name__}: {err})") from err
        self.input_size = int(self.model.input_shape[1])
        self.threshold = float(threshold)
        self.postprocess = bool(postprocess)
        self.weights_path = path
        self._probabilities = tf.function(self._probabilities_graph, reduce_retracing=True)

    def _probabilities_graph(self, images, to_input, to_crop, size):
        import tensorflow as tf

        net_input = resample_crops(tf.cast(images, tf.float32), to_input, self.input_size)
        logits = self.model(net_input, training=False)
        # back to the crop grid: the inverse resize, edges replicated (logits, not images)
        logits = resample_crops(logits, to_crop, size, fill_mode="NEAREST")
        return tf.sigmoid(logits)[..., 0]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] aligned crops (square) -> float32 [B, H, W] face probabilities."""
        images = np.asarray(images)
        batch, size = images.shape[0], images.shape[1]
        to_input = np.tile(base_transform(size, self.input_size), (batch, 1))
        to_crop = np.tile(base_transform(self.input_size, size), (batch, 1))
        return self._probabilities(images, to_input, to_crop, np.int32(size)).numpy()

    def masks(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] -> float32 [B, H, W] in {0, 1}."""
        masks = (self.probabilities(images) > self.threshold).astype(np.uint8)
        if self.postprocess:
            masks = np.stack([postprocess_mask(m) for m in masks])
        return masks.astype(np.float32)

    def __call__(self, image: np.ndarray, landmarks68: np.ndarray = None) -> np.ndarray:
        """uint8 [H, W, 3] aligned crop (landmarks ignored) -> float32 [H, W] in {0, 1}."""
        return self.masks(np.asarray(image)[None])[0]


def masker_from_name(name: str, weights_path=None, log=print) -> FaceMasker:
    """'skin' | 'hull' | 'parsing' -> a FaceMasker.

    'parsing' needs ``weights_path``; when it is None or missing the substitute ``LandmarkSkinMasker``
    is returned and one line says so through ``log`` (so a default of 'parsing' never breaks a run).
    """
    if name == "skin":
        return LandmarkSkinMasker()
    if name == "hull":
        return LandmarkHullMasker()
    if name != "parsing":
        raise ValueError(f"masker must be 'skin', 'hull' or 'parsing', not {name!r}")
    if weights_path is None or not pathlib.Path(weights_path).is_file():
        log(f"[tf_facetex] parsing-net weights {weights_path or '(none given)'} not found; "
            "using the landmark+skin-colour mask (LandmarkSkinMasker) instead")
        return LandmarkSkinMasker()
    return ParsingNetMasker(weights_path)
