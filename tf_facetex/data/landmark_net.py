"""A second 68-point landmark model: a small CNN that regresses the points from a face box's grey crop.

dlib's shape predictor (`tf_facetex.data.detect`) is fast and precise on ordinary photos but places its points
badly when half the face is black (hard side light), when an occluder crosses it, and on the boxes of dlib's
CNN detector (it was trained on HOG boxes). This network is the detector's second opinion
(`FaceDetector`, ``landmark_net``): it checks every find (is it a face? do its points agree with dlib's?),
gives the points of faces found by the CNN detector or by a last-resort retry, and verifies the detector's
last guess (a face that fills a tight crop). Its points are not used where most of its crop lies outside the
photo (`made_up_fraction`; tight crops such as Yale B's): it was trained on crops at most about a third outside,
and there it is less precise than dlib (`tf_facetex.data.detect.landmark_source`).

- Input: the face box's square crop (`crop_transform`: centred on the box, ``CROP_MARGIN`` x its mean side),
  grey (a colour cast tells nothing about where the points are, and Yale B-like inputs are grey), resampled
  to ``input_size`` and standardised per crop (mean 0, standard deviation 1: exposure does not matter).
- Output: 68 (x, y) in crop units (0 = the crop's first pixel centre, 1 = its last), the iBUG 300-W order of
  dlib's model, and a face logit (is there a face in the crop, centred about as a detector's box would be?):
  the net verifies the last-resort guesses of the detector (a face that fills a tight crop, which neither
  dlib detector finds) and tells false detections from faces.
- Cascade: the points of a first pass define a new box (`box_from_landmarks`: from the 51 inner points,
  which need no jaw-contour convention) and a second pass refines them; each pass averages the prediction on
  the crop and on its mirror image (`FLIP_ORDER`), which halves the spread of the errors for the cost of a
  second 112 px forward pass (~2 ms on one CPU core).
- Training: scripts/train_landmark_net.py (synthetic faces with their true landmarks under hard light,
  occluders and yaw; CelebAMask-HQ training photos with HOG + dlib labels); the shipped weights are in
  ``saved_models/landmark_net/`` with their model card.
All coordinates use the project convention: x right, y down, integer pixel centres.
"""
import functools
import json
import os
import pathlib
from typing import Optional

import cv2
import numpy as np

from tf_facetex import paths
from tf_facetex.data.landmarks import FLIP_ORDER, NUM_LANDMARKS
from tf_facetex.errors import AssetError
from tf_facetex.io_utils import file_sha256

INPUT_SIZE = 112
CROP_MARGIN = 1.6          # crop side / the face box's mean side: the whole face even from a poor box
INNER = slice(17, 68)      # brows, nose, eyes, mouth: the points whose definition does not depend on the pose
WEIGHTS_FILE = "landmark_net.weights.h5"
CONFIG_FILE = "landmark_net.json"
# the inner points' box -> the face box, (centre dx, centre dy, width, height) in units of the inner box's
# width / height: set from CelebAMask-HQ training photos (HOG box vs dlib's inner points) by the training
# script and stored with the weights; these defaults are its values.
DEFAULT_INNER_TO_BOX = (0.0, 0.12, 1.30, 1.45)


def default_dir() -> pathlib.Path:
    """The shipped network: ``$TF_FACETEX_LANDMARK_NET`` or ``saved_models/landmark_net/`` in the repository."""
    env = os.environ.get("TF_FACETEX_LANDMARK_NET")
    return pathlib.Path(env) if env else paths.REPO_ROOT / "saved_models" / "landmark_net"


def crop_transform(box, input_size: int = INPUT_SIZE, margin: float = CROP_MARGIN) -> np.ndarray:
    """2x3 affine (image -> crop pixels) of the square crop around a face box (x0, y0, x1, y1).

    The crop is centred on the box and ``margin`` times the box's mean side wide; integer pixel centres, so
    ``cv2.warpAffine(image, transform, (input_size, input_size))`` samples it exactly.
    """
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    side = margin * 0.5 * ((x1 - x0) + (y1 - y0))
    if not side > 0:
        raise ValueError(f"face box {list(box)} is empty")
    scale = input_size / side
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    # crop pixel u = scale * (x - cx) + (input_size - 1) / 2
    return np.array([[scale, 0.0, (input_size - 1) / 2.0 - scale * cx],
                     [0.0, scale, (input_size - 1) / 2.0 - scale * cy]], np.float64)


def box_from_landmarks(landmarks68, inner_to_box=DEFAULT_INNER_TO_BOX) -> np.ndarray:
    """The face box (x0, y0, x1, y1) that the network's crop is defined from, from 68 points: [68, 2] -> [4]."""
    inner = np.asarray(landmarks68, np.float64)[INNER]
    (ix0, iy0), (ix1, iy1) = inner.min(axis=0), inner.max(axis=0)
    width, height = max(ix1 - ix0, 1e-3), max(iy1 - iy0, 1e-3)
    dx, dy, sw, sh = inner_to_box
    cx, cy = 0.5 * (ix0 + ix1) + dx * width, 0.5 * (iy0 + iy1) + dy * height
    return np.array([cx - 0.5 * sw * width, cy - 0.5 * sh * height, cx + 0.5 * sw * width,
                     cy + 0.5 * sh * height], np.float32)


def made_up_fraction(box, image_shape, margin: float = CROP_MARGIN) -> float:
    """The share of the network's crop around a face box (`crop_transform`) that lies outside the photo.

    Args:
      box: (x0, y0, x1, y1) face box.
      image_shape: (height, width, ...) of the photo.
    Returns:
      float in [0, 1]: the crop's area outside the photo's pixels ([-0.5, W - 0.5] x [-0.5, H - 0.5]) over its
      area. `grey_crop` fills that part by repeating the edge pixels: it is made up, not seen.
    """
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    half = 0.5 * margin * 0.5 * ((x1 - x0) + (y1 - y0))
    if not half > 0:
        raise ValueError(f"face box {list(box)} is empty")
    height, width = image_shape[:2]
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    inside_x = max(0.0, min(cx + half, width - 0.5) - max(cx - half, -0.5)) / (2 * half)
    inside_y = max(0.0, min(cy + half, height - 0.5) - max(cy - half, -0.5)) / (2 * half)
    return float(1.0 - inside_x * inside_y)


def grey_crop(image: np.ndarray, transform: np.ndarray, input_size: int = INPUT_SIZE) -> np.ndarray:
    """uint8 [H, W, 3] (or [H, W]) photo, 2x3 transform -> float32 [S, S] grey crop, standardised per crop."""
    grey = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    crop = cv2.warpAffine(grey, transform, (input_size, input_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return standardise(crop)


def standardise(crop: np.ndarray) -> np.ndarray:
    """float [..., S, S] -> zero mean, unit standard deviation per crop (a flat crop stays 0)."""
    crop = np.asarray(crop, np.float32)
    mean = crop.mean(axis=(-2, -1), keepdims=True)
    std = crop.std(axis=(-2, -1), keepdims=True)
    return (crop - mean) / np.maximum(std, 1.0)


def to_crop_units(points, transform, input_size: int = INPUT_SIZE) -> np.ndarray:
    """Image points [N, 2] -> the network's target units (crop pixels / (S - 1))."""
    points = np.asarray(points, np.float64)
    return ((points @ transform[:, :2].T + transform[:, 2]) / (input_size - 1)).astype(np.float32)


def from_crop_units(values, transform, input_size: int = INPUT_SIZE) -> np.ndarray:
    """The network's output [N, 2] (crop units) -> image points [N, 2]."""
    crop = np.asarray(values, np.float64) * (input_size - 1)
    inverse = cv2.invertAffineTransform(transform)
    return (crop @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)


def flip_points(values: np.ndarray) -> np.ndarray:
    """Crop-unit points of a crop [..., 68, 2] -> those of its mirror image (x -> 1 - x, left/right swapped)."""
    values = np.array(values, np.float32, copy=True)
    values[..., 0] = 1.0 - values[..., 0]
    return values[..., FLIP_ORDER, :]


def build_landmark_cnn(input_size: int = INPUT_SIZE, channels=(24, 32, 48, 64, 96), hidden: int = 256):
    """Conv-BN-ReLU stages, each halving the size (two convolutions from the second on), then a 1x1 conv, flatten
    (the features keep their position), one hidden layer and a linear head: [B, S, S, 1] -> [B, 137]
    (68 x, y in crop units, then the face logit)."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 1), name="grey_standardised")
    x = inputs
    for stage, filters in enumerate(channels):
        for repeat in range(1 if stage == 0 else 2):
            x = layers.Conv2D(filters, 5 if stage == 0 else 3, strides=2 if repeat == 0 else 1, padding="same",
                              use_bias=False, name=f"s{stage}_conv{repeat}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{repeat}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{repeat}")(x)
    x = layers.Conv2D(32, 1, use_bias=False, name="squeeze")(x)
    x = layers.ReLU(name="squeeze_relu")(layers.BatchNormalization(name="squeeze_bn")(x))
    x = layers.Dense(hidden, activation="relu", name="hidden")(layers.Flatten(name="flatten")(x))
    # the head starts at the mean shape (bias set by the training script), small weights
    outputs = layers.Dense(2 * NUM_LANDMARKS + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
                           name="points")(x)
    return keras.Model(inputs, outputs, name="landmark_cnn")


class LandmarkNet:
    """The trained landmark network: ``predict(image, box)`` -> [68, 2] image points.

    Args:
      folder: a folder holding ``landmark_net.json`` (input size, inner-box mapping, training summary) and
        ``landmark_net.weights.h5`` (default `default_dir`).
      passes: cascade passes (each re-crops around the previous pass's points).
    Raises:
      AssetError: when the files are missing or do not load.
    """

    def __init__(self, folder=None, passes: int = 2):
        import keras
        import tensorflow as tf

        folder = pathlib.Path(folder) if folder is not None else default_dir()
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise AssetError(f"{folder}: landmark-net files not found ({CONFIG_FILE}, {WEIGHTS_FILE}; "
                             "train them with scripts/train_landmark_net.py)")
        try:
            self.config = json.loads(config_path.read_text())
            self.input_size = int(self.config["input_size"])
            self.inner_to_box = tuple(float(v) for v in self.config["inner_to_box"])
            self.margin = float(self.config.get("crop_margin", CROP_MARGIN))
            self.model = build_landmark_cnn(self.input_size, tuple(self.config["channels"]),
                                            int(self.config["hidden"]))
            self.model.load_weights(str(weights_path))
        except Exception as err:  # noqa: BLE001 - JSON, Keras and h5py raise many types for a bad file
            raise AssetError(f"{folder}: cannot load the landmark network ({type(err).__name__}: {err})") from err
        self.folder = folder
        self.sha256 = file_sha256(weights_path)
        self.passes = int(passes)
        self._forward = tf.function(lambda crops: self.model(crops, training=False), reduce_retracing=True)

    def crop_units(self, crops: np.ndarray):
        """float32 [B, S, S] standardised crops -> ([B, 68, 2] crop-unit points, [B] face probabilities), each
        averaged with the mirror image's prediction (mapped back)."""
        crops = np.asarray(crops, np.float32)
        both = np.concatenate([crops, crops[:, :, ::-1]])[..., None]
        outputs = self._forward(both).numpy().reshape(2, len(crops), -1)
        values = outputs[..., :2 * NUM_LANDMARKS].reshape(2, len(crops), NUM_LANDMARKS, 2)
        probability = 1.0 / (1.0 + np.exp(-outputs[..., -1].mean(axis=0)))
        return 0.5 * (values[0] + flip_points(values[1])), probability

    def predict_with_score(self, image: np.ndarray, box, passes: int = None):
        """uint8 [H, W, 3] photo, face box (x0, y0, x1, y1) -> (float32 [68, 2] image points, face probability
        of the last pass's crop)."""
        points, probability = None, 0.0
        for _ in range(max(self.passes if passes is None else passes, 1)):
            if points is not None:
                box = box_from_landmarks(points, self.inner_to_box)
            transform = crop_transform(box, self.input_size, self.margin)
            values, probability = self.crop_units(grey_crop(image, transform, self.input_size)[None])
            points = from_crop_units(values[0], transform, self.input_size)
        return points, float(probability[0])

    def made_up_fraction(self, image_shape, points) -> float:
        """`made_up_fraction` of the crop the network takes around its points [68, 2] in a photo of that shape."""
        return made_up_fraction(box_from_landmarks(points, self.inner_to_box), image_shape, self.margin)

    def predict(self, image: np.ndarray, box) -> np.ndarray:
        """uint8 [H, W, 3] photo, face box (x0, y0, x1, y1) -> float32 [68, 2] image points."""
        return self.predict_with_score(image, box)[0]

    def describe(self) -> dict:
        return {"folder": str(self.folder), "sha256": self.sha256, "input_size": self.input_size,
                "passes": self.passes}


@functools.lru_cache(maxsize=None)
def _shipped(folder: str) -> Optional[LandmarkNet]:
    path = pathlib.Path(folder)
    if not (path / WEIGHTS_FILE).is_file():
        return None
    return LandmarkNet(path)


def load_shipped(folder=None) -> Optional[LandmarkNet]:
    """The landmark network in ``folder`` (default `default_dir`), loaded once per process, or None when the
    folder holds no weights (a checkout without them: the detector then keeps dlib's points)."""
    return _shipped(str(pathlib.Path(folder) if folder is not None else default_dir()))
