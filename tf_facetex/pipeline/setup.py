"""Building the product's `Reconstructor` from what a user chose (scripts/reconstruct.py's flags, the Beam pipeline's
spec): the face model, the prior (fit or regressor) and the detail stage (`REFINER_MODES`: the per-image fit, the
trained refinement network, or the network followed by a short fit). TensorFlow loads when it is called, not on import."""
from __future__ import annotations

from tf_facetex.errors import AssetError, FaceTexError


REFINER_MODES = ("fit", "net", "net+fit")
DEFAULT_REFINER = "fit"         # scripts/reconstruct.py's and the Beam pipeline's default (README, "Refiner modes")
DEFAULT_NET_FIT_STEPS = 30      # net+fit: `refinement.net_fit.NET_FIT_STEPS` (kept equal; no TensorFlow import here)


def build_reconstructor(face_model=None, checkpoint=None, prior="fit", regressor_weights=None,
                        regressor_backbone="resnet50", uv_size=None, fit_steps=150, landmark_steps=300,
                        turntable_light="studio", log=print, refiner=None, net_fit_steps=DEFAULT_NET_FIT_STEPS,
                        **config_overrides):
    """The `Reconstructor` for these choices.

    Args:
      face_model: path or None (`load_face_model`'s search order);
      refiner: the detail stage, one of `REFINER_MODES`: 'fit' (the per-image fit, ``fit_steps`` steps), 'net'
        (one forward pass of the refinement network) or 'net+fit' (the network's A', L' as the start of a
        ``net_fit_steps``-step fit); None = 'net' when ``checkpoint`` is given, else 'fit';
      checkpoint: the network of the net modes: a shipped network folder, a refinement-training run folder or a
        checkpoint prefix; None = the shipped one (`refinement.checkpoint.default_refinement_net`);
      prior: 'fit' or 'regressor' (with ``regressor_weights`` and ``regressor_backbone``);
      uv_size: None = the network's (net modes) or the default; landmark_steps: the landmark fit's steps;
      turntable_light: the turntable's preset;
      config_overrides: other `ReconstructionConfig` fields (e.g. ``turntable_yaws=()`` for an evaluation).
    Raises FaceTexError when ``uv_size`` contradicts the network's or the mode is unknown, AssetError when the
    network cannot be found or loaded.
    """
    # Lazy: these import TensorFlow (seconds); callers reject bad inputs before building the reconstructor.
    from tf_facetex.face_model import load_face_model
    from tf_facetex.pipeline.reconstructor import ReconstructionConfig, Reconstructor
    from tf_facetex.refinement.checkpoint import default_refinement_net, load_refinement_net
    from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
    from tf_facetex.refinement.net_fit import net_fit_refiner
    from tf_facetex.refinement.network import NetworkRefiner
    from tf_facetex.rendering.renderer import DEFAULT_UV_SIZE

    mode = refiner or ("net" if checkpoint else "fit")
    if mode not in REFINER_MODES:
        raise FaceTexError(f"refiner must be one of {', '.join(REFINER_MODES)}, got {mode!r}")
    model = load_face_model(face_model, log=log)
    net = None
    if mode != "fit":
        checkpoint = checkpoint or default_refinement_net(log=log)
        net, info = load_refinement_net(checkpoint, log=log)
        if uv_size and uv_size != info["uv_size"]:
            raise FaceTexError(f"--uv_size {uv_size} but the refinement network works at {info['uv_size']}")
        uv_size = info["uv_size"]
    config = ReconstructionConfig(prior=prior, uv_size=uv_size or DEFAULT_UV_SIZE, fit_steps=fit_steps,
                                  landmark_steps=landmark_steps, turntable_light=turntable_light, **config_overrides)
    regressor = None
    if prior == "regressor":
        from tf_facetex.prior.regressor import resolve_regressor
        regressor, source = resolve_regressor(model, regressor_weights, backbone=regressor_backbone, log=log)
        if source is None:
            raise AssetError("--prior=regressor: no --regressor_weights and no shipped regressor "
                             "(saved_models/prior_regressor/ or $TF_FACETEX_PRIOR_REGRESSOR); or use --prior=fit")
    reconstructor = Reconstructor(model, config, regressor=regressor)
    if net is not None:
        renderer = reconstructor.renderer
        network = NetworkRefiner(net, renderer.uv_mask, source=info["checkpoint"])
        if mode == "net+fit":
            network = net_fit_refiner(network, renderer.uv_mask, renderer.uv_symmetry_index, steps=net_fit_steps)
        reconstructor.use_refiner(network)
    return reconstructor


def fit_refiner_with_overrides(reconstructor, steps, overrides):
    """The product's `FitRefiner` for ``reconstructor`` with some `UVFitConfig` fields replaced ('name=value' strings;
    `refinement.fit.config_with_overrides`), for measuring one lever end to end; FaceTexError on a bad entry."""
    from tf_facetex.refinement.fit import FitRefiner, UVFitConfig, config_with_overrides

    try:
        config = config_with_overrides(UVFitConfig(steps=steps), overrides)
    except ValueError as err:
        raise FaceTexError(f"--fit_overrides: {err}") from None
    renderer = reconstructor.renderer
    return FitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, config)
