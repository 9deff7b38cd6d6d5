"""Training data and training loop of the landmark network (`tf_facetex.data.landmark_net`).

Samples: a photo's face box and its 68 true points, stored as a grey *source crop* (``SOURCE_SIZE`` px,
``SOURCE_MARGIN`` x the box's side, so that shifted, scaled and rotated network crops can be cut from it) with
the points and the box in that crop's pixels (`make_sample`). Each training step cuts random network crops
from the source crops (`augment_batch`): the box jittered in position (+-12 % of its side), size (x0.85-1.2)
and roll (+-20 degrees), mirrored half of the time, then photometric changes that the detector's hard cases
have (a gamma, a directional light ramp that leaves one side dark, contrast, blur, sensor noise, a bar or a
blob occluding part of the face), standardised like at inference (`landmark_net.standardise`).
Negatives (no face, or a face far from the crop's centre: a false detection) are crops of photo regions
without face pixels (`negative_sample`) and flat / noise / gradient images; they train the face logit only.
Loss: the mean Euclidean point error in crop units (robust, like the NME it is measured with) on faces, plus
``FACE_LOSS_WEIGHT`` x the face logit's cross-entropy on all crops.
"""
import dataclasses
import time
from typing import List

import cv2
import numpy as np

from tf_facetex.data import landmark_net as lnet

SOURCE_SIZE = 192
SOURCE_MARGIN = 2.4
FACE_LOSS_WEIGHT = 0.05


@dataclasses.dataclass
class Samples:
    """crops: uint8 [N, S, S] grey source crops; points: float32 [N, 68, 2] and boxes: float32 [N, 4] in their
    pixels; kinds: [N] str (where each came from, e.g. 'synthetic', 'celebamask', 'negative': no face)."""
    crops: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    kinds: np.ndarray

    @property
    def is_face(self) -> np.ndarray:
        return self.kinds != "negative"


def make_sample(image: np.ndarray, box, points):
    """A photo (uint8 [H, W, 3]), its face box and 68 true points -> (grey source crop [S, S] uint8,
    points [68, 2] and box [4] in that crop's pixels)."""
    transform = lnet.crop_transform(box, SOURCE_SIZE, SOURCE_MARGIN)
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    crop = cv2.warpAffine(grey, transform, (SOURCE_SIZE, SOURCE_SIZE), flags=cv2.INTER_AREA
                          if transform[0, 0] < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mapped = np.asarray(points, np.float64) @ transform[:, :2].T + transform[:, 2]
    corners = np.asarray(box, np.float64).reshape(2, 2) @ transform[:, :2].T + transform[:, 2]
    return crop, mapped.astype(np.float32), corners.reshape(4).astype(np.float32)


def negative_sample(image: np.ndarray, face_mask: np.ndarray, rng, tries: int = 20):
    """A source crop of a region of ``image`` (uint8 [H, W, 3]) with under 2 % face pixels (``face_mask``
    [H, W] bool) in its network crop, as (crop, zero points, box) like `make_sample`, or None."""
    height, width = image.shape[:2]
    for _ in range(tries):
        side = rng.uniform(0.2, 0.6) * min(height, width)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        half = 0.5 * lnet.CROP_MARGIN * side
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        region = face_mask[y0:int(min(cy + half, height)), x0:int(min(cx + half, width))]
        if region.size and region.mean() < 0.02:
            box = [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]
            return make_sample(image, box, np.zeros((lnet.NUM_LANDMARKS, 2), np.float32))
    return None


def procedural_negative(rng, size: int = 224):
    """A flat, noise, gradient or blob image with no face, as (crop, zero points, box) like `make_sample`."""
    kind = rng.integers(0, 4)
    grid = np.linspace(0, 1, size)
    if kind == 0:
        image = np.full((size, size), rng.uniform(0, 255))
    elif kind == 1:
        image = rng.uniform(0, 255, (size, size))
    elif kind == 2:
        image = 255 * (rng.uniform() * grid[None, :] + rng.uniform() * grid[:, None]) / 2
    else:
        image = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)), (0, 0), rng.uniform(2, 12))
        image = (image - image.min()) / max(np.ptp(image), 1e-6) * 255
    image = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    side = rng.uniform(0.3, 0.7) * size
    c = rng.uniform(0.3, 0.7, 2) * size
    return make_sample(image, [c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2],
                       np.zeros((lnet.NUM_LANDMARKS, 2), np.float32))


def stack_samples(parts: List[Samples]) -> Samples:
    return Samples(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Samples)))


def _jittered_transform(box, rng, input_size: int, jitter: bool):
    """2x3 source-crop -> network-crop affine for a (randomly moved, scaled, rolled) box."""
    x0, y0, x1, y1 = box
    side = 0.5 * ((x1 - x0) + (y1 - y0))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    angle, scale = 0.0, 1.0
    if jitter:
        cx, cy = cx + rng.uniform(-0.12, 0.12) * side, cy + rng.uniform(-0.12, 0.12) * side
        scale = float(np.exp(rng.uniform(np.log(0.85), np.log(1.2))))
        angle = rng.uniform(-20.0, 20.0)
    crop_side = lnet.CROP_MARGIN * side * scale
    s = input_size / crop_side
    c, si = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    rotation = np.array([[c, -si], [si, c]]) * s
    offset = (input_size - 1) / 2.0 - rotation @ np.array([cx, cy])
    return np.concatenate([rotation, offset[:, None]], axis=1)


def _light_ramp(size: int, rng) -> np.ndarray:
    """A directional light's falloff across the crop: [S, S] multiplier in [floor, 1]."""
    angle = rng.uniform(0, 2 * np.pi)
    grid = np.linspace(-1.0, 1.0, size)
    u = np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]
    sharpness = rng.uniform(1.5, 6.0)
    floor = rng.uniform(0.0, 0.35)
    return floor + (1 - floor) / (1 + np.exp(-sharpness * (u + rng.uniform(-0.5, 0.5))))


def _occlude(crop: np.ndarray, rng):
    """Paints a random bar (a stick, a microphone) or an ellipse (a hand) of one grey level over the crop."""
    size = crop.shape[0]
    level = float(rng.uniform(0, 255))
    if rng.uniform() < 0.6:
        angle = rng.uniform(0, np.pi)
        centre = rng.uniform(0.2, 0.8, 2) * size
        direction = np.array([np.cos(angle), np.sin(angle)]) * size
        p0, p1 = (centre - direction).astype(int), (centre + direction).astype(int)
        cv2.line(crop, tuple(int(v) for v in p0), tuple(int(v) for v in p1), level,
                 int(rng.uniform(0.02, 0.15) * size))
    else:
        centre = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.1, 0.3, 2) * size)
        cv2.ellipse(crop, centre, axes, float(rng.uniform(0, 180)), 0, 360, level, -1)


def augment_batch(samples: Samples, indices, rng, input_size: int = lnet.INPUT_SIZE, augment: bool = True):
    """Network inputs and targets for ``indices``: (float32 [B, S, S, 1] standardised crops,
    float32 [B, 137] targets: 68 crop-unit points (zeros for negatives), then 1 for a face, 0 for none)."""
    crops, targets = [], []
    for index in indices:
        transform = _jittered_transform(samples.boxes[index], rng, input_size, augment)
        crop = cv2.warpAffine(samples.crops[index], transform, (input_size, input_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        points = lnet.to_crop_units(samples.points[index], transform, input_size)
        if augment:
            if rng.uniform() < 0.5:
                crop, points = crop[:, ::-1], lnet.flip_points(points)
            crop = 255.0 * (crop / 255.0) ** float(np.exp(rng.normal(0.0, 0.45)))
            if rng.uniform() < 0.6:
                crop = crop * _light_ramp(input_size, rng)
            crop = crop * rng.uniform(0.5, 1.3) + rng.uniform(-30, 30)
            if rng.uniform() < 0.25:
                crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(0.5, 1.8))
            if rng.uniform() < 0.3:
                crop = np.ascontiguousarray(crop)
                _occlude(crop, rng)
            crop = crop + rng.normal(0.0, rng.uniform(0, 8), crop.shape)
        crops.append(np.ascontiguousarray(crop, np.float32))
        targets.append(points)
    crops = lnet.standardise(np.stack(crops))[..., None]
    labels = samples.is_face[np.asarray(indices)].astype(np.float32)
    targets = np.stack(targets).reshape(len(crops), -1) * labels[:, None]
    return crops, np.concatenate([targets, labels[:, None]], axis=1).astype(np.float32)


def point_error(predicted, target):
    """Mean Euclidean point distance over the faces of a batch: [B, 137] tensors -> scalar (crop units)."""
    import tensorflow as tf

    n = 2 * lnet.NUM_LANDMARKS
    diff = tf.reshape(predicted[:, :n] - target[:, :n], [-1, lnet.NUM_LANDMARKS, 2])
    per_crop = tf.reduce_mean(tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1) + 1e-8), axis=-1)
    face = target[:, n]
    return tf.reduce_sum(per_crop * face) / tf.maximum(tf.reduce_sum(face), 1.0)


def face_loss(predicted, target):
    """Cross-entropy of the face logit: [B, 137] tensors -> scalar."""
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target[:, -1], logits=predicted[:, -1]))


def face_accuracy(predicted, target) -> float:
    return float(np.mean((np.asarray(predicted)[:, -1] > 0) == (np.asarray(target)[:, -1] > 0.5)))


KIND_WEIGHTS = {"synthetic": 0.45, "celebamask": 0.35, "negative": 0.2}
# Fine-tuning with real photos that have true points (AFLW2000-3D, `scripts/train_landmark_net.py --aflw_range`):
# real photos with true labels get the largest share; dlib-labelled CelebAMask-HQ keeps the portraits' look.
FINE_TUNE_KIND_WEIGHTS = {"synthetic": 0.3, "aflw": 0.3, "celebamask": 0.25, "negative": 0.15}


def draw_indices(samples: Samples, count: int, rng, weights=None) -> np.ndarray:
    """``count`` sample indices, each kind drawn with its share of ``weights`` (default `KIND_WEIGHTS`; kinds
    missing from ``samples`` are left out and the shares renormalised), uniformly within a kind."""
    weights = KIND_WEIGHTS if weights is None else weights
    kinds = [kind for kind in weights if np.any(samples.kinds == kind)]
    shares = np.array([weights[kind] for kind in kinds], np.float64)
    chosen = rng.choice(len(kinds), size=count, p=shares / shares.sum())
    members = [np.flatnonzero(samples.kinds == kind) for kind in kinds]
    return np.array([rng.choice(members[k]) for k in chosen])


def train(samples: Samples, steps: int, batch_size: int = 64, learning_rate: float = 2e-3, seed: int = 0,
          input_size: int = lnet.INPUT_SIZE, channels=(24, 32, 48, 64, 96), hidden: int = 256,
          validation: Samples = None, log=print, max_minutes: float = None, init_weights=None,
          kind_weights=None):
    """Trains a `landmark_net.build_landmark_cnn` on ``samples``; returns (model, history list of dicts).

    Batches mix the kinds of samples by ``kind_weights`` (default `KIND_WEIGHTS`); Adam with a cosine-decayed
    learning rate; the head's bias starts at the mean target, or every weight at ``init_weights`` (a
    ``.weights.h5`` of the same architecture: fine-tuning). Every 250 steps the point error and face accuracy on
    ``validation`` (fixed, un-augmented crops) are logged.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = lnet.build_landmark_cnn(input_size, channels, hidden)
    if init_weights:
        model.load_weights(str(init_weights))
    else:
        faces = np.flatnonzero(samples.is_face)
        _, mean_target = augment_batch(samples, rng.choice(faces, 512), rng, input_size, False)
        head = model.get_layer("points")
        head.bias.assign(np.append(mean_target[:, :-1].mean(axis=0), 0.0))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)

    @tf.function(reduce_retracing=True)
    def step(crops, targets):
        with tf.GradientTape() as tape:
            predicted = model(crops, training=True)
            loss = point_error(predicted, targets) + FACE_LOSS_WEIGHT * face_loss(predicted, targets)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    val = None
    if validation is not None and len(validation.crops):
        val = augment_batch(validation, np.arange(len(validation.crops)), np.random.default_rng(1), input_size, False)
    history, losses, start = [], [], time.time()
    for number in range(1, steps + 1):
        crops, targets = augment_batch(samples, draw_indices(samples, batch_size, rng, kind_weights), rng,
                                       input_size)
        losses.append(float(step(tf.constant(crops), tf.constant(targets))))
        if number % 250 == 0 or number == steps:
            entry = {"step": number, "train_loss": float(np.mean(losses)), "minutes": (time.time() - start) / 60}
            if val is not None:
                predicted = model(val[0], training=False)
                entry["val_point_error"] = float(point_error(predicted, val[1]))
                entry["val_face_accuracy"] = face_accuracy(predicted, val[1])
            history.append(entry)
            losses = []
            log(f"[landmark_net] step {number}/{steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items()
                                                                       if k != "step"))
            if max_minutes and entry["minutes"] > max_minutes:
                log(f"[landmark_net] stopping at step {number}: past --max_minutes {max_minutes}")
                break
    return model, history
