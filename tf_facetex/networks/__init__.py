"""Networks of the detail refinement module: the UV-space generator and the albedo PatchGAN discriminator."""
from tf_facetex.networks.discriminator import PATCHGAN_CONFIG, AlbedoDiscriminator
from tf_facetex.networks.refinement import (
    NUM_LIGHT_CHANNELS,
    PAPER_CONFIG,
    REFINEMENT_CONFIGS,
    SMALL_CONFIG,
    RefinementNet,
    ResidualBlock,
    build_refinement_net,
    fill_unseen_with_noise,
    white_prior_like,
)

__all__ = [
    "AlbedoDiscriminator", "NUM_LIGHT_CHANNELS", "PAPER_CONFIG", "PATCHGAN_CONFIG", "REFINEMENT_CONFIGS",
    "RefinementNet", "ResidualBlock", "SMALL_CONFIG", "build_refinement_net", "fill_unseen_with_noise",
    "white_prior_like",
]
