"""Trains the small face-parsing U-Net (``tf_facetex.data.parsing_net``) on CelebAMask-HQ-mini, CPU only.

  .venv/bin/python scripts/train_parsing_net.py --flagfile=configs/parsing_net.cfg
  .venv/bin/python scripts/train_parsing_net.py --output=outputs/parsing_net/parsing_net.keras --epochs=2  # smoke run

Data: the first ``--num_train`` (800) of the 1,000 images by sorted name (the last 200 are the held-out test
set of ``scripts/eval_masks.py`` and are never read here), detected (dlib HOG), aligned to the 224 crop,
labels warped with the same transform; the last ``--num_val`` of those 800 validate (curves, best epoch).
The crops are cached in ``--cache`` (rebuilt when the image list changes).
Augmentation: horizontal flips, colour jitter, random similarity (scale, rotation, shift) applied in the
same resampling step that shrinks the 224 crop to ``--input_size``.
Loss: binary cross-entropy + soft Dice over the crop's valid area.
Outputs: the best-validation-IoU model (``--output``, a ``.keras`` file: a build output, never committed),
``<output>.history.json`` and the training curves ``--curves_png``.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils, paths  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("celebamask_dir", None, "CelebAMask-HQ folder with images/ and masks/ "
                    "(default: <shared>/faces/celebamask_hq_mini/train).")
flags.DEFINE_string("output", "saved_models/parsing_net/parsing_net.keras", "Where the trained model (.keras) goes "
                    "(the default is where preprocessing looks for it).")
flags.DEFINE_string("cache", "outputs/parsing_net/train_crops.npz", "Cache of the aligned training crops.")
flags.DEFINE_string("curves_png", None, "Training-curve figure (default: <output without suffix>_curves.png).")
flags.DEFINE_integer("num_train", 800, "Training pool: the first N images by sorted name (never the held-out 200).")
flags.DEFINE_integer("num_val", 50, "Validation images: the last N of the training pool (curves, best epoch).")
flags.DEFINE_integer("input_size", 160, "Network input side (px); the 224 crop is resampled to it.")
flags.DEFINE_integer("base_filters", 16, "U-Net filters at full resolution (doubled per level).")
flags.DEFINE_integer("depth", 4, "U-Net downsampling levels.")
flags.DEFINE_integer("epochs", 30, "Training epochs.")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate (cosine decay to 0 over the run).")
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling, augmentation).")
flags.DEFINE_boolean("progress", True, "Show a progress bar while the crops are aligned.")
flags.DEFINE_float("max_minutes", 55.0, "Stop after the epoch that passes this wall time (the CPU is shared).")


def _crop_cache(folder, files, cache_path):
    """Aligned crops of ``files``: dict(images uint8 [N, 224, 224, 3], targets uint8 [N, 224, 224],
    valid uint8 [N, 224, 224], stems [N]), read from / written to ``cache_path``."""
    import numpy as np
    from tqdm import tqdm

    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.evaluation import real_photos

    stems = [f.stem for f in files]
    if os.path.isfile(cache_path):
        with np.load(cache_path) as cached:
            if list(cached["requested"]) == stems:
                return {key: cached[key] for key in ("images", "targets", "valid", "stems")}
    detector = FaceDetector()
    images, targets, valid, kept = [], [], [], []
    for path in tqdm(files, desc="align training crops", unit="img", disable=not FLAGS.progress):
        result = real_photos.celebamask_crop(path, detector)
        if result is None:  # no detection: nothing to train on (the masker is only used on detected faces)
            continue
        aligned, target = result
        images.append(aligned.image)
        targets.append(target)
        valid.append(aligned.valid.astype(np.uint8))
        kept.append(path.stem)
    data = {"images": np.stack(images), "targets": np.stack(targets), "valid": np.stack(valid),
            "stems": np.array(kept)}
    with io_utils.atomic_path(cache_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, requested=np.array(stems), **data)
    print(f"cached {len(kept)} crops ({len(files) - len(kept)} without a detection) in {cache_path}")
    return data


def _dataset(data, indices, training):
    """tf.data of (input [B, S, S, 3] in [0, 255], target_and_valid [B, S, S, 2])."""
    import numpy as np
    import tensorflow as tf

    from tf_facetex.data import parsing_net

    size, crop = FLAGS.input_size, data["images"].shape[1]
    images = tf.constant(data["images"][indices])
    labels = tf.constant(np.stack([data["targets"][indices], data["valid"][indices]], axis=-1))
    base = tf.constant(parsing_net.base_transform(crop, size))

    def jitter(image, label):
        image = tf.image.convert_image_dtype(image, tf.float32)
        label = tf.cast(label, tf.float32)
        if training:
            if tf.random.uniform([]) < 0.5:
                image, label = tf.image.flip_left_right(image), tf.image.flip_left_right(label)
            image = tf.image.random_brightness(image, 0.1)
            image = tf.image.random_contrast(image, 0.75, 1.25)
            image = tf.image.random_saturation(image, 0.7, 1.3)
            image = tf.image.random_hue(image, 0.03)
        return tf.concat([tf.clip_by_value(image, 0.0, 1.0) * 255.0, label], axis=-1)

    def warp(stacked):
        batch = tf.shape(stacked)[0]
        transforms = tf.tile(base[None], [batch, 1])
        if training:
            transforms = _random_similarity(transforms, batch, centre=(crop - 1) / 2.0)
        warped = parsing_net.resample_crops(stacked, transforms, size)
        return warped[..., :3], warped[..., 3:]

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(indices), seed=FLAGS.seed, reshuffle_each_iteration=True)
    dataset = dataset.map(jitter, num_parallel_calls=1).batch(FLAGS.batch_size).map(warp)
    return dataset.prefetch(1)


def _random_similarity(transforms, batch, centre, max_scale=0.1, max_degrees=10.0, max_shift=6.0):
    """Composes random similarities about the crop centre onto [B, 8] output -> crop transforms.

    Source point q = c + s R (q0 - c) + t, where q0 is what the base transform gives.
    """
    import math

    import tensorflow as tf

    scale = tf.random.uniform([batch], 1.0 - max_scale, 1.0 + max_scale)
    angle = tf.random.uniform([batch], -max_degrees, max_degrees) * (math.pi / 180.0)
    shift = tf.random.uniform([batch, 2], -max_shift, max_shift)
    cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
    a0, a1, a2, b0, b1, b2 = (transforms[:, k] for k in range(6))
    new = [cos * a0 - sin * b0, cos * a1 - sin * b1, cos * (a2 - centre) - sin * (b2 - centre) + centre + shift[:, 0],
           sin * a0 + cos * b0, sin * a1 + cos * b1, sin * (a2 - centre) + cos * (b2 - centre) + centre + shift[:, 1]]
    zeros = tf.zeros([batch])
    return tf.stack(new + [zeros, zeros], axis=1)


def masked_bce_dice(target_and_valid, logits):
    """[B, S, S, 2] (face target, valid area), [B, S, S, 1] logits -> [B] BCE + soft Dice over the valid area."""
    import tensorflow as tf

    target, valid = target_and_valid[..., :1], target_and_valid[..., 1:]
    area = tf.reduce_sum(valid, axis=[1, 2, 3]) + 1.0
    bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits) * valid, [1, 2, 3]) / area
    prob = tf.sigmoid(logits) * valid
    target = target * valid
    dice = 1.0 - (2.0 * tf.reduce_sum(prob * target, [1, 2, 3]) + 1.0) / (
        tf.reduce_sum(prob, [1, 2, 3]) + tf.reduce_sum(target, [1, 2, 3]) + 1.0)
    return bce + dice


def masked_iou(target_and_valid, logits):
    """[B, S, S, 2], [B, S, S, 1] -> [B] IoU of the 0.5-thresholded prediction over the valid area."""
    import tensorflow as tf

    valid = target_and_valid[..., 1:] > 0.5
    target = tf.logical_and(target_and_valid[..., :1] > 0.5, valid)
    pred = tf.logical_and(logits > 0.0, valid)
    inter = tf.reduce_sum(tf.cast(tf.logical_and(pred, target), tf.float32), [1, 2, 3])
    union = tf.reduce_sum(tf.cast(tf.logical_or(pred, target), tf.float32), [1, 2, 3])
    return tf.where(union > 0, inter / tf.maximum(union, 1.0), 1.0)


def _plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        axes[0].plot(epochs, history[key], style, label=key)
    for key, style in (("masked_iou", "-"), ("val_masked_iou", "--")):
        axes[1].plot(epochs, history[key], style, label=key.replace("masked_", ""))
    axes[0].set(xlabel="epoch", ylabel="BCE + Dice", title="loss")
    axes[1].set(xlabel="epoch", ylabel="IoU (input grid)", title="face IoU", ylim=(0.8, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv):
    del argv
    import numpy as np
    import keras
    import tensorflow as tf

    from tf_facetex.data import parsing_net
    from tf_facetex.evaluation import real_photos

    folder = FLAGS.celebamask_dir or (paths.faces_dir() / "celebamask_hq_mini" / "train" if paths.faces_dir() else None)
    if folder is None:
        raise FileNotFoundError("no --celebamask_dir given and no shared faces folder found")
    train_pool, _held_out = real_photos.heldout_split(real_photos.celebamask_files(folder))
    files = train_pool[:FLAGS.num_train]
    data = _crop_cache(folder, files, FLAGS.cache)
    count = len(data["stems"])
    train_idx, val_idx = np.arange(count - FLAGS.num_val), np.arange(count - FLAGS.num_val, count)
    print(f"training on {len(train_idx)} crops, validating on {len(val_idx)} (of {len(files)} images)")

    keras.utils.set_random_seed(FLAGS.seed)
    model = parsing_net.build_parsing_unet(FLAGS.input_size, FLAGS.base_filters, FLAGS.depth)
    steps = FLAGS.epochs * int(np.ceil(len(train_idx) / FLAGS.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=masked_bce_dice, metrics=[masked_iou])
    print(f"model: {model.count_params():,} parameters, input {FLAGS.input_size} px")

    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    start = time.time()

    class Clock(keras.callbacks.Callback):
        """Records wall time per epoch and stops when the time budget is spent."""

        def on_epoch_end(self, epoch, logs=None):
            logs["wall_minutes"] = (time.time() - start) / 60.0
            if logs["wall_minutes"] > FLAGS.max_minutes:
                print(f"time budget of {FLAGS.max_minutes} min spent after epoch {epoch + 1}; stopping")
                self.model.stop_training = True

    checkpoint = keras.callbacks.ModelCheckpoint(FLAGS.output, monitor="val_masked_iou", mode="max",
                                                 save_best_only=True)
    history = model.fit(_dataset(data, train_idx, True), validation_data=_dataset(data, val_idx, False),
                        epochs=FLAGS.epochs, callbacks=[Clock(), checkpoint], verbose=2)
    minutes = (time.time() - start) / 60.0
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    best = int(np.argmax(record["val_masked_iou"]))
    summary = {"output": FLAGS.output, "train_minutes": minutes, "epochs_run": len(record["loss"]),
               "best_epoch": best + 1, "best_val_iou_input_grid": record["val_masked_iou"][best],
               "num_train": int(len(train_idx)), "num_val": int(len(val_idx)),
               "num_without_detection": len(files) - count, "parameters": int(model.count_params()),
               "flags": {name: FLAGS[name].value for name in ("input_size", "base_filters", "depth", "epochs",
                                                             "batch_size", "learning_rate", "seed")},
               "tf_threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                              "inter": tf.config.threading.get_inter_op_parallelism_threads()},
               "history": record}
    stem = os.path.splitext(FLAGS.output)[0]
    io_utils.write_json(stem + ".history.json", summary)
    _plot_curves(record, FLAGS.curves_png or stem + "_curves.png")
    print(f"trained {len(record['loss'])} epochs in {minutes:.1f} min; best val IoU "
          f"{record['val_masked_iou'][best]:.4f} at epoch {best + 1}; model: {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
