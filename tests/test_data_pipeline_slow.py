"""Longer end-to-end checks: the preprocess entry point with worker processes on real photos, the
pipeline over its shards, and the contact-sheet script.
Run with: pytest -m slow tests/test_data_pipeline_slow.py"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tf_facetex.data import tfrecords

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parent.parent


def _script(name, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_workers_give_the_same_records_as_one_process(faces_dir, tmp_path):
    inputs = [f"--input_dir={faces_dir / 'deca_examples'}", f"--input_dir={faces_dir / 'deca_aflw2000'}",
              f"--input_dir={faces_dir / 'dlib_faces'}"]
    one = _script("preprocess.py", *inputs, f"--output_dir={tmp_path / 'one'}", "--num_shards=2", "--noprogress")
    assert one.returncode == 0, one.stderr
    two = _script("preprocess.py", *inputs, f"--output_dir={tmp_path / 'two'}", "--num_shards=2", "--noprogress",
                  "--num_workers=2")
    assert two.returncode == 0, two.stderr
    for shard in sorted((tmp_path / "one").glob("*.tfrecord")):
        assert shard.read_bytes() == (tmp_path / "two" / shard.name).read_bytes(), shard.name
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["faces_written"] >= 20

    # the pipeline over the real shards, and the contact sheet
    batch = next(iter(tfrecords.make_dataset(str(tmp_path / "one" / "*.tfrecord"), 8, training=True,
                                             deterministic=True)))
    assert batch["image"].shape == (8, 224, 224, 3)
    masks = batch["mask"].numpy()
    assert 0.15 < masks.mean() < 0.7  # faces fill a good part of Deng's crop
    landmarks = batch["landmarks"].numpy()
    assert np.all(np.abs(landmarks[:, 30] - [111.85, 116.46]).max(axis=1) < 25)  # nose tips near the template
    sheet = tmp_path / "sheet.png"
    shown = _script("show_batch.py", f"--file_pattern={tmp_path / 'one' / 'train-*.tfrecord'}", f"--output={sheet}",
                    "--batch_size=8")
    assert shown.returncode == 0, shown.stderr
    assert Image.open(sheet).size == (4 * 448, 2 * 224)


def test_celeba_layout_through_the_entry_point(faces_dir, tmp_path):
    """A small CelebA-layout folder (real faces from the shared CelebAMask-HQ copy, written into
    tmp_path) through --dataset=celeba: the paper's 85/15 split is exact."""
    source = sorted((faces_dir / "celebamask_hq_mini" / "train" / "images").glob("*.jpg"))[:20]
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    for i, path in enumerate(source):
        (root / "img_align_celeba" / f"{i + 1:06d}.jpg").write_bytes(path.read_bytes())
    (root / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg 0\n" for i in range(20)))
    result = _script("preprocess.py", f"--input_dir={root}", "--dataset=celeba", f"--output_dir={tmp_path / 'out'}",
                     "--num_shards=2", "--noprogress", "--image_format=jpeg")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_records"] == {"train": 17, "test": 3}
