"""Writes a PNG contact sheet of one tf.data batch: each face crop, its mask overlay and landmarks.

  python scripts/show_batch.py --file_pattern='data/faces/train-*.tfrecord' --output=batch.png

Use it to check a dataset by eye after preprocessing: crops centred and upright, masks on the
skin, landmarks on the features.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tf_facetex import cli, io_utils  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("file_pattern", None, "TFRecord glob, e.g. 'data/faces/train-*.tfrecord'.")
flags.DEFINE_string("output", "batch.png", "PNG file to write.")
flags.DEFINE_integer("batch_size", 16, "Faces in the sheet.")
flags.DEFINE_boolean("training", False, "Draw a shuffled training batch instead of the first records in order.")
flags.DEFINE_integer("seed", 0, "Shuffle seed with --training.")
flags.DEFINE_integer("columns", 4, "Faces per row.")


def draw_face(image, mask, landmarks, caption: str = ""):
    """One tile: [S, S, 3] float in [0, 1], [S, S, 1], [68, 2] -> uint8 [S, 2S, 3] (photo | mask overlay + landmarks)."""
    import cv2
    import numpy as np
    photo = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    overlay = photo.copy()
    face = mask[..., 0] > 0.5
    overlay[face] = (0.55 * overlay[face] + 0.45 * np.array([40, 220, 90])).astype(np.uint8)
    for x, y in landmarks:  # sub-pixel positions: draw with 4 fractional bits
        cv2.circle(overlay, (int(round(x * 16)), int(round(y * 16))), 2 * 16, (255, 40, 40), -1, cv2.LINE_AA, shift=4)
    tile = np.concatenate([photo, overlay], axis=1)
    if caption:
        cv2.putText(tile, caption, (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def batch_contact_sheet(batch: dict, columns: int = 4):
    """A batch of numpy arrays (make_dataset's dict) -> uint8 [rows * S, columns * 2S, 3] grid."""
    import os.path

    import numpy as np
    tiles = []
    for i in range(len(batch["image"])):
        name = os.path.basename(batch["source_path"][i].decode("utf-8", "replace"))[:28]
        tiles.append(draw_face(batch["image"][i], batch["mask"][i], batch["landmarks"][i], name))
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r:r + columns], axis=1) for r in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main(argv):
    del argv
    from tf_facetex.data.tfrecords import make_dataset
    from tf_facetex.errors import FaceTexError
    if not FLAGS.file_pattern:
        raise FaceTexError("--file_pattern is required (see --help)")
    dataset = make_dataset(FLAGS.file_pattern, FLAGS.batch_size, training=FLAGS.training, deterministic=True,
                           seed=FLAGS.seed, drop_remainder=False)
    batch = next(iter(dataset))
    sheet = batch_contact_sheet({k: v.numpy() for k, v in batch.items()}, columns=FLAGS.columns)
    io_utils.write_image(FLAGS.output, sheet)
    print(f"[show_batch] wrote {FLAGS.output} ({len(batch['image'])} faces, {sheet.shape[1]}x{sheet.shape[0]} px)",
          file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
