"""The trained network, then a short per-image fit from its output (the `net+fit` detail stage).

The network (`NetworkRefiner`) gives A' and L' in one forward pass: what a population of faces taught it, with
the hair-covered and unseen parts in-painted, but not the last detail of this photo. The per-image fit
(`FitRefiner`) reproduces this photo's detail but needs ~150 steps from its own start. A short fit started from
what the network gives needs far fewer steps. Which parts of the network's output make the better start is a
measured choice (`NET_FIT_STARTS`, docs/METHOD.md, "Refiner modes"):

- 'network': A' = the network's albedo, L' = the network's light map + the fit's residual grid (and where the
  photo shows nothing the network's light is kept instead of gamma);
- 'network_albedo': A' = the network's albedo, L' = the coarse gamma + the residual grid (the fit's own light);
- 'photo': L' as 'network'; A' = the photo divided by the network's shading where the texel was seen (the
  fit's own start, `uv_solver.initial_albedo`, with the network's light instead of gamma), the network's albedo
  where it was not (the network's in-painting).
The objective is the fit's, unchanged.
"""
import numpy as np
import tensorflow as tf

from tf_facetex import sh
from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
from tf_facetex.refinement.uv_solver import MIN_INIT_SHADING

NET_FIT_STARTS = ("network", "network_albedo", "photo")
# The product's net+fit settings (scripts/reconstruct.py --refiner=net+fit, the evaluation), chosen on the
# validation split (docs/results/net_fit_tuning.json): at most a quarter of the 150-step fit's time.
NET_FIT_STEPS = 30
NET_FIT_LEARNING_RATE = 0.01
NET_FIT_START = "network"


def net_fit_start(prior_out, network_out, how="network"):
    """The fit's start from the network's output (`NET_FIT_STARTS`).

    Args:
      prior_out: a `PriorModule` output batch (texture_uv, visibility_uv, normals_uv [B, S, S, 3], gamma [B, 27]).
      network_out: {'albedo_uv' [B, S, S, 3], 'light_uv' [B, S, S, 27]} (`NetworkRefiner`).
      how: one of `NET_FIT_STARTS`.
    Returns:
      {'albedo_uv' [B, S, S, 3], 'light_uv' [B, S, S, 27]}.
    """
    if how not in NET_FIT_STARTS:
        raise ValueError(f"net+fit start must be one of {NET_FIT_STARTS}, got {how!r}")
    albedo, light = network_out["albedo_uv"], network_out["light_uv"]
    if how == "network_albedo":
        size = int(albedo.shape[1])
        gamma = tf.cast(prior_out["gamma"], tf.float32)[:, None, None, :]
        return {"albedo_uv": albedo, "light_uv": tf.broadcast_to(gamma, tf.concat([tf.shape(albedo)[:1],
                                                                                  [size, size, 27]], 0))}
    if how == "photo":
        shading = tf.maximum(sh.shading_uv(tf.cast(prior_out["normals_uv"], tf.float32), light), MIN_INIT_SHADING)
        seen = tf.cast(prior_out["visibility_uv"], tf.float32)
        observed = tf.math.divide_no_nan(tf.cast(prior_out["texture_uv"], tf.float32), shading)
        albedo = tf.clip_by_value(observed * seen + albedo * (1.0 - seen), 0.0, 1.0)
    return {"albedo_uv": albedo, "light_uv": light}


def net_fit_refiner(network, uv_mask, symmetry_index, steps=None, learning_rate=None, start=None):
    """The product's net+fit detail stage: ``network`` (a `NetworkRefiner`), then a `FitRefiner` of ``steps`` steps
    at ``learning_rate`` (defaults: `NET_FIT_STEPS`, `NET_FIT_LEARNING_RATE`) from ``start`` (`NET_FIT_START`)."""
    config = UVFitConfig(steps=NET_FIT_STEPS if steps is None else int(steps),
                         learning_rate=NET_FIT_LEARNING_RATE if learning_rate is None else float(learning_rate))
    return NetFitRefiner(network, FitRefiner(uv_mask, symmetry_index, config), start or NET_FIT_START)


class NetFitRefiner(Refiner):
    """`network` (a `NetworkRefiner`) -> {'albedo_uv', 'light_uv'} -> `fit` (a `FitRefiner`) started from it
    (``start``: one of `NET_FIT_STARTS`)."""

    name = "net+fit"
    supports_groups = True

    def __init__(self, network, fit, start=NET_FIT_START):
        if start not in NET_FIT_STARTS:
            raise ValueError(f"net+fit start must be one of {NET_FIT_STARTS}, got {start!r}")
        self.network = network
        self.fit = fit
        self.start = start
        self.uv_size = network.uv_size

    def __call__(self, prior_out, start=None, groups=None, fit_albedo=True):
        """As `FitRefiner`; the network's output (`net_fit_start`) is the start unless ``start`` is given; with
        ``groups`` a group starts from the mean of its photos' starting albedos."""
        if start is None:
            start = net_fit_start(prior_out, self.network(prior_out), self.start)
            if groups is not None:
                groups = np.asarray(groups, np.int32)
                start = {**start, "albedo_uv": tf.math.unsorted_segment_mean(start["albedo_uv"], groups,
                                                                             int(groups.max()) + 1)}
        return self.fit(prior_out, start=start, groups=groups, fit_albedo=fit_albedo)

    def describe(self):
        fit = self.fit.describe()
        return {"name": self.name, "checkpoint": self.network.source, "steps": fit["steps"], "start": self.start,
                "network": self.network.describe(), "fit": fit}
