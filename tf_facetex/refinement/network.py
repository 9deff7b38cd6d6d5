"""The trained detail stage: a `RefinementNet` run the way the product, the evaluation and the exports run it.

At inference the texels the photo did not show are filled with one fixed draw of the paper's N(0, 1) noise
(`unseen_noise`), so that a face's result depends neither on the call nor on the batch, and the Python pipeline,
the SavedModel and the TFLite models agree exactly (docs/METHOD.md, "Unseen texels").
"""
import tensorflow as tf

from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement.checkpoint import load_refinement_net

UNSEEN_NOISE_SEED = (20240, 7)        # the fixed noise that fills unseen texels at inference (see `unseen_noise`)


def unseen_noise(uv_size, seed=UNSEEN_NOISE_SEED):
    """[S, S, 3] N(0, 1) noise (the paper's unseen-texel fill), the same for every image and batch position.

    Training draws fresh noise every step (`fill_unseen_with_noise`), so the network is indifferent to which draw
    it gets; inference uses one fixed draw so that a face's result does not depend on the call or the batch, and
    the Python pipeline, the SavedModel and the TFLite models agree exactly.
    """
    return tf.random.stateless_normal([uv_size, uv_size, 3], seed=tf.constant(seed, tf.int32))


def refine_with_network(net, texture_uv, visibility_uv, prior_albedo_uv, uv_mask, noise):
    """The refinement network at inference: fill unseen texels with ``noise``, run, mask to the UV chart.

    Args:
      net: a `RefinementNet`; texture_uv [B, S, S, 3] (unseen texels any value); visibility_uv [B, S, S, 1];
      prior_albedo_uv [B, S, S, 3]; uv_mask [S, S, 1]; noise [S, S, 3] (`unseen_noise`).
    Returns:
      (albedo_uv [B, S, S, 3] in [0, 1], light_uv [B, S, S, 27]), both 0 outside the UV chart.
    """
    seen = tf.cast(visibility_uv, tf.float32)
    texture = (seen * tf.cast(texture_uv, tf.float32) + (1.0 - seen) * noise) * uv_mask
    out = net({"texture_uv": texture, "prior_albedo_uv": tf.cast(prior_albedo_uv, tf.float32), "uv_mask": uv_mask},
              training=False)
    return out["albedo"] * uv_mask, out["light"] * uv_mask


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
            lambda t, v, a: refine_with_network(self.net, t, v, a, self.uv_mask, self.noise), reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, checkpoint, uv_mask, log=print):
        net, info = load_refinement_net(checkpoint, log=log)
        return cls(net, uv_mask, source=info["checkpoint"])

    def __call__(self, prior_out):
        albedo, light = self._run(prior_out["texture_uv"], prior_out["visibility_uv"], prior_out["prior_albedo_uv"])
        return {"albedo_uv": albedo, "light_uv": light}

    def describe(self):
        return {"name": self.name, "checkpoint": self.source, "parameters": int(self.net.count_params()),
                "config": {k: v for k, v in self.net.get_config().items() if k not in ("name", "trainable", "dtype")}}
