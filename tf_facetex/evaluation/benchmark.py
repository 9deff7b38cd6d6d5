"""Runs method variants over refinement samples and tabulates the metrics (scripts/evaluate.py)."""
import collections
import time

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_facetex import visualize
from tf_facetex.evaluation import variants as V
from tf_facetex.identity import get_identity_encoder
from tf_facetex.prior.samples import sample_dataset
from tf_facetex.refinement.checkpoint import load_refinement_net
from tf_facetex.refinement.fit import UVFitConfig, config_with_overrides
from tf_facetex.refinement.train import uv_layout

COLUMNS = (("l1", "L1 ↓", "{:.4f}"), ("psnr", "PSNR ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.3f}"),
           ("identity", "identity ↑", "{:.3f}"))
ALBEDO_COLUMNS = (("albedo_si_rmse", "albedo si-RMSE ↓", "{:.4f}"), ("albedo_ssim", "albedo SSIM ↑", "{:.3f}"),
                  ("albedo_seen_si_rmse", "seen-texel si-RMSE ↓", "{:.4f}"),
                  ("relight_rmse", "relight RMSE ↓", "{:.4f}"))


def _build_variants(names, checkpoints, uv_mask, symmetry_index, fit_steps, net_fit_steps=0, fit_overrides=()):
    built = collections.OrderedDict()
    for name in names:
        if name == "prior":
            built[name] = V.prior_variant
        elif name == "unwrapped":
            built[name] = V.unwrapped_variant
        elif name == "fit":
            built[name] = V.fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=fit_steps))
        elif name == "fit_adam":   # the previous algorithm (per-step Adam loop), kept for paired comparisons
            built[name] = V.fit_variant(uv_mask, symmetry_index, UVFitConfig(steps=fit_steps, solver="adam"))
        elif name == "fit_alt":    # the fit with some settings changed (fit_overrides), paired against 'fit'
            if not fit_overrides:
                raise ValueError("variant 'fit_alt' needs fit overrides (scripts/evaluate.py --fit_overrides)")
            built[name] = V.fit_variant(uv_mask, symmetry_index,
                                        config_with_overrides(UVFitConfig(steps=fit_steps), fit_overrides))
        else:
            raise ValueError(f"unknown variant '{name}' (built-in: prior, unwrapped, fit, fit_adam, fit_alt; "
                             "networks via --checkpoints)")
    for name, path in checkpoints.items():
        net, _ = load_refinement_net(path, log=lambda *_: None)
        built[name] = V.network_variant(net, uv_mask)
        if net_fit_steps:
            built[f"{name}+fit"] = V.net_fit_variant(net, uv_mask, symmetry_index, net_fit_steps)
    return built


def paired_variants(result, pairs):
    """Paired comparisons of variants on the same images from `evaluate_variants`' per-image values: for each
    (method, baseline) in ``pairs``, per metric the mean difference, its 95% bootstrap interval and the share of
    images on which the method is better (`prior.evaluation.paired_comparison`; L1 and RMSE columns: lower is
    better). Returns {'method - baseline': {metric: ...}}."""
    from tf_facetex.prior.evaluation import paired_comparison

    out = {}
    for method, baseline in pairs:
        values, base = result["per_image"][method], result["per_image"][baseline]
        lower = tuple(k for k in values if k.endswith(("l1", "rmse")))
        out[f"{method} - {baseline}"] = paired_comparison(values, base, lower_is_better=lower)
    return out


def evaluate_variants(pattern, sizes, names, checkpoints, face_model="default", identity="dlib", limit=None,
                      batch_size=8, fit_steps=150, want_figure=False, net_fit_steps=0, fit_overrides=()):
    """Returns (result dict for JSON, figure data).

    ``sizes``: `tf_facetex.refinement.train.inspect_samples` of the shards (image/UV size, coefficient count,
    whether they carry ground truth); net_fit_steps > 0: each network also as '<name>+fit' (that many fit steps
    from its output). The result holds each variant's means ('variants'), spreads ('std'), per-image values
    ('per_image', in data order, for paired comparisons) and its time in the refiner: 'ms_per_image', the mean
    over the batches after the first (which traces and compiles), batch ``batch_size``.
    """

    image_size, uv_size = int(sizes["image_size"]), int(sizes["uv_size"])
    uv_mask, symmetry_index = uv_layout(face_model, uv_size, log=lambda *_: None)
    uv_mask = tf.constant(uv_mask, tf.float32)
    encoder = None
    if identity == "dlib":
        encoder = get_identity_encoder("dlib")
    variants = _build_variants(names, checkpoints, uv_mask, symmetry_index, fit_steps, net_fit_steps, fit_overrides)
    with_gt = bool(sizes["has_ground_truth"])
    dataset = sample_dataset(pattern, batch_size, image_size, uv_size, int(sizes["num_coeffs"]), training=False,
                             with_ground_truth=with_gt, deterministic=True)
    values = {name: collections.defaultdict(list) for name in variants}
    has_light = {}
    figure = {"input": [], "renders": collections.defaultdict(list), "albedos": collections.defaultdict(list)}
    count = 0
    seconds = {name: [] for name in variants}     # per batch after the first: (seconds, images)
    for batch_index, batch in enumerate(tqdm(dataset, desc="evaluate", unit="batch")):
        for name, variant in variants.items():
            start = time.perf_counter()
            output = variant(batch)
            tf.nest.map_structure(lambda t: t if t is None else np.asarray(t), output)   # wait for the result
            if batch_index > 0:
                seconds[name].append((time.perf_counter() - start, int(batch["image"].shape[0])))
            has_light[name] = output["light_uv"] is not None
            for key, value in V.evaluate_batch(batch, output, uv_mask, encoder).items():
                values[name][key].extend(np.asarray(value).tolist())
            if want_figure and len(figure["input"]) < 4:
                detailed, _ = V.renders(batch, output["albedo_uv"], output["light_uv"])
                shown = V.composite(detailed, batch["image"], batch["face_mask"]).numpy()
                figure["renders"][name].extend(shown[: 4 - len(figure["input"])])
                figure["albedos"][name].extend(np.clip(output["albedo_uv"].numpy(), 0, 1)[: 4 - len(figure["input"])])
        if want_figure and len(figure["input"]) < 4:
            if with_gt:   # before the inputs: their count says how many are still wanted
                figure["albedos"]["ground truth"].extend(batch["albedo_gt_uv"].numpy()[: 4 - len(figure["input"])])
            figure["input"].extend(batch["image"].numpy()[: 4 - len(figure["input"])])
        count += int(batch["image"].shape[0])
        if limit and count >= limit:
            break
    table = {name: {key: float(np.mean(v)) for key, v in metrics.items()} for name, metrics in values.items()}
    spread = {name: {key: float(np.std(v)) for key, v in metrics.items()} for name, metrics in values.items()}
    timing = {name: (1000.0 * sum(t for t, _ in runs) / sum(n for _, n in runs) if runs else None)
              for name, runs in seconds.items()}
    return {"images": count, "data": pattern, "ground_truth": with_gt, "variants": table, "std": spread,
            "ms_per_image": timing, "per_image": {name: dict(metrics) for name, metrics in values.items()},
            "net_fit_steps": net_fit_steps, "batch_size": batch_size, "detailed_light": has_light,
            "identity_network": V.IDENTITY_NOTE if encoder is not None else "not computed",
            "checkpoints": checkpoints, "fit_steps": fit_steps}, figure


def _rows(result):
    """(row label, metric prefix) pairs: OD and OC for variants with a detailed light, one row otherwise."""
    rows = []
    for name in result["variants"]:
        if result["detailed_light"].get(name):
            rows += [(f"{name} OD (A', L')", name, "od"), (f"{name} OC (A', L)", name, "oc")]
        else:
            rows.append((f"{name} (A, L)" if name == "prior" else f"{name}", name, "oc"))
    return rows


def markdown_table(result, title=""):
    lines = [f"### {title}" if title else "", f"{result['images']} images from `{result['data']}`.", ""]
    header = ["variant"] + [label for _, label, _ in COLUMNS]
    gt = result["ground_truth"]
    if gt:
        header += [label for _, label, _ in ALBEDO_COLUMNS]
    timing = result.get("ms_per_image") or {}
    header.append("ms/image")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, name, tag in _rows(result):
        metrics = result["variants"][name]
        cells = [label]
        for key, _, fmt in COLUMNS:
            value = metrics.get(f"{tag}_{key}")
            cells.append(fmt.format(value) if value is not None else "–")
        if gt:
            for key, _, fmt in ALBEDO_COLUMNS:
                value = metrics.get(key)
                cells.append(fmt.format(value) if value is not None else "–")
        cells.append(f"{timing[name]:.0f}" if timing.get(name) is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Identity: {result['identity_network']}.",
              f"ms/image: the refiner's time per image at batch {result.get('batch_size', '?')}, after the first "
              "batch (tracing and compilation excluded); prior and unwrapped are table look-ups.", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def variant_figure(figure, cell=160):
    rows = []
    inputs = figure["input"]
    for i, image in enumerate(inputs):
        row = [visualize.label(cv2.resize(image, (cell, cell)), "input")]
        for name, renders in figure["renders"].items():
            row.append(visualize.label(cv2.resize(renders[i], (cell, cell)), name))
        for name, albedos in figure["albedos"].items():
            if i < len(albedos):
                row.append(visualize.label(cv2.resize(albedos[i], (cell, cell)), f"A: {name}"))
        rows.append(row)
    return visualize.grid(rows)
