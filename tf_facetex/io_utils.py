"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A killed process therefore never leaves a half-written file under the final name. Folders are staged the same
way (`make_staging_dir`: ``.<name>.<pid>@<host>.<random>.partial``, renamed when complete); `remove_stale_staging`
clears the ones a killed run left behind (only those, and only when their writer is gone).
"""
import contextlib
import functools
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time

import numpy as np

from tf_facetex.errors import FaceTexError

# cv2.imencode's formats, by whether they keep an alpha channel.
IMAGE_WRITE_EXTENSIONS_ALPHA = (".png", ".webp", ".tif", ".tiff")
IMAGE_WRITE_EXTENSIONS_OPAQUE = (".jpg", ".jpeg", ".bmp")
IMAGE_WRITE_EXTENSIONS = IMAGE_WRITE_EXTENSIONS_ALPHA + IMAGE_WRITE_EXTENSIONS_OPAQUE
STALE_STAGING_SECONDS = 3600   # a staging folder untouched this long is a leftover, whoever wrote it


def file_sha256(path) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to ``path``; on success it is renamed to ``path``, else removed."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name must not match globs of the final files (e.g. *.tfrecord), so no real suffix.
    # The writer's pid@host in the name lets `remove_stale_staging` tell a killed writer's leftover from a live one.
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_host_tag()}.", suffix=".tmp",
                                   dir=path.parent)
    os.close(handle)
    try:
        yield pathlib.Path(tmp)
        # mkstemp creates the file private (0600); give the result the mode a plain open() would (umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename == str(tmp):
            # Name the file the user knows (a full disk while writing errors.json), not the temporary one.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not overtake the data on a crash
    return pathlib.Path(path)


def write_text(path, text: str):
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=2):
    return write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_image(path, image):
    """Writes an RGB(A) image (uint8, or float in [0, 1]) as PNG/JPEG by the path's extension."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ext = pathlib.Path(path).suffix.lower() or ".png"
    if ext not in IMAGE_WRITE_EXTENSIONS:
        raise FaceTexError(f"{path}: cannot write images as '{ext}'; supported: {', '.join(IMAGE_WRITE_EXTENSIONS)}")
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise ValueError(f"cannot encode {path} as {ext}")
    return write_bytes(path, encoded.tobytes())


def write_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array))
    return pathlib.Path(path)


# ------------------------------------------------------------------------------------------------ output folders
def ensure_output_dir(path) -> pathlib.Path:
    """Creates an output folder if needed and proves it is writable (a probe file) before any work is done.

    Raises:
      FaceTexError: one line saying why (the path is a file, a parent is a file, permission, full disk, ...).
    """
    path = pathlib.Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise FaceTexError(f"{path}: is a file, not a folder; the output location must be a folder (nothing was "
                           "written)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FaceTexError(f"{path}: output folder is not writable ({parent} is a file, not a folder)")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise FaceTexError(f"{path}: output folder is not writable ({err.strerror or err})") from err
    return path


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


_STAGING = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[A-Za-z0-9_]+\.partial$")
_TEMP_FILE = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.)?[A-Za-z0-9_]+\.tmp$")
_REPLACED = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)-(?P<ns>\d+)$")


def make_staging_dir(parent, name) -> pathlib.Path:
    """A new private folder ``parent/.<name>.<pid>@<host>.<random>.partial`` to fill and then rename to ``name``."""
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}@{_host_tag()}.", suffix=".partial",
                                         dir=parent))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's live process
    return True


def _newest_mtime(folder: pathlib.Path) -> float:
    times = [folder.stat().st_mtime]
    if not folder.is_dir():
        return times[0]
    times += [entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(folder)]
    return max(times)


def _is_flat_folder(path: pathlib.Path) -> bool:
    """A real folder (not a symlink) holding only files: what our staging folders look like."""
    return (path.is_dir() and not path.is_symlink()
            and all(entry.is_file(follow_symlinks=False) for entry in os.scandir(path)))


def remove_stale_staging(parent, max_age_s=STALE_STAGING_SECONDS, log=print) -> list:
    """Clears what killed runs left in an output folder; returns the paths removed or restored.

    - ``.<name>.<pid>@<host>.*.partial`` folders whose writer (same host) is no longer running, and any
      ``.<name>.*.partial`` folder (older naming, other hosts) untouched for ``max_age_s``: removed. A folder whose
      writer is alive, a recent one, or one that does not look like ours (it holds sub-folders) is kept.
    - ``.<name>.old-<pid>-<ns>`` (a previous result being replaced when the run was killed): put back as ``name``
      when that is missing, else removed, once its writer is gone.
    - ``.<name>.<pid>@<host>.*.tmp`` files of `atomic_path` (a file being written): removed under the same rule.
    """
    parent = pathlib.Path(parent)
    host, now, handled = _host_tag(), time.time(), []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return handled
    for path in entries:
        staging, replaced, temp = _STAGING.match(path.name), _REPLACED.match(path.name), _TEMP_FILE.match(path.name)
        if temp and path.is_file() and not path.is_symlink():
            staging = temp
        elif not (staging or replaced) or not _is_flat_folder(path):
            continue
        match = staging or replaced
        same_host = replaced is not None or match.group("host") == host
        writer_gone = match.group("pid") is not None and same_host and not _pid_alive(int(match.group("pid")))
        try:
            stale = writer_gone or now - _newest_mtime(path) > max_age_s
        except OSError:
            continue
        if not stale:
            continue
        if replaced and not (parent / match.group("name")).exists():
            os.rename(path, parent / match.group("name"))
            log(f"restored {parent / match.group('name')} (a killed run was replacing it)")
        elif path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
        handled.append(path)
    removed = [p for p in handled if _STAGING.match(p.name)]
    if removed:
        log(f"removed {len(removed)} stale partial folder(s) left by a killed run in {parent}")
    return handled


def store_h5_float16(path):
    """Rewrites every float32 dataset of an HDF5 file (e.g. Keras ``.weights.h5``) as float16, in place: half the
    size; Keras' `load_weights` casts the values back into float32 variables."""
    import h5py

    with h5py.File(path, "r+") as store:
        names = []
        store.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        for name in names:
            if store[name].dtype == np.float32:
                values = store[name][...]
                del store[name]
                store.create_dataset(name, data=values.astype(np.float16))
