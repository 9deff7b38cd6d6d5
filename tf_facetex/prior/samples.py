"""The refinement sample: everything the detail-refinement network needs from the prior module, per image.

The prior module (geometry fit or regressor, decoder, projection, unwrapping, UV rasterisation) is frozen
while the refinement trains (docs/METHOD.md, "Refinement samples"), so its outputs are computed once per image and stored as
TFRecords in this format; training then never rasterises. Shapes (H = image size, S = UV size):

| key | shape, dtype | meaning |
|---|---|---|
| image | [H, H, 3] f32 in [0, 1] | the aligned input photo I |
| face_mask | [H, H, 1] f32 {0,1} | M_face = M_parsing * M_proj (paper eq. 12) |
| proj_mask | [H, H, 1] f32 {0,1} | M_proj: pixels covered by textured triangles of the fitted mesh |
| pixel_uv | [H, H, 2] f32 | the image-from-UV lookup: per pixel, its (col, row) position in the S x S UV map |
| texture_uv | [S, S, 3] f32 in [0, 1] | T: the image unwrapped into UV, 0 where unseen |
| visibility_uv | [S, S, 1] f32 {0,1} | M_uv: texels seen in the image (depth test + front-facing) |
| prior_albedo_uv | [S, S, 3] f32 | A: the prior (3DMM) albedo rasterised into UV |
| normals_uv | [S, S, 3] f32 | unit camera-frame normals per texel (for per-texel SH shading) |
| gamma | [27] f32 | L: the coarse SH coefficients (Deng layout, without the 0.8 ambient) |
| coeffs | [C] f32 | all prior coefficients (`CoefficientLayout` of the face model) |
| landmarks | [68, 2] f32 | 68 landmarks in the H x H crop (detected; used to align identity chips) |
Optional ground truth (synthetic faces only): albedo_gt_uv [S, S, 3] in [0, 1] and irradiance_gt_uv
[S, S, 3] in [0, 4] (the shading an albedo of 1 would show, including effects outside the SH model).

Rendering from a sample is a lookup: R(A', L') = bilinear(A' * shading(normals_uv, L'), pixel_uv) * proj_mask.
"""
import numpy as np
import tensorflow as tf

IMAGE_KEYS = ("image", "face_mask", "proj_mask")
UV_IMAGE_KEYS = ("texture_uv", "visibility_uv", "prior_albedo_uv")
OPTIONAL_UV_KEYS = ("albedo_gt_uv", "irradiance_gt_uv")
GROUND_TRUTH_RANGE = {"albedo_gt_uv": 1.0, "irradiance_gt_uv": 4.0}  # 16-bit PNG covers [0, range]
HALF_KEYS = ("normals_uv",)  # stored as float16 raw bytes: 2x smaller, 1e-3 precision is plenty
# pixel_uv is stored as 16-bit fixed point over [0, uv_size - 1]: float16 would round texel positions near
# 255 to 1/8 texel, fixed point keeps 1/256.
FLOAT_KEYS = ("gamma", "coeffs", "landmarks")


def _png(array):
    """[H, W, C] float in [0, 1] -> PNG bytes (8 bit; 16 bit for ground truth to keep precision)."""
    return tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(array, 0.0, 1.0) * 255.0), tf.uint8)).numpy()


def _png16(array, value_range=1.0):
    scaled = tf.clip_by_value(array / value_range, 0.0, 1.0) * 65535.0
    return tf.io.encode_png(tf.cast(tf.round(scaled), tf.uint16)).numpy()


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_sample(sample: dict) -> bytes:
    """One sample (numpy arrays keyed as in the module docstring) -> serialized tf.train.Example."""
    features = {}
    for key in IMAGE_KEYS + UV_IMAGE_KEYS:
        features[key] = _bytes_feature(_png(np.asarray(sample[key], np.float32)))
    for key in OPTIONAL_UV_KEYS:
        if key in sample and sample[key] is not None:
            features[key] = _bytes_feature(_png16(np.asarray(sample[key], np.float32), GROUND_TRUTH_RANGE[key]))
    texture_size = np.asarray(sample["texture_uv"]).shape[0]
    fixed = np.clip(np.asarray(sample["pixel_uv"], np.float64) / (texture_size - 1), 0.0, 1.0) * 65535.0
    features["pixel_uv"] = _bytes_feature(np.round(fixed).astype("<u2").tobytes())
    for key in HALF_KEYS:
        array = np.asarray(sample[key], np.float16)
        features[key] = _bytes_feature(array.tobytes())
        features[key + "_shape"] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(array.shape)))
    for key in FLOAT_KEYS:
        array = np.asarray(sample[key], np.float32)
        features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=array.reshape(-1).tolist()))
    for key in ("source", "content_hash"):
        if key in sample:
            features[key] = _bytes_feature(str(sample[key]).encode("utf-8"))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec(image_size: int, uv_size: int, num_coeffs: int, with_ground_truth: bool = False) -> dict:
    spec = {key: tf.io.FixedLenFeature([], tf.string) for key in IMAGE_KEYS + UV_IMAGE_KEYS + HALF_KEYS}
    spec["pixel_uv"] = tf.io.FixedLenFeature([], tf.string)
    spec.update({key + "_shape": tf.io.FixedLenFeature([3], tf.int64) for key in HALF_KEYS})
    spec["gamma"] = tf.io.FixedLenFeature([27], tf.float32)
    spec["coeffs"] = tf.io.FixedLenFeature([num_coeffs], tf.float32)
    spec["landmarks"] = tf.io.FixedLenFeature([68 * 2], tf.float32)
    if with_ground_truth:
        spec.update({key: tf.io.FixedLenFeature([], tf.string) for key in OPTIONAL_UV_KEYS})
    return spec


def decode_sample(serialized, image_size: int, uv_size: int, num_coeffs: int, with_ground_truth: bool = False):
    """Serialized example -> dict of float32 tensors (shapes in the module docstring). Works inside tf.data."""
    parsed = tf.io.parse_single_example(serialized, feature_spec(image_size, uv_size, num_coeffs, with_ground_truth))
    out = {}
    channels = {"image": 3, "face_mask": 1, "proj_mask": 1, "texture_uv": 3, "visibility_uv": 1,
                "prior_albedo_uv": 3}
    for key in IMAGE_KEYS + UV_IMAGE_KEYS:
        size = image_size if key in IMAGE_KEYS else uv_size
        decoded = tf.io.decode_png(parsed[key], channels=channels[key], dtype=tf.uint8)
        out[key] = tf.ensure_shape(tf.cast(decoded, tf.float32) / 255.0, [size, size, channels[key]])
    if with_ground_truth:
        for key in OPTIONAL_UV_KEYS:
            decoded = tf.io.decode_png(parsed[key], channels=3, dtype=tf.uint16)
            scale = GROUND_TRUTH_RANGE[key] / 65535.0
            out[key] = tf.ensure_shape(tf.cast(decoded, tf.float32) * scale, [uv_size, uv_size, 3])
    fixed = tf.cast(tf.io.decode_raw(parsed["pixel_uv"], tf.uint16, little_endian=True), tf.float32)
    out["pixel_uv"] = tf.reshape(fixed * ((uv_size - 1) / 65535.0), [image_size, image_size, 2])
    normals = tf.io.decode_raw(parsed["normals_uv"], tf.float16)
    out["normals_uv"] = tf.reshape(tf.cast(normals, tf.float32), [uv_size, uv_size, 3])
    out["gamma"] = parsed["gamma"]
    out["coeffs"] = parsed["coeffs"]
    out["landmarks"] = tf.reshape(parsed["landmarks"], [68, 2])
    return out


def sample_dataset(file_pattern, batch_size: int, image_size: int, uv_size: int, num_coeffs: int,
                   training: bool = True, with_ground_truth: bool = False, deterministic: bool = False,
                   shuffle_buffer: int = 256, input_context=None, seed: int = 0, repeat: bool = None):
    """tf.data pipeline over refinement-sample shards: parallel read/decode, shuffle, batch, prefetch.

    Args:
      input_context: a `tf.distribute.InputContext`; each worker reads a disjoint subset of the shards.
      repeat: repeat forever (defaults to ``training``).
    """
    files = tf.data.Dataset.list_files(file_pattern, shuffle=training and not deterministic, seed=seed)
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=options.deterministic)
    dataset = dataset.with_options(options)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training if repeat is None else repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(lambda s: decode_sample(s, image_size, uv_size, num_coeffs, with_ground_truth),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
