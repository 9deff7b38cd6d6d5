"""The UV-space objective of the detail refinement (docs/METHOD.md, "Detail refinement"): rendering by lookup,
the loss terms every refiner shares, and the weighted total.

The geometry is frozen during refinement, so rendering is a lookup: per texel colour A' * shading(n_uv, L'),
bilinearly sampled at every pixel's texel position and masked by M_proj. The per-image fit
(`tf_facetex.refinement.fit`) and the network trainer (`tf_facetex.refinement.trainer`) both build their
objective from `uv_terms` and `tf_facetex.losses.weighted_total`, so the two detail stages optimise the same formulas.
"""
from __future__ import annotations

import tensorflow as tf

from tf_facetex import sh
from tf_facetex.losses import (LossOptions, edge_aware_smoothness, illumination_regularization, image_gradient_loss,
                               image_loss, prior_l1_loss, symmetry_loss, view_confidence)
from tf_facetex.rendering import uv as uv_lib


def render_from_lookup(maps_uv, pixel_uv, proj_mask):
    """Images from UV maps through the cached image-from-UV lookup: bilinear(maps_uv, pixel_uv) * proj_mask.

    maps_uv [B, S, S, C], pixel_uv [B, H, W, 2] (col, row), proj_mask [B, H, W, 1] -> [B, H, W, C]; the renderer's
    `render_uv_maps`, so training, the fit and inference sample UV maps identically.
    """
    return uv_lib.render_uv_maps(maps_uv, pixel_uv, proj_mask)


def shade_uv(albedo_uv, light, normals_uv):
    """A' * shading(n_uv, L'): albedo [B, S, S, 3], light map [B, S, S, 27] or global gamma [B, 27], normals
    [B, S, S, 3] -> [B, S, S, 3] (`sh.shading_uv`)."""
    return albedo_uv * sh.shading_uv(normals_uv, light)


def render_lit(batch, albedo_uv, light):
    """R(A, L) of a refinement-sample batch: the albedo shaded by ``light`` (map or gamma) and looked up -> [B, H, W, 3]."""
    return render_from_lookup(shade_uv(albedo_uv, light, batch["normals_uv"]), batch["pixel_uv"], batch["proj_mask"])


def seen_albedo(albedo_uv, visibility_uv):
    """The albedo as the photo terms see it: A' on the texels the photo showed, a constant (no gradient) elsewhere.

    albedo_uv [B, S, S, 3], visibility_uv [B, S, S, 1] -> [B, S, S, 3], the same values. Pixels of the face mask
    at its border (a hairline, an eyelid) are rendered from texels the unwrap did not count as seen (their
    footprint reaches past the mask); left free, those texels take the mixed border colours and leave a dark
    dotted line where the photo's face ends. Their albedo is then filled by the albedo terms only (symmetry,
    smoothness); the light map still fits those pixels.
    """
    return albedo_uv * visibility_uv + tf.stop_gradient(albedo_uv) * (1.0 - visibility_uv)


UV_TERM_NAMES = ("illumination", "symmetry", "smoothness", "prior_l1", "image_gradient", "image")   # `uv_terms`' keys


def symmetry_confidence(batch, options: LossOptions = LossOptions()):
    """The per-texel confidence the symmetry term weights by (`losses.symmetry_weights`), from a batch:
    None for 'uniform', visibility_uv [B, S, S, 1] for 'visibility', `losses.view_confidence` of visibility_uv
    and normals_uv for 'confidence'."""
    if options.symmetry_weighting == "uniform":
        return None
    if options.symmetry_weighting == "visibility":
        return batch["visibility_uv"]
    return view_confidence(batch["visibility_uv"], batch["normals_uv"])


def albedo_terms(albedo_uv, prior_uv, confidence_uv, uv_mask, symmetry_index=None,
                 options: LossOptions = LossOptions()) -> dict:
    """The terms of `uv_terms` that see only the albedo: {'symmetry', 'smoothness', 'prior_l1'} (scalars).

    albedo_uv, prior_uv [N, S, S, 3]; confidence_uv: None or [N, S, S, 1] (`symmetry_confidence`); uv_mask
    [S, S, 1]. A multi-photo fit passes one albedo per person with its photos' combined confidence.
    """
    return {
        "symmetry": symmetry_loss(albedo_uv, uv_mask, symmetry_index, norm=options.symmetry_norm,
                                  confidence_uv=confidence_uv,
                                  seen_weight=options.symmetry_seen_weight,
                                  seen_scale=options.symmetry_seen_scale,
                                  unseen_mirror_weight=options.symmetry_unseen_mirror_weight),
        "smoothness": edge_aware_smoothness(albedo_uv, prior_uv, uv_mask, alpha=options.smoothness_alpha,
                                            variant=options.smoothness_variant),
        "prior_l1": prior_l1_loss(albedo_uv, prior_uv, uv_mask, norm=options.prior_norm),
    }


def photo_terms(light_uv, rendered, batch, illumination_mask, options: LossOptions = LossOptions()) -> dict:
    """The terms of `uv_terms` that compare with each photo or regularise its light: {'illumination',
    'image_gradient', 'image'} (scalars; light_uv [B, S, S, 27], rendered [B, H, W, 3])."""
    image, face_mask = batch["image"], batch["face_mask"]
    return {
        "illumination": illumination_regularization(light_uv, batch["gamma"], illumination_mask,
                                                    norm=options.illumination_norm,
                                                    rgb_consistency=options.illumination_rgb_consistency),
        "image_gradient": image_gradient_loss(rendered, image, face_mask, norm=options.image_gradient_norm),
        "image": image_loss(rendered, image, face_mask, form=options.image_form),
    }


def uv_terms(albedo_uv, light_uv, rendered, batch, uv_mask, illumination_mask, symmetry_index=None,
             options: LossOptions = LossOptions()) -> dict:
    """The unweighted UV-space terms both detail stages share (paper eq. 1, 10-11, 15, 16; docs/METHOD.md).

    Args:
      albedo_uv [B, S, S, 3] A'; light_uv [B, S, S, 27] L'; rendered [B, H, W, 3] R(A', L');
      batch: refinement samples (image, face_mask, gamma, prior_albedo_uv; visibility_uv and normals_uv for a
        weighted symmetry term); uv_mask [S, S, 1] the chart;
      illumination_mask: the M_uv of the light regulariser ([S, S, 1] or [B, S, S, 1]);
      symmetry_index [S * S] or None; options: which form each term takes (`LossOptions`).
    Returns:
      {'illumination', 'symmetry', 'smoothness', 'prior_l1', 'image_gradient', 'image'}: scalars.
    """
    terms = photo_terms(light_uv, rendered, batch, illumination_mask, options)
    terms.update(albedo_terms(albedo_uv, batch["prior_albedo_uv"], symmetry_confidence(batch, options), uv_mask,
                              symmetry_index, options))
    return {name: terms[name] for name in UV_TERM_NAMES}
