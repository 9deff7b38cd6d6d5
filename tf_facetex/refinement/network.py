"""The trained detail stage: a `RefinementNet` run the way the product, the evaluation and the exports run it.

At inference the texels the photo did not show are filled with one fixed draw of the paper's N(0, 1) noise
(`unseen_noise`), so that a face's result depends neither on the call nor on the batch, and the Python pipeline,
the SavedModel and the TFLite models agree exactly (docs/METHOD.md, "Unseen texels").
"""
import numpy as np
import tensorflow as tf

from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement.checkpoint import load_refinement_net
from tf_facetex.refinement.level import anchor_to_coarse_light
from tf_facetex.refinement.uv_solver import initial_albedo

UNSEEN_NOISE_SEED = (20240, 7)        # the fixed noise that fills unseen texels at inference (see `unseen_noise`)


def unseen_noise(uv_size, seed=UNSEEN_NOISE_SEED):
    """[S, S, 3] N(0, 1) noise (the paper's unseen-texel fill), the same for every image and batch position.

    Training draws fresh noise every step (`fill_unseen_with_noise`), so the network is indifferent to which draw
    it gets; inference uses one fixed draw so that a face's result does not depend on the call or the batch, and
    the Python pipeline, the SavedModel and the TFLite models agree exactly.
    """
    return tf.random.stateless_normal([uv_size, uv_size, 3], seed=tf.constant(seed, tf.int32))


REFINE_INPUTS = ("texture_uv", "visibility_uv", "prior_albedo_uv", "gamma", "normals_uv")


def random_refine_inputs(rng, batch, uv_size, seen_fraction=0.6):
    """Random inputs of the refinement contract (`refine_with_network`, the SavedModel's ``refine`` signature, the
    TFLite refiner), float32 numpy, for export checks: texture, visibility (``seen_fraction`` of the texels), prior
    albedo, gamma ~ N(0, 0.3^2) and unit normals facing the camera (z > 0).

    Returns {name: array} with the `REFINE_INPUTS` keys ([batch, S, S, C]; gamma [batch, 27])."""
    normals = rng.normal(size=(batch, uv_size, uv_size, 3))
    normals[..., 2] = np.abs(normals[..., 2]) + 1.0
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {"texture_uv": rng.random((batch, uv_size, uv_size, 3), np.float32),
            "visibility_uv": (rng.random((batch, uv_size, uv_size, 1)) < seen_fraction).astype(np.float32),
            "prior_albedo_uv": rng.random((batch, uv_size, uv_size, 3), np.float32),
            "gamma": rng.normal(0.0, 0.3, (batch, 27)).astype(np.float32), "normals_uv": normals.astype(np.float32)}


def network_inputs(net, sample, filled_texture_uv, uv_mask):
    """What a `RefinementNet` is called with for a batch of prior outputs (training, evaluation and inference alike).

    Args:
      net: the `RefinementNet` (its ``albedo_base`` says whether the fit's starting albedo is needed);
      sample: dict with texture_uv [B, S, S, 3] (as unwrapped), visibility_uv [B, S, S, 1], prior_albedo_uv
        [B, S, S, 3], gamma [B, 27] and normals_uv [B, S, S, 3];
      filled_texture_uv: [B, S, S, 3] the texture with its unseen texels noise-filled (the encoder's input);
      uv_mask: [S, S, 1].
    Returns:
      {'texture_uv', 'prior_albedo_uv', 'gamma', 'uv_mask'[, 'base_albedo_uv']}: with albedo_base 'unwrapped' the
      base of the albedo corrections is the per-image fit's starting albedo (`uv_solver.initial_albedo`: the photo
      divided by the coarse shading where seen, the prior elsewhere).
    """
    inputs = {"texture_uv": filled_texture_uv, "prior_albedo_uv": tf.cast(sample["prior_albedo_uv"], tf.float32),
              "gamma": tf.cast(sample["gamma"], tf.float32), "uv_mask": uv_mask}
    if getattr(net, "albedo_base", "prior") == "unwrapped":
        fields = {key: tf.cast(sample[key], tf.float32)
                  for key in ("texture_uv", "visibility_uv", "prior_albedo_uv", "gamma", "normals_uv")}
        inputs["base_albedo_uv"] = initial_albedo(fields) * uv_mask
    return inputs


def refine_with_network(net, texture_uv, visibility_uv, prior_albedo_uv, gamma, normals_uv, uv_mask, noise):
    """The refinement network at inference: fill unseen texels with ``noise``, run, anchor the albedo's level to
    the coarse light (`level.anchor_to_coarse_light`: the same R(A', L'), A' under L explains the photo), mask
    to the UV chart.

    Args:
      net: a `RefinementNet`; texture_uv [B, S, S, 3] (unseen texels any value); visibility_uv [B, S, S, 1];
      prior_albedo_uv [B, S, S, 3]; gamma [B, 27] the prior's coarse light and normals_uv [B, S, S, 3] the
      camera-frame normal map (a residual network's bases, `network_inputs`; an 'absolute' network ignores them);
      uv_mask [S, S, 1]; noise [S, S, 3] (`unseen_noise`).
    Returns:
      (albedo_uv [B, S, S, 3] in [0, 1], light_uv [B, S, S, 27]), both 0 outside the UV chart.
    """
    seen = tf.cast(visibility_uv, tf.float32)
    texture = (seen * tf.cast(texture_uv, tf.float32) + (1.0 - seen) * noise) * uv_mask
    sample = {"texture_uv": texture_uv, "visibility_uv": visibility_uv, "prior_albedo_uv": prior_albedo_uv,
              "gamma": gamma, "normals_uv": normals_uv}
    out = net(network_inputs(net, sample, texture, uv_mask), training=False)
    return anchor_to_coarse_light(out["albedo"] * uv_mask, out["light"] * uv_mask, texture_uv, visibility_uv,
                                  normals_uv, gamma, uv_mask)


class NetworkRefiner(Refiner):
    """A trained `RefinementNet` (unseen texels filled with the fixed `unseen_noise`)."""

    name = "network"

    def __init__(self, net, uv_mask, source="random init", noise_seed=UNSEEN_NOISE_SEED):
        self.net = net
        self.source = str(source)
        self.uv_mask = tf.convert_to_tensor(uv_mask, tf.float32)
        self.uv_size = int(self.uv_mask.shape[0])
        self.noise = unseen_noise(self.uv_size, noise_seed)
        self._run = tf.function(
            lambda t, v, a, g, n: refine_with_network(self.net, t, v, a, g, n, self.uv_mask, self.noise),
            reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, checkpoint, uv_mask, log=print):
        net, info = load_refinement_net(checkpoint, log=log)
        return cls(net, uv_mask, source=info["checkpoint"])

    def __call__(self, prior_out):
        albedo, light = self._run(prior_out["texture_uv"], prior_out["visibility_uv"], prior_out["prior_albedo_uv"],
                                  prior_out["gamma"], prior_out["normals_uv"])
        return {"albedo_uv": albedo, "light_uv": light}

    def describe(self):
        return {"name": self.name, "checkpoint": self.source, "parameters": int(self.net.count_params()),
                "config": {k: v for k, v in self.net.get_config().items() if k not in ("name", "trainable", "dtype")}}
