"""The tf.data pipeline over aligned-face TFRecord shards (`make_dataset`)."""
import os
from typing import Dict, Optional, Sequence

from tf_facetex.data.records import (CROP_SIZE_DEFAULT, OptionalField, _tf, list_record_files, optional_fields_of,
                                     parse_example, read_manifest, read_records)


# ---------------------------------------------------------------------------------------- tf.data

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
    files = list_record_files(file_pattern)
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
