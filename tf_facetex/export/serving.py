"""SavedModel for TF Serving: aligned uint8 crops in; albedo UV, illumination UV, coefficients and re-renders out.

Signatures (H = 224, S = UV size, C = coefficients of the face model; details and a REST example in
docs/SERVING.md):

- ``serving_default(images: uint8 [B, H, H, 3])`` — ALIGNED crops (`tf_facetex.data.align`, as scripts/preprocess.py
  or `FacePreprocessor` make them; there are no landmarks in the signature, so the prior is the `PriorRegressor`):
  ``albedo_uv`` f32 [B, S, S, 3] (A'), ``illumination_uv`` f32 [B, S, S, 27] (L', Deng layout, no ambient),
  ``coefficients`` f32 [B, C], ``render`` f32 [B, H, H, 3] (R(A', L')), ``render_coarse`` f32 [B, H, H, 3]
  (R(A', L)), ``render_mask`` f32 [B, H, H, 1] (M_proj), ``visibility_uv`` f32 [B, S, S, 1] and
  ``albedo_png_bytes`` string [B] (A' as a PNG, outside of the chart filled by pull-push, ready for a renderer;
  TF Serving's REST API returns ``*_bytes`` outputs base64-encoded as ``{"b64": ...}``).
- ``refine(texture_uv f32 [B, S, S, 3], visibility_uv f32 [B, S, S, 1], prior_albedo_uv f32 [B, S, S, 3],
  gamma f32 [B, 27], normals_uv f32 [B, S, S, 3])`` -> ``albedo_uv``, ``illumination_uv``: the refinement network
  alone (unseen texels filled with the fixed noise of `refinement.network.unseen_noise`, outputs masked to the UV
  chart; gamma is the prior's coarse light and normals_uv its camera-frame normal map: the bases of a residual
  network's light map and albedo, `refinement.network.network_inputs`).

The graph is built with ``FaceRenderer(jit_stages=False)``: plain TF ops, no XLA, no py_function, so a stock
``tensorflow_model_server`` runs it. The prior path reproduces `PriorModule` in regressor mode without its eager
(numpy) steps; tests/test_export.py checks the two agree.

Versions follow TF Serving's layout, ``<base>/<name>/<version>/saved_model.pb`` (a new integer version by
default), written under a temporary name and renamed, so a running server never loads a half-written model.
``<version>/assets.extra/export_info.json`` records the face model, weights and sizes.
"""
import datetime
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tf_facetex.conventions import CROP_SIZE
from tf_facetex.errors import FaceTexError
from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
from tf_facetex.refinement.network import UNSEEN_NOISE_SEED, refine_with_network, unseen_noise
from tf_facetex.rendering import FaceRenderer

IMAGE_SIZE = CROP_SIZE
SIGNATURE_KEYS = ("serving_default", "refine")
SERVING_OUTPUTS = ("albedo_uv", "illumination_uv", "coefficients", "render", "render_coarse", "render_mask",
                   "visibility_uv", "albedo_png_bytes")
REFINE_OUTPUTS = ("albedo_uv", "illumination_uv")


def pull_push_fill(values, mask, levels=None):
    """Fills texels outside ``mask`` from coarser averages of the texels inside it (pull-push), in TF ops.

    Args:
      values: [B, S, S, C] float; mask: [S, S, 1] or [B, S, S, 1] in {0, 1}.
      levels: pyramid depth (default: down to ~1 texel).
    Returns:
      [B, S, S, C]: ``values`` inside the mask, a smooth extension of them outside (no black border).
    """
    values = tf.convert_to_tensor(values, tf.float32)
    weight = tf.broadcast_to(tf.cast(mask, tf.float32), tf.concat([tf.shape(values)[:-1], [1]], 0))
    size = int(values.shape[1])
    levels = levels or max(1, int(np.ceil(np.log2(size))))
    pyramid = [(values * weight, weight)]
    for _ in range(levels):   # pull: weighted 2x2 averages
        total, count = pyramid[-1]
        pyramid.append((tf.nn.avg_pool2d(total, 2, 2, "SAME"), tf.nn.avg_pool2d(count, 2, 2, "SAME")))
    filled = tf.math.divide_no_nan(*pyramid[-1])
    for total, count in reversed(pyramid[:-1]):   # push: coarse estimate where a level has no data
        shape = tf.shape(total)[1:3]
        coarse = tf.image.resize(filled, shape, method="bilinear")
        known = tf.clip_by_value(count, 0.0, 1.0)
        filled = known * tf.math.divide_no_nan(total, count) + (1.0 - known) * coarse
    return weight * values + (1.0 - weight) * filled


def encode_png_batch(images):
    """[B, H, W, C] float in [0, 1] -> [B] PNG strings."""
    as_uint8 = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)
    return tf.map_fn(tf.io.encode_png, as_uint8, fn_output_signature=tf.string)


class FaceTexServing(tf.Module):
    """The servable: regressor prior + refinement network + renderer for one face model (see module docstring).

    Args:
      model: the `MorphableModel`.
      regressor: a built `PriorRegressor` for the model.
      refinement_net: a built `RefinementNet`.
      uv_size: UV size S (the network's).
      image_size: crop size (224).
      info: dict recorded in assets.extra/export_info.json.
    """

    def __init__(self, model, regressor, refinement_net, uv_size, image_size=IMAGE_SIZE,
                 noise_seed=UNSEEN_NOISE_SEED, info=None, name="tf_facetex"):
        super().__init__(name=name)
        self.regressor = regressor
        self.refinement_net = refinement_net
        self.image_size = int(image_size)
        self.uv_size = int(uv_size)
        self.renderer = FaceRenderer(model, self.image_size, self.uv_size, jit_stages=False)
        self.decoder = FaceDecoder(model)
        self.layout = CoefficientLayout.for_model(model)
        self.uv_mask = self.renderer.uv_mask
        self.noise = unseen_noise(self.uv_size, noise_seed)
        self.info = dict(info or {})
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.uint8, name="images")])
        s = self.uv_size
        self.refine = tf.function(self._refine, input_signature=[
            tf.TensorSpec([None, s, s, 3], tf.float32, name="texture_uv"),
            tf.TensorSpec([None, s, s, 1], tf.float32, name="visibility_uv"),
            tf.TensorSpec([None, s, s, 3], tf.float32, name="prior_albedo_uv"),
            tf.TensorSpec([None, 27], tf.float32, name="gamma"),
            tf.TensorSpec([None, s, s, 3], tf.float32, name="normals_uv")])

    # ---------------------------------------------------------------------------------------- pieces (graph ops)
    def prior(self, images):
        """`PriorModule` (regressor mode, no masks) in graph ops: float images [B, H, H, 3] in [0, 1] -> dict."""
        coeffs = self.regressor(images, training=False)
        decoded = self.decoder.pose(coeffs)
        parts, posed = decoded["parts"], decoded["posed"]
        raster = self.renderer.rasterize(posed)
        normals_uv = self.renderer.normals_uv(vertex_normals=self.renderer.vertex_normals(posed))
        prior_albedo_uv = self.renderer.rasterize_to_uv(decoded["albedo"]) * self.uv_mask   # tone 1 (regressor)
        unwrapped = self.renderer.unwrap(images, posed, raster)
        return {"coeffs": coeffs, "gamma": parts["gamma"], "raster": raster, "normals_uv": normals_uv,
                "prior_albedo_uv": prior_albedo_uv, "visibility_uv": unwrapped.visibility,
                "texture_uv": unwrapped.texture * unwrapped.visibility}

    def _refine(self, texture_uv, visibility_uv, prior_albedo_uv, gamma, normals_uv):
        albedo, light = refine_with_network(self.refinement_net, texture_uv, visibility_uv, prior_albedo_uv, gamma,
                                            normals_uv, self.uv_mask, self.noise)
        return {"albedo_uv": albedo, "illumination_uv": light}

    def _serve(self, images):
        images = tf.cast(images, tf.float32) / 255.0
        prior = self.prior(images)
        refined = self._refine(prior["texture_uv"], prior["visibility_uv"], prior["prior_albedo_uv"], prior["gamma"],
                               prior["normals_uv"])
        albedo, light = refined["albedo_uv"], refined["illumination_uv"]
        render, mask = self.renderer.render(albedo, light, prior["raster"], prior["normals_uv"])
        coarse, _ = self.renderer.render(albedo, prior["gamma"], prior["raster"], prior["normals_uv"])
        return {"albedo_uv": albedo, "illumination_uv": light, "coefficients": prior["coeffs"], "render": render,
                "render_coarse": coarse, "render_mask": mask, "visibility_uv": prior["visibility_uv"],
                "albedo_png_bytes": encode_png_batch(pull_push_fill(albedo, self.uv_mask))}

    def signatures(self) -> dict:
        return {"serving_default": self.serve.get_concrete_function(), "refine": self.refine.get_concrete_function()}


# -------------------------------------------------------------------------------------------------- versions
def next_version(model_base) -> int:
    """1 + the largest integer version folder under ``model_base`` (1 when there is none)."""
    base = pathlib.Path(model_base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    return max(versions, default=0) + 1


def save_servable(module: FaceTexServing, base_dir, name="tf_facetex", version=None, overwrite=False) -> pathlib.Path:
    """Writes ``base_dir/name/version/`` (TF Serving's layout) atomically; returns that path.

    Raises:
      FaceTexError: the version exists and ``overwrite`` is False.
    """
    model_base = pathlib.Path(base_dir) / name
    model_base.mkdir(parents=True, exist_ok=True)
    version = int(version) if version is not None else next_version(model_base)
    if version < 1:
        raise FaceTexError(f"version must be a positive integer, got {version}")
    target = model_base / str(version)
    if target.exists() and not overwrite:
        raise FaceTexError(f"{target} exists; pass another --version or --overwrite")
    # Not a number: TF Serving ignores it while it is being written.
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base))
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        info = {**module.info, "version": version, "uv_size": module.uv_size, "image_size": module.image_size,
                "coefficient_sizes": module.layout.to_dict(), "signatures": list(SIGNATURE_KEYS),
                "tensorflow": tf.__version__,
                "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (staging / "assets.extra").mkdir(exist_ok=True)
        (staging / "assets.extra" / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_servable(path):
    """``tf.saved_model.load`` of an exported version folder, with a one-line error when it is not one."""
    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FaceTexError(f"{path}: no saved_model.pb (expected a version folder, e.g. saved_models/tf_facetex/1)")
    return tf.saved_model.load(str(path))
