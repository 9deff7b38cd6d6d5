"""The trained network, then a short per-image fit from its output (the `net+fit` detail stage).

The network (`NetworkRefiner`) gives A' and L' in one forward pass: what a population of faces taught it, with
the hair-covered and unseen parts in-painted, but not the last detail of this photo. The per-image fit
(`FitRefiner`) reproduces this photo's detail but needs ~150 steps from its own start. Starting the fit at the
network's A' (and its light map as the base of the light) needs far fewer steps to reach the photo's detail, and
where the photo shows nothing the network's light, not the coarse gamma, is kept (docs/METHOD.md, "Refiner
modes").
"""
from tf_facetex.refinement.base import Refiner


class NetFitRefiner(Refiner):
    """`network` (a `NetworkRefiner`) -> {'albedo_uv', 'light_uv'} -> `fit` (a `FitRefiner`) started from it."""

    name = "net+fit"

    def __init__(self, network, fit):
        self.network = network
        self.fit = fit
        self.uv_size = network.uv_size

    def __call__(self, prior_out):
        start = self.network(prior_out)
        return self.fit(prior_out, start=start)

    def describe(self):
        fit = self.fit.describe()
        return {"name": self.name, "checkpoint": self.network.source, "steps": fit["steps"],
                "network": self.network.describe(), "fit": fit}
