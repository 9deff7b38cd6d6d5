"""Which entries of ``--input`` a reconstruction run takes as photos, and why it skips each of the others.

`list_inputs` walks a folder (recursively by default) and sorts every entry into:
- ``files``: regular files (or symlinks to them) with an image extension (`IMAGE_EXTENSIONS`: JPEG, PNG, WebP, BMP,
  GIF (first frame), TIFF);
- ``skipped``: one ``{'input', 'error', 'skipped': True}`` record per entry that is not used (a folder named like
  an image, a broken symbolic link, a file that is not an image, a symlinked folder, which is not followed), the
  same shape as the batch runner's errors so they go into ``errors.json`` and the counts;
- ``notes``: lines for the user about whole sub-trees left out: the output folder when it lies inside the input
  (a second run must never take its own results as photos) and reconstruction folders of earlier runs (a folder
  holding ``coefficients.json``).
Hidden entries (names starting with '.') are ignored, as ``ls`` does; they are counted in a note.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import List, Optional

from tf_facetex.data.images import IMAGE_EXTENSIONS
from tf_facetex.errors import FaceTexError

RESULT_MARKER = "coefficients.json"          # written last into every finished face folder (pipeline.RESULT_MARKER)
RUN_FILES = ("errors.json", "index.html")   # a run's own files at the top of its output folder


@dataclasses.dataclass
class InputListing:
    files: List[pathlib.Path] = dataclasses.field(default_factory=list)
    skipped: List[dict] = dataclasses.field(default_factory=list)   # {'input', 'error', 'skipped': True}
    notes: List[str] = dataclasses.field(default_factory=list)


def _same(a: pathlib.Path, b: Optional[pathlib.Path]) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == b
    except OSError:
        return False


def _skip(listing, path, reason):
    listing.skipped.append({"input": str(path), "error": f"{path}: skipped, {reason}", "skipped": True})


def list_inputs(path, recursive=True, output_dir=None, result_marker=RESULT_MARKER) -> InputListing:
    """An image file or a folder -> `InputListing` (files sorted by path).

    Args:
      path: a file or a folder.
      recursive: walk sub-folders too.
      output_dir: the run's output folder; when it lies inside ``path`` it is left out (with a note).
      result_marker: a folder holding this file is a finished reconstruction, not photos.
    Raises:
      FaceTexError: ``path`` does not exist, or a folder holds no image at all (the skipped entries are named).
    """
    path = pathlib.Path(path).expanduser()
    out = pathlib.Path(output_dir).expanduser().resolve() if output_dir else None
    listing = InputListing()
    if path.is_file():
        listing.files.append(path)
        return listing
    if not path.is_dir():
        if path.is_symlink():
            raise FaceTexError(f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)")
        raise FaceTexError(f"{path}: no such file or folder")
    wanted = {ext.lower() for ext in IMAGE_EXTENSIONS}
    hidden, result_folders = 0, 0
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            _skip(listing, folder, f"cannot list this folder ({err.strerror or err})")
            continue
        in_output = _same(folder, out)
        for entry in entries:
            entry_path = pathlib.Path(entry.path)
            suffix = entry_path.suffix.lower()
            if entry.name.startswith("."):
                hidden += 1
                continue
            if in_output and entry.name in RUN_FILES:
                continue
            if entry.is_symlink() and not entry_path.exists():
                _skip(listing, entry_path, f"broken symbolic link (its target {os.readlink(entry_path)} does not "
                      "exist)")
            elif entry.is_dir(follow_symlinks=True):
                if _same(entry_path, out):
                    listing.notes.append(f"skipping {entry_path}: it is the output folder (inside --input); its "
                                         "results are not taken as photos")
                elif (entry_path / result_marker).is_file():
                    result_folders += 1
                elif entry.is_symlink():
                    _skip(listing, entry_path, "a symbolic link to a folder (not followed; pass it as --input)")
                else:
                    if suffix in wanted:
                        _skip(listing, entry_path, "a folder named like an image, not an image file"
                              + (" (its contents are searched)" if recursive else ""))
                    if recursive:
                        pending.append(entry_path)
            elif suffix in wanted:
                listing.files.append(entry_path)
            else:
                _skip(listing, entry_path, f"not an image file (accepted: {', '.join(IMAGE_EXTENSIONS)})")
    listing.files.sort()
    listing.skipped.sort(key=lambda record: record["input"])
    if result_folders:
        listing.notes.append(f"skipping {result_folders} reconstruction folder(s) (holding {result_marker}) "
                             "of an earlier run")
    if hidden:
        listing.notes.append(f"ignoring {hidden} hidden entr{'y' if hidden == 1 else 'ies'} (names starting "
                             "with '.')")
    if not listing.files:
        skipped = "; ".join(record["error"] for record in listing.skipped[:3])
        more = f" (and {len(listing.skipped) - 3} more)" if len(listing.skipped) > 3 else ""
        raise FaceTexError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})"
                           + (f"; {skipped}{more}" if skipped else ""))
    return listing
