"""Refinement-sample TFRecords: encode -> tf.data decode round trip within the storage precision."""
import numpy as np
import tensorflow as tf

from tf_facetex.data.records import count_records
from tf_facetex.prior import samples


def _sample(rng, h=32, s=16, c=10):
    return {"image": rng.uniform(size=(h, h, 3)), "face_mask": (rng.uniform(size=(h, h, 1)) > .5) * 1.0,
            "proj_mask": np.ones((h, h, 1)), "pixel_uv": rng.uniform(0, s - 1, size=(h, h, 2)),
            "texture_uv": rng.uniform(size=(s, s, 3)), "visibility_uv": np.ones((s, s, 1)),
            "prior_albedo_uv": rng.uniform(size=(s, s, 3)), "normals_uv": rng.normal(size=(s, s, 3)),
            "gamma": rng.normal(size=27), "coeffs": rng.normal(size=c), "landmarks": rng.uniform(0, h, size=(68, 2)),
            "albedo_gt_uv": rng.uniform(size=(s, s, 3)), "irradiance_gt_uv": rng.uniform(0, 3, size=(s, s, 3))}


def test_round_trip_through_tf_data(tmp_path, rng):
    originals = [_sample(rng) for _ in range(4)]
    path = str(tmp_path / "samples-00000.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for sample in originals:
            writer.write(samples.encode_sample(sample))
    assert count_records(path) == 4
    batch = next(iter(samples.sample_dataset(path, 4, 32, 16, 10, training=False, with_ground_truth=True)))
    tolerance = {"image": 1 / 255, "texture_uv": 1 / 255, "prior_albedo_uv": 1 / 255, "pixel_uv": 15 / 65535 * 2,
                 "normals_uv": 2e-3, "irradiance_gt_uv": 1e-4}
    for key, value in batch.items():
        expected = np.stack([np.asarray(o[key], np.float32).reshape(value.shape[1:]) for o in originals])
        np.testing.assert_allclose(value.numpy(), expected, atol=tolerance.get(key, 1e-5), err_msg=key)
