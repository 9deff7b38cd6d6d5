"""The albedo model figure: the mean and the first components rendered on the mean face."""

import cv2
import numpy as np
import tensorflow as tf

from tf_facetex import sh
from tf_facetex import visualize
from tf_facetex.albedo_model.build import REFERENCE_SHADING, frontal_normals_uv, light_level_gains
from tf_facetex.albedo_model.uv_model import UVAlbedoModel, region_features
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.rendering import FaceRenderer


def brightness_cosine(uv_model: UVAlbedoModel, component: int = 0) -> float:
    """|cos| between a component and the mean over the region: 1 = the component only scales the mean's brightness."""
    mean = region_features(uv_model.mean_uv, uv_model.region).astype(np.float64)
    vector = region_features(uv_model.components_uv[component], uv_model.region).astype(np.float64)
    return float(abs(mean @ vector) / max(np.linalg.norm(mean) * np.linalg.norm(vector), 1e-12))


def figure_light(frontal_normals, region, level: float = 1.0):
    """[27] a soft white light from the upper front whose mean shading on the frontal face is ``level`` (so that a
    render shows about the albedo's own brightness)."""
    light = np.asarray(visualize.PREVIEW_LIGHT, np.float32)[None]
    gains = light_level_gains(light, frontal_normals, region)[0] * (level / REFERENCE_SHADING)
    with_ambient = light.reshape(3, sh.NUM_BASIS).astype(np.float64)
    with_ambient[:, 0] += sh.AMBIENT_DC
    with_ambient *= gains[:, None]
    with_ambient[:, 0] -= sh.AMBIENT_DC
    return with_ambient.reshape(-1).astype(np.float32)


def albedo_model_figure(face_model, uv_model: UVAlbedoModel, num_components: int = 3, sigma: float = 3.0,
                        image_size: int = CROP_SIZE):
    """Mean albedo and mean +/- sigma x std of the first components: a row of UV maps (the UV model) over a row of
    renders of the mean shape, frontal, under a soft white light (the per-vertex model, as the decoder gives it).

    Returns:
      uint8 [2 * (image_size + 2) + 2, (1 + 2 * components) * (image_size + 2) + 2, 3].
    """

    count = min(num_components, uv_model.num_components)
    renderer = FaceRenderer(face_model, image_size, uv_model.mean_uv.shape[0])
    posed = tf.constant(face_model.mean_shape[None])
    raster = renderer.rasterize(posed)
    normals_uv = renderer.normals_uv(posed)
    light = figure_light(frontal_normals_uv(renderer, face_model), uv_model.region)[None]
    steps = [(None, 0.0)] + [(k, sign * sigma) for k in range(count) for sign in (-1.0, 1.0)]
    uv_row, render_row = [], []
    for k, step in steps:
        name = "mean" if k is None else f"c{k + 1} {step:+g}sd"
        uv_map = uv_model.mean_uv if k is None else uv_model.mean_uv + step * uv_model.stds[k] * uv_model.components_uv[k]
        uv_map = np.where(uv_model.known()[..., None], np.clip(uv_map, 0, 1), 1.0)
        uv_image = cv2.resize(uv_map.astype(np.float32), (image_size, image_size), interpolation=cv2.INTER_NEAREST)
        uv_row.append(visualize.label(uv_image, f"UV {name}"))
        albedo = face_model.albedo_mean + (0.0 if k is None else step * face_model.albedo_basis[k])
        albedo_uv = renderer.rasterize_to_uv(np.clip(albedo, 0, 1)[None])
        image, _ = renderer.render(albedo_uv, light, raster, normals_uv, background=1.0)
        render_row.append(visualize.label(np.clip(image.numpy()[0], 0, 1), f"render {name}"))
    return visualize.grid([uv_row, render_row])
