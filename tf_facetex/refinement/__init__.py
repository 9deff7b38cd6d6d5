"""Detail refinement (docs/METHOD.md, "Detail refinement"): the UV-space objective and the refiners.

- `objective`: rendering by lookup (`render_from_lookup`, `shade_uv`, `render_lit`) and the shared loss terms
  (`uv_terms`); the weighted total is `tf_facetex.losses.weighted_total`;
- `base.Refiner`: the interface (a prior output batch -> A', L');
- `fit`: the per-image fit (`UVFitRefiner`, the raw optimisation; `FitRefiner`, what the product ships);
- `network`: a trained `RefinementNet` at inference (`NetworkRefiner`, the fixed unseen-texel noise);
- `level`: the albedo's per-channel level anchored to the coarse light after the network (`anchor_to_coarse_light`);
- `checkpoint`: loading the network from a `scripts/train.py` run folder;
- `trainer` / `train` / `toy_data`: training the network (`FaceTexTrainer`, the loop of scripts/train.py, a toy
  world of samples for tests).
The product (`tf_facetex.pipeline`), the evaluation (`tf_facetex.evaluation`) and the exports use these refiners:
what is evaluated is what ships.
"""
from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement.checkpoint import find_training_checkpoint, load_refinement_net
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig, UVFitRefiner, coarse_light_where_unseen
from tf_facetex.refinement.network import UNSEEN_NOISE_SEED, NetworkRefiner, refine_with_network, unseen_noise
from tf_facetex.refinement.objective import render_from_lookup, render_lit, shade_uv, uv_terms

__all__ = ["UNSEEN_NOISE_SEED", "FitRefiner", "NetworkRefiner", "Refiner", "UVFitConfig", "UVFitRefiner",
           "coarse_light_where_unseen", "find_training_checkpoint", "load_refinement_net", "refine_with_network",
           "render_from_lookup", "render_lit", "shade_uv", "unseen_noise", "uv_terms"]
