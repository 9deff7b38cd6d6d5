"""Face models: the `MorphableModel` container, converters (ICT-FaceKit, BFM) and the linear decoder.

`load_face_model(path)` is the one entry point scripts use. It accepts a converted ``.npz``, an
ICT-FaceKit folder or archive, or a Deng-layout ``BFM_model_front.mat``; with no path it looks at
``$TF_FACETEX_FACE_MODEL``, then the converted ICT model in the cache, then the shared ICT archive, then
a git clone of ICT-VGL/ICT-FaceKit. It never invents a model, and it logs what it used.

A model without albedo modes (ICT-FaceKit: one uniform tone) gets the shipped albedo prior built from photos
(`albedo_prior`; ``saved_models/albedo_model/``) unless asked not to, so that what a photo does not show is
completed with a plausible face of the person's tone rather than a flat colour.
"""
import os
import pathlib

from tf_facetex import paths
from tf_facetex.errors import AssetError
from tf_facetex.face_model.model import MorphableModel

# The converter's version is in the name: a new converter never reads (nor overwrites) an old cache.
ICT_CACHE_NAME = "ict_facekit_light_v2.npz"

__all__ = ["CoefficientLayout", "FaceDecoder", "MorphableModel", "load_face_model", "convert_ict_cached",
           "with_albedo_prior", "ALBEDO_PRIOR_CHOICES"]

# load_face_model's albedo_prior: 'default' (the shipped prior when the model has no albedo modes), 'none' (keep
# the model's own albedo), or a path to an albedo-prior file (then it must fit the model).
ALBEDO_PRIOR_CHOICES = ("default", "none")


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


def with_albedo_prior(model: MorphableModel, albedo_prior="default", log=print) -> MorphableModel:
    """The model with a photo-built albedo prior attached (see `load_face_model`'s ``albedo_prior``)."""
    from tf_facetex.face_model import albedo_prior as prior_file
    from tf_facetex.io_utils import file_sha256

    if albedo_prior is None or str(albedo_prior) == "default":
        if model.albedo_source != prior_file.UNIFORM:
            return model                    # the model has its own albedo (BFM, a photo-built model, a test model)
        path = paths.albedo_prior_file()
        if path is None:
            log("[tf_facetex] albedo prior: the model's uniform tone ($TF_FACETEX_ALBEDO_PRIOR=none)")
            return model
        if not path.is_file():
            log(f"[tf_facetex] WARNING: albedo prior {path} not found; the unseen albedo is completed with a "
                "uniform tone (run scripts/ship_albedo_model.py, or set TF_FACETEX_ALBEDO_PRIOR)")
            return model
        prior = prior_file.AlbedoPrior.load(path)
        if prior.fingerprint != prior_file.mesh_fingerprint(model):
            log(f"[tf_facetex] albedo prior {path} was made for another mesh ({prior.meta.get('model_name')}); "
                "keeping the model's uniform tone")
            return model
    elif str(albedo_prior) == "none":
        return model
    else:
        path = pathlib.Path(albedo_prior).expanduser()
        prior = prior_file.AlbedoPrior.load(path)
    label = f"{path} ({prior.num_components} modes, sha256 {file_sha256(path)[:16]}...)"
    log(f"[tf_facetex] albedo prior: photo-built model {label}")
    return prior_file.attach(model, prior, label=str(path))


def load_face_model(path=None, allow_clone=True, log=print, albedo_prior="default") -> MorphableModel:
    """Loads a face model (see the module docstring for the search order) and logs its source.

    albedo_prior: 'default' attaches the shipped photo-built albedo prior (``$TF_FACETEX_ALBEDO_PRIOR`` or
    ``saved_models/albedo_model/``) when the model has no albedo modes of its own, with a warning when that file
    is missing; 'none' keeps the model's albedo; a path attaches that file (AssetError if it does not fit)."""
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
    model = with_albedo_prior(model, albedo_prior, log=log)
    log(f"[tf_facetex] face model: {model.summary()}")
    return model
