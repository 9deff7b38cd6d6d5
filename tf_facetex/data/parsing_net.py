"""A small face-parsing network (binary face / not face) in the aligned crop, as a ``FaceMasker``.

The paper multiplies a face-parsing network's mask with the projected-face mask. No pretrained parser is
reachable here, so this module trains one: a small U-Net on CelebAMask-HQ-mini's labels (face = skin,
nose, brows, eyes, lips, mouth; ``masks.CELEBAMASK_FACE_CLASSES``), on aligned crops resampled to
``input_size`` (160 px by default), trained by ``scripts/train_parsing_net.py`` on the first 800 of the
1,000 images (sorted by name) and measured by ``scripts/eval_masks.py`` on the other 200.

The same TensorFlow resampling (``resample_crops``) makes the network's input in training (with random
similarity augmentation) and in ``ParsingNetMasker`` (without), so train and inference see identical
pixels. The saved file is a whole Keras model (``.keras``: architecture + weights). The trained network ships
in the repository: ``saved_models/parsing_net/parsing_net.keras`` with its model card ``MODEL_CARD.md``
(data, split, training, held-out IoU, sha256; written by ``scripts/make_parsing_net_card.py``).

Which pixels count as face (the training target, and hence what the albedo may see): CelebAMask-HQ's skin,
nose, both eyes, both brows, lips and the inner mouth (``masks.CELEBAMASK_FACE_CLASSES``). Hair, hat,
glasses (frames and lenses), ears, earrings, neck, necklace, cloth and background are not face, nor is
anything unlabelled in front of the face (hands, microphones: CelebAMask-HQ leaves them background).
Eyes and inner mouth are kept because the paper's parser keeps them and the fit must explain them; the
face mesh has no texels there (the eyeballs and teeth are separate parts), so they add no albedo texels
beyond the lid and lip margins.

``masker_from_name("parsing")`` looks for the weights at ``paths.parsing_net_weights()`` (a flag's path,
else ``$TF_FACETEX_PARSING_NET``, else the shipped file). A path given explicitly (flag or environment)
that does not exist is an ``AssetError``; a missing *default* file (a checkout without the weights) falls
back to ``LandmarkSkinMasker`` with a warning line. Either way one line says which mask is used and, for
the network, which file (path and sha256) was loaded.
"""
import os
import pathlib

import numpy as np

from tf_facetex.data.masks import FaceMasker, LandmarkHullMasker, LandmarkSkinMasker, _fill_holes, _largest_component
from tf_facetex import paths
from tf_facetex.io_utils import file_sha256
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
      soft: return the probability inside the mask (see ``masks``) instead of 1.
      postprocess: keep the largest component and fill holes. Off by default: on the validation images
        it lowered the mean IoU (0.9432 -> 0.9418) because hole filling turns the glasses that
        CelebAMask-HQ excludes back into face, and glasses frames can cut the forehead off the largest
        component.
    Works on aligned crops of any size (trained on 224 crops); landmarks are not used (the crop's
    alignment already encodes them).
    Raises:
      AssetError: when the file is missing or not a loadable Keras model.
    """

    def __init__(self, weights_path, threshold: float = 0.5, postprocess: bool = False, soft: bool = True):
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
        self.soft = bool(soft)
        self.weights_path = path
        self.sha256 = file_sha256(path)
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
        """uint8 [B, H, W, 3] -> float32 [B, H, W]: a soft mask, the face probability where it exceeds the
        threshold and 0 elsewhere (``> 0.5`` is the binary mask; the unwrap also drops the unsure border,
        ``PriorConfig.unwrap_mask_threshold``). Binary {0, 1} with ``soft=False`` or ``postprocess``."""
        probabilities = self.probabilities(images)
        face = probabilities > self.threshold
        if self.postprocess:
            return np.stack([postprocess_mask(m.astype(np.uint8)) for m in face]).astype(np.float32)
        if not self.soft:
            return face.astype(np.float32)
        return np.where(face, np.maximum(probabilities, np.nextafter(np.float32(0.5), np.float32(1))), 0.0
                        ).astype(np.float32)

    def __call__(self, image: np.ndarray, landmarks68: np.ndarray = None) -> np.ndarray:
        """uint8 [H, W, 3] aligned crop (landmarks ignored) -> float32 [H, W] soft mask (see ``masks``)."""
        return self.masks(np.asarray(image)[None])[0]

    def describe(self) -> dict:
        """What summaries record about this masker."""
        return {"name": "parsing", "weights": str(self.weights_path), "sha256": self.sha256,
                "input_size": self.input_size, "threshold": self.threshold}


def default_weights_path() -> pathlib.Path:
    """The shipped weights: ``saved_models/parsing_net/parsing_net.keras`` in the repository."""
    return paths.REPO_ROOT / "saved_models" / "parsing_net" / "parsing_net.keras"


def describe_masker(masker) -> dict:
    """{name, ...} of any ``FaceMasker`` (the network adds its weights file and sha256)."""
    if hasattr(masker, "describe"):
        return masker.describe()
    return {"name": {"LandmarkSkinMasker": "skin", "LandmarkHullMasker": "hull"}.get(type(masker).__name__,
                                                                                    type(masker).__name__)}


def masker_from_name(name: str, weights_path=None, log=print) -> FaceMasker:
    """'skin' | 'hull' | 'parsing' -> a FaceMasker, saying through ``log`` which one (and which weights).

    'parsing' loads ``weights_path`` (default: ``paths.parsing_net_weights()``, i.e. ``$TF_FACETEX_PARSING_NET``
    or the shipped file). A missing file that was asked for explicitly (an argument other than the shipped
    default, or the environment variable) raises ``AssetError``; a missing shipped default falls back to
    ``LandmarkSkinMasker`` with a WARNING line, so a checkout without the weights still runs, and says so.
    """
    if name == "skin":
        log("[tf_facetex] face mask: landmark + skin-colour substitute (LandmarkSkinMasker)")
        return LandmarkSkinMasker()
    if name == "hull":
        log("[tf_facetex] face mask: landmark hull (LandmarkHullMasker)")
        return LandmarkHullMasker()
    if name != "parsing":
        raise ValueError(f"masker must be 'skin', 'hull' or 'parsing', not {name!r}")
    path = pathlib.Path(weights_path) if weights_path is not None else paths.parsing_net_weights()
    explicit = bool(os.environ.get("TF_FACETEX_PARSING_NET")) or (
        weights_path is not None and path.resolve() != default_weights_path().resolve())
    if not path.is_file():
        if explicit:
            raise AssetError(f"{path}: parsing-net weights not found (given by --parsing_weights or "
                             "$TF_FACETEX_PARSING_NET; the shipped file is saved_models/parsing_net/parsing_net.keras)")
        log(f"[tf_facetex] WARNING: parsing-net weights {path} not found; using the landmark+skin-colour mask "
            "(LandmarkSkinMasker) instead: hair and occluders may reach the albedo (restore the file from the "
            "repository or pass --parsing_weights)")
        return LandmarkSkinMasker()
    masker = ParsingNetMasker(path)
    log(f"[tf_facetex] face mask: parsing network {path} (sha256 {masker.sha256[:16]}...)")
    return masker


def model_card(summary: dict, eval_result: dict, sha256: str, size_bytes: int, train_command: str,
               eval_command: str) -> str:
    """The shipped network's MODEL_CARD.md (markdown) from its training summary and held-out evaluation.

    Args:
      summary: ``<output>.history.json`` of ``scripts/train_parsing_net.py`` (flags, epochs, minutes, ...).
      eval_result: ``scripts/eval_masks.py``'s JSON with a 'parsing' masker entry (the held-out 200).
      sha256, size_bytes: of the shipped ``.keras`` file.
      train_command, eval_command: how both were produced.
    """
    from tf_facetex.data.masks import CELEBAMASK_FACE_CLASSES

    maskers = eval_result["maskers"]
    if "parsing" not in maskers:
        raise ValueError("the evaluation JSON has no 'parsing' masker (run eval_masks.py with --parsing_weights)")
    flags_used = summary["flags"]
    history = summary["history"]
    best = int(summary["best_epoch"])
    steps_per_epoch = -(-int(summary["num_train"]) // int(flags_used["batch_size"]))
    rows = []
    for name, entry in maskers.items():
        pooled = entry["pixel_pooled"]
        rows.append(f"| {name} | {entry['num_images']} | {entry['iou']['mean']:.4f} | {entry['iou']['median']:.4f} | "
                    f"{entry['iou'].get('p10', float('nan')):.4f} | {entry['precision']['mean']:.4f} | "
                    f"{entry['recall']['mean']:.4f} | {pooled['iou']:.4f} |")
    lines = [
        "# Model card: face-parsing network (`parsing_net.keras`)",
        "",
        "Generated by `scripts/make_parsing_net_card.py`; do not edit by hand.",
        "",
        "## What it is",
        f"A small U-Net (`tf_facetex.data.parsing_net.build_parsing_unet`, {summary['parameters']:,} parameters, "
        f"input {flags_used['input_size']} px, {flags_used['base_filters']} base filters, depth {flags_used['depth']}) "
        "that labels each pixel of the 224 px aligned face crop as face / not face. It is the default face masker "
        "of every entry point (`reconstruct.py`, `preprocess.py`, and through the TFRecords it writes "
        "`make_refinement_samples.py`, `train.py` and `evaluate.py`; `run_demo.sh`). Face = CelebAMask-HQ label ids "
        f"{list(CELEBAMASK_FACE_CLASSES)} (skin, nose, eyes, brows, inner mouth, lips); hair, hat, glasses, ears, "
        "earrings, neck, necklace, cloth, background (and unlabelled occluders such as hands) are not face.",
        "",
        "## Weights",
        f"- file: `saved_models/parsing_net/parsing_net.keras` ({size_bytes / 1e6:.2f} MB, whole Keras model)",
        f"- sha256: `{sha256}`",
        "",
        "## Data and split",
        "CelebAMask-HQ-mini (1,000 images with parsing labels), sorted by file name. Training pool: the first 800; "
        f"of those, the last {summary['num_val']} validate (best epoch) and the rest train "
        f"({summary['num_train']} crops; {summary['num_without_detection']} of the 800 without a dlib HOG detection "
        "are skipped). Held-out test set: the last 200, never read by training. Every image is detected (dlib HOG), "
        "aligned to the 224 crop, and its label map warped with the same transform.",
        "",
        "## Training",
        f"- command: `{train_command}`",
        f"- {summary['epochs_run']} epochs x {steps_per_epoch} steps (batch {flags_used['batch_size']}), Adam, "
        f"cosine-decayed learning rate from {flags_used['learning_rate']}, seed {flags_used['seed']}; "
        "BCE + soft Dice over the crop's valid area; flips, colour jitter and random similarity augmentation",
        f"- wall time: {summary['train_minutes']:.1f} min on CPU",
        f"- best epoch (kept): {best}, validation IoU {summary['best_val_iou_input_grid']:.4f} "
        f"(input grid; train IoU that epoch {history['masked_iou'][best - 1]:.4f})",
        "",
        "## Held-out evaluation (the last 200 images)",
        f"- command: `{eval_command}`",
        f"- {eval_result['maskers']['parsing']['num_images']} images scored, {len(eval_result['no_face'])} without a "
        "detection; IoU in the 224 crop's valid area, threshold 0.5, no post-processing",
        "",
        "| masker | images | IoU mean | IoU median | IoU p10 | precision | recall | pixel-pooled IoU |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "(skin: the landmark + skin-colour substitute `LandmarkSkinMasker`; hull: the landmark region alone.)",
        "",
        "## Known limits",
        "Trained on 745 CelebA-HQ portraits (mostly frontal, studio-like); profiles, heavy occlusion by hands and "
        "non-photographic faces are out of distribution. Caps: on 2 of the 20 held-out photos of "
        "docs/results/clean_albedo.md the network labels the region under a cap's brim as face. The face mask is "
        "the probability where it exceeds 0.5 (binary at 0.5 for the fit); the unwrap additionally requires every "
        "bilinear tap of a texel's source pixel to reach 0.97 (`PriorConfig.unwrap_mask_threshold`).",
        "",
    ]
    return "\n".join(lines)
