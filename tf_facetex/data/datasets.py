"""Which photos make up a dataset, and how they are split into train and test.

- ``list_image_files``: any folder of photos (recursive, by extension, sorted: deterministic).
- ``dedupe_by_content``: byte-identical files count once (the shared photo folders contain copies).
- ``split_by_hash``: a deterministic train/test split keyed on the sha1 of each file's bytes, so a
  photo lands in the same split on every machine and whatever else is added to the folder.
- ``read_celeba`` / ``celeba_split``: the CelebA layout (``img_align_celeba/``,
  ``list_eval_partition.txt``, ``list_landmarks_align_celeba.txt``) with the paper's 85/15 random
  split (deterministic by seed) or CelebA's official partition.
"""
import dataclasses
import hashlib
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from tf_facetex.data.images import IMAGE_EXTENSIONS, content_hash
from tf_facetex.errors import FaceTexError

PAPER_TEST_FRACTION = 0.15  # the paper trains on 85 % of CelebA and tests on 15 %


def list_image_files(folder, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True) -> List[pathlib.Path]:
    """Image files under a folder (case-insensitive extensions), sorted by path.

    Raises:
      FaceTexError: if the folder does not exist.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FaceTexError(f"{folder}: not a folder")
    wanted = {ext.lower() for ext in extensions}
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in wanted and p.is_file())


@dataclasses.dataclass
class SourceFile:
    """A photo identified by its content: path, sha1 of its bytes, size in bytes."""
    path: pathlib.Path
    sha1: str
    num_bytes: int


def hash_files(paths: Sequence, progress: bool = False) -> List[SourceFile]:
    """sha1 of each file's bytes (unreadable files get sha1 of their path, prefixed 'unreadable:')."""
    iterator = paths
    if progress:
        from tqdm import tqdm
        iterator = tqdm(paths, desc="hashing", unit="file")
    out = []
    for path in iterator:
        path = pathlib.Path(path)
        try:
            data = path.read_bytes()
            out.append(SourceFile(path, content_hash(data), len(data)))
        except OSError:
            # keep it so the per-file error is reported later, with a stable pseudo-identity
            out.append(SourceFile(path, "unreadable:" + hashlib.sha1(str(path).encode()).hexdigest(), -1))
    return out


def dedupe_by_content(files: Sequence[SourceFile]):
    """Keeps the first file (in the given order) of each content hash.

    Returns:
      (unique: list of SourceFile, duplicates: list of (SourceFile, SourceFile kept instead)).
    """
    seen: Dict[str, SourceFile] = {}
    unique, duplicates = [], []
    for item in files:
        if item.sha1 in seen:
            duplicates.append((item, seen[item.sha1]))
        else:
            seen[item.sha1] = item
            unique.append(item)
    return unique, duplicates


def hash_fraction(key: str, seed: int = 0) -> float:
    """A deterministic pseudo-random number in [0, 1) from a string key and a seed."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_by_hash(files: Sequence[SourceFile], test_fraction: float = PAPER_TEST_FRACTION,
                  seed: int = 0) -> Dict[str, List[SourceFile]]:
    """Train/test split keyed on content hashes (duplicates removed first).

    A file is in "test" iff ``hash_fraction(sha1, seed) < test_fraction``: stable when files are added
    or renamed, identical on every machine; the test share is ``test_fraction`` in expectation.
    Returns:
      {"train": [...], "test": [...]} in the input order.
    """
    unique, _ = dedupe_by_content(files)
    split = {"train": [], "test": []}
    for item in unique:
        split["test" if hash_fraction(item.sha1, seed) < test_fraction else "train"].append(item)
    return split


# ----------------------------------------------------------------------------------------------- CelebA

@dataclasses.dataclass
class CelebAItem:
    """One CelebA image: path, file name, official partition (0 train, 1 val, 2 test; -1 unknown) and
    the dataset's 5 landmarks in the aligned image, float32 [5, 2] (eye image-left, eye image-right,
    nose, mouth image-left, mouth image-right), or None when the landmark file lacks it."""
    path: pathlib.Path
    name: str
    partition: int
    landmarks5: Optional[np.ndarray]


def _read_partition(path: pathlib.Path) -> Dict[str, int]:
    partition = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise FaceTexError(f"{path}:{line_no}: expected '<file> <0|1|2>', got {line!r}")
        partition[parts[0]] = int(parts[1])
    return partition


def _read_landmarks5(path: pathlib.Path) -> Dict[str, np.ndarray]:
    """list_landmarks_align_celeba.txt: a count line, a header line, then '<file> x1 y1 ... x5 y5'."""
    lines = path.read_text().splitlines()
    landmarks = {}
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) != 11:  # the count and header lines
            if line_no <= 2 or not parts:
                continue
            raise FaceTexError(f"{path}:{line_no}: expected '<file>' and 10 numbers, got {line!r}")
        try:
            landmarks[parts[0]] = np.array(parts[1:], np.float32).reshape(5, 2)
        except ValueError:
            if line_no <= 2:
                continue
            raise FaceTexError(f"{path}:{line_no}: landmarks are not numbers: {line!r}") from None
    return landmarks


def read_celeba(root) -> List[CelebAItem]:
    """Reads the CelebA layout under ``root``.

    Expects ``root/img_align_celeba/*.jpg``; ``list_eval_partition.txt`` and
    ``list_landmarks_align_celeba.txt`` (also looked for in ``root/Eval`` and ``root/Anno``) are
    optional. Images listed in the text files but missing on disk are left out.
    Returns:
      CelebAItem list sorted by file name.
    Raises:
      FaceTexError: no image folder, or a malformed list file (file:line in the message).
    """
    root = pathlib.Path(root)
    image_dir = root / "img_align_celeba"
    if (image_dir / "img_align_celeba").is_dir():  # the Kaggle zip nests the folder
        image_dir = image_dir / "img_align_celeba"
    if not image_dir.is_dir():
        raise FaceTexError(f"{root}: not a CelebA folder (no img_align_celeba/ inside)")

    def find(name):
        for candidate in (root / name, root / "Eval" / name, root / "Anno" / name):
            if candidate.is_file():
                return candidate
        return None

    partition_file, landmark_file = find("list_eval_partition.txt"), find("list_landmarks_align_celeba.txt")
    partition = _read_partition(partition_file) if partition_file else {}
    landmarks = _read_landmarks5(landmark_file) if landmark_file else {}
    items = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        items.append(CelebAItem(path=path, name=path.name, partition=partition.get(path.name, -1),
                                landmarks5=landmarks.get(path.name)))
    return items


def celeba_split(items: Sequence[CelebAItem], scheme: str = "paper", test_fraction: float = PAPER_TEST_FRACTION,
                 seed: int = 0) -> Dict[str, List[CelebAItem]]:
    """Splits CelebA items.

    Args:
      scheme: "paper": a random permutation of the names (numpy PCG64 seeded with ``seed``), the
        first ``round(test_fraction * N)`` are test, the rest train (the paper's 85/15);
        "official": CelebA's partition file (0 -> train, 1 -> val, 2 -> test).
    Returns:
      {"train": [...], "test": [...]} (plus "val" for "official"), each sorted by name.
    """
    items = sorted(items, key=lambda item: item.name)
    if scheme == "paper":
        order = np.random.default_rng(seed).permutation(len(items))
        num_test = int(round(test_fraction * len(items)))
        test_ids = set(order[:num_test].tolist())
        return {"train": [it for i, it in enumerate(items) if i not in test_ids],
                "test": [it for i, it in enumerate(items) if i in test_ids]}
    if scheme == "official":
        if any(item.partition < 0 for item in items):
            raise FaceTexError("official CelebA split requested but list_eval_partition.txt is missing "
                               "or does not list every image")
        names = {0: "train", 1: "val", 2: "test"}
        split = {"train": [], "val": [], "test": []}
        for item in items:
            split[names[item.partition]].append(item)
        return split
    raise ValueError(f"scheme must be 'paper' or 'official', not {scheme!r}")
