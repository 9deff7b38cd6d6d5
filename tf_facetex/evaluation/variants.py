"""Method variants compared by scripts/evaluate.py, and the metrics computed for each (issue "Evaluation").

A variant maps a batch of refinement samples (`tf_facetex.prior.samples`) to an albedo UV map and, optionally,
a detailed light map:
- ``prior``: the 3DMM prior albedo A with the coarse light L (Deng et al.'s render);
- ``unwrapped``: the unwrapped photo T used as the albedo (prior where unseen), coarse light;
- ``fit``: the no-weights default the product ships, `tf_facetex.refinement.FitRefiner` (A' and L' optimised
  per image, then the coarse light where the photo shows nothing);
- ``network``: a trained `RefinementNet` (a training checkpoint) run by the product's
  `tf_facetex.refinement.NetworkRefiner` (the fixed unseen-texel noise); OD = R(A', L') and OC = R(A', L);
- ``network+fit``: the network's A', L' as the start of a short fit (`NetFitRefiner`, the product's 'net+fit');
  ablations are networks trained with terms switched off, evaluated the same way.
What is evaluated is what ships: the fit and network variants are the product's refiners, not copies.
Metrics per variant (means over images):
- the paper's Table 1 columns on the face mask: L1, PSNR, SSIM of the re-render against the input, and
  identity similarity of input and re-render (dlib's face-recognition ResNet in place of LightCNN/evoLve,
  which we cannot run here — said so in every output);
- with ground truth (synthetic faces): albedo error after per-channel scale alignment (si-RMSE, SSIM in UV on
  the face region and on the seen texels), and the relighting error: the recovered albedo rendered under new
  lights against the true albedo under the same lights (image space, face mask).
"""
import numpy as np
import tensorflow as tf

from tf_facetex import metrics, sh
from tf_facetex.identity import identity_similarity
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
from tf_facetex.refinement.net_fit import NetFitRefiner
from tf_facetex.refinement.network import NetworkRefiner
from tf_facetex.refinement.objective import render_lit

IDENTITY_NOTE = ("identity = cosine similarity of dlib face-recognition ResNet embeddings (input vs re-render), "
                 "used in place of the paper's LightCNN / evoLve, which cannot be run here")


def relight_presets():
    """[K, 27] novel lights for the relighting error: front, left, right, top (Deng layout, no ambient)."""
    lights = []
    for direction in ((0.0, 0.0, 1.0), (-0.8, 0.1, 0.6), (0.8, 0.1, 0.6), (0.0, 0.8, 0.6)):
        d = np.array(direction) / np.linalg.norm(direction)
        coeffs = np.zeros(9)
        coeffs[0] = 1.0 / sh.LAMBERTIAN_FACTORS[0] - sh.AMBIENT_DC
        coeffs[1:4] = 0.5 / sh.LAMBERTIAN_FACTORS[1] * np.array([-d[1], d[2], -d[0]])
        lights.append(np.tile(coeffs, 3))
    return np.array(lights, np.float32)


def prior_variant(batch):
    return {"albedo_uv": batch["prior_albedo_uv"], "light_uv": None}


def unwrapped_variant(batch):
    seen = batch["visibility_uv"]
    return {"albedo_uv": batch["texture_uv"] * seen + batch["prior_albedo_uv"] * (1.0 - seen), "light_uv": None}


def fit_variant(uv_mask, symmetry_index, config=None):
    """The shipped per-image fit (`FitRefiner`, coarse light where unseen) as a variant."""
    return _refined(FitRefiner(uv_mask, symmetry_index, config or UVFitConfig()))


def network_variant(net, uv_mask):
    """A trained refinement network exactly as the product runs it (`NetworkRefiner`)."""
    return _refined(NetworkRefiner(net, uv_mask))


def net_fit_variant(net, uv_mask, symmetry_index, steps):
    """The network, then a ``steps``-step fit from its output (`NetFitRefiner`, the product's 'net+fit')."""
    return _refined(NetFitRefiner(NetworkRefiner(net, uv_mask),
                                  FitRefiner(uv_mask, symmetry_index, UVFitConfig(steps=steps))))


def _refined(refiner):
    def variant(batch):
        out = refiner(batch)
        return {"albedo_uv": out["albedo_uv"], "light_uv": out["light_uv"]}

    variant.refiner = refiner
    return variant


def renders(batch, albedo_uv, light_uv):
    """(OD, OC) re-renders [B, H, W, 3]: with the detailed light (or the coarse one when None) and the coarse."""
    coarse = render_lit(batch, albedo_uv, batch["gamma"])
    if light_uv is None:
        return coarse, coarse
    return render_lit(batch, albedo_uv, light_uv), coarse


def composite(rendered, image, mask):
    """The render over the photo outside the face (what the identity network sees)."""
    return tf.clip_by_value(rendered, 0.0, 1.0) * mask + image * (1.0 - mask)


def evaluate_batch(batch, output, uv_mask, encoder=None, lights=None):
    """Per-image metrics of one variant's output on one batch: dict name -> [B] numpy."""
    image, face_mask = batch["image"], batch["face_mask"]
    detailed, coarse = renders(batch, output["albedo_uv"], output["light_uv"])
    values = {}
    for tag, rendered in (("od", detailed), ("oc", coarse)):
        for name, value in metrics.image_metrics(rendered, image, face_mask).items():
            values[f"{tag}_{name}"] = value.numpy()
        if encoder is not None:
            shown = composite(rendered, image, face_mask)
            values[f"{tag}_identity"] = _identity(encoder, shown, image, batch["landmarks"])
    if "albedo_gt_uv" in batch:
        truth = batch["albedo_gt_uv"]
        region = uv_mask[None] * tf.ones_like(truth[..., :1])
        for tag, mask in (("albedo", region), ("albedo_seen", batch["visibility_uv"] * region)):
            for name, value in metrics.albedo_metrics(output["albedo_uv"], truth, mask).items():
                values[f"{tag}_{name}"] = value.numpy()
        values["relight_rmse"] = relighting_error(batch, output["albedo_uv"], truth, region, lights)
    return values


def _identity(encoder, rendered, image, landmarks):
    return identity_similarity(encoder.embed(rendered, landmarks), encoder.embed(image, landmarks)).numpy()


def relighting_error(batch, albedo_uv, truth_uv, region, lights=None):
    """RMSE over novel lights between the recovered and the true albedo re-rendered (face mask): -> [B].

    The recovered albedo is first aligned to the truth by its per-channel scale (single-image albedo is only
    known up to that scale), so the error measures the albedo's structure, not the exposure.
    """
    lights = relight_presets() if lights is None else lights
    aligned = metrics.scale_alignment(albedo_uv, truth_uv, region) * albedo_uv
    errors = []
    for light in lights:
        light_map = tf.ones_like(batch["normals_uv"][..., :1]) * tf.constant(light)
        ours = render_lit(batch, aligned, light_map)
        truth = render_lit(batch, truth_uv, light_map)
        errors.append(tf.sqrt(metrics.masked_mse(ours, truth, batch["proj_mask"])).numpy())
    return np.mean(errors, axis=0)
