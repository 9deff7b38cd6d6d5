"""Building the product's `Reconstructor` from what a user chose (scripts/reconstruct.py's flags, the Beam pipeline's
spec): the face model, the prior (fit or regressor) and the detail stage (the per-image fit, or a trained network
from a `scripts/train.py` checkpoint). TensorFlow loads when it is called, not on import."""
from __future__ import annotations

from tf_facetex.errors import FaceTexError


def build_reconstructor(face_model=None, checkpoint=None, prior="fit", regressor_weights=None,
                        regressor_backbone="resnet50", uv_size=None, fit_steps=150, landmark_steps=300,
                        turntable_light="studio", log=print):
    """The `Reconstructor` for these choices.

    Args:
      face_model: path or None (`load_face_model`'s search order); checkpoint: a refinement-training run folder or
        checkpoint prefix (its network replaces the per-image fit), or None; prior: 'fit' or 'regressor' (with
        ``regressor_weights`` and ``regressor_backbone``); uv_size: None = the checkpoint's or the default;
      fit_steps, landmark_steps: the fits' step counts; turntable_light: the turntable's preset.
    Raises FaceTexError when ``uv_size`` contradicts the checkpoint's.
    """
    # Lazy: these import TensorFlow (seconds); callers reject bad inputs before building the reconstructor.
    from tf_facetex.face_model import load_face_model
    from tf_facetex.pipeline.reconstructor import ReconstructionConfig, Reconstructor
    from tf_facetex.refinement.checkpoint import load_refinement_net
    from tf_facetex.refinement.network import NetworkRefiner
    from tf_facetex.rendering.renderer import DEFAULT_UV_SIZE

    model = load_face_model(face_model, log=log)
    net = None
    if checkpoint:
        net, info = load_refinement_net(checkpoint, log=log)
        if uv_size and uv_size != info["uv_size"]:
            raise FaceTexError(f"--uv_size {uv_size} but the checkpoint was trained at {info['uv_size']}")
        uv_size = info["uv_size"]
    config = ReconstructionConfig(prior=prior, uv_size=uv_size or DEFAULT_UV_SIZE, fit_steps=fit_steps,
                                  landmark_steps=landmark_steps, turntable_light=turntable_light)
    regressor = None
    if prior == "regressor":
        from tf_facetex.prior.regressor import load_regressor
        regressor = load_regressor(model, regressor_weights, backbone=regressor_backbone)
    reconstructor = Reconstructor(model, config, regressor=regressor)
    if net is not None:
        reconstructor.use_refiner(NetworkRefiner(net, reconstructor.renderer.uv_mask, source=checkpoint))
    return reconstructor
