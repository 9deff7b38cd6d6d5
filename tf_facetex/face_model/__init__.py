"""Face models: the `MorphableModel` container, converters (ICT-FaceKit, BFM) and the linear decoder.

`load_face_model(path)` is the one entry point scripts use. It accepts a converted ``.npz``, an
ICT-FaceKit folder or archive, or a Deng-layout ``BFM_model_front.mat``; with no path it looks at
``$TF_FACETEX_FACE_MODEL``, then the converted ICT model in the cache, then the shared ICT archive, then
a git clone of ICT-VGL/ICT-FaceKit. It never invents a model, and it logs what it used.
"""
import os
import pathlib

from tf_facetex import paths
from tf_facetex.errors import AssetError
from tf_facetex.face_model.model import MorphableModel

# The converter's version is in the name: a new converter never reads (nor overwrites) an old cache.
ICT_CACHE_NAME = "ict_facekit_light_v2.npz"

__all__ = ["CoefficientLayout", "FaceDecoder", "MorphableModel", "load_face_model", "convert_ict_cached"]


def __getattr__(name):
    # The decoder imports TensorFlow (seconds); load it only when asked for, so that converters and
    # `--help` of the scripts answer at once.
    if name in ("CoefficientLayout", "FaceDecoder"):
        from tf_facetex.face_model import decoder
        return getattr(decoder, name)
    raise AttributeError(f"module 'tf_facetex.face_model' has no attribute '{name}'")


def convert_ict_cached(ict_dir, out=None, log=print, progress=None) -> MorphableModel:
    """Converts an ICT-FaceKit folder once and caches the ``.npz`` (reused while the source is unchanged)."""
    from tf_facetex.face_model.ict import convert_ict

    out = pathlib.Path(out) if out else paths.cache_dir() / ICT_CACHE_NAME
    source = pathlib.Path(ict_dir).resolve()
    if out.is_file():
        try:
            cached = MorphableModel.load(out)
        except AssetError as err:
            log(f"[tf_facetex] ignoring unreadable cache {out}: {err}")
        else:
            return cached
    log(f"[tf_facetex] converting ICT-FaceKit from {source} -> {out}")
    model = convert_ict(source, progress=progress)
    model.save(out)
    return MorphableModel.load(out)


def load_face_model(path=None, allow_clone=True, log=print) -> MorphableModel:
    """Loads a face model (see the module docstring for the search order) and logs its source."""
    if path is None:
        path = os.environ.get("TF_FACETEX_FACE_MODEL") or None
    if path is not None:
        path = pathlib.Path(path).expanduser()
        if not path.exists():
            raise AssetError(f"{path}: face model not found")
        if path.suffix == ".npz":
            model = MorphableModel.load(path)
        elif path.suffix == ".mat":
            from tf_facetex.face_model.bfm import load_bfm_front
            model = load_bfm_front(path)
        else:
            model = convert_ict_cached(paths.find_ict_dir(path, allow_clone=False, log=log), log=log)
    else:
        cached = paths.cache_dir() / ICT_CACHE_NAME
        if cached.is_file():
            model = MorphableModel.load(cached)
        else:
            model = convert_ict_cached(paths.find_ict_dir(None, allow_clone=allow_clone, log=log), cached, log=log)
    log(f"[tf_facetex] face model: {model.summary()}")
    return model
