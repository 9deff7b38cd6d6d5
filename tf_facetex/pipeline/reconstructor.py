"""`Reconstructor`: aligned faces -> `FaceResult`s (prior -> detail refinement -> renders), and `render_posed`, the
re-render of any albedo under any light and pose (relighting, turntables). Data flow: docs/ARCHITECTURE.md."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from tf_facetex import camera, metrics
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.errors import FaceTexError
from tf_facetex.lighting_presets import preset
from tf_facetex.pipeline.result import TURNTABLE_LIGHT, TURNTABLE_YAWS, FaceResult, GroupResult
from tf_facetex.prior.appearance_gate import DEFAULT_GATE
from tf_facetex.prior.landmark_fit import LandmarkFitConfig
from tf_facetex.prior.module import PriorConfig, PriorModule
from tf_facetex.refinement.base import Refiner
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
from tf_facetex.grayscale import grey_where
from tf_facetex.rendering import FaceRenderer
from tf_facetex.rendering import parts as parts_lib
from tf_facetex.rendering.renderer import DEFAULT_UV_SIZE


@dataclasses.dataclass
class ReconstructionConfig:
    prior: str = "fit"                  # 'fit' (no weights) or 'regressor'
    uv_size: int = DEFAULT_UV_SIZE
    fit_steps: int = 150                # UV-fit (detail stage without weights) Adam steps
    landmark_steps: int = 300           # landmark-fit steps of the fitting prior
    image_size: int = CROP_SIZE
    mask_unwrap: bool = True            # unwrap only texels inside the face mask (no hair / occluders)
    unwrap_mask_threshold: float = 0.97  # ... whose every bilinear tap reaches this mask value (`PriorConfig`)
    appearance_gate: float = DEFAULT_GATE  # hue outliers against the coarse render are not seen (`PriorConfig`)
    turntable_light: str = TURNTABLE_LIGHT
    turntable_yaws: tuple = TURNTABLE_YAWS


def _numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def render_posed(renderer, decoder, layout, coeffs, albedo_uv, light, angles=None, translation=None,
                 background=0.0, with_parts=None, posed=None, vertex_normals=None):
    """Renders faces with given coefficients under any light and pose (relighting, turntables).

    Args:
      renderer: a `FaceRenderer` (its image size is the output size); decoder: `FaceDecoder`; layout: its layout.
      coeffs: [B, C] (identity and expression used; angles / translation unless overridden).
      albedo_uv: [B, S, S, 3]; light: [B, 27] global SH or [B, S, S, 27] per-texel map.
      angles: [B, 3] (pitch, yaw, roll) radians, or None = the coefficients'; translation: [B, 3] or None.
      with_parts: (model, part_albedo [B, P, 3]) to render the model's eyes, teeth and sockets too (shaded by the
        global light; a per-texel light map lights them by its chart mean), or None.
      posed: [B, N, 3] the posed vertices when the caller has them (then coeffs, angles and translation are not
        used): a turntable decodes its one face once, not once per view.
      vertex_normals: [B, N, 3] the unit normals of ``posed`` when the caller has them (a turntable rotates its
        face's normals), or None.
    Returns:
      (images [B, H, H, 3], masks [B, H, H, 1]) as tensors.
    """
    del layout  # the decoder's own layout splits the coefficients
    if posed is None:
        posed = decoder.pose(coeffs, angles, translation)["posed"]
    raster = renderer.rasterize(posed)
    if vertex_normals is None:                             # once, for the skin's normal map and the parts
        vertex_normals = renderer.vertex_normals(posed)
    normals_uv = renderer.normals_uv(vertex_normals=vertex_normals)
    image, mask = renderer.render(tf.convert_to_tensor(albedo_uv, tf.float32), light, raster, normals_uv,
                                  background=background)
    if with_parts is not None and with_parts[0].has_parts:
        model, part_albedo = with_parts
        light = tf.convert_to_tensor(light, tf.float32)
        gamma = light if light.shape.rank == 2 else (tf.reduce_sum(light * renderer.uv_mask, axis=[1, 2])
                                                     / tf.reduce_sum(renderer.uv_mask))
        part_image, part_mask = parts_lib.render_parts(model.triangles, model.triangle_parts, raster, part_albedo,
                                                       gamma, vertex_normals)
        image = image * (1.0 - part_mask) + part_image * part_mask
        mask = tf.minimum(mask + part_mask, 1.0)
    return image, mask


@tf.function(jit_compile=True, autograph=False)   # eager, the two [V, N, 3] transforms cost ~13 ms for 8 views
def _pose_views(vertices, normals, angles, translation):
    """One face at V poses: vertices [1, N, 3] and unit normals [1, N, 3] (model frame), angles / translation
    [V, 3] -> (posed vertices, their unit normals) [V, N, 3]. A rotation turns the normals with the face."""
    views = tf.shape(angles)[0]
    posed = camera.rigid_transform(tf.repeat(vertices, views, axis=0), angles, translation)
    return posed, camera.rigid_transform(tf.repeat(normals, views, axis=0), angles, tf.zeros_like(translation))


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
        if refiner is not None and refiner.uv_size and refiner.uv_size != config.uv_size:
            raise FaceTexError(f"the refinement network works at UV {refiner.uv_size}, the pipeline at "
                               f"{config.uv_size}; use --uv_size {refiner.uv_size}")
        self.model = model
        self.config = config
        self.renderer = FaceRenderer(model, config.image_size, config.uv_size)
        prior_config = PriorConfig(mode=config.prior, image_size=config.image_size, uv_size=config.uv_size,
                                   landmark=LandmarkFitConfig(steps=config.landmark_steps),
                                   mask_unwrap=config.mask_unwrap,
                                   unwrap_mask_threshold=config.unwrap_mask_threshold,
                                   appearance_gate=config.appearance_gate)
        try:
            self.prior = PriorModule(model, prior_config, regressor=regressor, renderer=self.renderer)
        except ValueError as err:
            raise FaceTexError(str(err)) from err
        self.refiner = refiner or FitRefiner(self.renderer.uv_mask, self.renderer.uv_symmetry_index,
                                             UVFitConfig(steps=config.fit_steps))
        self.decoder = self.prior.decoder
        self.layout = self.prior.layout

    # Timing hook (scripts/bench.py): ``timer(stage)`` is a context manager around 'prior_total' (the whole prior),
    # 'refine' and 'turntable'; the prior's own coefficients run under its 'prior'.
    timer = staticmethod(lambda stage: contextlib.nullcontext())

    def set_timer(self, timer):
        """Times the stages with ``timer(stage) -> context manager`` (e.g. `evaluation.speed.StageClock.timer`)."""
        self.timer = timer
        self.prior.timer = timer

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

    @staticmethod
    def _inputs(faces):
        """AlignedFaces -> (images [B, H, H, 3] in [0, 1], landmarks [B, 68, 2], masks [B, H, H, 1]) float32."""
        images = np.stack([face.image for face in faces]).astype(np.float32) / 255.0
        landmarks = np.stack([face.landmarks for face in faces]).astype(np.float32)
        masks = np.stack([(face.mask if face.mask is not None else face.valid) for face in faces])[..., None]
        return images, landmarks, masks.astype(np.float32)

    def reconstruct(self, faces: Sequence) -> List[FaceResult]:
        """Reconstructs a batch of `AlignedFace`s (crops at the config's image size) -> one `FaceResult` each."""
        if not faces:
            return []
        images, landmarks, masks = self._inputs(faces)
        with self.timer("prior_total"):
            prior_out, raster = self.prior.run(images, landmarks, masks)
        with self.timer("refine"):
            refined = self.refiner(prior_out)
        return self._results(faces, images, masks, prior_out, raster, refined["albedo_uv"], refined["light_uv"])

    def reconstruct_group(self, faces: Sequence) -> GroupResult:
        """Several photos of ONE person -> a `GroupResult`: one identity, one expression-free shape and one
        albedo A' fitted to all of them, a pose, expression and light (gamma, L') per photo (docs/METHOD.md,
        "Several photos of one person"). A group of one is `reconstruct`'s result."""
        if not faces:
            raise FaceTexError("a group needs at least one photo")
        if not self.refiner.supports_groups:
            raise FaceTexError(f"the '{self.refiner.name}' detail stage fits photos one by one; several photos of "
                               "one person need the per-image fit (--refiner fit or net+fit)")
        images, landmarks, masks = self._inputs(faces)
        groups = np.zeros(len(faces), np.int32)
        with self.timer("prior_total"):
            prior_out, raster = self.prior.run(images, landmarks, masks, groups=groups)
        with self.timer("refine"):
            refined = self.refiner(prior_out, groups=groups)
        photos = self._results(faces, images, masks, prior_out, raster, refined["albedo_uv"], refined["light_uv"],
                               turntables=False)   # one albedo: the person's turntable says it all
        person = self._person(faces[0], images[:1], masks[:1], prior_out, refined)
        return GroupResult(person=person, photos=photos)

    def fit_light(self, faces: Sequence, albedo_uv) -> List[FaceResult]:
        """The light of each photo for a KNOWN albedo (e.g. a person's from `reconstruct_group`): the prior runs
        on each photo, then the UV fit optimises only its light L' with A' fixed. albedo_uv: [S, S, 3] (every
        photo) or [B, S, S, 3]. -> one `FaceResult` each (its albedo is the given one)."""
        if not getattr(self.refiner, "supports_groups", False):
            raise FaceTexError(f"the '{self.refiner.name}' detail stage cannot fit a light alone; use --refiner fit")
        images, landmarks, masks = self._inputs(faces)
        albedo_uv = np.asarray(albedo_uv, np.float32)
        if albedo_uv.ndim == 3:
            albedo_uv = np.repeat(albedo_uv[None], len(faces), axis=0)
        with self.timer("prior_total"):
            prior_out, raster = self.prior.run(images, landmarks, masks)
        start = {"albedo_uv": albedo_uv, "light_uv": prior_out["gamma"][:, None, None, :]}
        with self.timer("refine"):
            refined = self.refiner(prior_out, start=start, fit_albedo=False)
        return self._results(faces, images, masks, prior_out, raster, refined["albedo_uv"], refined["light_uv"])

    def _person(self, face, image, mask, prior_out, refined):
        """The person of a group, as the face folder shows it: the expression-free shape (expression 0) at the
        first photo's pose under its light L', with the shared albedo; its visibility is the union of the
        photos'. -> `FaceResult` (metrics against the first photo)."""
        coeffs = prior_out["coeffs"][:1].numpy().copy()
        coeffs[:, self.layout.slices["exp"]] = 0.0
        decoded = self.decoder.pose(tf.constant(coeffs))
        posed = decoded["posed"]
        posed_normals = self.renderer.vertex_normals(posed)
        raster = self.renderer.rasterize(posed)
        person = {**{name: value[:1] for name, value in prior_out.items() if name != "landmarks"},
                  "coeffs": tf.constant(coeffs), "posed_vertices": posed,
                  "model_vertices": decoded["vertices"], "model_normals": decoded["normals"],
                  "posed_normals": posed_normals, "normals_uv": self.renderer.normals_uv(vertex_normals=posed_normals),
                  "face_mask": self.prior.face_mask(mask, raster),
                  "visibility_uv": tf.reduce_max(prior_out["visibility_uv"], axis=0, keepdims=True)}
        return self._results([face], image, mask, person, raster, refined["albedo_uv"][:1],
                             refined["light_uv"][:1])[0]

    def _results(self, faces, images, masks, prior_out, raster, albedo_uv, light_uv,
                 turntables=True) -> List[FaceResult]:
        """Renders, meshes and metrics of refined faces -> one `FaceResult` per face (raster: the `Raster` of
        ``prior_out['posed_vertices']``; turntables: render the config's turntable, if it has one)."""
        grey = [bool(getattr(face, "grayscale", False)) for face in faces]
        if any(grey):  # a grey photo has a grey albedo and light (tf_facetex/grayscale.py)
            albedo_uv, light_uv, gamma = grey_where(grey, albedo_uv, light_uv, prior_out["gamma"])
            prior_out = {**prior_out, "gamma": gamma}
        posed = prior_out["posed_vertices"]
        normals_uv = prior_out["normals_uv"]
        detailed, render_mask = self.renderer.render(albedo_uv, light_uv, raster, normals_uv)
        coarse, _ = self.renderer.render(albedo_uv, prior_out["gamma"], raster, normals_uv)
        posed_normals = prior_out["posed_normals"]
        part_albedo = None
        if self.model.has_parts:  # eyes, teeth, sockets close the render (tf_facetex.rendering.parts)
            part_albedo, part_pixels = parts_lib.estimate_part_albedo(self.model, raster, images, prior_out["gamma"],
                                                                      posed_normals, masks)
            part_image, part_mask = parts_lib.render_parts(self.model.triangles, self.model.triangle_parts, raster,
                                                           part_albedo, prior_out["gamma"], posed_normals)
            coarse, _ = parts_lib.composite(coarse, render_mask, part_image, part_mask)
            detailed, render_mask = parts_lib.composite(detailed, render_mask, part_image, part_mask)
        shading_uv = self.renderer.shading_uv(light_uv, normals_uv) * self.renderer.uv_mask
        decoded = {"vertices": prior_out["model_vertices"], "normals": prior_out["model_normals"]}
        face_mask = prior_out["face_mask"]
        psnr = {
            "prior_psnr_db": prior_out["coarse_psnr"],
            "coarse_psnr_db": metrics.masked_psnr(tf.clip_by_value(coarse, 0, 1), images, face_mask),
            "detailed_psnr_db": metrics.masked_psnr(tf.clip_by_value(detailed, 0, 1), images, face_mask),
        }
        turntables, want_turntables = None, turntables
        if self.config.turntable_yaws and want_turntables:
            with self.timer("turntable"):
                turntables = self._turntables(decoded, albedo_uv, part_albedo)
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
            if part_albedo is not None:  # photo pixels behind each estimated part colour (0: the default)
                face_metrics.update({f"{name}_pixels": int(count[b]) for name, count in part_pixels.items()})
            out.append(FaceResult(face=face, **{name: value[b] for name, value in arrays.items()},
                                  turntable=None if turntables is None else turntables[b], metrics=face_metrics,
                                  part_albedo=None if part_albedo is None else part_albedo[b]))
        return out

    def render(self, coeffs, albedo_uv, light, angles=None, translation=None, part_albedo=None):
        """`render_posed` with this reconstructor's renderer: -> (images [B, H, H, 3], masks [B, H, H, 1]).
        With ``part_albedo`` [B, P, 3] (a model with parts) the eyes, teeth and sockets are rendered too."""
        return render_posed(self.renderer, self.decoder, self.layout, coeffs, albedo_uv, light, angles, translation,
                            with_parts=None if part_albedo is None else (self.model, part_albedo))

    def _turntables(self, decoded, albedo_uv, part_albedo=None):
        """[B] strips [H, H * V, 3]: each albedo relit by the preset light at the config's yaws (face centred).
        decoded: the decoder's output for the faces (model-frame 'vertices' and 'normals' [B, N, 3])."""
        angles, translation = turntable_poses(self.config.turntable_yaws)
        views = angles.shape[0]
        gamma = np.tile(preset(self.config.turntable_light)[None], [views, 1])
        angles, translation = tf.constant(angles, tf.float32), tf.constant(translation, tf.float32)
        strips = []
        for b in range(int(decoded["vertices"].shape[0])):
            posed, normals = _pose_views(decoded["vertices"][b:b + 1], decoded["normals"][b:b + 1], angles,
                                         translation)
            with_parts = None if part_albedo is None else (self.model, np.repeat(part_albedo[b:b + 1], views, axis=0))
            images, _ = render_posed(self.renderer, self.decoder, self.layout, None,
                                     tf.repeat(albedo_uv[b:b + 1], views, axis=0), gamma, with_parts=with_parts,
                                     posed=posed, vertex_normals=normals)
            strips.append(np.concatenate(list(np.clip(images.numpy(), 0.0, 1.0)), axis=1))
        return strips
