"""The train/test split of the real-photo recipe (scripts/run_real_recipe.sh) is disjoint by content hash.

It exercises the rule scripts/preprocess.py runs (`tf_facetex.data.tfrecords.plan_work`: list, sha1 of the bytes,
drop byte-identical duplicates, `split_by_hash`), first on small generated image files with exact duplicates, then
on the real photos of ../shared/faces the recipe uses (skipped with a reason when they are absent).
"""
import hashlib
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from tf_facetex.data import datasets, tfrecords

# the recipe's settings (scripts/run_real_recipe.sh)
RECIPE_NUM_SHARDS = 64
RECIPE_TEST_FRACTION = 0.15
RECIPE_SEED = 0


def _plan(input_dirs, test_fraction, seed=0, num_shards=8):
    config = tfrecords.PreprocessConfig(input_dirs=[str(d) for d in input_dirs], output_dir="unused",
                                        num_shards=num_shards, test_fraction=test_fraction, split_seed=seed,
                                        progress=False)
    return tfrecords.plan_work(config, log=lambda *_: None)


def _sha1(path) -> str:
    return hashlib.sha1(pathlib.Path(path).read_bytes()).hexdigest()


def _split_sets(items):
    train = {item.sha1 for item in items if item.split == "train"}
    test = {item.sha1 for item in items if item.split == "test"}
    return train, test


def test_generated_files_with_duplicates_split_disjoint(tmp_path):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a", tmp_path / "b" / "nested"
    a.mkdir()
    b.mkdir(parents=True)
    originals = []
    for k in range(40):
        path = a / f"img{k:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        originals.append(path)
    # exact duplicates: same bytes under other names, in the same folder and in another folder, one twice
    copies = {a / "zz_copy_of_0.png": originals[0], b / "img005_again.png": originals[5],
              b / "img007.png": originals[7], b / "z_third_copy_of_5.png": originals[5]}
    for dst, src in copies.items():
        shutil.copyfile(src, dst)

    items, duplicates = _plan([a, tmp_path / "b"], test_fraction=0.5)

    # every content hash once: the duplicates are removed (and reported), the first path in sorted order is kept
    assert len(items) == len(originals)
    assert len({item.sha1 for item in items}) == len(items)
    assert {pathlib.Path(item.path) for item in items} == set(originals)
    assert {pathlib.Path(d["path"]) for d in duplicates} == set(copies)
    for d in duplicates:
        assert _sha1(d["path"]) == _sha1(d["duplicate_of"])
    # sha1 is of the file bytes, and the split is the documented hash rule
    for item in items:
        assert item.sha1 == _sha1(item.path)
        expected = "test" if datasets.hash_fraction(item.sha1, 0) < 0.5 else "train"
        assert item.split == expected
    train, test = _split_sets(items)
    assert train and test, "with 40 files at test_fraction 0.5 both splits should be non-empty"
    assert not train & test
    # no file, kept or dropped, has its bytes in both splits
    split_of_hash = {item.sha1: item.split for item in items}
    for dst, src in copies.items():
        assert _sha1(dst) in split_of_hash and split_of_hash[_sha1(dst)] == split_of_hash[_sha1(src)]

    # stable: renaming files or listing the folders in another order does not move a photo to the other split
    shutil.move(str(originals[3]), str(a / "renamed.png"))
    items2, _ = _plan([tmp_path / "b", a], test_fraction=0.5)
    assert {item.sha1: item.split for item in items2} == split_of_hash
    # another seed gives another split, still disjoint
    items3, _ = _plan([a, tmp_path / "b"], test_fraction=0.5, seed=1)
    assert {item.sha1: item.split for item in items3} != split_of_hash
    train3, test3 = _split_sets(items3)
    assert not train3 & test3


def test_real_recipe_split_disjoint(faces_dir):
    inputs = [faces_dir / "utkface", faces_dir / "celebamask_hq_mini" / "train" / "images"]
    missing = [str(p) for p in inputs if not p.is_dir()]
    if missing:
        pytest.skip(f"real photo folders of the recipe not present: {', '.join(missing)}")
    items, duplicates = _plan(inputs, RECIPE_TEST_FRACTION, RECIPE_SEED, RECIPE_NUM_SHARDS)
    train, test = _split_sets(items)
    assert not train & test, f"{len(train & test)} content hashes in both splits"
    assert len(train) + len(test) == len(items)  # one item per hash: duplicates removed
    # the shared folder has a few byte-identical UTKFace copies (PROVENANCE.md): each is dropped, and its kept twin
    # carries the same hash, so the copy cannot reach the other split
    for d in duplicates:
        assert _sha1(d["path"]) == _sha1(d["duplicate_of"])
    kept_paths = {item.path for item in items}
    assert not {d["path"] for d in duplicates} & kept_paths
    # the split share is about the requested 15 %
    share = len(test) / len(items)
    assert 0.12 < share < 0.18, share
