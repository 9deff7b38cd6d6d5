"""`PriorModule`: photo -> everything the refinement network needs (paper section 4; docs/METHOD.md, "The prior").

Coefficients come from the per-image fit (landmarks, then photometric; no trained weights) or from the
`PriorRegressor`. Then the fixed linear decoder, the pose and camera, the UV unwrap of the photo with its
visibility, the prior albedo rasterised into UV, the camera-frame normal map and the image-from-UV lookup.
The output dict uses the keys of `tf_facetex.prior.samples` (plus diagnostics), so it can be written once per
image as refinement-sample TFRecords (`write_refinement_samples`) and training never rasterises again.
"""
import contextlib
import dataclasses
import pathlib

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_facetex import camera, metrics
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data import tfrecords
from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
from tf_facetex.prior.appearance_gate import DEFAULT_GATE, appearance_keep
from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter, group_index
from tf_facetex.prior.photometric_fit import PhotometricFitConfig, PhotometricFitter
from tf_facetex.prior.samples import encode_sample
from tf_facetex.rendering import FaceRenderer, uv as uv_lib


@dataclasses.dataclass
class PriorConfig:
    mode: str = "fit"                 # 'fit' (no trained weights) or 'regressor'
    image_size: int = CROP_SIZE
    uv_size: int = 256
    landmark: LandmarkFitConfig = dataclasses.field(default_factory=LandmarkFitConfig)
    photometric: PhotometricFitConfig = dataclasses.field(default_factory=PhotometricFitConfig)
    mask_unwrap: bool = True          # unwrap only texels whose pixel is inside the face mask (no hair/occluders)
    # The unwrap samples the photo bilinearly, so a texel is seen only when every pixel it samples (non-zero
    # weight) has a mask value >= this: a binary mask (the substitute) then means "all taps inside"; the parsing
    # net's soft mask (its probability where > 0.5) also drops its unsure border pixels, where hair fringes
    # leaked. 0.97 chosen on held-out CelebAMask-HQ images 100-199 (a tuning set, disjoint from the reported
    # images 0-99) by a rule fixed beforehand, the smallest threshold whose pooled leak is at most half the 1%
    # target: 0.9 -> 1.05%, 0.97 -> 0.49%, 0.985 -> 0.30% of seen texels, keeping 93% / 89% of 0.9's seen texels
    # (a skin-colour gate on top measured no better at equal coverage; docs/results/clean_albedo.notes.md).
    unwrap_mask_threshold: float = 0.97
    # The appearance gate (`prior.appearance_gate`): mask pixels whose hue departs from the coarse render by more
    # than this many robust standard deviations (eyes and lips exempt, brows at `FEATURE_GATE`) are not taken as
    # seen; catches occluders the parser does not know. 0 = off.
    appearance_gate: float = DEFAULT_GATE


class PriorModule:
    """The frozen prior: call it on a batch of aligned crops.

    Args:
      model: the `MorphableModel`.
      config: `PriorConfig`.
      regressor: a `PriorRegressor` (required for mode 'regressor').
      renderer: a `FaceRenderer` at (image_size, uv_size); built when None.
    """

    # Timing hook (benchmarks): ``timer(stage)`` is a context manager; the coefficients run under 'prior'.
    timer = staticmethod(lambda stage: contextlib.nullcontext())

    def __init__(self, model, config: PriorConfig = PriorConfig(), regressor=None, renderer=None):
        if config.mode not in ("fit", "regressor"):
            raise ValueError(f"unknown prior mode '{config.mode}' (expected 'fit' or 'regressor')")
        if config.mode == "regressor" and regressor is None:
            raise ValueError("prior mode 'regressor' needs a PriorRegressor")
        self.model = model
        self.config = config
        self.regressor = regressor
        # Compiled once per batch shape: the eager call ran the ResNet-50 at ~1/4 of the graph's FLOP rate
        # (scripts/bench.py), and inference needs no Python in the loop.
        self._predict = tf.function(lambda images: regressor(images, training=False), reduce_retracing=True) \
            if regressor is not None else None
        self.renderer = renderer or FaceRenderer(model, config.image_size, config.uv_size)
        # Dozens of small gathers: ~10x faster compiled than eager on CPU (10 ms -> 1 ms at batch 1).
        self._min_bilinear_taps = tf.function(uv_lib.min_bilinear_taps, jit_compile=True, autograph=False)
        self.decoder = FaceDecoder(model)
        self.layout = CoefficientLayout.for_model(model)
        self.landmark_fitter = LandmarkFitter(model, dataclasses.replace(config.landmark,
                                                                          image_size=config.image_size))
        self.photometric_fitter = PhotometricFitter(model, config.photometric)

    @property
    def uv_mask(self):
        return self.renderer.uv_mask

    def coefficients(self, images, landmarks=None, masks=None, groups=None):
        """-> (coeffs [B, C] numpy, tone [B, 3] numpy, diagnostics dict, (posed, raster, vertex normals) or None).

        The fit rasterises the fitted geometry for its photometric stage; it is returned for reuse, since the
        photometric stage does not change the geometry. ``groups`` (None, or [B] ints 0..G-1): photos of one
        person share the identity and the albedo coefficients / tone (the fits' ``groups``; the regressor's
        predictions are averaged over the group).
        """
        if self.config.mode == "regressor":
            coeffs = self._predict(tf.convert_to_tensor(images, tf.float32)).numpy()
            if groups is not None:
                coeffs = self._share_per_group(coeffs, groups)
            return coeffs, np.ones((coeffs.shape[0], 3), np.float32), {}, None
        if landmarks is None:
            raise ValueError("the fitting prior needs 68 landmarks per image")
        shape = self.landmark_fitter(landmarks, groups=groups)
        parts = {k: tf.constant(shape[k]) for k in ("id", "exp", "angles", "translation")}
        posed = self.decoder.pose(parts)["posed"]
        raster = self.renderer.rasterize(posed)
        mask = self.face_mask(masks, raster)
        vertex_normals = self.renderer.vertex_normals(posed)
        light = self.photometric_fitter(images, mask, raster, vertex_normals, groups=groups)
        parts.update(tex=light["tex"], gamma=light["gamma"])
        coeffs = self.layout.join(parts).numpy()
        diagnostics = {"landmark_error": shape["landmark_error"],
                       "photometric_error": light["photometric_error"].numpy()}
        return coeffs, light["tone"].numpy(), diagnostics, (posed, raster, vertex_normals)

    def _share_per_group(self, coeffs, groups):
        """Identity and albedo coefficients averaged over each group: [B, C] numpy -> [B, C]."""
        groups, num_groups = group_index(groups, coeffs.shape[0])
        out = coeffs.copy()
        for name in ("id", "tex"):
            part = self.layout.slices[name]
            sums = np.zeros((num_groups, coeffs[:, part].shape[1]), coeffs.dtype)
            np.add.at(sums, groups, coeffs[:, part])
            out[:, part] = (sums / np.bincount(groups, minlength=num_groups)[:, None])[groups]
        return out

    def face_mask(self, masks, raster):
        """M_face = M_proj x (mask > 0.5): masks may be soft (confidence above 0.5), the fit uses them binary."""
        proj = self.renderer.projection_mask(raster)
        return proj if masks is None else proj * tf.cast(tf.convert_to_tensor(masks, tf.float32) > 0.5, tf.float32)

    def __call__(self, images, landmarks=None, masks=None, groups=None):
        """Runs the prior on aligned crops (`run` without the raster)."""
        return self.run(images, landmarks, masks, groups)[0]

    def run(self, images, landmarks=None, masks=None, groups=None):
        """Runs the prior on aligned crops -> (outputs, `Raster` of the posed face), the raster for the caller's
        renders of the same geometry (rasterising is the costliest step of a render).

        Args:
          images: [B, H, H, 3] float in [0, 1] (H = image_size).
          landmarks: [B, 68, 2] detected landmarks in the crop (needed by the fit; kept for identity chips).
          masks: [B, H, H, 1] face-parsing mask (or its substitute); None = the projected face only.
          groups: None, or [B] ints 0..G-1: photos of one person (one identity and albedo; `coefficients`).
        Returns the outputs:
          dict with the refinement-sample keys (`tf_facetex.prior.samples`) as tensors, and 'tone' [B, 3],
          'coarse_render' [B, H, H, 3] (prior albedo lit by the coarse gamma), 'coarse_psnr' [B] on the face
          mask, 'landmark_error' / 'photometric_error' [B] when fitted, 'posed_vertices' [B, N, 3], 'model_vertices' and
          'model_normals' [B, N, 3] (unposed, model frame), 'posed_normals' [B, N, 3].
        """
        images = tf.convert_to_tensor(images, tf.float32)
        with self.timer("prior"):
            coeffs, tone, diagnostics, geometry = self.coefficients(images, landmarks, masks, groups)
        decoded = self.decoder.pose(tf.constant(coeffs))
        parts = decoded["parts"]
        if geometry is None:
            posed = decoded["posed"]
            raster = self.renderer.rasterize(posed)
            vertex_normals = self.renderer.vertex_normals(posed)
        else:
            posed, raster, vertex_normals = geometry
        normals_uv = self.renderer.normals_uv(vertex_normals=vertex_normals)
        albedo = decoded["albedo"] * tone[:, None, :]
        prior_albedo_uv = self.renderer.rasterize_to_uv(albedo) * self.uv_mask
        proj_mask = self.renderer.projection_mask(raster)
        coarse, _ = self.renderer.render(prior_albedo_uv, parts["gamma"], raster, normals_uv)
        if landmarks is None:   # the model's landmarks, projected: identity chips, the gate's protected features
            landmarks = camera.project(tf.gather(posed, self.model.landmark_indices, axis=1),
                                       self.config.image_size)[0]
        if masks is not None and self.config.appearance_gate > 0:
            masks = tf.convert_to_tensor(masks, tf.float32)
            keep = appearance_keep(images.numpy(), coarse.numpy(), self.face_mask(masks, raster).numpy()[..., 0],
                                   np.asarray(landmarks), self.config.appearance_gate)
            masks = masks * keep[..., None]
        face_mask = self.face_mask(masks, raster)
        unwrapped = self.renderer.unwrap(images, posed, raster)
        visibility = unwrapped.visibility
        if self.config.mask_unwrap and masks is not None:
            seen = self._min_bilinear_taps(tf.cast(masks, tf.float32)[..., 0], unwrapped.pixels)[..., None]
            visibility = visibility * tf.cast(seen >= self.config.unwrap_mask_threshold, tf.float32)
        out = {
            "image": images, "face_mask": face_mask, "proj_mask": proj_mask,
            "pixel_uv": self.renderer.texel_coords(raster),
            "texture_uv": unwrapped.texture * visibility, "visibility_uv": visibility,
            "prior_albedo_uv": prior_albedo_uv, "normals_uv": normals_uv,
            "gamma": parts["gamma"], "coeffs": tf.constant(coeffs), "tone": tf.constant(tone),
            "coarse_render": coarse, "coarse_psnr": metrics.masked_psnr(tf.clip_by_value(coarse, 0, 1), images,
                                                                        face_mask),
            "posed_vertices": posed,
            # the unposed shape and its normals (model frame), for the meshes and turntables of the outputs
            "model_vertices": decoded["vertices"], "model_normals": decoded["normals"], "posed_normals": vertex_normals,
        }
        out["landmarks"] = tf.convert_to_tensor(landmarks, tf.float32)
        out.update({k: tf.constant(v) for k, v in diagnostics.items()})
        return out, raster


def write_refinement_samples(prior: PriorModule, dataset, out_dir, num_shards: int = 4, name: str = "samples",
                             progress: bool = True, limit: int = None) -> dict:
    """Runs the prior over a data-pipeline dataset (`tf_facetex.data.tfrecords.make_dataset`, one pass) and
    writes refinement-sample shards ``out_dir/name-k-of-n.tfrecord`` atomically. Ground truth carried by
    synthetic faces (gt_albedo_uv, gt_irradiance_uv) is passed through. Returns a summary dict."""

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = [[] for _ in range(num_shards)]
    count, errors, psnr = 0, [], []
    bar = tqdm(desc=f"prior -> {out}", unit="img", disable=not progress)
    for batch in dataset:
        result = prior(batch["image"], batch["landmarks"], batch["mask"])
        numpy = {k: v.numpy() for k, v in result.items()}
        for b in range(numpy["image"].shape[0]):
            sample = {k: numpy[k][b] for k in ("image", "face_mask", "proj_mask", "pixel_uv", "texture_uv",
                                              "visibility_uv", "prior_albedo_uv", "normals_uv", "gamma",
                                              "coeffs", "landmarks")}
            if "gt_albedo_uv" in batch:
                gt = batch["gt_albedo_uv"][b].numpy()
                sample["albedo_gt_uv"] = gt / 65535.0 if gt.dtype == np.uint16 else gt
            if "gt_irradiance_uv" in batch:
                sample["irradiance_gt_uv"] = batch["gt_irradiance_uv"][b].numpy()
            sample["source"] = batch["source_path"][b].numpy().decode()
            shards[count % num_shards].append(encode_sample(sample))
            count += 1
            if "landmark_error" in numpy:
                errors.append(float(numpy["landmark_error"][b]))
            psnr.append(float(numpy["coarse_psnr"][b]))
        bar.update(numpy["image"].shape[0])
        if limit and count >= limit:
            break
    bar.close()
    for k, records in enumerate(shards):
        tfrecords.write_records_atomic(out / f"{name}-{k:05d}-of-{num_shards:05d}.tfrecord", records)
    return {"count": count, "mean_landmark_error_px": float(np.mean(errors)) if errors else None,
            "mean_coarse_psnr_db": float(np.mean(psnr)) if psnr else None, "out": str(out)}
