"""TFRecord example format, the resumable sharded preprocessing entry point, and the tf.data pipeline."""
import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tf_facetex import io_utils
from tf_facetex.data import preprocess, tfrecords
from tf_facetex.data.align import AlignedFace, invert_affine
from tf_facetex.data.images import content_hash, encode_jpeg, encode_png
from tf_facetex.errors import FaceTexError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _synthetic_face(rng, index=0, size=224) -> AlignedFace:
    transform = np.array([[0.5 + 0.01 * index, -0.1, 12.0], [0.1, 0.5, -3.5 - index]])
    mask = (rng.uniform(size=(size, size)) > 0.5).astype(np.float32)
    return AlignedFace(image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                       landmarks=rng.uniform(0, size - 1, (68, 2)).astype(np.float32), transform=transform,
                       inverse=invert_affine(transform), original_shape=(480 + index, 640),
                       valid=np.ones((size, size), np.float32), mask=mask,
                       box=np.array([10, 20, 110, 130], np.float32), score=1.25, face_index=index % 2)


def _write_shards(directory, records, num_files):
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(num_files):
        tfrecords.write_records_atomic(directory / f"train-{f:05d}.tfrecord", records[f::num_files])
    return str(directory / "train-*.tfrecord")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """12 synthetic faces in 4 shards, with their source identities."""
    rng = np.random.default_rng(1)
    faces = [_synthetic_face(rng, i) for i in range(12)]
    records = [tfrecords.encode_example(face, f"photos/p{i}.jpg", f"{i:040x}", "train") for i, face in enumerate(faces)]
    pattern = _write_shards(tmp_path_factory.mktemp("shards"), records, 4)
    return pattern, faces


def _sha1s(dataset):
    return [s.decode() for batch in dataset for s in batch["sha1"].numpy()]


# ----------------------------------------------------------------------------------------- the format

def test_example_round_trip_is_exact(shard_dir):
    pattern, faces = shard_dir
    batch = next(iter(tfrecords.make_dataset(pattern, 12, training=False)))
    assert batch["image"].shape == (12, 224, 224, 3) and batch["image"].dtype.name == "float32"
    assert batch["mask"].shape == (12, 224, 224, 1) and batch["landmarks"].shape == (12, 68, 2)
    assert batch["transform"].shape == (12, 2, 3)
    by_sha1 = {s.decode(): i for i, s in enumerate(batch["sha1"].numpy())}
    for index, face in enumerate(faces):
        row = by_sha1[f"{index:040x}"]
        np.testing.assert_array_equal(np.round(batch["image"][row].numpy() * 255).astype(np.uint8), face.image)
        np.testing.assert_array_equal(batch["mask"][row, ..., 0].numpy(), face.mask)
        np.testing.assert_allclose(batch["landmarks"][row].numpy(), face.landmarks, atol=1e-4)
        np.testing.assert_allclose(batch["transform"][row].numpy(), face.transform, atol=1e-5)
        np.testing.assert_allclose(batch["box"][row].numpy(), face.box)
        assert batch["original_size"][row].numpy().tolist() == [480 + index, 640]
        assert batch["face_index"][row].numpy() == index % 2
        assert batch["source_path"][row].numpy().decode() == f"photos/p{index}.jpg"
        assert batch["split"][row].numpy() == b"train"


def test_jpeg_crops_and_missing_mask(tmp_path, rng):
    face = _synthetic_face(rng)
    face.image = cv2.GaussianBlur(face.image, (0, 0), 3)  # JPEG-friendly content
    face.mask = None
    record = tfrecords.encode_example(face, image_format="jpeg", jpeg_quality=95)
    parsed = tfrecords.parse_example(record)
    assert np.abs(parsed["image"].numpy() * 255 - face.image).mean() < 2.0
    assert parsed["mask"].numpy().min() == 1.0  # no mask stored -> everything counts


def test_optional_ground_truth_fields(tmp_path, rng):
    """The hook for synthetic faces: arbitrary named arrays travel with the example."""
    extras = {"albedo_uv": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
              "depth16": rng.integers(0, 65535, (16, 16), dtype=np.uint16),
              "sh": rng.normal(size=27).astype(np.float32),
              "coeffs": rng.normal(size=(3, 4))}
    records = [tfrecords.encode_example(_synthetic_face(rng, i), sha1=f"{i:040x}", extras=extras) for i in range(3)]
    fields = tfrecords.optional_fields_of(records[0])
    assert fields["albedo_uv"] == tfrecords.OptionalField("png", "uint8", (64, 64, 3))
    assert fields["coeffs"].encoding == "tensor" and fields["coeffs"].dtype == "float64"
    pattern = _write_shards(tmp_path / "gt", records, 1)
    batch = next(iter(tfrecords.make_dataset(pattern, 3, training=False)))
    np.testing.assert_array_equal(batch["gt_albedo_uv"][1].numpy(), extras["albedo_uv"])
    np.testing.assert_array_equal(batch["gt_depth16"][2].numpy(), extras["depth16"])
    np.testing.assert_array_equal(batch["gt_sh"][0].numpy(), extras["sh"])
    np.testing.assert_array_equal(batch["gt_coeffs"][0].numpy(), extras["coeffs"])
    assert batch["gt_sh"].shape == (3, 27)


# ------------------------------------------------------------------------------------------ tf.data

def test_training_pipeline_shapes_and_determinism(shard_dir):
    pattern, _ = shard_dir
    dataset = tfrecords.make_dataset(pattern, 5, training=True, deterministic=True, seed=3, shuffle_buffer=16)
    batches = list(dataset.take(6))  # repeats forever: 6 x 5 > 12 records
    assert all(b["image"].shape == (5, 224, 224, 3) for b in batches)  # remainder dropped
    first = [s for b in batches for s in b["sha1"].numpy()]
    again = [s for b in tfrecords.make_dataset(pattern, 5, training=True, deterministic=True, seed=3,
                                               shuffle_buffer=16).take(6) for s in b["sha1"].numpy()]
    assert first == again
    assert len(set(first[:12])) == 12  # the first epoch has every record once
    other = [s for b in tfrecords.make_dataset(pattern, 5, training=True, deterministic=True, seed=4,
                                               shuffle_buffer=16).take(6) for s in b["sha1"].numpy()]
    assert other != first


def test_eval_pipeline_is_one_ordered_pass(shard_dir):
    pattern, _ = shard_dir
    dataset = tfrecords.make_dataset(pattern, 5, training=False)
    sizes = [int(b["image"].shape[0]) for b in dataset]
    assert sizes == [5, 5, 2]
    assert _sha1s(dataset) == _sha1s(tfrecords.make_dataset(pattern, 5, training=False))
    assert sorted(_sha1s(dataset)) == [f"{i:040x}" for i in range(12)]


@pytest.mark.parametrize("num_files", [4, 1])  # shard by file, and by record when files are fewer
def test_input_context_shards_per_worker(tmp_path, shard_dir, num_files):
    import tensorflow as tf
    _, faces = shard_dir
    records = [tfrecords.encode_example(face, sha1=f"{i:040x}") for i, face in enumerate(faces)]
    pattern = _write_shards(tmp_path / "ctx", records, num_files)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        dataset = tfrecords.make_dataset(pattern, 8, training=False, input_context=context)
        batches = list(dataset)
        assert max(int(b["image"].shape[0]) for b in batches) == 4  # per-replica batch = 8 / 2
        seen.append(_sha1s(dataset))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"{i:040x}" for i in range(12)]
    assert abs(len(seen[0]) - len(seen[1])) <= 3


def test_no_files_is_a_clear_error(tmp_path):
    with pytest.raises(FaceTexError, match="no TFRecord files match"):
        tfrecords.make_dataset(str(tmp_path / "nothing-*.tfrecord"), 4, training=True)


def test_atomic_writes_leave_no_temporaries(tmp_path):
    tfrecords.write_records_atomic(tmp_path / "a.tfrecord", [b"x", b"y"])
    io_utils.write_json(tmp_path / "a.json", {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.tfrecord"]
    assert tfrecords.read_records(tmp_path / "a.tfrecord") == [b"x", b"y"]
    # The temporary file was private (mkstemp); the result has the mode of a plain open() under the umask.
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------ preprocessing entry point

def _huge_png_header() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


GOOD = ("astronaut.jpg", "sub/astronaut_mirrored.png", "astronaut_cmyk.jpg", "astronaut_16bit.png")
BAD = {"noise.png": "no face found", "empty.jpg": "empty file", "notes.jpg": "not an image",
       "truncated.jpg": "truncated", "tiny.png": "too small", "huge.png": "too large"}


@pytest.fixture
def mixed_folder(tmp_path):
    """Good photos (one per kind of conversion) and bad files, written into tmp_path/photos."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    astronaut = skimage.data.astronaut()
    jpeg = encode_jpeg(astronaut)
    (folder / "astronaut.jpg").write_bytes(jpeg)
    (folder / "sub" / "copy_of_astronaut.jpg").write_bytes(jpeg)  # byte-identical: processed once
    (folder / "sub" / "astronaut_mirrored.png").write_bytes(encode_png(astronaut[:, ::-1]))
    buffer = io.BytesIO()
    Image.fromarray(astronaut).convert("CMYK").save(buffer, format="JPEG", quality=92)
    (folder / "astronaut_cmyk.jpg").write_bytes(buffer.getvalue())
    ok, png16 = cv2.imencode(".png", cv2.cvtColor(astronaut.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    (folder / "astronaut_16bit.png").write_bytes(png16.tobytes())
    (folder / "noise.png").write_bytes(encode_png(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("a text file with a photo's name\n")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "tiny.png").write_bytes(encode_png(np.zeros((1, 1, 3), np.uint8)))
    (folder / "huge.png").write_bytes(_huge_png_header())
    return folder


class Killed(BaseException):
    """Stands in for the process dying mid-run (not an Exception: nothing may swallow it)."""


def _config(folder, output, **kwargs):
    values = dict(input_dirs=[str(folder)], output_dir=str(output), num_shards=3, test_fraction=0.0, progress=False)
    values.update(kwargs)
    return tfrecords.PreprocessConfig(**values)


def _run_script(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "scripts" / "preprocess.py"), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_preprocess_script_mixed_good_and_bad_files(mixed_folder, tmp_path):
    output = tmp_path / "out"
    result = _run_script(f"--input_dir={mixed_folder}", f"--output_dir={output}", "--num_shards=3",
                         "--test_fraction=0", "--noprogress")
    assert result.returncode == 0, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    reasons = {pathlib.Path(e["path"]).name: e["reason"] for e in summary["skipped"]}
    assert set(reasons) == set(BAD)
    for name, expected in BAD.items():
        assert expected in reasons[name] and "\n" not in reasons[name] and name in reasons[name]
    assert summary["faces_written"] == len(GOOD) and summary["internal_errors"] == 0
    assert [pathlib.Path(d["path"]).name for d in summary["duplicates"]] == ["copy_of_astronaut.jpg"]
    assert "skipped" in result.stderr and "huge.png" in result.stderr  # the end-of-run list
    # the written records are exactly the good photos, readable through the pipeline
    dataset = tfrecords.make_dataset(str(output / "train-*.tfrecord"), 8, training=False)
    expected = {content_hash((mixed_folder / name).read_bytes()) for name in GOOD}
    assert set(_sha1s(dataset)) == expected and len(_sha1s(dataset)) == len(GOOD)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["num_records"] == {"train": len(GOOD)} and sorted(manifest["finished_shards"]) == [0, 1, 2]
    assert not list(output.glob("*.partial")) and not list(output.glob("*.tmp-*")) and not list(output.glob("*.log.jsonl"))

    # re-running keeps the finished shards as they are
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in output.glob("*.tfrecord")}
    again = tfrecords.run_preprocess(_config(mixed_folder, output), log=lambda *_: None)
    assert sorted(again["shards_already_finished"]) == [0, 1, 2] and again["photos_processed"] == 0
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in output.glob("*.tfrecord")} == stamps
    # other settings into the same folder are refused, not mixed in
    with pytest.raises(FaceTexError, match="crop_size"):
        tfrecords.run_preprocess(_config(mixed_folder, output, crop_size=112), log=lambda *_: None)


def test_killed_run_resumes_without_losing_or_repeating(mixed_folder, tmp_path, monkeypatch):
    output = tmp_path / "out"
    real = preprocess._process_item
    calls = []

    def dies_on_fourth(item):
        calls.append(item.path)
        if len(calls) == 4:
            raise Killed
        return real(item)

    monkeypatch.setattr(preprocess, "_process_item", dies_on_fourth)
    with pytest.raises(Killed):
        tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=1), log=lambda *_: None)
    # nothing looks finished: only a partial file and the per-photo log
    assert not list(output.glob("*.tfrecord")) and not list(output.glob("shard-*.json"))
    log_lines = (output / "shard-00000-of-00001.log.jsonl").read_text().splitlines()
    assert len(log_lines) == 3
    done_before = {json.loads(line)["path"] for line in log_lines}

    calls.clear()

    def counts_only(item):
        calls.append(item.path)
        return real(item)

    monkeypatch.setattr(preprocess, "_process_item", counts_only)
    summary = tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=1), log=lambda *_: None)
    assert not done_before & set(calls)  # finished photos are not redone
    assert len(calls) == len(GOOD) + len(BAD) - 3
    dataset = tfrecords.make_dataset(str(output / "train-*.tfrecord"), 16, training=False)
    sha1s = _sha1s(dataset)
    assert len(sha1s) == len(GOOD) and len(set(sha1s)) == len(GOOD)
    assert {pathlib.Path(e["path"]).name for e in summary["skipped"]} == set(BAD)


def test_torn_partial_file_is_trimmed_on_resume(mixed_folder, tmp_path, monkeypatch):
    """A kill while a record was being written leaves a torn tail: the photo is redone, the rest kept."""
    output = tmp_path / "out"
    real = preprocess._process_item
    count = []

    def dies_on_sixth(item):
        count.append(1)
        if len(count) == 6:
            raise Killed
        return real(item)

    monkeypatch.setattr(preprocess, "_process_item", dies_on_sixth)
    with pytest.raises(Killed):
        tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=1), log=lambda *_: None)
    partial = output / "train-00000-of-00001.tfrecord.partial"
    data = partial.read_bytes()
    partial.write_bytes(data[: len(data) - 1000])  # tear the last record
    monkeypatch.setattr(preprocess, "_process_item", real)
    tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=1), log=lambda *_: None)
    sha1s = _sha1s(tfrecords.make_dataset(str(output / "train-*.tfrecord"), 16, training=False))
    assert len(sha1s) == len(GOOD) and len(set(sha1s)) == len(GOOD)


def test_shard_index_selects_work_for_this_machine(mixed_folder, tmp_path):
    output = tmp_path / "out"
    first = tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=4, shard_indices=[0, 2]),
                                     log=lambda *_: None)
    second = tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=4, shard_indices=[1, 3]),
                                      log=lambda *_: None)
    assert first["shards_processed"] == [0, 2] and second["shards_processed"] == [1, 3]
    assert first["photos_processed"] + second["photos_processed"] == len(GOOD) + len(BAD)
    manifest = tfrecords.read_manifest(output)
    assert sorted(manifest["finished_shards"]) == [0, 1, 2, 3] and manifest["num_records"]["train"] == len(GOOD)
    with pytest.raises(FaceTexError, match="out of range"):
        tfrecords.run_preprocess(_config(mixed_folder, output, num_shards=4, shard_indices=[4]), log=lambda *_: None)


def test_preprocess_help_and_one_line_errors():
    result = _run_script("--help")
    assert result.returncode in (0, 1) and "Photos -> aligned" in result.stdout  # absl exits 1 after --help
    for flag in ("input_dir", "output_dir", "dataset", "num_shards", "shard_index", "test_fraction", "image_format",
                 "allow_rotation", "all_faces", "detector", "masker", "max_megapixels", "num_workers", "overwrite",
                 "summary_json", "verbose"):
        assert f"--{flag}" in result.stdout or f"--[no]{flag}" in result.stdout, flag
    missing = _run_script("--output_dir=/nonexistent")
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: --input_dir") and "Traceback" not in missing.stderr
