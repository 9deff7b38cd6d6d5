"""What the symmetry term does to the albedo: mirrored ghosts of occluders, and the completion of unseen texels.

The symmetry term copies one side of the UV chart onto the other. Where the photo did not show a texel that is
the point (the mirror is the best guess), where it did it can paint the other side's occluder over a seen,
clean texel: a strand over one eyebrow comes back over the other. Re-render metrics cannot see either (the ghost
sits where the photo agrees well enough, the unseen part is never rendered), so these use the synthetic faces'
true albedo (scripts/make_synthetic.py):

- **ghosting**: the albedo error on the *ghost region*, the texels the photo shows whose mirror is covered by
  an occluder (``ghost_region``): the mirror image of the occluded region, restricted to where it is seen and
  itself free of the occluder, against the same region of the same method's albedo from the unoccluded render
  of the same face (the generator's ``image_clean``; ``ghost_vs_clean_rmse``: what the occluder added there,
  the ghost itself) and against the true albedo there (``ghost_rmse``);
- **completion**: the albedo error on the chart texels the photo did not show (visibility_uv = 0);
- **occluded**: the error on the occluded texels themselves (what the completion made of the hidden part);
- **ghost excess**: the ghost region's error minus that of the face's other clean seen texels: when the occluder
  also misleads the light estimate (a masker that misses it), every texel's error rises, the ghost's on top.

All are RMSEs after the per-channel scale alignment of the albedo si-RMSE, with the scale fitted on the whole
chart (`metrics.aligned_region_rmse`; a region's own scale would hide a tone shift there): the numbers compare
with `metrics.albedo_metrics`.
The albedos come from the product's refiners (`evaluation.variants`), never from a copy of the fit.
"""
import cv2
import numpy as np
import tensorflow as tf

from tf_facetex import metrics
from tf_facetex.losses import mirror_uv


def occluded_texels(occluder_mask, pixel_uv, proj_mask, uv_size, dilation=1):
    """The UV texels an image-space occluder covers: the texels of the face pixels it hides.

    Every face pixel (proj_mask) under the occluder marks its texel (the image-from-UV lookup, rounded); the
    image samples the chart more sparsely than one pixel per texel in places, so the marks are dilated by
    ``dilation`` texels (3 x 3 steps) to close the gaps between them.

    Args:
      occluder_mask: [B, H, W, 1] in {0, 1} (the generator's ``occluder_mask``).
      pixel_uv: [B, H, W, 2] (col, row) position of every pixel in the S x S UV map.
      proj_mask: [B, H, W, 1] pixels covered by the mesh.
      uv_size: S.
    Returns:
      float32 [B, S, S, 1] in {0, 1}.
    """
    occluder = np.asarray(occluder_mask, np.float32)[..., 0] > 0.5
    face = np.asarray(proj_mask, np.float32)[..., 0] > 0.5
    pixel_uv = np.asarray(pixel_uv, np.float32)
    out = np.zeros((occluder.shape[0], uv_size, uv_size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for b in range(occluder.shape[0]):
        hidden = pixel_uv[b][occluder[b] & face[b]]                           # [K, 2] (col, row)
        cols = np.clip(np.round(hidden[:, 0]).astype(np.int64), 0, uv_size - 1)
        rows = np.clip(np.round(hidden[:, 1]).astype(np.int64), 0, uv_size - 1)
        out[b, rows, cols] = 1
        if dilation > 0:
            out[b] = cv2.dilate(out[b], kernel, iterations=int(dilation))
    return out[..., None].astype(np.float32)


def ghost_region(occluded_uv, visibility_uv, uv_mask, symmetry_index=None):
    """Texels the photo shows, free of the occluder, whose mirror texel is occluded: the region a mirrored
    ghost of the occluder would land on.

    Args:
      occluded_uv: [B, S, S, 1] (`occluded_texels`); visibility_uv: [B, S, S, 1]; uv_mask: [S, S, 1];
      symmetry_index: None (flip along W) or [S * S] (`losses.mirror_uv`).
    Returns:
      float32 [B, S, S, 1] in {0, 1}.
    """
    occluded = tf.convert_to_tensor(occluded_uv, tf.float32)
    chart = tf.convert_to_tensor(uv_mask, tf.float32)[None] * tf.ones_like(occluded)
    on_chart = chart * mirror_uv(chart, symmetry_index)
    seen = tf.cast(tf.convert_to_tensor(visibility_uv, tf.float32) > 0.5, tf.float32)
    return (seen * (1.0 - occluded) * mirror_uv(occluded, symmetry_index) * on_chart).numpy()


def _region_rmse(albedo_uv, truth_uv, region, align_region):
    """`metrics.aligned_region_rmse` as float64 numpy [B] (NaN where the region is empty)."""
    return np.asarray(metrics.aligned_region_rmse(albedo_uv, truth_uv, region, align_region), np.float64)


def mirror_metrics(batch, albedo_uv, uv_mask, occluded_uv, symmetry_index=None, reference_uv=None):
    """Ghosting, completion and whole-chart albedo errors of one variant's albedo on a batch with ground truth.

    Args:
      batch: refinement samples with ``albedo_gt_uv`` and ``visibility_uv`` ([B, ...] tensors or arrays).
      albedo_uv: [B, S, S, 3] the variant's albedo; uv_mask: [S, S, 1];
      occluded_uv: [B, S, S, 1] (`occluded_texels`); symmetry_index: as `losses.mirror_uv`;
      reference_uv: None or [B, S, S, 3], the same variant's albedo from the unoccluded render of the same faces
        (the ghosting reference: what the ghost region holds when there is nothing to mirror).
    Returns:
      dict of [B] float64: ghost_rmse, occluded_rmse, completion_rmse, seen_clean_rmse (seen texels neither
      occluded nor in the ghost region), ghost_excess (ghost_rmse - seen_clean_rmse), albedo_si_rmse (the whole
      chart), and the texel counts ghost_texels, occluded_texels, completion_texels, seen_clean_texels. With a
      reference also ghost_vs_clean_rmse (the albedo against the reference on the ghost region, after the
      per-channel scale fitted on the whole chart: the ghost itself) and clean_ghost_rmse (the reference against
      the truth there: the error the region has without an occluder).
    """
    truth = tf.convert_to_tensor(batch["albedo_gt_uv"], tf.float32)
    chart = np.asarray(uv_mask, np.float32)[None] * np.ones(truth.shape[:3] + (1,), np.float32)
    visible = np.asarray(batch["visibility_uv"], np.float32) > 0.5
    ghost = ghost_region(occluded_uv, batch["visibility_uv"], uv_mask, symmetry_index)
    occluded = np.asarray(occluded_uv, np.float32) * chart
    regions = {"ghost": ghost, "occluded": occluded, "completion": chart * (~visible),
               "seen_clean": chart * visible * (1.0 - occluded) * (1.0 - ghost)}
    out = {"albedo_si_rmse": _region_rmse(albedo_uv, truth, chart, chart)}
    for name, region in regions.items():
        out[f"{name}_rmse"] = _region_rmse(albedo_uv, truth, region, chart)
        out[f"{name}_texels"] = region.sum(axis=(1, 2, 3))
    # What the ghost region has beyond the error of the other clean seen texels of the same face (a wrong
    # light or tone raises both alike).
    out["ghost_excess"] = out["ghost_rmse"] - out["seen_clean_rmse"]
    if reference_uv is not None:
        out["ghost_vs_clean_rmse"] = _region_rmse(albedo_uv, reference_uv, ghost, chart)
        out["clean_ghost_rmse"] = _region_rmse(reference_uv, truth, ghost, chart)
    return out


# The region each metric is measured on, where its name does not start with it (`summarise`'s texel filter).
METRIC_REGION = {"ghost_excess": "ghost", "ghost_vs_clean_rmse": "ghost", "clean_ghost_rmse": "ghost"}


def summarise(values, min_texels=20):
    """{metric: [N] per image} -> {metric: dict(mean, median, count)}; a region metric counts only the images
    whose region has at least ``min_texels`` texels (a handful of texels says nothing)."""
    out = {}
    for key, array in values.items():
        array = np.asarray(array, np.float64)
        region = METRIC_REGION.get(key) or (key[:-len("_rmse")] if key.endswith("_rmse") else None)
        counts = values.get(f"{region}_texels") if region else None
        keep = np.isfinite(array)
        if counts is not None:
            keep &= np.asarray(counts) >= min_texels
        kept = array[keep]
        out[key] = {"mean": float(kept.mean()) if kept.size else float("nan"),
                    "median": float(np.median(kept)) if kept.size else float("nan"), "count": int(kept.size)}
    return out


# ------------------------------------------------------------------------------------------ the protocol
MASK_MODES = ("true", "none", "leak")
FIGURE_MODE_ORDER = ("leak", "none", "true")      # which run the figure shows, when several were


def prior_samples(prior, faces, mask_mode="true", clean=False):
    """Refinement samples of synthetic faces through the product's `PriorModule` (their true landmarks).

    Args:
      prior: `prior.PriorModule` at the faces' UV size.
      faces: list of `data.synthetic.load_synthetic_face` dicts.
      mask_mode: 'true' (the generator's face mask: the occluder is masked out, as a perfect parser would) or
        'none' (no mask: the occluder is taken as seen, and the prior's appearance gate, which refines a mask,
        does not run) or 'leak' (the projected face given as the mask: a masker that misses the occluder, as
        the product meets it on real photos; the appearance gate then runs as it does there).
      clean: the unoccluded render of the same faces (``image_clean``; its true mask is the projected face).
    Returns:
      (dict of [B, ...] tensors: the prior outputs + albedo_gt_uv, occluded_uv [B, S, S, 1] numpy).
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    if clean and any("image_clean" not in face for face in faces):
        raise ValueError("these synthetic faces have no unoccluded render (image_clean): make them again with "
                         "scripts/make_synthetic.py")
    images = np.stack([face["image_clean" if clean else "image"] for face in faces]).astype(np.float32) / 255.0
    landmarks = np.stack([face["landmarks"] for face in faces]).astype(np.float32)
    mask_key = "proj_mask" if clean else "face_mask"
    if mask_mode == "true":
        masks = np.stack([face[mask_key] for face in faces]).astype(np.float32)
    elif mask_mode == "leak":
        masks = np.stack([face["proj_mask"] for face in faces]).astype(np.float32)
    else:
        masks = None
    out = prior(tf.constant(images), tf.constant(landmarks), None if masks is None else tf.constant(masks))
    out["albedo_gt_uv"] = tf.constant(np.stack([face["albedo_gt_uv"] for face in faces]), tf.float32)
    occluder = np.stack([face["occluder_mask"] for face in faces])
    occluded = occluded_texels(occluder, out["pixel_uv"].numpy(), out["proj_mask"].numpy(),
                               int(out["visibility_uv"].shape[1]))
    return out, occluded


def evaluate_ghosting(faces_of_batches, prior, variants, uv_mask, symmetry_index=None, mask_mode="true",
                      log=print):
    """Ghosting and completion of each variant over batches of synthetic faces, against the truth and against
    the same variant on the unoccluded render of the same faces.

    Args:
      faces_of_batches: iterable of lists of `load_synthetic_face` dicts (with ``image_clean``).
      prior: `prior.PriorModule` at the faces' UV size; variants: {name: batch -> {'albedo_uv'}}
        (`evaluation.variants.symmetry_variant`); uv_mask [S, S, 1]; symmetry_index: the renderer's;
      mask_mode: `prior_samples`' (the unoccluded render always gets its true mask in 'true' mode).
    Returns:
      ({name: {metric: [N] list}} per image, in data order; the albedos of the first batch
      {name: [B, S, S, 3], 'truth', 'image', 'image_clean'} for a figure).
    """
    import collections

    values = {name: collections.defaultdict(list) for name in variants}
    first, done = None, 0
    for faces in faces_of_batches:
        batch, occluded = prior_samples(prior, faces, mask_mode)
        clean_batch, _ = prior_samples(prior, faces, mask_mode, clean=True)
        albedos = {}
        for name, variant in variants.items():
            albedos[name] = np.asarray(variant(batch)["albedo_uv"])
            reference = np.asarray(variant(clean_batch)["albedo_uv"])
            for key, value in mirror_metrics(batch, albedos[name], uv_mask, occluded, symmetry_index,
                                             reference_uv=reference).items():
                values[name][key].extend(np.asarray(value, np.float64).tolist())
        if first is None:
            first = {**albedos, "truth": np.asarray(batch["albedo_gt_uv"]),
                     "image": np.stack([face["image"] for face in faces]),
                     "image_clean": np.stack([face["image_clean"] for face in faces])}
        done += len(faces)
        log(f"  {done} faces")
    return {name: dict(per) for name, per in values.items()}, first


TEXT_COLUMNS = ("ghost_vs_clean_rmse", "ghost_rmse", "ghost_excess", "completion_rmse", "albedo_si_rmse")


def check_protocol_names(variant_names, mask_modes):
    """ValueError unless every variant name (`variants.parse_symmetry_variant`) and mask mode is known."""
    from tf_facetex.evaluation.variants import parse_symmetry_variant

    unknown = sorted(set(mask_modes) - set(MASK_MODES))
    if unknown:
        raise ValueError(f"mask modes {unknown}: each must be one of {MASK_MODES}")
    for name in variant_names:
        parse_symmetry_variant(name)


def run_protocol(data_dir, variant_names, mask_modes=("true",), fit_steps=150, batch_size=8, num=0,
                 face_model=None, figure_faces=4, log=print):
    """The ghosting / completion protocol on a scripts/make_synthetic.py folder (scripts/eval_symmetry.py,
    scripts/evaluate.py --protocol=ghosting): returns (result dict for the JSON, figure uint8 or None).

    Every face and its unoccluded render go through the product's `PriorModule` (true landmarks, each of
    ``mask_modes``) and each variant (`variants.symmetry_variant`); see `evaluate_ghosting` and `mirror_metrics`.
    The result holds one entry per mask mode under 'runs' ({'summary', 'per_image'}); the figure shows mode
    'leak' when it was run, else 'none', else 'true' (`FIGURE_MODE_ORDER`).
    """
    import time

    from tf_facetex.data.synthetic import load_manifest, load_synthetic_face
    from tf_facetex.evaluation import variants as V
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.module import PriorConfig, PriorModule

    check_protocol_names(variant_names, mask_modes)
    manifest = load_manifest(data_dir)
    count = manifest["count"] if not num else min(num, manifest["count"])
    uv_size = int(manifest["config"]["uv_size"])
    model = load_face_model(face_model, log=log)
    prior = PriorModule(model, PriorConfig(uv_size=uv_size))
    uv_mask, symmetry_index = prior.renderer.uv_mask, prior.renderer.uv_symmetry_index
    variants = {name: V.symmetry_variant(name, uv_mask, symmetry_index, fit_steps) for name in variant_names}
    start, runs, figure, figure_rank = time.time(), {}, None, len(FIGURE_MODE_ORDER)
    for mode in mask_modes:
        batches = ([load_synthetic_face(data_dir, i) for i in range(first, min(count, first + batch_size))]
                   for first in range(0, count, batch_size))
        log(f"mask {mode}:")
        values, first = evaluate_ghosting(batches, prior, variants, uv_mask, symmetry_index, mode, log=log)
        runs[mode] = {"summary": {name: summarise(per) for name, per in values.items()}, "per_image": values}
        # The figure shows a leaking mask when one was run (a masked occluder leaves nothing to mirror): 'leak'
        # (the product's path, the gate running) before 'none'.
        rank = FIGURE_MODE_ORDER.index(mode)
        if figure_faces and first and rank < figure_rank:
            figure, figure_rank = ghost_figure(first, list(variants), figure_faces), rank
    result = {"data": str(data_dir), "synthetic_config": manifest["config"], "seed": manifest["seed"],
              "num_faces": count, "masks": list(mask_modes), "fit_steps": fit_steps, "uv_size": uv_size,
              "face_model": getattr(model, "source", None),
              "variants": {name: (v.refiner.describe() if hasattr(v, "refiner") else name)
                           for name, v in variants.items()},
              "runs": runs, "seconds": time.time() - start}
    return result, figure


def ghost_figure(first, names, faces=4, cell=160):
    """uint8 grid: photo | unoccluded render | true albedo | each variant's albedo, one row per face."""
    from tf_facetex import visualize

    def uv(albedo):
        array = np.clip(np.asarray(albedo, np.float32), 0.0, 1.0)
        return (cv2.resize(array, (cell, cell), interpolation=cv2.INTER_NEAREST) * 255 + 0.5).astype(np.uint8)

    rows = []
    for b in range(min(faces, len(first["truth"]))):
        row = [visualize.label(cv2.resize(first["image"][b], (cell, cell)), "photo"),
               visualize.label(cv2.resize(first["image_clean"][b], (cell, cell)), "unoccluded"),
               visualize.label(uv(first["truth"][b]), "true albedo")]
        rows.append(row + [visualize.label(uv(first[name][b]), name) for name in names])
    return visualize.grid(rows)


def text_table(result):
    """The per-variant means of ``TEXT_COLUMNS`` of each mask mode as fixed-width text."""
    lines = []
    for mode, run in result["runs"].items():
        lines.append(f"mask {mode}: {'variant':16s} " + " ".join(f"{key:>20s}" for key in TEXT_COLUMNS))
        for name, summary in run["summary"].items():
            lines.append(f"{'':>{len(mode) + 7}s} {name:16s} " + " ".join(
                f"{summary.get(key, {}).get('mean', float('nan')):20.4f}" for key in TEXT_COLUMNS))
    return "\n".join(lines)
