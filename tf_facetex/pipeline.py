"""The product pipeline: photo -> aligned faces -> prior -> detail refinement -> renders and files a user keeps.

SPEC section 1 end to end, by concept:
- refiners (`Refiner`): the detail stage behind one interface. `FitRefiner` optimises A' and L' per image with the
  paper's UV-space losses (`tf_facetex.refine_fit`; no trained weights: the embedded default). `NetworkRefiner`
  runs a trained `RefinementNet`, restored from a `scripts/train.py` run folder (`load_refinement_net`).
- `Reconstructor`: aligned faces -> `FaceResult` (coefficients, A', L', shading, renders R(A', L') and R(A', L),
  meshes, a relit turntable). `render_posed` re-renders any albedo under any light and pose (relighting).
- `write_face_outputs`: one face folder (`OUTPUT_FILES`), and `reconstruct_inputs`: the batch runner of
  scripts/reconstruct.py (progress bar, per-file errors, a face folder is written under a temporary name and
  renamed when complete, `errors.json`, an `index.html` contact sheet).

TensorFlow is imported only when a `Reconstructor` is built (the batch runner builds it at the first detected
face), so bad inputs are reported in about a second.
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import pathlib
import shutil
import tempfile
import time
import traceback
from typing import Callable, List, Optional, Sequence

import numpy as np

from tf_facetex.errors import AssetError, FaceTexError

IMAGE_SIZE = 224
DEFAULT_UV_SIZE = 256
UNSEEN_NOISE_SEED = (20240, 7)        # the fixed noise that fills unseen texels at inference (see `unseen_noise`)
TURNTABLE_YAWS = tuple(float(a) for a in np.linspace(-60.0, 60.0, 8))
TURNTABLE_LIGHT = "studio"
RESULT_MARKER = "coefficients.json"   # a face folder is complete when it exists under its final name
FORMAT = "tf_facetex.reconstruction/1"

# What a face folder holds (also the legend of index.html and of the README's "Outputs" section).
OUTPUT_FILES = {
    "albedo.png": "A': the detailed albedo UV texture (lighting removed), dilated outside the UV chart",
    "illumination.npy": "L': float32 [S, S, 27] per-texel SH light (Deng layout, no 0.8 ambient; dilated)",
    "shading.png": "the shading L' gives the face's normal map, per texel (clipped to [0, 1])",
    "visibility.png": "texels the photo showed (white) vs. completed ones (black)",
    "mesh.obj": "textured mesh (metres, y up, face towards +z; `vt` half-texel exact)",
    "mesh.mtl": "material referencing albedo.png",
    "coefficients.json": "named coefficients, tone, face model, alignment transform, camera, metrics",
    "aligned.png": "the aligned 224 x 224 input crop",
    "render_detailed.png": "R(A', L'): the re-render with the detailed light (RGBA, alpha = rendered face)",
    "render_coarse.png": "R(A', L): the same albedo under the global (coarse) SH light (RGBA)",
    "overlay.jpg": "R(A', L') pasted back onto the original photo (inside the face mask)",
    "turntable.png": "the albedo relit by a fixed preset light at 8 yaw angles",
    "thumbnail.jpg": "aligned | R(A', L') | albedo, for the contact sheet",
}


# ================================================================================================== refiners
def unseen_noise(uv_size, seed=UNSEEN_NOISE_SEED):
    """[S, S, 3] N(0, 1) noise (the paper's unseen-texel fill), the same for every image and batch position.

    Training draws fresh noise every step (`fill_unseen_with_noise`), so the network is indifferent to which draw
    it gets; inference uses one fixed draw so that a face's result does not depend on the call or the batch, and
    the Python pipeline, the SavedModel and the TFLite models agree exactly.
    """
    import tensorflow as tf

    return tf.random.stateless_normal([uv_size, uv_size, 3], seed=tf.constant(seed, tf.int32))


def refine_with_network(net, texture_uv, visibility_uv, prior_albedo_uv, uv_mask, noise):
    """The refinement network at inference: fill unseen texels with ``noise``, run, mask to the UV chart.

    Args:
      net: a `RefinementNet`; texture_uv [B, S, S, 3] (unseen texels any value); visibility_uv [B, S, S, 1];
      prior_albedo_uv [B, S, S, 3]; uv_mask [S, S, 1]; noise [S, S, 3] (`unseen_noise`).
    Returns:
      (albedo_uv [B, S, S, 3] in [0, 1], light_uv [B, S, S, 27]), both 0 outside the UV chart.
    """
    import tensorflow as tf

    seen = tf.cast(visibility_uv, tf.float32)
    texture = (seen * tf.cast(texture_uv, tf.float32) + (1.0 - seen) * noise) * uv_mask
    out = net({"texture_uv": texture, "prior_albedo_uv": tf.cast(prior_albedo_uv, tf.float32), "uv_mask": uv_mask},
              training=False)
    return out["albedo"] * uv_mask, out["light"] * uv_mask


class Refiner:
    """Detail refinement: a `PriorModule` output dict (batch) -> {'albedo_uv' [B, S, S, 3], 'light_uv' [B, S, S, 27]}.

    Attributes: ``name`` (for reports), ``uv_size`` (the UV size it needs, or None for any).
    """

    name = "refiner"
    uv_size = None

    def __call__(self, prior_out) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


def blur_uv(maps, sigma):
    """Separable Gaussian blur of UV maps: [B, S, S, C], sigma in texels -> [B, S, S, C] (zero padding)."""
    import tensorflow as tf

    radius = max(1, int(round(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / float(sigma)) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    channels = int(maps.shape[-1])
    horizontal = tf.constant(np.tile(taps[None, :, None, None], [1, 1, channels, 1]))
    vertical = tf.constant(np.tile(taps[:, None, None, None], [1, 1, channels, 1]))
    out = tf.nn.depthwise_conv2d(maps, horizontal, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "SAME")


def coarse_light_where_unseen(light_uv, gamma, visibility_uv, sigma):
    """L' where the photo constrains it, the coarse L elsewhere, blended over ~2 sigma texels.

    The UV fit's light regulariser (||M_uv (L' - L)||^2) and image losses only reach texels the photo shows, so
    elsewhere (under the chin, under hair) its low-resolution light residual drifts freely and shades the render
    with dark blotches. Without evidence, the coarse light is the estimate: w = clip(2 blur(M_uv), 0, 1) is 1 on
    and just around the seen texels and fades to 0 away from them.

    Args:
      light_uv [B, S, S, 27]; gamma [B, 27]; visibility_uv [B, S, S, 1]; sigma: blur in texels.
    Returns:
      [B, S, S, 27].
    """
    import tensorflow as tf

    weight = tf.clip_by_value(2.0 * blur_uv(tf.cast(visibility_uv, tf.float32), sigma), 0.0, 1.0)
    coarse = tf.cast(gamma, tf.float32)[:, None, None, :]
    return coarse + weight * (light_uv - coarse)


class FitRefiner(Refiner):
    """Per-image optimisation of A' and L' with the paper's UV-space losses (no weights; SPEC section 6).

    Args:
      uv_mask [S, S, 1], symmetry_index [S * S]: the renderer's; config: `UVFitConfig`.
      unseen_light: 'coarse' (default) replaces the fitted light by the coarse L away from the texels the photo
        shows (`coarse_light_where_unseen`); 'fit' keeps the raw fit everywhere.
    """

    name = "fit"

    def __init__(self, uv_mask, symmetry_index=None, config=None, unseen_light="coarse"):
        from tf_facetex.refine_fit import UVFitConfig, UVFitRefiner

        if unseen_light not in ("coarse", "fit"):
            raise ValueError(f"unseen_light must be 'coarse' or 'fit', got {unseen_light!r}")
        self.config = config or UVFitConfig()
        self.unseen_light = unseen_light
        self.uv_mask = uv_mask
        self.fit = UVFitRefiner(uv_mask, symmetry_index, self.config)

    def __call__(self, prior_out):
        result = self.fit(prior_out)
        light = result["light_uv"]
        if self.unseen_light == "coarse":
            size = int(light.shape[1])
            light = coarse_light_where_unseen(light, prior_out["gamma"], prior_out["visibility_uv"],
                                              sigma=max(1.0, size / 32.0)) * self.uv_mask
        return {"albedo_uv": result["albedo_uv"], "light_uv": light,
                "loss_first": result["loss"][0] if result["loss"] else None,
                "loss_last": result["loss"][-1] if result["loss"] else None}

    def describe(self):
        return {"name": self.name, "steps": self.config.steps, "learning_rate": self.config.learning_rate,
                "light_resolution": self.config.light_resolution, "weights": self.config.weights,
                "unseen_light": self.unseen_light, "solver": self.config.solver}


class NetworkRefiner(Refiner):
    """A trained `RefinementNet` (unseen texels filled with the fixed `unseen_noise`)."""

    name = "network"

    def __init__(self, net, uv_mask, source="random init", noise_seed=UNSEEN_NOISE_SEED):
        import tensorflow as tf

        self.net = net
        self.source = str(source)
        self.uv_mask = tf.convert_to_tensor(uv_mask, tf.float32)
        self.uv_size = int(self.uv_mask.shape[0])
        self.noise = unseen_noise(self.uv_size, noise_seed)
        self._run = tf.function(
            lambda t, v, a: refine_with_network(self.net, t, v, a, self.uv_mask, self.noise), reduce_retracing=True)

    @classmethod
    def from_checkpoint(cls, checkpoint, uv_mask, log=print):
        net, info = load_refinement_net(checkpoint, log=log)
        return cls(net, uv_mask, source=info["checkpoint"])

    def __call__(self, prior_out):
        albedo, light = self._run(prior_out["texture_uv"], prior_out["visibility_uv"], prior_out["prior_albedo_uv"])
        return {"albedo_uv": albedo, "light_uv": light}

    def describe(self):
        return {"name": self.name, "checkpoint": self.source, "parameters": int(self.net.count_params()),
                "config": {k: v for k, v in self.net.get_config().items() if k not in ("name", "trainable", "dtype")}}


def find_training_checkpoint(path):
    """Locates a training checkpoint and its run settings.

    Accepts a `scripts/train.py` run folder (``run_config.json`` + ``checkpoints/``), its ``checkpoints/`` folder,
    or one checkpoint prefix (``.../checkpoints/ckpt-1200``).
    Returns:
      (run_config dict, checkpoint prefix str).
    Raises:
      AssetError naming what is missing.
    """
    import tensorflow as tf

    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        run_dir = path if (path / "run_config.json").is_file() else path.parent
        prefix = (tf.train.latest_checkpoint(str(path / "checkpoints")) or tf.train.latest_checkpoint(str(path)))
        if prefix is None:
            raise AssetError(f"{path}: no checkpoint (ckpt-N.index) in it or in its checkpoints/ folder")
    elif pathlib.Path(str(path) + ".index").is_file():
        prefix = str(path)
        run_dir = path.parent if (path.parent / "run_config.json").is_file() else path.parent.parent
    else:
        raise AssetError(f"{path}: not a training run folder, checkpoints folder or checkpoint prefix")
    settings = run_dir / "run_config.json"
    if not settings.is_file():
        raise AssetError(f"{settings}: missing; it records the network architecture of the checkpoint "
                         "(scripts/train.py writes it next to checkpoints/)")
    try:
        record = json.loads(settings.read_text())
    except (OSError, ValueError) as err:
        raise AssetError(f"{settings}: unreadable ({err})") from err
    return record, prefix


def load_refinement_net(checkpoint, log=print):
    """A `RefinementNet` with the generator weights of a training checkpoint (discriminator, optimisers skipped).

    The architecture comes from the run's ``run_config.json`` (net_preset, net_overrides, white_prior, uv_size),
    the weights from ``tf.train.Checkpoint(generator=net)`` — the `generator` entry of the trainer's checkpoint
    (`tf_facetex.training.checkpoints.make_checkpoint`), restored partially.
    Returns:
      (net, info dict with 'checkpoint', 'uv_size', 'face_model', 'net_preset').
    """
    import tensorflow as tf

    from tf_facetex.networks import build_refinement_net

    record, prefix = find_training_checkpoint(checkpoint)
    uv_size = int(record.get("uv_size") or DEFAULT_UV_SIZE)
    preset = record.get("net_preset", "paper")
    overrides = dict(record.get("net_overrides") or {})
    try:
        net = build_refinement_net(preset, uv_size=uv_size, white_prior=bool(record.get("white_prior", False)),
                                   **overrides)
    except (ValueError, TypeError) as err:
        raise AssetError(f"{checkpoint}: run_config.json describes an unknown network ({err})") from err
    try:
        status = tf.train.Checkpoint(generator=net).restore(prefix).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        raise AssetError(f"{prefix}: cannot restore the refinement network ({' '.join(str(err).split())[:300]})") \
            from err
    log(f"[tf_facetex] refinement network: {preset} preset, UV {uv_size}, {net.count_params():,} parameters, "
        f"weights from {prefix}")
    return net, {"checkpoint": prefix, "uv_size": uv_size, "face_model": record.get("face_model"),
                 "net_preset": preset}


# ================================================================================================== reconstruction
@dataclasses.dataclass
class ReconstructionConfig:
    prior: str = "fit"                  # 'fit' (no weights) or 'regressor'
    uv_size: int = DEFAULT_UV_SIZE
    fit_steps: int = 150                # UV-fit (detail stage without weights) Adam steps
    landmark_steps: int = 300           # landmark-fit steps of the fitting prior
    image_size: int = IMAGE_SIZE
    mask_unwrap: bool = True            # unwrap only texels inside the face mask (no hair / occluders)
    turntable_light: str = TURNTABLE_LIGHT
    turntable_yaws: tuple = TURNTABLE_YAWS


@dataclasses.dataclass
class FaceResult:
    """One reconstructed face (numpy; H = image size, S = UV size, N = vertices)."""

    face: object                    # the `AlignedFace` (crop, landmarks, transform, inverse, original_shape, ...)
    coeffs: np.ndarray              # [C] in the model's `CoefficientLayout`
    tone: np.ndarray                # [3] albedo tone (models without an albedo basis; part of the albedo)
    albedo_uv: np.ndarray           # [S, S, 3] A' in [0, 1], 0 outside the chart
    light_uv: np.ndarray            # [S, S, 27] L'
    shading_uv: np.ndarray          # [S, S, 3] shading of the normal map by L'
    normals_uv: np.ndarray          # [S, S, 3] camera-frame normals
    visibility_uv: np.ndarray       # [S, S, 1]
    render_detailed: np.ndarray     # [H, H, 3] R(A', L')
    render_coarse: np.ndarray       # [H, H, 3] R(A', L), L = gamma
    render_mask: np.ndarray         # [H, H, 1] M_proj
    face_mask: np.ndarray           # [H, H, 1] M_face = face (skin) mask x M_proj: where the photo is explained
    vertices: np.ndarray            # [N, 3] fitted identity + expression, model frame, decimetres (unposed)
    normals: np.ndarray             # [N, 3] their unit normals
    posed_vertices: np.ndarray      # [N, 3] world frame (camera at z = +10 dm)
    posed_normals: np.ndarray       # [N, 3]
    turntable: Optional[np.ndarray]  # [H, H * views, 3] in [0, 1], or None
    metrics: dict


def _numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def render_posed(renderer, decoder, layout, coeffs, albedo_uv, light, angles=None, translation=None,
                 background=0.0):
    """Renders faces with given coefficients under any light and pose (relighting, turntables).

    Args:
      renderer: a `FaceRenderer` (its image size is the output size); decoder: `FaceDecoder`; layout: its layout.
      coeffs: [B, C] (identity and expression used; angles / translation unless overridden).
      albedo_uv: [B, S, S, 3]; light: [B, 27] global SH or [B, S, S, 27] per-texel map.
      angles: [B, 3] (pitch, yaw, roll) radians, or None = the coefficients'; translation: [B, 3] or None.
    Returns:
      (images [B, H, H, 3], masks [B, H, H, 1]) as tensors.
    """
    import tensorflow as tf

    from tf_facetex import camera

    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    parts = layout.split(coeffs)
    angles = parts["angles"] if angles is None else tf.convert_to_tensor(angles, tf.float32)
    translation = parts["translation"] if translation is None else tf.convert_to_tensor(translation, tf.float32)
    vertices = decoder({"id": parts["id"], "exp": parts["exp"]})["vertices"]
    posed = camera.rigid_transform(vertices, angles, translation)
    raster = renderer.rasterize(posed)
    normals_uv = renderer.normals_uv(posed_vertices=posed)
    return renderer.render(tf.convert_to_tensor(albedo_uv, tf.float32), light, raster, normals_uv,
                           background=background)


def turntable_poses(count_or_yaws=TURNTABLE_YAWS):
    """(angles [V, 3] radians, translation [V, 3]) of a frontal turntable: yaw only, the face centred."""
    yaws = np.radians(np.asarray(count_or_yaws, np.float32))
    angles = np.stack([np.zeros_like(yaws), yaws, np.zeros_like(yaws)], axis=-1)
    return angles, np.zeros_like(angles)


class Reconstructor:
    """Aligned faces -> `FaceResult`s: prior (fit or regressor) -> refiner (fit or network) -> renders.

    Args:
      model: the `MorphableModel`.
      config: `ReconstructionConfig`.
      refiner: a `Refiner`; default `FitRefiner` with ``config.fit_steps``.
      regressor: a `PriorRegressor` (needed when ``config.prior == 'regressor'``).
    """

    def __init__(self, model, config: ReconstructionConfig = ReconstructionConfig(), refiner: Refiner = None,
                 regressor=None):
        from tf_facetex.prior.landmark_fit import LandmarkFitConfig
        from tf_facetex.prior.module import PriorConfig, PriorModule
        from tf_facetex.refine_fit import UVFitConfig
        from tf_facetex.rendering import FaceRenderer

        if refiner is not None and refiner.uv_size and refiner.uv_size != config.uv_size:
            raise FaceTexError(f"the refinement network works at UV {refiner.uv_size}, the pipeline at "
                               f"{config.uv_size}; use --uv_size {refiner.uv_size}")
        self.model = model
        self.config = config
        self.renderer = FaceRenderer(model, config.image_size, config.uv_size)
        prior_config = PriorConfig(mode=config.prior, image_size=config.image_size, uv_size=config.uv_size,
                                   landmark=LandmarkFitConfig(steps=config.landmark_steps),
                                   mask_unwrap=config.mask_unwrap)
        try:
            self.prior = PriorModule(model, prior_config, regressor=regressor, renderer=self.renderer)
        except ValueError as err:
            raise FaceTexError(str(err)) from err
        self.refiner = refiner or FitRefiner(self.renderer.uv_mask, self.renderer.uv_symmetry_index,
                                             UVFitConfig(steps=config.fit_steps))
        self.decoder = self.prior.decoder
        self.layout = self.prior.layout

    def use_refiner(self, refiner: Refiner):
        """Replaces the detail stage (e.g. a `NetworkRefiner` built on this reconstructor's `renderer.uv_mask`)."""
        if refiner.uv_size and refiner.uv_size != self.config.uv_size:
            raise FaceTexError(f"the refinement network works at UV {refiner.uv_size}, the pipeline at "
                               f"{self.config.uv_size}; use --uv_size {refiner.uv_size}")
        self.refiner = refiner

    @property
    def uv_mask(self) -> np.ndarray:
        """[S, S, 1] float32, 1 inside the UV chart."""
        return self.renderer.uv_mask.numpy()

    def describe(self) -> dict:
        return {"prior": self.config.prior, "refiner": self.refiner.describe(), "uv_size": self.config.uv_size,
                "image_size": self.config.image_size, "landmark_steps": self.config.landmark_steps}

    def reconstruct(self, faces: Sequence) -> List[FaceResult]:
        """Reconstructs a batch of `AlignedFace`s (crops at the config's image size) -> one `FaceResult` each."""
        import tensorflow as tf

        from tf_facetex import metrics

        if not faces:
            return []
        images = np.stack([face.image for face in faces]).astype(np.float32) / 255.0
        landmarks = np.stack([face.landmarks for face in faces]).astype(np.float32)
        masks = np.stack([(face.mask if face.mask is not None else face.valid) for face in faces])[..., None]
        prior_out = self.prior(images, landmarks, masks.astype(np.float32))
        refined = self.refiner(prior_out)
        albedo_uv, light_uv = refined["albedo_uv"], refined["light_uv"]
        posed = prior_out["posed_vertices"]
        raster = self.renderer.rasterize(posed)
        normals_uv = prior_out["normals_uv"]
        detailed, render_mask = self.renderer.render(albedo_uv, light_uv, raster, normals_uv)
        coarse, _ = self.renderer.render(albedo_uv, prior_out["gamma"], raster, normals_uv)
        shading_uv = self.renderer.shading_uv(light_uv, normals_uv) * self.renderer.uv_mask
        parts = self.layout.split(prior_out["coeffs"])
        decoded = self.decoder({"id": parts["id"], "exp": parts["exp"]})
        face_mask = prior_out["face_mask"]
        psnr = {
            "prior_psnr_db": prior_out["coarse_psnr"],
            "coarse_psnr_db": metrics.masked_psnr(tf.clip_by_value(coarse, 0, 1), images, face_mask),
            "detailed_psnr_db": metrics.masked_psnr(tf.clip_by_value(detailed, 0, 1), images, face_mask),
        }
        posed_normals = self.renderer.vertex_normals(posed)
        turntables = self._turntables(prior_out["coeffs"], albedo_uv) if self.config.turntable_yaws else None
        # Every batch tensor to numpy once (converting inside the loop copied the whole batch per face:
        # ~7x slower at batch 16, scripts/bench.py).
        psnr = {name: _numpy(value) for name, value in psnr.items()}
        arrays = {name: _numpy(value) for name, value in {
            "coeffs": prior_out["coeffs"], "tone": prior_out["tone"], "albedo_uv": albedo_uv, "light_uv": light_uv,
            "shading_uv": shading_uv, "normals_uv": normals_uv, "visibility_uv": prior_out["visibility_uv"],
            "render_detailed": detailed, "render_coarse": coarse, "render_mask": render_mask, "face_mask": face_mask,
            "vertices": decoded["vertices"], "normals": decoded["normals"], "posed_vertices": posed,
            "posed_normals": posed_normals}.items()}
        landmark_error = _numpy(prior_out["landmark_error"]) if "landmark_error" in prior_out else None
        out = []
        for b, face in enumerate(faces):
            face_metrics = {name: float(value[b]) for name, value in psnr.items()}
            if landmark_error is not None:
                face_metrics["landmark_error_px"] = float(landmark_error[b])
            face_metrics["uv_seen_fraction"] = float(arrays["visibility_uv"][b].sum() / max(self.uv_mask.sum(), 1.0))
            out.append(FaceResult(face=face, **{name: value[b] for name, value in arrays.items()},
                                  turntable=None if turntables is None else turntables[b], metrics=face_metrics))
        return out

    def render(self, coeffs, albedo_uv, light, angles=None, translation=None):
        """`render_posed` with this reconstructor's renderer: -> (images [B, H, H, 3], masks [B, H, H, 1])."""
        return render_posed(self.renderer, self.decoder, self.layout, coeffs, albedo_uv, light, angles, translation)

    def _turntables(self, coeffs, albedo_uv):
        """[B] strips [H, H * V, 3]: each albedo relit by the preset light at the config's yaws (face centred)."""
        import tensorflow as tf

        from tf_facetex.lighting_presets import preset

        angles, translation = turntable_poses(self.config.turntable_yaws)
        views = angles.shape[0]
        gamma = np.tile(preset(self.config.turntable_light)[None], [views, 1])
        strips = []
        for b in range(int(coeffs.shape[0])):
            images, _ = self.render(tf.repeat(coeffs[b:b + 1], views, axis=0),
                                    tf.repeat(albedo_uv[b:b + 1], views, axis=0), gamma, angles, translation)
            strips.append(np.concatenate(list(np.clip(images.numpy(), 0.0, 1.0)), axis=1))
        return strips


# ================================================================================================== face folders
@dataclasses.dataclass
class OutputOptions:
    mesh_pose: str = "unposed"        # 'unposed' (identity + expression, model frame) or 'posed' (as in the photo)
    mesh_normals: bool = True         # write `vn`
    thumbnail_size: int = 128


def coefficients_record(result: FaceResult, model, layout, source, info=None) -> dict:
    """The content of coefficients.json (plain JSON types)."""
    from tf_facetex.data.align import apply_affine

    parts = {name: result.coeffs[part].tolist() for name, part in layout.slices.items()}
    face = result.face
    pitch, yaw, roll = np.degrees(result.coeffs[layout.slices["angles"]]).tolist()
    record = {
        "format": FORMAT,
        "source_image": str(source),
        "face_index": int(getattr(face, "face_index", 0)),
        "face_model": {"name": model.name, "source": model.source, "albedo_source": model.albedo_source,
                       "num_vertices": model.num_vertices, "coefficient_sizes": layout.to_dict()},
        "coefficients": parts,
        "coefficient_order": list(layout.sizes),
        "expression_names": list(model.exp_names),
        "angles_degrees": {"pitch": pitch, "yaw": yaw, "roll": roll},
        "tone": result.tone.tolist(),
        "alignment": {
            "crop_size": int(face.image.shape[0]),
            "transform": np.asarray(face.transform).tolist(),
            "inverse": np.asarray(face.inverse).tolist(),
            "original_shape": [int(v) for v in face.original_shape[:2]],
            "landmarks_crop": np.asarray(face.landmarks).tolist(),
            "landmarks_photo": apply_affine(face.inverse, face.landmarks).tolist(),
            "box": None if face.box is None else np.asarray(face.box).tolist(),
            "detector_score": float(face.score),
        },
        "conventions": {
            "coefficients": "[id, exp, tex, angles(3, radians: pitch, yaw, roll), gamma(27), translation(3, dm)]",
            "pose": "R = Rz(roll) Ry(yaw) Rx(pitch), posed = R v + t; model units decimetres, y up, face towards +z",
            "camera": "at z = +10 dm looking down -z, focal 1015 px at 224 px, principal point (size - 1) / 2",
            "gamma": "Deng layout [R0..R8, G0..G8, B0..B8]; 0.8 is added to each DC term at shading time",
            "albedo": "albedo.png = A' in the photo's colour values (the method does not linearise); the prior's "
                      "tone is already in it",
            "alignment": "transform maps photo pixels -> crop pixels (x right, y down, integer pixel centres)",
            "mesh": "mesh.obj in metres (x 0.1 of the model's decimetres), same frame",
        },
        "metrics": result.metrics,
    }
    if info:
        record.update(info)
    return record


def _rgba(colour, alpha):
    """[H, W, 3] float + [H, W, 1] -> uint8 [H, W, 4]."""
    from tf_facetex.visualize import to_uint8

    return np.concatenate([to_uint8(np.clip(colour, 0, 1)), to_uint8(np.clip(alpha, 0, 1))], axis=-1)


def composite(image, render, mask):
    """The render over the image inside the mask: [H, W, 3] floats in [0, 1], [H, W, 1] -> [H, W, 3]."""
    return np.clip(render, 0, 1) * mask + np.asarray(image, np.float32) * (1.0 - mask)


def photo_overlay(result: FaceResult, photo, feather_px=1.5):
    """R(A', L') pasted back onto the original photo inside the face mask M_face (the region the reconstruction
    explains; hair, neck and background stay the photo's): uint8 [H0, W0, 3], edges feathered a little."""
    import cv2

    from tf_facetex.data.align import paste_back

    mask = result.face_mask[..., 0] * result.face.valid
    if feather_px > 0:
        mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather_px) * (mask > 0)
    return paste_back(np.clip(result.render_detailed, 0, 1).astype(np.float32), result.face.transform,
                      result.face.original_shape, mask=mask, background=photo)


def thumbnail(result: FaceResult, size=128):
    """aligned | R(A', L') over the crop | albedo, each ``size`` px: uint8 [size, 3 size, 3]."""
    import cv2

    from tf_facetex.visualize import to_uint8

    crop = result.face.image.astype(np.float32) / 255.0
    cells = [crop, composite(crop, result.render_detailed, result.render_mask), np.clip(result.albedo_uv, 0, 1)]
    return np.concatenate([cv2.resize(to_uint8(cell), (size, size), interpolation=cv2.INTER_AREA) for cell in cells],
                          axis=1)


def write_face_outputs(result: FaceResult, folder, model, layout, photo, source, uv_mask,
                       options: OutputOptions = OutputOptions(), info=None) -> List[pathlib.Path]:
    """Writes every file of `OUTPUT_FILES` for one face into ``folder`` (which should be a temporary folder that
    the caller renames when this returns; see `reconstruct_inputs`). Returns the paths written."""
    from tf_facetex import io_utils
    from tf_facetex.export import mesh as mesh_export

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uv_mask = np.asarray(uv_mask, np.float32).reshape(result.albedo_uv.shape[:2])
    fill = lambda values: mesh_export.fill_outside_mask(values, uv_mask)  # noqa: E731
    written = []
    if options.mesh_pose == "posed":
        vertices, normals = result.posed_vertices, result.posed_normals
    elif options.mesh_pose == "unposed":
        vertices, normals = result.vertices, result.normals
    else:
        raise FaceTexError(f"mesh pose must be 'unposed' or 'posed', got {options.mesh_pose!r}")
    mesh = mesh_export.textured_mesh(model, vertices, normals if options.mesh_normals else None,
                                     uv_size=result.albedo_uv.shape[0])
    header = [f"tf_facetex reconstruction of {source} (face {getattr(result.face, 'face_index', 0)})",
              f"face model {model.name}; {options.mesh_pose}; metres, y up, face towards +z"]
    paths = mesh_export.write_textured_obj(folder, mesh, np.clip(result.albedo_uv, 0, 1), texture_name="albedo.png",
                                           uv_mask=uv_mask, header=header)
    written += [paths["texture"], paths["mtl"], paths["obj"]]
    written.append(io_utils.write_npy(folder / "illumination.npy", fill(result.light_uv).astype(np.float32)))
    written.append(io_utils.write_image(folder / "shading.png", fill(np.clip(result.shading_uv, 0, 1))))
    written.append(io_utils.write_image(folder / "visibility.png", result.visibility_uv[..., 0] * uv_mask))
    written.append(io_utils.write_image(folder / "aligned.png", result.face.image))
    written.append(io_utils.write_image(folder / "render_detailed.png",
                                        _rgba(result.render_detailed, result.render_mask)))
    written.append(io_utils.write_image(folder / "render_coarse.png", _rgba(result.render_coarse, result.render_mask)))
    written.append(io_utils.write_image(folder / "overlay.jpg", photo_overlay(result, photo)))
    if result.turntable is not None:
        written.append(io_utils.write_image(folder / "turntable.png", result.turntable))
    written.append(io_utils.write_image(folder / "thumbnail.jpg", thumbnail(result, options.thumbnail_size)))
    record = coefficients_record(result, model, layout, source, info)
    record["mesh_pose"] = options.mesh_pose
    record["files"] = {path.name: OUTPUT_FILES.get(path.name, "") for path in written}
    written.append(io_utils.write_json(folder / RESULT_MARKER, record))   # last: marks the folder complete
    return written


# ================================================================================================== batch runner
class FaceFinder:
    """Photo -> aligned faces with masks, like `FacePreprocessor`, but the face masker is built at the first face
    found: the parsing network (the default masker when its weights exist) loads TensorFlow, and inputs without a
    face should be rejected in a second, not after that.

    Args:
      detector: 'hog' or 'cnn'; masker: 'parsing' (falls back to 'skin' without weights), 'skin', 'hull' or a
      `FaceMasker`; all_faces: every face instead of the largest.
    """

    def __init__(self, detector="hog", masker="parsing", all_faces=False, log=print):
        from tf_facetex.data.align import FacePreprocessor

        self.aligner = FacePreprocessor(detector=detector, masker=None, all_faces=all_faces)
        self.masker_spec = masker
        self.masker = None if isinstance(masker, str) else masker
        self.log = log

    def _masker(self):
        if self.masker is None:
            from tf_facetex import paths
            from tf_facetex.data.parsing_net import masker_from_name

            self.masker = masker_from_name(self.masker_spec, paths.parsing_net_weights(), log=self.log)
        return self.masker

    def from_image(self, image, name="<image>"):
        """uint8 [H, W, 3] -> list of `AlignedFace` with masks (largest first). Raises NoFaceError."""
        faces = self.aligner.from_image(image, name=name)
        masker = self._masker()
        for face in faces:
            face.mask = masker(face.image, face.landmarks) * face.valid
        return faces


def resolve_inputs(path, recursive=True) -> List[pathlib.Path]:
    """An image file or a folder of them -> sorted image paths. FaceTexError when there is nothing to do."""
    from tf_facetex.data.datasets import list_image_files
    from tf_facetex.data.images import IMAGE_EXTENSIONS

    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        files = list_image_files(path, recursive=recursive)
        if not files:
            raise FaceTexError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return files
    if path.is_file():
        return [path]
    raise FaceTexError(f"{path}: no such file or folder")


def check_output_dir(path) -> pathlib.Path:
    """Creates the output folder if needed and proves it is writable (a probe file), before any work is done."""
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_probe.", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise FaceTexError(f"{path}: output folder is not writable ({err.strerror or err})") from err
    return path


def folder_names(paths: Sequence[pathlib.Path]) -> dict:
    """{path: folder base name}: the image stem, disambiguated by extension and a counter on collisions."""
    stems = {}
    for path in paths:
        stems.setdefault(path.stem, []).append(path)
    names, used = {}, set()
    for path in paths:
        name = path.stem if len(stems[path.stem]) == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[path] = name
    return names


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_folder(staging: pathlib.Path, final: pathlib.Path):
    """Renames a completed staging folder to its final name (replacing an older result of the same name).

    The staging folder and its files were created private (mkdtemp / mkstemp: 0700 / 0600); they get the usual
    permissions (umask) first, so that a web server or a colleague can read the results.
    """
    umask = _umask()
    os.chmod(staging, 0o777 & ~umask)
    for path in staging.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass
class RunSummary:
    out_dir: pathlib.Path
    inputs: int = 0
    outputs: list = dataclasses.field(default_factory=list)     # {'input', 'folder', 'face_index', 'metrics'}
    errors: list = dataclasses.field(default_factory=list)      # {'input', 'error'}
    seconds: float = 0.0

    @property
    def failed_inputs(self) -> int:
        return len({error["input"] for error in self.errors})

    @property
    def all_failed(self) -> bool:
        return self.inputs > 0 and not self.outputs


def _error_text(err, verbose=False):
    if isinstance(err, (FaceTexError, OSError)):
        return " ".join(str(err).split())
    text = f"internal error: {type(err).__name__}: {' '.join(str(err).split())}"
    return text + ("\n" + traceback.format_exc() if verbose else "")


def reconstruct_inputs(inputs, out_dir, make_reconstructor: Callable[[], Reconstructor], preprocessor,
                       batch_size=1, options: OutputOptions = OutputOptions(), all_faces=False, progress=True,
                       log=print, verbose=False, run_info=None) -> RunSummary:
    """Reconstructs every face of every input image into ``out_dir/<stem>[_face<k>]/``.

    Args:
      inputs: list of image paths (`resolve_inputs`).
      out_dir: the output folder (`check_output_dir` first).
      make_reconstructor: builds the `Reconstructor`; called once, at the first detected face (its errors stop the
        run: they are not about one input).
      preprocessor: a `FaceFinder` or `FacePreprocessor` (detect, 68 landmarks, align, mask).
      batch_size: faces per reconstruction batch.
      all_faces: every face of a photo (folders get ``_face<k>``), else the largest.
    A failing input (unreadable, no face, ...) is recorded and the run goes on; a face folder appears only when it
    is complete (written as ``.<name>.*.partial`` and renamed). ``errors.json`` and ``index.html`` are rewritten
    at the end. Returns a `RunSummary`.
    """
    from tqdm import tqdm

    from tf_facetex import io_utils
    from tf_facetex.data.images import load_image

    start = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    summary = RunSummary(out_dir=out_dir, inputs=len(inputs))
    names = folder_names(inputs)
    reconstructor = None
    pending = []   # (path, photo, face)

    def flush():
        nonlocal reconstructor, pending
        batch, pending = pending, []
        if not batch:
            return
        failed_paths = {error["input"] for error in summary.errors}
        if reconstructor is None:
            reconstructor = make_reconstructor()   # a setup error (model, weights) stops the run: not per input
        try:
            results = reconstructor.reconstruct([face for _, _, face in batch])
        except Exception as err:  # noqa: BLE001 - recorded per input; the run goes on
            for path, _, _ in batch:
                if str(path) not in failed_paths:
                    summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})
                    failed_paths.add(str(path))
            return
        for (path, photo, face), result in zip(batch, results):
            name = names[path] + (f"_face{face.face_index}" if all_faces else "")
            staging = None
            try:
                staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out_dir))
                write_face_outputs(result, staging, reconstructor.model, reconstructor.layout, photo, path,
                                   reconstructor.uv_mask, options,
                                   info={"pipeline": reconstructor.describe(), **(run_info or {})})
                publish_folder(staging, out_dir / name)
                summary.outputs.append({"input": str(path), "folder": name, "face_index": face.face_index,
                                        "metrics": result.metrics})
            except Exception as err:  # noqa: BLE001
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})

    bar = tqdm(inputs, desc="reconstruct", unit="img", disable=not progress, dynamic_ncols=True)
    for path in bar:
        try:
            photo = load_image(path)
            faces = preprocessor.from_image(photo, name=str(path))
        except Exception as err:  # noqa: BLE001 - ImageError / NoFaceError expected; anything else recorded too
            summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})
            continue
        pending.extend((path, photo, face) for face in faces)
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    io_utils.write_json(out_dir / "errors.json", summary.errors)
    write_index_html(out_dir, summary.errors)
    return summary


# ================================================================================================== contact sheet
def completed_folders(out_dir) -> List[pathlib.Path]:
    """Face folders of ``out_dir`` that are complete (final name, `RESULT_MARKER` inside), sorted."""
    out_dir = pathlib.Path(out_dir)
    return sorted(p for p in out_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / RESULT_MARKER).is_file())


def index_html(out_dir, errors=()) -> str:
    """An HTML contact sheet of every completed face folder in ``out_dir`` (relative links) and the errors."""
    out_dir = pathlib.Path(out_dir)
    rows = []
    for folder in completed_folders(out_dir):
        try:
            record = json.loads((folder / RESULT_MARKER).read_text())
        except (OSError, ValueError):
            record = {}
        name = html.escape(folder.name)
        href = lambda file: html.escape(f"{folder.name}/{file}", quote=True)  # noqa: E731
        metrics = record.get("metrics", {})
        numbers = ", ".join(f"{key.replace('_db', '')} {value:.1f} dB" for key, value in metrics.items()
                            if key.endswith("_psnr_db"))
        links = " · ".join(f'<a href="{href(file)}">{html.escape(file)}</a>' for file in OUTPUT_FILES
                           if (folder / file).is_file())
        rows.append(
            f'<tr><td><b>{name}</b><br><small>{html.escape(str(record.get("source_image", "")))}</small><br>'
            f'<small>{html.escape(numbers)}</small></td>'
            f'<td><a href="{href("overlay.jpg")}"><img src="{href("thumbnail.jpg")}" alt="{name}" '
            f'loading="lazy"></a></td><td class="links">{links}</td></tr>')
    error_rows = "".join(f"<li><code>{html.escape(e['input'])}</code>: {html.escape(e['error'])}</li>"
                         for e in errors)
    legend = "".join(f"<li><code>{html.escape(f)}</code>: {html.escape(d)}</li>" for f, d in OUTPUT_FILES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tf_facetex results</title>
<style>body{{font-family:sans-serif;margin:1.5em}}td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
img{{height:128px}}td.links{{font-size:90%;max-width:40em}}</style></head><body>
<h1>tf_facetex results</h1>
<p>{len(rows)} face(s). Thumbnails: aligned input | R(A', L') | albedo A'. Click a thumbnail for the overlay on
the photo.</p>
<table>{''.join(rows)}</table>
{f'<h2>Errors ({len(errors)})</h2><ul>{error_rows}</ul>' if errors else ''}
<h2>Files in each folder</h2><ul>{legend}</ul>
</body></html>
"""


def write_index_html(out_dir, errors=()):
    from tf_facetex import io_utils

    return io_utils.write_text(pathlib.Path(out_dir) / "index.html", index_html(out_dir, errors))


# ================================================================================================== reading back
def load_reconstruction(folder):
    """Reads a face folder back: {'record': coefficients.json dict, 'albedo_uv' [S, S, 3] float32,
    'light_uv' [S, S, 27] float32 or None}. FaceTexError when the folder is not a complete reconstruction."""
    from tf_facetex.data.images import load_image

    folder = pathlib.Path(folder)
    marker = folder / RESULT_MARKER
    if not marker.is_file():
        raise FaceTexError(f"{folder}: not a reconstruction folder (no {RESULT_MARKER}; "
                           "make one with scripts/reconstruct.py)")
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise FaceTexError(f"{marker}: unreadable ({err})") from err
    albedo = load_image(folder / "albedo.png", min_side=2).astype(np.float32) / 255.0
    light = None
    if (folder / "illumination.npy").is_file():
        try:
            light = np.load(folder / "illumination.npy", allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as err:
            raise FaceTexError(f"{folder / 'illumination.npy'}: unreadable ({err})") from err
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
    data = load_reconstruction(folder)      # first: a wrong folder is reported before TensorFlow loads
    record = data["record"]

    import tensorflow as tf

    from tf_facetex import lighting_presets
    from tf_facetex.face_model import CoefficientLayout, FaceDecoder, load_face_model
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
            from tf_facetex import sh
            ambient = sh.with_ambient(np.zeros(27, np.float32)).numpy()
            gamma = (gamma + ambient) * light_scale - ambient
        gamma = gamma[None]
    elif light == "coarse":
        gamma = lighting_presets.scale_light(parts["gamma"], light_scale)[None]
        description = "the reconstruction's coarse light L"
    else:
        gamma, description = lighting_presets.resolve_light(light, normalize_env=normalize_env, scale=light_scale)
        gamma = gamma[None]
    renderer = FaceRenderer(model, image_size or record.get("alignment", {}).get("crop_size", IMAGE_SIZE), uv_size)
    image, mask = render_posed(renderer, FaceDecoder(model), layout, coeffs[None], albedo[None], gamma,
                               tf.constant(angles[None]), tf.constant(np.asarray(translation, np.float32)[None]))
    pose = ", ".join(f"{name} {value:+.1f}" for name, value in zip(("pitch", "yaw", "roll"), np.degrees(angles)))
    return image.numpy()[0], mask.numpy()[0], f"{description}; pose {pose} degrees"
