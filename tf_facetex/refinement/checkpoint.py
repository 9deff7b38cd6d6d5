"""Loading a trained refinement network from a `scripts/train.py` run folder (run_config.json + checkpoints/)."""
import json
import pathlib

import tensorflow as tf

from tf_facetex.errors import AssetError
from tf_facetex.networks import build_refinement_net
from tf_facetex.rendering.renderer import DEFAULT_UV_SIZE


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


def load_refinement_net(checkpoint, log=print):
    """A `RefinementNet` with the generator weights of a training checkpoint (discriminator, optimisers skipped).

    The architecture comes from the run's ``run_config.json`` (net_preset, net_overrides, white_prior, uv_size),
    the weights from ``tf.train.Checkpoint(generator=net)`` — the `generator` entry of the trainer's checkpoint
    (`FaceTexTrainer.checkpoint_items`), restored partially.
    Returns:
      (net, info dict with 'checkpoint', 'uv_size', 'face_model', 'net_preset').
    """
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
                 "net_preset": preset}
