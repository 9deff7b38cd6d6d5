"""Aligned faces on disk (TFRecord shards), the resumable sharded writer, and the tf.data pipeline.

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
import datetime
import hashlib
import json
import os
import pathlib
import socket
import traceback
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from tf_facetex import io_utils
from tf_facetex.data.masks import soft_mask_float, soft_mask_uint8
from tf_facetex.errors import FaceTexError, ImageError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CROP_SIZE_DEFAULT = 224


def _tf():
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
        import cv2
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
    from tf_facetex.data.images import encode_jpeg, encode_png
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


# ------------------------------------------------------------------------------- sharded preprocessing

@dataclasses.dataclass
class PreprocessConfig:
    """Settings of ``run_preprocess`` (the flags of scripts/preprocess.py)."""
    input_dirs: Sequence[str]
    output_dir: str
    dataset: str = "folder"            # "folder" (any images, recursive) | "celeba"
    num_shards: int = 16
    shard_indices: Optional[Sequence[int]] = None  # None: all shards
    test_fraction: float = 0.15
    split_seed: int = 0
    celeba_split: str = "paper"        # "paper" (85/15 random) | "official"
    image_format: str = "png"
    jpeg_quality: int = 95
    crop_size: int = CROP_SIZE_DEFAULT
    allow_rotation: bool = True
    all_faces: bool = False
    detector: str = "hog"
    masker: str = "parsing"
    parsing_weights: Optional[str] = None
    max_detect_side: int = 1024
    min_side: int = 32
    max_pixels: int = 50_000_000
    num_workers: int = 1
    overwrite: bool = False
    progress: bool = True
    verbose: bool = False

    def fingerprint(self) -> dict:
        """The settings that change what is written: shards made with other values are not mixed."""
        keys = ("dataset", "num_shards", "test_fraction", "split_seed", "celeba_split", "image_format", "jpeg_quality",
                "crop_size", "allow_rotation", "all_faces", "detector", "masker", "max_detect_side", "min_side")
        return {key: getattr(self, key) for key in keys} | {"format_version": FORMAT_VERSION}


@dataclasses.dataclass
class WorkItem:
    """A source photo scheduled for a shard."""
    path: str
    sha1: str
    split: str
    shard: int


def shard_of(sha1: str, num_shards: int) -> int:
    """The shard of a photo: its content hash modulo the shard count (duplicates land together)."""
    return int(hashlib.sha1(sha1.encode()).hexdigest()[:12], 16) % num_shards


def plan_work(config: PreprocessConfig, log=print):
    """Lists, hashes, deduplicates and splits the inputs, and assigns each photo to a shard.

    Returns:
      (items: list of WorkItem sorted by path, duplicates: list of dicts {path, duplicate_of}).
    """
    from tf_facetex.data import datasets
    if config.dataset == "folder":
        paths = []
        for folder in config.input_dirs:
            paths += datasets.list_image_files(folder)
        files = datasets.hash_files(paths, progress=config.progress)
        unique, duplicates = datasets.dedupe_by_content(files)
        split_of = {}
        for split, members in datasets.split_by_hash(unique, config.test_fraction, config.split_seed).items():
            split_of.update({item.sha1: split for item in members})
        items = [WorkItem(str(f.path), f.sha1, split_of[f.sha1], shard_of(f.sha1, config.num_shards)) for f in unique]
    elif config.dataset == "celeba":
        if len(config.input_dirs) != 1:
            raise FaceTexError("--dataset=celeba takes exactly one --input_dir (the CelebA root)")
        celeba = datasets.read_celeba(config.input_dirs[0])
        split_of = {}
        for split, members in datasets.celeba_split(celeba, config.celeba_split, config.test_fraction,
                                                   config.split_seed).items():
            split_of.update({item.name: split for item in members})
        files = datasets.hash_files([item.path for item in celeba], progress=config.progress)
        unique, duplicates = datasets.dedupe_by_content(files)
        items = [WorkItem(str(f.path), f.sha1, split_of[f.path.name], shard_of(f.sha1, config.num_shards))
                 for f in unique]
    else:
        raise FaceTexError(f"unknown dataset layout {config.dataset!r} (expected 'folder' or 'celeba')")
    if not items:
        raise FaceTexError("no images found in " + ", ".join(map(str, config.input_dirs)))
    items.sort(key=lambda item: item.path)
    dups = [{"path": str(d.path), "duplicate_of": str(kept.path)} for d, kept in duplicates]
    return items, dups


def shard_name(index: int, num_shards: int) -> str:
    return f"{index:05d}-of-{num_shards:05d}"


# worker-process state: one FacePreprocessor per process (dlib models loaded once)
_WORKER = {}


def _init_worker(preprocessor_kwargs: dict, image_format: str, jpeg_quality: int) -> None:
    from tf_facetex.data.align import FacePreprocessor
    _WORKER["preprocessor"] = FacePreprocessor(**preprocessor_kwargs)
    _WORKER["format"] = (image_format, jpeg_quality)


def _process_item(item: WorkItem) -> dict:
    """Runs in a worker: one photo -> {"item", "payloads"} or {"item", "reason", "internal"}."""
    try:
        faces = _WORKER["preprocessor"].from_file(item.path)
        payloads = [example_payload(face, *_WORKER["format"]) for face in faces]
        return {"item": item, "payloads": payloads}
    except ImageError as err:  # includes NoFaceError: expected, one line
        return {"item": item, "reason": str(err), "internal": False}
    except Exception as err:  # noqa: BLE001 - a bug on one photo must not stop a large run
        return {"item": item, "reason": f"{item.path}: internal error {type(err).__name__}: {err}", "internal": True,
                "traceback": traceback.format_exc()}


class _ShardWriter:
    """Writes one shard, resumably: records go to ``*.partial`` files, and after each photo a line
    in ``shard-<i>.log.jsonl`` says it is done; finishing renames the partials to their final names
    and writes ``shard-<i>.json``, the marker that the shard is complete."""

    def __init__(self, output_dir: pathlib.Path, index: int, num_shards: int, log):
        self.output_dir = output_dir
        self.index = index
        self.name = shard_name(index, num_shards)
        self.log_path = output_dir / f"shard-{self.name}.log.jsonl"
        self.writers = {}
        self.counts: Dict[str, int] = {}
        self.done: Dict[str, dict] = {}
        self.log = log
        self._resume()
        self.log_handle = open(self.log_path, "a")

    def final_path(self, split: str) -> pathlib.Path:
        return self.output_dir / f"{split}-{self.name}.tfrecord"

    def partial_path(self, split: str) -> pathlib.Path:
        return self.output_dir / f"{split}-{self.name}.tfrecord.partial"

    def _resume(self) -> None:
        """Keeps the photos a killed run finished (logged, with all their records intact)."""
        entries = {}
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    entries[entry["sha1"]] = entry
                except (json.JSONDecodeError, KeyError):
                    break  # a torn last line: the photo is redone
        kept_records: Dict[str, List[bytes]] = {}
        seen_counts: Dict[str, int] = {}
        for partial in sorted(self.output_dir.glob(f"*-{self.name}.tfrecord.partial")):
            split = partial.name[: -len(f"-{self.name}.tfrecord.partial")]
            records = read_records(partial, tolerate_truncation=True)
            kept_records[split] = [r for r in records if example_sha1(r) in entries]
            for record in kept_records[split]:
                sha1 = example_sha1(record)
                seen_counts[sha1] = seen_counts.get(sha1, 0) + 1
        complete = {sha1 for sha1, entry in entries.items() if entry.get("num_records", 0) == seen_counts.get(sha1, 0)}
        self.done = {sha1: entries[sha1] for sha1 in complete}
        if entries:
            self.log(f"[preprocess] shard {self.name}: resuming, {len(self.done)} photos already done")
        # rewrite the partials and the log with exactly the complete photos
        for split, records in kept_records.items():
            records = [r for r in records if example_sha1(r) in complete]
            write_records_atomic(self.partial_path(split), records)
            self.counts[split] = len(records)
        io_utils.write_text(self.log_path, "".join(json.dumps(self.done[s]) + "\n" for s in sorted(self.done)))

    def _writer(self, split: str):
        if split not in self.writers:
            tf = _tf()
            path = self.partial_path(split)
            previous = read_records(path) if path.exists() else []  # already trimmed by _resume
            writer = tf.io.TFRecordWriter(str(path))
            for record in previous:
                writer.write(record)
            self.writers[split] = writer
            self.counts.setdefault(split, len(previous))
        return self.writers[split]

    def add(self, item: WorkItem, records: List[bytes], reason: Optional[str] = None) -> None:
        """Appends a photo's records (possibly none, with the reason it was skipped), then logs it."""
        if records:
            writer = self._writer(item.split)
            for record in records:
                writer.write(record)
            writer.flush()  # records reach the file before the log says the photo is done
            self.counts[item.split] = self.counts.get(item.split, 0) + len(records)
        entry = {"sha1": item.sha1, "path": item.path, "split": item.split, "num_records": len(records)}
        if reason:
            entry["reason"] = reason
        self.done[item.sha1] = entry
        self.log_handle.write(json.dumps(entry) + "\n")
        self.log_handle.flush()

    def finish(self, fingerprint: dict) -> dict:
        """Renames partials to final names, writes ``shard-<name>.json``; returns its content."""
        tf = _tf()
        for writer in self.writers.values():
            writer.close()
        self.log_handle.close()
        outputs = {}
        for split in sorted(self.counts):
            partial = self.partial_path(split)
            if self.counts[split] > 0 and partial.exists():
                tf.io.gfile.rename(str(partial), str(self.final_path(split)), overwrite=True)
                outputs[split] = {"file": self.final_path(split).name, "num_records": self.counts[split]}
            elif partial.exists():
                partial.unlink()
        skipped = [{"path": e["path"], "sha1": e["sha1"], "reason": e["reason"]}
                   for e in sorted(self.done.values(), key=lambda e: e["path"]) if "reason" in e]
        info = {"shard": self.index, "name": self.name, "outputs": outputs, "num_photos": len(self.done),
                "num_faces": sum(o["num_records"] for o in outputs.values()), "skipped": skipped,
                "fingerprint": fingerprint, "host": socket.gethostname(),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        io_utils.write_json(self.output_dir / f"shard-{self.name}.json", info)
        self.log_path.unlink()
        return info

    def abort(self) -> None:
        """Closes files, keeping partials and the log for the next run to resume from."""
        for writer in self.writers.values():
            writer.close()
        self.log_handle.close()


def _finished_shard(output_dir: pathlib.Path, index: int, num_shards: int, fingerprint: dict) -> Optional[dict]:
    """The shard's info if it is finished (marker present, its files in place), else None.

    Raises:
      FaceTexError: the shard was made with other settings (mixing them would corrupt the dataset).
    """
    path = output_dir / f"shard-{shard_name(index, num_shards)}.json"
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("fingerprint") != fingerprint:
        changed = sorted(k for k in fingerprint if (info.get("fingerprint") or {}).get(k) != fingerprint[k])
        raise FaceTexError(f"{path}: made with other settings ({', '.join(changed)} differ); "
                           "use another --output_dir or --overwrite")
    if all((output_dir / out["file"]).exists() for out in info.get("outputs", {}).values()):
        return info
    return None


def write_manifest(output_dir, config: Optional[PreprocessConfig] = None, optional_fields=None) -> dict:
    """Merges every finished ``shard-*.json`` into ``manifest.json`` (atomically) and returns it."""
    output_dir = pathlib.Path(output_dir)
    shards = []
    for path in sorted(output_dir.glob("shard-*-of-*.json")):
        try:
            shards.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    previous = read_manifest(output_dir) or {}
    num_records: Dict[str, int] = {}
    for shard in shards:
        for split, out in shard["outputs"].items():
            num_records[split] = num_records.get(split, 0) + out["num_records"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint() if config else previous.get("fingerprint"),
        "crop_size": config.crop_size if config else previous.get("crop_size", CROP_SIZE_DEFAULT),
        "num_shards": config.num_shards if config else previous.get("num_shards"),
        "finished_shards": [s["shard"] for s in shards],
        "num_records": num_records,
        "files": {split: sorted(s["outputs"][split]["file"] for s in shards if split in s["outputs"])
                  for split in num_records},
        "optional_fields": {k: v.to_json() for k, v in (optional_fields or {}).items()}
        if optional_fields is not None else previous.get("optional_fields", {}),
        "skipped": [entry for s in shards for entry in s["skipped"]],
    }
    io_utils.write_json(output_dir / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory) -> Optional[dict]:
    """``manifest.json`` of a shard folder, or None."""
    path = pathlib.Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def run_preprocess(config: PreprocessConfig, log=print) -> dict:
    """Photos -> aligned-face TFRecord shards (resumable, shardable across machines).

    Every machine plans the same work (same files, hashes, splits, shard of each photo), then
    processes ``config.shard_indices`` only. Finished shards (``shard-<i>-of-<n>.json`` present,
    written after the shard's files were renamed into place) are skipped; an unfinished shard
    resumes after the last photo it logged. All files are written via temp + rename.
    Returns:
      a summary dict (also what scripts/preprocess.py writes as JSON): counts, per-file skips with
      reasons, duplicates, the shards done / already finished.
    """
    _tf()  # import TensorFlow (and let it print its start-up lines) before the progress bar starts
    output_dir = pathlib.Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    indices = sorted(set(range(config.num_shards) if not config.shard_indices else config.shard_indices))
    bad = [i for i in indices if not 0 <= i < config.num_shards]
    if bad:
        raise FaceTexError(f"--shard_index {bad} out of range for --num_shards={config.num_shards}")
    existing = read_manifest(output_dir)
    if existing and existing.get("fingerprint") and existing["fingerprint"] != config.fingerprint() and not config.overwrite:
        changed = sorted(k for k in config.fingerprint() if existing["fingerprint"].get(k) != config.fingerprint()[k])
        raise FaceTexError(f"{output_dir} holds shards made with other settings ({', '.join(changed)} differ); "
                           "use another --output_dir or --overwrite")
    items, duplicates = plan_work(config, log)
    by_shard: Dict[int, List[WorkItem]] = {i: [] for i in indices}
    for item in items:
        if item.shard in by_shard:
            by_shard[item.shard].append(item)

    already, todo = [], []
    for index in indices:
        if not config.overwrite and _finished_shard(output_dir, index, config.num_shards,
                                                    config.fingerprint()) is not None:
            already.append(index)
        else:
            todo.append(index)
            if config.overwrite:
                for stale in output_dir.glob(f"*{shard_name(index, config.num_shards)}*"):
                    stale.unlink()
    if already:
        log(f"[preprocess] skipping {len(already)} finished shard(s): {_ranges(already)}")

    preprocessor_kwargs = dict(detector=config.detector, masker=config.masker, parsing_weights=config.parsing_weights,
                               crop_size=config.crop_size,
                               allow_rotation=config.allow_rotation, all_faces=config.all_faces,
                               min_side=config.min_side, max_pixels=config.max_pixels,
                               max_detect_side=config.max_detect_side)
    stats = {"photos": 0, "faces": 0, "skipped": [], "internal_errors": 0}
    finished = []
    total = sum(len(by_shard[i]) for i in todo)
    progress = _progress_bar(total, config.progress)
    pool = None
    try:
        if config.num_workers > 1 and total:
            import multiprocessing
            # spawn, not fork: the parent has TensorFlow's thread pools running
            pool = multiprocessing.get_context("spawn").Pool(
                config.num_workers, initializer=_init_worker,
                initargs=(preprocessor_kwargs, config.image_format, config.jpeg_quality))
            mapper = lambda work: pool.imap(_process_item, work, chunksize=2)  # noqa: E731
        else:
            if total:
                _init_worker(preprocessor_kwargs, config.image_format, config.jpeg_quality)
            mapper = lambda work: map(_process_item, work)  # noqa: E731
        for index in todo:
            writer = _ShardWriter(output_dir, index, config.num_shards, log)
            work = [item for item in by_shard[index] if item.sha1 not in writer.done]
            progress.update(len(by_shard[index]) - len(work))
            try:
                for result in mapper(work):
                    item = result["item"]
                    if "payloads" in result:
                        records = [serialize_payload(p, item.path, item.sha1, item.split) for p in result["payloads"]]
                        writer.add(item, records)
                        stats["faces"] += len(records)
                    else:
                        writer.add(item, [], result["reason"])
                        stats["skipped"].append({"path": item.path, "reason": result["reason"]})
                        stats["internal_errors"] += int(result["internal"])
                        if result["internal"] and config.verbose:
                            log(result["traceback"])
                    stats["photos"] += 1
                    progress.update(1)
                    progress.set_postfix(faces=stats["faces"], skipped=len(stats["skipped"]), refresh=False)
            except BaseException:
                writer.abort()
                raise
            finished.append(writer.finish(config.fingerprint()))
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
    manifest = write_manifest(output_dir, config, optional_fields={})
    skipped_now = {entry["path"] for entry in stats["skipped"]}
    sha1_by_path = {item.path: item.sha1 for item in items}
    # photos skipped by an earlier, killed run of a shard finished now are reported too
    resumed_skips = [e for info in finished for e in info["skipped"] if e["path"] not in skipped_now]
    summary = {
        "output_dir": str(output_dir),
        "shards_processed": todo, "shards_already_finished": already,
        "photos_processed": stats["photos"], "faces_written": stats["faces"],
        "skipped": stats["skipped"] + [{"path": e["path"], "reason": e["reason"]} for e in resumed_skips],
        "internal_errors": stats["internal_errors"],
        "duplicates": [d for d in duplicates if sha1_by_path.get(d["duplicate_of"], "") and
                       shard_of(sha1_by_path[d["duplicate_of"]], config.num_shards) in by_shard],
        "num_records_total": manifest["num_records"],
    }
    return summary


def _ranges(indices: List[int]) -> str:
    return ", ".join(map(str, indices)) if len(indices) <= 8 else f"{indices[0]}..{indices[-1]} ({len(indices)})"


class _NoProgress:
    def update(self, *_):
        pass

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(total=total, desc="preprocess", unit="photo", dynamic_ncols=True)


def format_summary(summary: dict, max_lines: int = 20) -> str:
    """A human-readable end-of-run summary (counts, then skipped files grouped by reason)."""
    lines = [f"[preprocess] {summary['photos_processed']} photos processed, {summary['faces_written']} faces written; "
             f"{len(summary['skipped'])} skipped, {len(summary['duplicates'])} duplicates; "
             f"shards done {len(summary['shards_processed'])}, already finished {len(summary['shards_already_finished'])}; "
             f"records in {summary['output_dir']}: {summary['num_records_total']}"]
    for entry in summary["skipped"][:max_lines]:
        lines.append(f"  skipped {entry['reason']}")
    if len(summary["skipped"]) > max_lines:
        lines.append(f"  ... and {len(summary['skipped']) - max_lines} more (see the summary JSON)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- tf.data

def _list_files(file_pattern) -> List[str]:
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


def discover_optional_fields(files: Sequence[str]) -> Dict[str, OptionalField]:
    """The optional fields of a dataset: from ``manifest.json`` beside the first file, else its first record."""
    manifest = read_manifest(os.path.dirname(files[0]))
    if manifest and "optional_fields" in manifest:
        return {k: OptionalField.from_json(v) for k, v in manifest["optional_fields"].items()}
    for path in files:
        records = read_records(path, tolerate_truncation=True)[:1]
        if records:
            return optional_fields_of(records[0])
    return {}


def make_dataset(file_pattern, batch_size: int, training: bool, deterministic: bool = False, input_context=None,
                 shuffle_buffer: int = 1024, seed: Optional[int] = None, repeat: Optional[int] = None,
                 optional_fields: Optional[Dict[str, OptionalField]] = None, crop_size: Optional[int] = None,
                 cycle_length: int = 4, drop_remainder: Optional[bool] = None, cache: bool = False):
    """A tf.data pipeline over aligned-face TFRecord shards.

    Args:
      file_pattern: glob (or comma-separated globs, or a list), e.g. "data/faces/train-*.tfrecord".
      batch_size: the GLOBAL batch size; with ``input_context`` each pipeline yields
        ``input_context.get_per_replica_batch_size(batch_size)``.
      training: shuffle files and records, repeat (forever unless ``repeat``), drop the remainder.
        Otherwise: files in sorted order, one pass, last partial batch kept.
      deterministic: reproducible order (seeded shuffles, ordered interleave/map); off is faster.
      input_context: ``tf.distribute.InputContext`` (from ``distribute_datasets_from_function``):
        files are sharded by ``input_pipeline_id`` when there are at least as many files as
        pipelines, else records are; tf.data's own auto-sharding is then switched off.
      shuffle_buffer: records in the shuffle buffer (serialized, ~100 KB each).
      seed: shuffle seed (default 0 when deterministic, random otherwise).
      optional_fields: override discovery of the optional ground-truth fields.
      crop_size: image size; default from manifest.json, else 224.
      cache: cache the serialized records in memory after the first pass.
    Returns:
      tf.data.Dataset of dicts: image float32 [B, S, S, 3] in [0, 1], landmarks float32 [B, 68, 2],
      mask float32 [B, S, S, 1], transform float32 [B, 2, 3], box [B, 4], score [B], face_index [B],
      original_size int32 [B, 2], source_path / sha1 / split string [B], and gt_<name> per optional field.
    """
    tf = _tf()
    files = _list_files(file_pattern)
    if optional_fields is None:
        optional_fields = discover_optional_fields(files)
    if crop_size is None:
        manifest = read_manifest(os.path.dirname(files[0]))
        crop_size = int(manifest.get("crop_size", CROP_SIZE_DEFAULT)) if manifest else CROP_SIZE_DEFAULT
    if seed is None and deterministic:
        seed = 0
    per_pipeline_batch = batch_size
    shard_records = None
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None:
        per_pipeline_batch = input_context.get_per_replica_batch_size(batch_size)
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if pipelines > 1:
            if len(files) >= pipelines:
                dataset = dataset.shard(pipelines, pipeline_id)
            else:
                shard_records = (pipelines, pipeline_id)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(lambda path: tf.data.TFRecordDataset(path, buffer_size=1 << 20),
                                 cycle_length=max(1, min(cycle_length, len(files))),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not training)
    if shard_records is not None:
        dataset = dataset.shard(*shard_records)
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat(repeat)
    elif repeat:
        dataset = dataset.repeat(repeat)
    dataset = dataset.map(lambda record: parse_example(record, optional_fields, crop_size),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not training)
    dataset = dataset.batch(per_pipeline_batch, drop_remainder=training if drop_remainder is None else drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not training)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic or not training)
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)
