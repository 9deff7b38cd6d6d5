"""Aligned faces on disk: the TFRecord example format, atomic record files, the manifest, listing and counting.

Example format (``tf.train.Example``, FORMAT_VERSION 1; one example per face):
  image/encoded    bytes    the aligned crop, PNG (default, lossless) or JPEG
  image/format     bytes    b"png" | b"jpeg"
  image/size       int64[2] crop (height, width)
  face/landmarks   float[136]  68 x (x, y) in crop pixels (x right, y down, integer pixel centres)
  face/mask        bytes    PNG uint8 face mask [S, S]: 0 = not face, 128..255 = face (its confidence x 255;
                            binary masks store 255) (empty: no mask -> ones)
  face/transform   float[6] 2x3 original -> crop affine, row-major (inverse: ``invert_affine``)
  face/box         float[4] detector box (x0, y0, x1, y1) in the original photo
  face/score       float    detector score
  face/index       int64    0 = largest face of the photo, 1 = next, ...
  source/path      bytes    the photo's path as given to the preprocessor
  source/sha1      bytes    sha1 hex of the photo's bytes (dedup / split key)
  source/size      int64[2] the photo's (height, width)
  split            bytes    b"train" | b"test" | ...
Optional ground truth (hook for synthetic faces, issue 4 part 7): any number of named arrays,
  gt/names            bytes list   the names
  gt/<name>/data      bytes        PNG (uint8/uint16 images [H, W] or [H, W, C]) or a serialized
                                   TensorProto (anything else)
  gt/<name>/encoding  bytes        b"png" | b"tensor"
  gt/<name>/dtype     bytes        numpy dtype name
  gt/<name>/shape     int64 list   the array's shape
Records are self-describing; ``make_dataset`` finds the optional fields in ``manifest.json`` or by
reading the first record, and returns them as ``gt_<name>`` tensors. Every record of a dataset must
carry the same optional fields.

TensorFlow is imported on first use, so that preprocessing worker processes (which only decode,
detect, align and PNG-encode) stay light.
"""
import dataclasses
import json
import os
import pathlib
from typing import Dict, Iterable, List, Optional

import cv2
import numpy as np

from tf_facetex import io_utils
from tf_facetex.data.images import encode_jpeg, encode_png
from tf_facetex.data.masks import soft_mask_float, soft_mask_uint8
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.errors import FaceTexError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CROP_SIZE_DEFAULT = CROP_SIZE


def _tf():
    # Lazy: preprocessing worker processes only decode, detect, align and PNG-encode; TensorFlow would cost them
    # seconds and memory each.
    import tensorflow as tf
    return tf


# ------------------------------------------------------------------------------------ example format

@dataclasses.dataclass(frozen=True)
class OptionalField:
    """Spec of an optional ground-truth array: encoding "png" | "tensor", numpy dtype name, shape."""
    encoding: str
    dtype: str
    shape: tuple

    def to_json(self) -> dict:
        return {"encoding": self.encoding, "dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(value: dict) -> "OptionalField":
        return OptionalField(value["encoding"], value["dtype"], tuple(int(v) for v in value["shape"]))


def _encode_optional(value: np.ndarray):
    """np.ndarray -> (bytes, OptionalField). uint8/uint16 images go to PNG, the rest to a TensorProto."""
    value = np.asarray(value)
    is_image = value.dtype in (np.uint8, np.uint16) and (value.ndim == 2 or (value.ndim == 3 and value.shape[-1] in (1, 3, 4)))
    if is_image:
        # cv2 writes 16-bit PNGs (Pillow cannot for colour); it expects BGR(A) channel order
        array = value[..., 0] if value.ndim == 3 and value.shape[-1] == 1 else value
        if array.ndim == 3:
            array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR if array.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA)
        ok, buffer = cv2.imencode(".png", array)
        if not ok:
            raise ValueError("cannot PNG-encode optional field")
        return buffer.tobytes(), OptionalField("png", value.dtype.name, tuple(value.shape))
    tensor = _tf().make_tensor_proto(value)
    return tensor.SerializeToString(), OptionalField("tensor", value.dtype.name, tuple(value.shape))


def example_payload(aligned, image_format: str = "png", jpeg_quality: int = 95) -> dict:
    """The per-face part of an example as plain Python/numpy values (no TensorFlow needed).

    Args:
      aligned: an ``AlignedFace`` (with mask, box, score, face_index as produced by FacePreprocessor).
      image_format: "png" (lossless) or "jpeg" (4:4:4, ``jpeg_quality``; ~5x smaller).
    """
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', not {image_format!r}")
    image_bytes = encode_png(aligned.image) if image_format == "png" else encode_jpeg(aligned.image, jpeg_quality)
    mask_bytes = b"" if aligned.mask is None else encode_png(soft_mask_uint8(aligned.mask))
    box = np.zeros(4, np.float32) if aligned.box is None else np.asarray(aligned.box, np.float32)
    return {
        "image": image_bytes, "image_format": image_format, "crop_size": [int(aligned.image.shape[0]), int(aligned.image.shape[1])],
        "mask": mask_bytes, "landmarks": np.asarray(aligned.landmarks, np.float32).reshape(-1).tolist(),
        "transform": np.asarray(aligned.transform, np.float64).reshape(-1).tolist(),
        "box": box.tolist(), "score": float(aligned.score), "face_index": int(aligned.face_index),
        "original_size": [int(aligned.original_shape[0]), int(aligned.original_shape[1])],
    }


def serialize_payload(payload: dict, source_path: str = "", sha1: str = "", split: str = "",
                      extras: Optional[Dict[str, np.ndarray]] = None) -> bytes:
    """payload (``example_payload``) + source information + optional ground truth -> serialized Example."""
    tf = _tf()

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    feature = {
        "image/encoded": b([payload["image"]]),
        "image/format": b([payload["image_format"].encode()]),
        "image/size": i(payload["crop_size"]),
        "face/landmarks": f(payload["landmarks"]),
        "face/mask": b([payload["mask"]]),
        "face/transform": f(payload["transform"]),
        "face/box": f(payload["box"]),
        "face/score": f([payload["score"]]),
        "face/index": i([payload["face_index"]]),
        "source/path": b([str(source_path).encode("utf-8", "surrogateescape")]),
        "source/sha1": b([sha1.encode()]),
        "source/size": i(payload["original_size"]),
        "split": b([split.encode()]),
    }
    names = sorted(extras or {})
    if names:
        feature["gt/names"] = b([n.encode() for n in names])
        for name in names:
            data, spec = _encode_optional(extras[name])
            feature[f"gt/{name}/data"] = b([data])
            feature[f"gt/{name}/encoding"] = b([spec.encoding.encode()])
            feature[f"gt/{name}/dtype"] = b([spec.dtype.encode()])
            feature[f"gt/{name}/shape"] = i(list(spec.shape))
    # deterministic=True sorts the feature map: byte-identical shards from identical inputs
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def encode_example(aligned, source_path: str = "", sha1: str = "", split: str = "", image_format: str = "png",
                   jpeg_quality: int = 95, extras: Optional[Dict[str, np.ndarray]] = None) -> bytes:
    """One aligned face -> serialized tf.train.Example (see the module doc for the fields).

    Args:
      aligned: ``AlignedFace``.
      extras: optional ground truth {name: array} (e.g. synthetic faces' true albedo UV map, SH).
    """
    return serialize_payload(example_payload(aligned, image_format, jpeg_quality), source_path, sha1, split, extras)


def optional_fields_of(serialized: bytes) -> Dict[str, OptionalField]:
    """The optional ground-truth fields carried by one serialized example."""
    tf = _tf()
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    out = {}
    for raw in feature["gt/names"].bytes_list.value if "gt/names" in feature else []:
        name = raw.decode()
        out[name] = OptionalField(feature[f"gt/{name}/encoding"].bytes_list.value[0].decode(),
                                  feature[f"gt/{name}/dtype"].bytes_list.value[0].decode(),
                                  tuple(feature[f"gt/{name}/shape"].int64_list.value))
    return out


def example_sha1(serialized: bytes) -> str:
    """The ``source/sha1`` of a serialized example."""
    example = _tf().train.Example.FromString(serialized)
    return example.features.feature["source/sha1"].bytes_list.value[0].decode()


def parse_example(serialized, optional_fields: Optional[Dict[str, OptionalField]] = None,
                  crop_size: int = CROP_SIZE_DEFAULT) -> dict:
    """Parses and decodes ONE serialized example (graph-mode friendly; used inside tf.data).

    Returns a dict of tensors:
      image float32 [S, S, 3] in [0, 1]; landmarks float32 [68, 2]; mask float32 [S, S, 1];
      transform float32 [2, 3]; box float32 [4]; score float32 []; face_index int32 [];
      original_size int32 [2]; source_path string []; sha1 string []; split string [];
      gt_<name> for each optional field (uint8 PNG fields stay uint8, others in their dtype).
    """
    tf = _tf()
    optional_fields = optional_fields or {}
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "face/landmarks": tf.io.FixedLenFeature([136], tf.float32),
        "face/mask": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "face/transform": tf.io.FixedLenFeature([6], tf.float32),
        "face/box": tf.io.FixedLenFeature([4], tf.float32, default_value=[0.0] * 4),
        "face/score": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        "face/index": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "source/path": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "source/sha1": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "source/size": tf.io.FixedLenFeature([2], tf.int64, default_value=[0, 0]),
        "split": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    for name in optional_fields:
        spec[f"gt/{name}/data"] = tf.io.FixedLenFeature([], tf.string)
    parsed = tf.io.parse_single_example(serialized, spec)
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [crop_size, crop_size, 3])
    mask_bytes = parsed["face/mask"]
    mask = tf.cond(tf.strings.length(mask_bytes) > 0,
                   lambda: soft_mask_float(tf.io.decode_png(mask_bytes, channels=1)),
                   lambda: tf.ones([crop_size, crop_size, 1], tf.float32))
    out = {
        "image": tf.image.convert_image_dtype(image, tf.float32),
        "landmarks": tf.reshape(parsed["face/landmarks"], [68, 2]),
        "mask": tf.ensure_shape(mask, [crop_size, crop_size, 1]),
        "transform": tf.reshape(parsed["face/transform"], [2, 3]),
        "box": parsed["face/box"],
        "score": parsed["face/score"],
        "face_index": tf.cast(parsed["face/index"], tf.int32),
        "original_size": tf.cast(parsed["source/size"], tf.int32),
        "source_path": parsed["source/path"],
        "sha1": parsed["source/sha1"],
        "split": parsed["split"],
    }
    for name, field in optional_fields.items():
        data = parsed[f"gt/{name}/data"]
        dtype = tf.as_dtype(np.dtype(field.dtype))
        if field.encoding == "png":
            channels = field.shape[2] if len(field.shape) == 3 else 1
            value = tf.io.decode_png(data, channels=channels, dtype=dtype)
            value = tf.reshape(value, field.shape)
        else:
            value = tf.ensure_shape(tf.io.parse_tensor(data, out_type=dtype), field.shape)
        out[f"gt_{name}"] = value
    return out


# --------------------------------------------------------------------------------- atomic file writes

def write_records_atomic(path, records: Iterable[bytes]) -> int:
    """Writes serialized records to a TFRecord file atomically (temp + rename). Returns the count."""
    tf = _tf()
    count = 0
    with io_utils.atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in records:
                writer.write(record)
                count += 1
    return count


def read_records(path, tolerate_truncation: bool = False) -> List[bytes]:
    """All records of a TFRecord file; with ``tolerate_truncation`` a torn tail is dropped silently."""
    tf = _tf()
    out = []
    iterator = iter(tf.data.TFRecordDataset(str(path)))
    while True:
        try:
            out.append(next(iterator).numpy())
        except StopIteration:
            break
        except tf.errors.DataLossError:
            if not tolerate_truncation:
                raise
            break
    return out


def read_manifest(directory) -> Optional[dict]:
    """``manifest.json`` of a shard folder, or None."""
    path = pathlib.Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def list_record_files(file_pattern) -> List[str]:
    """Sorted TFRecord files of a glob, comma-separated globs or a list (unfinished writes skipped)."""
    tf = _tf()
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else list(file_pattern)
    files = []
    for pattern in patterns:
        for part in str(pattern).split(","):
            files += tf.io.gfile.glob(part.strip())
    files = sorted(set(f for f in files if not f.endswith((".partial",)) and ".tmp-" not in f))
    if not files:
        raise FaceTexError(f"no TFRecord files match {file_pattern!r}")
    return files


def count_records(file_pattern) -> int:
    """Records in the TFRecord files of a pattern (`list_record_files`)."""
    tf = _tf()
    return sum(1 for path in list_record_files(file_pattern) for _ in tf.data.TFRecordDataset(path))
