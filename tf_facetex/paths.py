"""Where assets live: the shared workplace folder, the user cache, and the ICT-FaceKit model.

Search order for the face model (first hit wins, and callers report which one was used):
1. an explicit path (flag) or the environment variable ``TF_FACETEX_FACE_MODEL``;
2. the ICT-FaceKit archive in the shared folder (``$TF_FACETEX_SHARED`` or ``../shared`` next to the
   repository), unpacked once into the cache;
3. a ``git clone`` of ICT-VGL/ICT-FaceKit into the cache (what a user outside this workplace gets).
Nothing ever falls back to a made-up model.
"""
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile

from tf_facetex.errors import AssetError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ICT_GIT_URL = "https://github.com/ICT-VGL/ICT-FaceKit"


def cache_dir() -> pathlib.Path:
    """The per-user cache (``$TF_FACETEX_CACHE`` or ``~/.cache/tf_facetex``), created on demand."""
    path = pathlib.Path(os.environ.get("TF_FACETEX_CACHE", pathlib.Path.home() / ".cache" / "tf_facetex"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir():
    """The workplace's read-only shared folder, or None when there is none."""
    env = os.environ.get("TF_FACETEX_SHARED")
    candidates = [pathlib.Path(env)] if env else []
    candidates += [REPO_ROOT.parent / "shared", pathlib.Path.cwd().parent / "shared"]
    for path in candidates:
        if path.is_dir():
            return path
    return None


def faces_dir():
    """The shared folder of real face photos (``shared/faces``), or None."""
    shared = shared_dir()
    if shared is not None and (shared / "faces").is_dir():
        return shared / "faces"
    return None


def parsing_net_weights() -> pathlib.Path:
    """Where the face-parsing network's weights are looked for (``$TF_FACETEX_PARSING_NET`` or
    ``saved_models/parsing_net/parsing_net.keras``, written by scripts/train_parsing_net.py)."""
    env = os.environ.get("TF_FACETEX_PARSING_NET")
    return pathlib.Path(env) if env else REPO_ROOT / "saved_models" / "parsing_net" / "parsing_net.keras"


def refinement_net_dir() -> pathlib.Path:
    """Where the shipped refinement network is looked for (``$TF_FACETEX_REFINEMENT_NET`` or
    ``saved_models/refinement_net/``: network.json + refinement_net.weights.h5, written by
    scripts/ship_refinement_net.py)."""
    env = os.environ.get("TF_FACETEX_REFINEMENT_NET")
    return pathlib.Path(env) if env else REPO_ROOT / "saved_models" / "refinement_net"


def albedo_prior_file():
    """Where the shipped albedo prior of ICT-FaceKit is looked for: ``$TF_FACETEX_ALBEDO_PRIOR`` (a path, or
    ``none`` to keep the model's uniform tone; then None is returned) or
    ``saved_models/albedo_model/ict_albedo_prior.npz`` (written by scripts/ship_albedo_model.py)."""
    env = os.environ.get("TF_FACETEX_ALBEDO_PRIOR")
    if env and env.strip().lower() == "none":
        return None
    return pathlib.Path(env) if env else REPO_ROOT / "saved_models" / "albedo_model" / "ict_albedo_prior.npz"


PRIOR_REGRESSOR_CONFIG = "regressor.json"
PRIOR_REGRESSOR_WEIGHTS = "regressor.weights.h5"


def shipped_prior_regressor_present() -> bool:
    """Whether `prior_regressor_dir` holds a shipped regressor (both files; checked without importing TensorFlow)."""
    folder = prior_regressor_dir()
    return (folder / PRIOR_REGRESSOR_CONFIG).is_file() and (folder / PRIOR_REGRESSOR_WEIGHTS).is_file()


def prior_regressor_dir() -> pathlib.Path:
    """Where the shipped prior regressor is looked for (``$TF_FACETEX_PRIOR_REGRESSOR`` or
    ``saved_models/prior_regressor/``: regressor.json + regressor.weights.h5, written by
    scripts/ship_prior_regressor.py)."""
    env = os.environ.get("TF_FACETEX_PRIOR_REGRESSOR")
    return pathlib.Path(env) if env else REPO_ROOT / "saved_models" / "prior_regressor"


def _is_ict_dir(path: pathlib.Path) -> bool:
    return (path / "FaceXModel" / "generic_neutral_mesh.obj").is_file()


def find_ict_dir(explicit=None, allow_clone=True, log=print) -> pathlib.Path:
    """Returns an ICT-FaceKit folder (the one holding ``FaceXModel/``), unpacking or cloning if needed.

    Args:
      explicit: a folder, or the ``.tar.xz`` archive, given by the user; wins over everything else.
      allow_clone: whether to ``git clone`` ICT-VGL/ICT-FaceKit as the last resort.
      log: callable used to say which source was used.
    Raises:
      AssetError: when no source works; the message lists what was tried.
    """
    tried = []
    if explicit:
        path = pathlib.Path(explicit).expanduser()
        if path.is_file() and path.name.endswith((".tar.xz", ".tar.gz", ".tar")):
            return _unpack_ict(path, log)
        if _is_ict_dir(path):
            return path
        if _is_ict_dir(path.parent):  # the user pointed at FaceXModel/ itself
            return path.parent
        raise AssetError(f"{path}: not an ICT-FaceKit folder (expected FaceXModel/generic_neutral_mesh.obj inside)")
    unpacked = cache_dir() / "ICT-FaceKit"
    if _is_ict_dir(unpacked):
        return unpacked
    tried.append(str(unpacked))
    shared = shared_dir()
    if shared is not None:
        archive = shared / "assets" / "ICT-FaceKit.tar.xz"
        if archive.is_file():
            return _unpack_ict(archive, log)
        tried.append(str(archive))
    if allow_clone:
        clone = cache_dir() / "ICT-FaceKit-git"
        if not _is_ict_dir(clone):
            log(f"[tf_facetex] cloning {ICT_GIT_URL} into {clone} (about 400 MB)")
            try:
                subprocess.run(["git", "clone", "--depth", "1", ICT_GIT_URL, str(clone)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as err:
                tried.append(f"git clone {ICT_GIT_URL} ({type(err).__name__})")
        if _is_ict_dir(clone):
            return clone
    raise AssetError("ICT-FaceKit not found; tried: " + "; ".join(tried) +
                     ". Pass --ict_dir / --face_model or set TF_FACETEX_FACE_MODEL.")


def _unpack_ict(archive: pathlib.Path, log) -> pathlib.Path:
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    log(f"[tf_facetex] unpacking {archive} into {target}")
    # A staging folder of this process's own: two jobs started at once (e.g. the train and test sample makers)
    # must not unpack into, or delete, each other's files.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".unpack_tmp-", dir=target))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise AssetError(f"{archive}: cannot unpack ({err})") from err
        found = [p for p in staging.iterdir() if _is_ict_dir(p)]
        if not found:
            raise AssetError(f"{archive}: no ICT-FaceKit folder (FaceXModel/generic_neutral_mesh.obj) inside")
        final = target / "ICT-FaceKit"
        if _is_ict_dir(final):
            return final        # another process finished first: its complete folder is kept, ours discarded
        if final.exists():
            shutil.rmtree(final)    # an incomplete folder (not ours, not valid)
        try:
            found[0].rename(final)  # rename is atomic: a killed unpack never leaves a half folder in place
        except OSError:
            if not _is_ict_dir(final):   # lost a race to a process that has renamed its own copy: use it
                raise
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
