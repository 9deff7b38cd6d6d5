"""An albedo model built from photos (docs/METHOD.md, "Albedo model from photos"): de-light unwrapped photos, complete them by symmetry,
then a weighted (missing-data) PCA in UV space, sampled at the vertices into the face model's albedo basis.

Pipeline (scripts/build_albedo_model.py runs it; the steps are numpy functions here):
1. The fitting path (`PriorModule`) gives each photo's unwrapped texture T, visibility, normals and SH light
   (`UnwrappedPhotos`). `delight` divides T by the shading, ``albedo = T / shading``, valid where the texel was
   seen (depth test, face mask; its border eroded) and where the division is trustworthy: not in attached shadow
   (shading far below the photo's median: noise is amplified), not saturated or black, not at a grazing angle.
2. `reference_albedo` pools the photos into a robust per-texel reference (median of brightness-normalised
   albedos), and `outlier_mask` then drops what the SH model cannot explain: cast shadows and dark occluders
   (luminance ratio to the reference far below its local median) and specular highlights (far above). Measuring
   the ratio to a reference, not the raw luminance, keeps eyebrows and lips, which are dark or red everywhere.
3. `symmetry_complete` fills each unseen texel from its mirror texel (the UV symmetry map), at a lower weight.
4. `weighted_pca` finds the mean and K components with per-texel weights (alternating weighted least squares,
   so texels missing on both sides are missing, not zeros); stds make coefficients ~N(0, 1).
5. `refit_lights` fits every photo's light again with that model in place of the fitting path's uniform albedo
   (whose regional colour otherwise leaks into the light), and steps 1-4 run again (`build_from_photos`).
6. `face_model_with_albedo` samples the UV mean and components at each vertex's UV (`vertex_uv`) and returns the
   face model with ``albedo_basis`` = components x stds and ``albedo_source = 'photos'``.

Light/albedo scale. One photo fixes only the product of albedo and light, per colour channel. Every light is
brought to one reference level before de-lighting (`light_level_gains`: its mean shading on the frontal mean face
equals the ambient-only light's, 0.709), so a de-lit albedo is the true albedo times that photo's exposure and
light colour relative to the reference. We keep this spread: no per-photo brightness normalisation, so exposure
and white balance are part of the population's variation and land in the first components (the build reports
the cosine between the first component and the mean: near 1 means a pure brightness mode). A model fitted to a
new photo can then take its brightness either from these coefficients or from its light.

Shapes: S = UV size, M = photos, R = texels of the PCA region, D = 3 R features (texel-major, RGB interleaved),
K = components, N = vertices.
"""
from tf_facetex.albedo_model.delight import (DelightConfig, luminance, view_cosine, delight, outlier_mask,
                                             reference_albedo, symmetry_complete)
from tf_facetex.albedo_model.pca import (PCAResult, weighted_pca, fit_coefficients, subspace_angles_degrees)
from tf_facetex.albedo_model.uv_model import (region_features, region_maps, extend_uv_maps, vertex_uv,
                                              sample_uv_maps, uv_maps_to_vertices, uv_region, UVAlbedoModel,
                                              uv_model_from_pca, face_model_with_albedo)
from tf_facetex.albedo_model.build import (REFERENCE_SHADING, sh_basis, sh_shading, frontal_normals_uv,
                                           light_level_gains, UnwrappedPhotos, delight_photos, refit_lights,
                                           robust_weights, build_uv_albedo_model, coverage_fractions,
                                           implausible_lights, atypical_photos, build_from_photos,
                                           reconstruction_errors)
from tf_facetex.albedo_model.figure import (brightness_cosine, figure_light, albedo_model_figure)

__all__ = ["DelightConfig", "luminance", "view_cosine", "delight", "outlier_mask", "reference_albedo",
           "symmetry_complete", "PCAResult", "weighted_pca", "fit_coefficients", "subspace_angles_degrees",
           "region_features", "region_maps", "extend_uv_maps", "vertex_uv", "sample_uv_maps", "uv_maps_to_vertices",
           "uv_region", "UVAlbedoModel", "uv_model_from_pca", "face_model_with_albedo", "REFERENCE_SHADING",
           "sh_basis", "sh_shading", "frontal_normals_uv", "light_level_gains", "UnwrappedPhotos", "delight_photos",
           "refit_lights", "robust_weights", "build_uv_albedo_model", "coverage_fractions", "implausible_lights",
           "atypical_photos", "build_from_photos", "reconstruction_errors", "brightness_cosine", "figure_light",
           "albedo_model_figure"]
