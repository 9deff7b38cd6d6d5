"""Loading a trained refinement network: from a `scripts/train.py` run folder (run_config.json + checkpoints/),
or from a shipped network folder (network.json + refinement_net.weights.h5, `save_shipped_net`; the repository's
is saved_models/refinement_net/, `tf_facetex.paths.refinement_net_dir`)."""
import json
import os
import pathlib

import tensorflow as tf

from tf_facetex import io_utils, paths
from tf_facetex.errors import AssetError
from tf_facetex.networks import build_refinement_net
from tf_facetex.rendering.renderer import DEFAULT_UV_SIZE

SHIPPED_CONFIG = "network.json"
SHIPPED_WEIGHTS = "refinement_net.weights.h5"


def find_training_checkpoint(path):
    """Locates a training checkpoint and its run settings.

    Accepts a `scripts/train.py` run folder (``run_config.json`` + ``checkpoints/``), its ``checkpoints/`` folder,
    or one checkpoint prefix (``.../checkpoints/ckpt-1200``).
    Returns:
      (run_config dict, checkpoint prefix str).
    Raises:
      AssetError naming what is missing.
    """
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        run_dir = path if (path / "run_config.json").is_file() else path.parent
        prefix = (tf.train.latest_checkpoint(str(path / "checkpoints")) or tf.train.latest_checkpoint(str(path)))
        if prefix is None:
            raise AssetError(f"{path}: no checkpoint (ckpt-N.index) in it or in its checkpoints/ folder")
    elif pathlib.Path(str(path) + ".index").is_file():
        prefix = str(path)
        run_dir = path.parent if (path.parent / "run_config.json").is_file() else path.parent.parent
    else:
        raise AssetError(f"{path}: not a training run folder, checkpoints folder or checkpoint prefix")
    settings = run_dir / "run_config.json"
    if not settings.is_file():
        raise AssetError(f"{settings}: missing; it records the network architecture of the checkpoint "
                         "(scripts/train.py writes it next to checkpoints/)")
    try:
        record = json.loads(settings.read_text())
    except (OSError, ValueError) as err:
        raise AssetError(f"{settings}: unreadable ({err})") from err
    return record, prefix


def is_shipped_net(path) -> bool:
    """Whether ``path`` is a shipped network folder (network.json + refinement_net.weights.h5)."""
    path = pathlib.Path(path).expanduser()
    return (path / SHIPPED_CONFIG).is_file() and (path / SHIPPED_WEIGHTS).is_file()


def default_refinement_net(log=print):
    """The shipped refinement network folder (``$TF_FACETEX_REFINEMENT_NET`` or saved_models/refinement_net/).

    Raises AssetError when it is missing (a clone without the shipped weights, or a wrong environment path)."""
    path = paths.refinement_net_dir()
    if not is_shipped_net(path):
        origin = "$TF_FACETEX_REFINEMENT_NET" if os.environ.get("TF_FACETEX_REFINEMENT_NET") else "the repository"
        raise AssetError(f"{path} (from {origin}): no shipped refinement network ({SHIPPED_CONFIG} + "
                         f"{SHIPPED_WEIGHTS}); give --checkpoint, or use --refiner=fit")
    return path


def shipped_refinement_net_or_none():
    """The shipped network folder when it exists (`default_refinement_net`), else None (the exports then fall back
    to their documented random-weight mode)."""
    path = paths.refinement_net_dir()
    return path if is_shipped_net(path) else None


def save_shipped_net(net, out_dir, record, float16=False):
    """Writes a network as a shipped folder: ``refinement_net.weights.h5`` and ``network.json`` (``record``, which
    must hold 'uv_size', plus the network's `get_config()` as 'net_config'). Atomic per file.

    ``float16``: the weights file stores every float32 tensor as float16 (half the size); Keras' `load_weights`
    casts them back into the float32 variables, so loading is unchanged. Check the outputs first
    (`tf_facetex.networks.precision.float16_output_error`). Returns the path of the weights file."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / SHIPPED_WEIGHTS
    staging = out_dir / f".{SHIPPED_WEIGHTS}.partial.weights.h5"
    net.save_weights(str(staging))
    if float16:
        io_utils.store_h5_float16(staging)
    os.replace(staging, weights)
    config = {k: v for k, v in net.get_config().items() if k not in ("name", "trainable", "dtype")}
    io_utils.write_json(out_dir / SHIPPED_CONFIG, {**record, "net_config": config})
    return weights


def _load_shipped_net(path, log):
    path = pathlib.Path(path).expanduser()
    try:
        record = json.loads((path / SHIPPED_CONFIG).read_text())
        net = build_refinement_net(dict(record["net_config"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AssetError(f"{path / SHIPPED_CONFIG}: unreadable or not a refinement network ({err})") from err
    weights = path / SHIPPED_WEIGHTS
    try:
        net.load_weights(str(weights))
    except (OSError, ValueError) as err:
        raise AssetError(f"{weights}: cannot load the refinement network ({' '.join(str(err).split())[:300]})") \
            from err
    from tf_facetex.training.checkpoints import non_finite_variables

    bad = non_finite_variables(net.weights)
    if bad:
        raise AssetError(f"{weights}: {len(bad)} weight tensor(s) hold NaN/Inf (e.g. {bad[0]})")
    uv_size = int(record["net_config"]["uv_size"])
    log(f"[tf_facetex] refinement network: shipped {record.get('name', path.name)} ({record.get('net_preset')} "
        f"preset, UV {uv_size}, {net.count_params():,} parameters, trained {record.get('steps', '?')} steps), "
        f"weights {weights} (sha256 {io_utils.file_sha256(weights)[:16]}...)")
    return net, {"checkpoint": str(path), "uv_size": uv_size, "face_model": record.get("face_model"),
                 "net_preset": record.get("net_preset"), "shipped": True}


def load_refinement_net(checkpoint, log=print):
    """A `RefinementNet` from a shipped network folder (`save_shipped_net`), or with the generator weights of a
    training checkpoint (discriminator, optimisers skipped).

    The architecture comes from the run's ``run_config.json`` (net_preset, net_overrides, white_prior, uv_size),
    the weights from ``tf.train.Checkpoint(generator=net)`` — the `generator` entry of the trainer's checkpoint
    (`FaceTexTrainer.checkpoint_items`), restored partially.
    Returns:
      (net, info dict with 'checkpoint', 'uv_size', 'face_model', 'net_preset').
    """
    if is_shipped_net(checkpoint):
        return _load_shipped_net(checkpoint, log)
    record, prefix = find_training_checkpoint(checkpoint)
    uv_size = int(record.get("uv_size") or DEFAULT_UV_SIZE)
    preset = record.get("net_preset", "paper")
    overrides = dict(record.get("net_overrides") or {})
    try:
        net = build_refinement_net(preset, uv_size=uv_size, white_prior=bool(record.get("white_prior", False)),
                                   **overrides)
    except (ValueError, TypeError) as err:
        raise AssetError(f"{checkpoint}: run_config.json describes an unknown network ({err})") from err
    try:
        status = tf.train.Checkpoint(generator=net).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as err:   # IndexError: a truncated .data
        raise AssetError(f"{prefix}: cannot restore the refinement network ({' '.join(str(err).split())[:300]})") \
            from err
    from tf_facetex.training.checkpoints import non_finite_variables

    bad = non_finite_variables(net.weights)
    if bad:
        raise AssetError(f"{prefix}: {len(bad)} weight tensor(s) hold NaN/Inf (e.g. {bad[0]}); use another checkpoint")
    log(f"[tf_facetex] refinement network: {preset} preset, UV {uv_size}, {net.count_params():,} parameters, "
        f"weights from {prefix}")
    return net, {"checkpoint": prefix, "uv_size": uv_size, "face_model": record.get("face_model"),
                 "net_preset": preset, "shipped": False}
