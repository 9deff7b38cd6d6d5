"""Losses of the detail refinement module (paper section 5; docs/METHOD.md, "Loss terms"). See `refinement` for conventions."""
from tf_facetex.losses.refinement import (
    GAN_KINDS,
    LOSS_OPTION_PRESETS,
    LOSS_WEIGHT_PRESETS,
    SYMMETRY_WEIGHTINGS,
    TERMS,
    LossOptions,
    LossWeights,
    cross_perceptual_loss,
    edge_aware_smoothness,
    gan_discriminator_loss,
    gan_generator_loss,
    illumination_regularization,
    image_gradient_loss,
    image_loss,
    masked_mean,
    mirror_uv,
    prior_l1_loss,
    roll_batch,
    saturating_l1,
    smoothness_weights,
    symmetry_loss,
    symmetry_weights,
    total_generator_loss,
    view_confidence,
)
from tf_facetex.losses.weighting import weighted_total

__all__ = [
    "GAN_KINDS", "LOSS_OPTION_PRESETS", "LOSS_WEIGHT_PRESETS", "LossOptions", "LossWeights", "SYMMETRY_WEIGHTINGS",
    "TERMS", "cross_perceptual_loss", "edge_aware_smoothness", "gan_discriminator_loss", "gan_generator_loss",
    "illumination_regularization", "image_gradient_loss", "image_loss", "masked_mean", "mirror_uv",
    "prior_l1_loss", "roll_batch", "saturating_l1", "smoothness_weights", "symmetry_loss", "symmetry_weights",
    "total_generator_loss", "view_confidence", "weighted_total",
]
