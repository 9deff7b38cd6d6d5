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
- the same L1, PSNR, SSIM on the hull of the 68 landmarks (``od_hull_*``, ``oc_hull_*``): a region the
  method's own mask does not decide;
- with ground truth (synthetic faces): albedo error after per-channel scale alignment (si-RMSE, SSIM in UV on
  the face region and on the seen texels), the best flat colour's error and whether the albedo beats it
  (``albedo_flat_rmse``, ``albedo_beats_flat``), the completion error on the unseen texels
  (``albedo_unseen_rmse``), and the relighting error: the recovered albedo rendered under new lights against the
  true albedo under the same lights (image space, face mask).
"""
import functools

import numpy as np
import tensorflow as tf

from tf_facetex import metrics, sh
from tf_facetex.evaluation.clean_albedo import landmark_hull
from tf_facetex.identity import identity_similarity
from tf_facetex.refinement.fit import FitRefiner, UVFitConfig
from tf_facetex.refinement.net_fit import NET_FIT_STEPS, net_fit_refiner
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
    return _refined(net_fit_refiner(NetworkRefiner(net, uv_mask), uv_mask, symmetry_index, steps=steps))


SYMMETRY_VARIANT_HELP = ("'prior' (the prior albedo), 'fit' (the shipped fit, `UVFitConfig()`), 'net' / 'net+fit' "
                         "(the shipped refinement network, or $TF_FACETEX_REFINEMENT_NET's, alone or with its 30-step "
                         "fit), 'uniform' (today's "
                         "symmetry term: weight 5, every chart texel pulled to its mirror, seen or not) or "
                         "weighting[@seen_weight[/seen_scale[/unseen_mirror_weight]]] (`losses.symmetry_weights`)")


def parse_symmetry_variant(name):
    """A symmetry-variant name (``SYMMETRY_VARIANT_HELP``) -> 'prior', 'fit' or the `UVFitConfig` symmetry fields
    (dict); ValueError on a bad name (checked before anything is built)."""
    from tf_facetex.losses import SYMMETRY_WEIGHTINGS

    if name in ("prior", "fit", "net", "net+fit"):
        return name
    weighting, _, pull = name.partition("@")
    if weighting not in SYMMETRY_WEIGHTINGS:
        raise ValueError(f"unknown variant {name!r}: {SYMMETRY_VARIANT_HELP}")
    try:
        seen, scale, unseen = (float(v or 0.0) for v in (pull.split("/") + ["", "", ""])[:3])
    except ValueError:
        raise ValueError(f"variant {name!r}: the weights after '@' must be numbers") from None
    return {"symmetry_weighting": weighting, "symmetry_seen_weight": seen, "symmetry_seen_scale": scale,
            "symmetry_unseen_mirror_weight": unseen}


@functools.lru_cache(maxsize=1)
def _shipped_network(uv_size):
    """The shipped refinement network (or $TF_FACETEX_REFINEMENT_NET's), loaded once for 'net' and 'net+fit';
    ValueError when it works at another UV size than the data."""
    from tf_facetex import paths
    from tf_facetex.refinement.checkpoint import load_refinement_net

    net, info = load_refinement_net(paths.refinement_net_dir(), log=lambda *_: None)
    if info["uv_size"] != uv_size:
        raise ValueError(f"the data has UV {uv_size}; the refinement network works at {info['uv_size']}")
    return net


def symmetry_variant(name, uv_mask, symmetry_index, steps=150):
    """A variant by name for the symmetry comparisons (``SYMMETRY_VARIANT_HELP``); ValueError on a bad name."""
    parsed = parse_symmetry_variant(name)
    if parsed == "prior":
        return prior_variant
    if parsed == "fit":
        return fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=steps))
    if parsed in ("net", "net+fit"):
        net = _shipped_network(int(uv_mask.shape[0]))
        return (network_variant(net, uv_mask) if parsed == "net" else
                net_fit_variant(net, uv_mask, symmetry_index, NET_FIT_STEPS))
    return fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=steps, **parsed))


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
    # The same pixel metrics on the hull of the 68 landmarks, a region the method's own mask does not decide
    # (a method must not score better by masking more out); the render's empty pixels count as black.
    hull = landmark_hull_masks(batch["landmarks"], image.shape[1:3])
    for tag, rendered in (("od", detailed), ("oc", coarse)):
        for name, value in metrics.image_metrics(rendered, image, hull).items():
            values[f"{tag}_hull_{name}"] = value.numpy()
    if "albedo_gt_uv" in batch:
        values.update(albedo_truth_metrics(output["albedo_uv"], batch["albedo_gt_uv"], batch["visibility_uv"],
                                           uv_mask))
        region = uv_mask[None] * tf.ones_like(batch["albedo_gt_uv"][..., :1])
        values["relight_rmse"] = relighting_error(batch, output["albedo_uv"], batch["albedo_gt_uv"], region, lights)
    return values


def landmark_hull_masks(landmarks, shape):
    """float32 [B, H, W, 1]: the convex hull of each image's 68 landmarks ([B, 68, 2] pixels)."""
    landmarks = np.asarray(landmarks, np.float64)
    return np.stack([landmark_hull(tuple(shape), points) for points in landmarks]).astype(np.float32)[..., None]


def albedo_truth_metrics(albedo_uv, truth_uv, visibility_uv, uv_mask):
    """Albedo errors against the true albedo on the face chart, per image: dict name -> [B] numpy.

    albedo_{si_rmse, si_l1, ssim} and albedo_seen_* (`metrics.albedo_metrics`, per-channel scale alignment
    on the chart / on the seen texels); albedo_flat_rmse: the best flat colour's error under the same alignment
    (`metrics.flat_colour_rmse`, a property of the truth alone); albedo_beats_flat: 1 where the albedo's si-RMSE
    is below it; albedo_unseen_rmse: the completion error, RMSE on the chart texels the photo did not show after
    the scale fitted on the whole chart (`metrics.aligned_region_rmse`; NaN when every texel was seen).
    albedo_uv, truth_uv [B, S, S, 3]; visibility_uv [B, S, S, 1]; uv_mask [S, S, 1].
    """
    truth = tf.convert_to_tensor(truth_uv, tf.float32)
    region = tf.convert_to_tensor(uv_mask, tf.float32)[None] * tf.ones_like(truth[..., :1])
    seen = tf.cast(tf.convert_to_tensor(visibility_uv, tf.float32) > 0.5, tf.float32)
    values = {}
    for tag, mask in (("albedo", region), ("albedo_seen", seen * region)):
        for name, value in metrics.albedo_metrics(albedo_uv, truth, mask).items():
            values[f"{tag}_{name}"] = value.numpy()
    values["albedo_flat_rmse"] = metrics.flat_colour_rmse(truth, region).numpy()
    values["albedo_beats_flat"] = (values["albedo_si_rmse"] < values["albedo_flat_rmse"]).astype(np.float64)
    values["albedo_unseen_rmse"] = metrics.aligned_region_rmse(albedo_uv, truth, region * (1.0 - seen),
                                                                region).numpy()
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
