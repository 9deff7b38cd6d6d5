"""Reading a face folder back and re-rendering it under a new light or pose (scripts/relight.py).

The folder is read first and TensorFlow is imported after it (`relight_reconstruction`), so that a wrong folder is
reported in a second.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from tf_facetex import lighting_presets
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data.images import load_image
from tf_facetex.errors import FaceTexError
from tf_facetex.pipeline.result import RESULT_MARKER
from tf_facetex.reconstruction_files import check_record_numbers, load_light_map


def load_reconstruction(folder, need_light=True):
    """Reads a face folder back: {'record': coefficients.json dict, 'albedo_uv' [S, S, 3] float32,
    'light_uv' [S, S, 27] float32 or None (also when not ``need_light``: a damaged illumination.npy then does not
    block a relight under another light)}. FaceTexError when the folder is not a complete reconstruction."""
    folder = pathlib.Path(folder)
    marker = folder / RESULT_MARKER
    if not marker.is_file():
        raise FaceTexError(f"{folder}: not a reconstruction folder (no {RESULT_MARKER}; "
                           "make one with scripts/reconstruct.py)")
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise FaceTexError(f"{marker}: unreadable ({err})") from err
    check_record_numbers(record, marker)
    albedo = load_image(folder / "albedo.png", min_side=2).astype(np.float32) / 255.0
    light = load_light_map(folder / "illumination.npy", albedo.shape[0]) if need_light else None
    return {"record": record, "albedo_uv": albedo, "light_uv": light}


def coefficients_from_record(record, layout) -> np.ndarray:
    """The flat [C] coefficient vector of a coefficients.json record, checked against a model's layout."""
    parts = record.get("coefficients", {})
    sizes = {name: len(parts.get(name, [])) for name in layout.sizes}
    if sizes != layout.sizes:
        raise FaceTexError(f"the reconstruction's coefficient sizes {sizes} do not match the face model's "
                           f"{layout.sizes}; pass the --face_model it was made with "
                           f"({record.get('face_model', {}).get('source', '?')})")
    return np.concatenate([np.asarray(parts[name], np.float32) for name in layout.sizes])


def relight_reconstruction(folder, light="studio", yaw=None, pitch=None, roll=None, frontal=False, image_size=None,
                           light_scale=1.0, normalize_env=True, face_model=None, log=print):
    """Re-renders a reconstruction folder under a new light and optionally a new pose.

    Args:
      folder: a face folder written by scripts/reconstruct.py.
      light: a preset name, an SH JSON file, an equirectangular environment map (`lighting_presets.resolve_light`),
        'estimated' (the folder's own detailed light map L') or 'coarse' (its global gamma L).
      yaw, pitch, roll: degrees replacing the fitted angles (None keeps them); frontal: start from zero angles and a
        centred face.
      image_size: output size in pixels (default: the crop size, 224); the framing is the same at any size.
      light_scale: multiplies the irradiance; normalize_env: peak-normalise environment maps
        (`lighting_presets.environment_to_sh`).
      face_model: the face model the reconstruction was made with (default: as `load_face_model`).
    Returns:
      (image [H, H, 3] float in [0, 1+], mask [H, H, 1], description str).
    """
    data = load_reconstruction(folder, need_light=light == "estimated")   # first: before TensorFlow loads
    record = data["record"]

    # Lazy: TensorFlow and the renderer load after the folder was read and checked (start-up cost).
    import tensorflow as tf

    from tf_facetex import sh
    from tf_facetex.face_model import CoefficientLayout, FaceDecoder, load_face_model
    from tf_facetex.pipeline.reconstructor import render_posed
    from tf_facetex.rendering import FaceRenderer

    model = load_face_model(face_model, log=log)
    wanted = record.get("face_model", {}).get("name")
    if wanted and wanted != model.name:
        raise FaceTexError(f"{folder} was reconstructed with face model '{wanted}' but '{model.name}' is loaded; "
                           "pass the same --face_model")
    layout = CoefficientLayout.for_model(model)
    coeffs = coefficients_from_record(record, layout)
    parts = layout.split(coeffs)
    angles = np.zeros(3, np.float32) if frontal else parts["angles"].copy()
    translation = np.array([0.0, 0.0, parts["translation"][2]], np.float32) if frontal else parts["translation"]
    for axis, value in enumerate((pitch, yaw, roll)):
        if value is not None:
            angles[axis] = np.radians(value)
    albedo = data["albedo_uv"]
    uv_size = albedo.shape[0]
    if light == "estimated":
        if data["light_uv"] is None:
            raise FaceTexError(f"{folder}: no illumination.npy for --light=estimated")
        gamma, description = data["light_uv"], "the reconstruction's detailed light L'"
        if light_scale != 1.0:
            ambient = sh.with_ambient(np.zeros(27, np.float32)).numpy()
            gamma = (gamma + ambient) * light_scale - ambient
        gamma = gamma[None]
    elif light == "coarse":
        gamma = lighting_presets.scale_light(parts["gamma"], light_scale)[None]
        description = "the reconstruction's coarse light L"
    else:
        gamma, description = lighting_presets.resolve_light(light, normalize_env=normalize_env, scale=light_scale)
        gamma = gamma[None]
    renderer = FaceRenderer(model, image_size or record.get("alignment", {}).get("crop_size", CROP_SIZE), uv_size)
    part_albedo = np.asarray(model.part_albedo, np.float32).copy()
    for k, name in enumerate(model.part_names):
        if name in record.get("part_albedo", {}):
            part_albedo[k] = record["part_albedo"][name]
    image, mask = render_posed(renderer, FaceDecoder(model), layout, coeffs[None], albedo[None], gamma,
                               tf.constant(angles[None]), tf.constant(np.asarray(translation, np.float32)[None]),
                               with_parts=(model, part_albedo[None]))
    pose = ", ".join(f"{name} {value:+.1f}" for name, value in zip(("pitch", "yaw", "roll"), np.degrees(angles)))
    return image.numpy()[0], mask.numpy()[0], f"{description}; pose {pose} degrees"
