"""Longer checks over the shared photo folders: every file decodes (or fails with ImageError), and
content-hash deduplication finds the copies the folders are known to share.
Run with: pytest -m slow tests/test_data_images_slow.py"""
import numpy as np
import pytest

from tf_facetex.data import datasets
from tf_facetex.data.images import load_image
from tf_facetex.errors import ImageError

pytestmark = pytest.mark.slow


def test_shared_photos_decode_or_fail_cleanly(faces_dir):
    files = datasets.list_image_files(faces_dir)
    assert len(files) > 500
    step = max(1, len(files) // 600)  # a spread-out sample of every folder
    decoded, refused = 0, []
    for path in files[::step]:
        try:
            image = load_image(path)
        except ImageError as err:
            refused.append(str(err))
            continue
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, path
        decoded += 1
    assert decoded >= 0.98 * (decoded + len(refused)), refused[:5]


def test_known_duplicates_are_found(faces_dir):
    """deca_aflw2000 holds AFLW2000 images that aflw2000_3d holds too (PROVENANCE.md)."""
    paths = datasets.list_image_files(faces_dir / "deca_aflw2000") + datasets.list_image_files(faces_dir / "aflw2000_3d")
    unique, duplicates = datasets.dedupe_by_content(datasets.hash_files(paths))
    assert len(duplicates) >= 1 and len(unique) + len(duplicates) == len(paths)
    for duplicate, kept in duplicates:
        assert duplicate.path.read_bytes() == kept.path.read_bytes()
    split = datasets.split_by_hash(datasets.hash_files(paths), 0.15, seed=0)
    assert len(split["train"]) + len(split["test"]) == len(unique)
    assert 0.08 < len(split["test"]) / len(unique) < 0.22
