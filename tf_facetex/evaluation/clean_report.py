"""Markdown tables of the clean-albedo results: the best flat colour and the landmark-hull re-render of
scripts/evaluate.py, ghosting / completion, the synthetic evaluation from image files, the clean-albedo metrics
of real photos, and the before/after figure. Used for the .md next to each JSON and by docs/RESULTS.md
(`evaluation.report`); pure Python, no TensorFlow, numpy or OpenCV.

Every function takes the result dict of one JSON and returns a list of markdown lines.
"""
from __future__ import annotations

import math


def _num(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _mean(entry):
    """A summary entry (dict with 'mean') or a plain number -> the number (None when absent)."""
    return entry.get("mean") if isinstance(entry, dict) else entry


def knobs_line(config) -> str:
    """The synthetic set's difficulty knobs (make_synthetic.py's flags) as one line."""
    if not config:
        return "Synthetic set: knobs not recorded."
    keys = ("directional_prob", "directional_max", "light_colour", "specular_prob", "specular_max", "occluder_prob",
            "sh_strength", "max_yaw", "uv_size", "noise_std")
    return "Synthetic set knobs (scripts/make_synthetic.py): " + ", ".join(
        f"`--{key} {config[key]}`" for key in keys if key in config) + "."


# ------------------------------------------------------------------------------------------ evaluate.py (samples)
def _count_true(values):
    finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return int(sum(1 for v in finite if v > 0.5)), len(finite)


def flat_colour_lines(result) -> list:
    """The albedo against the best flat colour, per variant, of a scripts/evaluate.py result with ground truth.

    'beats flat' counts the faces whose albedo si-RMSE is below the flat colour's (the issue's must-show: at
    least 90% of the faces)."""
    variants = result.get("variants", {})
    if not any("albedo_flat_rmse" in metrics for metrics in variants.values()):
        return []
    lines = []
    if result.get("synthetic_config"):
        lines += [knobs_line(result["synthetic_config"]), ""]
    rows = []
    for name, metrics in variants.items():
        beats, total = _count_true(result.get("per_image", {}).get(name, {}).get("albedo_beats_flat", []))
        share = (f"{beats} of {total} ({100.0 * beats / total:.0f}%)" if total
                 else _num(metrics.get("albedo_beats_flat")))
        rows.append([name, _num(metrics.get("albedo_si_rmse")), _num(metrics.get("albedo_flat_rmse")), share,
                     _num(metrics.get("albedo_unseen_rmse")), _num(metrics.get("albedo_seen_si_rmse"))])
    lines += _table(["variant", "albedo si-RMSE ↓", "best flat colour RMSE", "faces where the albedo beats flat ↑",
                     "completion: unseen-texel RMSE ↓", "seen-texel si-RMSE ↓"], rows)
    return lines + [""]


def hull_lines(result) -> list:
    """Re-render PSNR / L1 / SSIM on the landmark hull beside the method's own face mask, per render."""
    variants = result.get("variants", {})
    rows = []
    for name, metrics in variants.items():
        for tag in ("od", "oc"):
            if f"{tag}_hull_psnr" in metrics and (tag == "oc" or result.get("detailed_light", {}).get(name)):
                rows.append([f"{name} {tag.upper()}", _num(metrics.get(f"{tag}_psnr")),
                             _num(metrics.get(f"{tag}_hull_psnr")), _num(metrics.get(f"{tag}_hull_l1")),
                             _num(metrics.get(f"{tag}_hull_ssim"))])
    if not rows:
        return []
    return _table(["render", "PSNR own face mask", "PSNR landmark hull ↑", "L1 landmark hull ↓",
                   "SSIM landmark hull ↑"], rows) + [""]


# ------------------------------------------------------------------------------------------ ghosting
GHOST_COLUMNS = (("ghost_vs_clean_rmse", "ghost: vs the unoccluded photo's fit ↓"),
                 ("ghost_rmse", "ghost region vs truth ↓"), ("clean_ghost_rmse", "(unoccluded fit vs truth there)"),
                 ("completion_rmse", "completion: unseen texels ↓"), ("occluded_rmse", "occluded texels ↓"),
                 ("albedo_si_rmse", "whole chart si-RMSE ↓"))


def ghosting_lines(result) -> list:
    """One table per mask mode (variant x ghosting / completion errors), then the ratios the issue asks for."""
    lines = [knobs_line(result.get("synthetic_config")), ""]
    for mode, run in result.get("runs", {}).items():
        lines.append(f"Mask `{mode}` ({MASK_TEXT.get(mode, mode)}); means over the faces whose region has at least "
                     "20 texels (count in brackets):")
        lines.append("")
        rows = []
        for name, summary in run["summary"].items():
            rows.append([name] + [f"{_num(summary.get(key, {}).get('mean'))} ({summary.get(key, {}).get('count', 0)})"
                                  for key, _ in GHOST_COLUMNS])
        lines += _table(["variant"] + [label for _, label in GHOST_COLUMNS], rows) + [""]
        summary = run["summary"]
        facts = []
        if "uniform" in summary and "fit" in summary:
            for key, what in (("ghost_vs_clean_rmse", "ghosting error"), ("ghost_rmse", "ghost region vs truth")):
                old, new = _mean(summary["uniform"].get(key)), _mean(summary["fit"].get(key))
                if old and new is not None:
                    facts.append(f"{what}: shipped fit / uniform term = {new / old:.2f}"
                                 + (" (halved)" if new <= 0.5 * old else " (not halved)"))
        if "fit" in summary:
            fit = _mean(summary["fit"].get("completion_rmse"))
            for other in ("prior", "uniform"):
                base = _mean(summary.get(other, {}).get("completion_rmse"))
                if fit is not None and base is not None:
                    facts.append(f"completion: shipped fit {_num(fit)} vs {other} {_num(base)} "
                                 + ("(below)" if fit < base else "(not below)"))
        if facts:
            lines += ["; ".join(facts) + ".", ""]
    return lines


MASK_TEXT = {"true": "the generator's face mask: the occluder is masked out, as by a perfect parser",
             "none": "no face mask: the occluder counts as seen, as a masker that misses it"}


# ------------------------------------------------------------------------------------------ from image files
IMAGE_ROWS = (("true_landmarks", "true landmarks + true mask"), ("detected", "image file → product detection"),
              ("true_landmarks_product_mask", "true landmarks + product mask"),
              ("detected_true_mask", "detected landmarks + true mask"))


def from_images_lines(result) -> list:
    """Found / reconstructed counts, then per path (true landmarks, detected) the albedo errors."""
    found = result.get("num_reconstructed", {})
    lines = [knobs_line(result.get("synthetic_config")), "",
             f"Faces found and reconstructed from the image files: **{found.get('detected', '?')} of "
             f"{result.get('num_files', '?')}** (no face: {', '.join(result.get('no_face', [])) or 'none'}).", ""]
    rows = []
    summaries = result.get("summary", {})
    for key, label in IMAGE_ROWS:
        if key not in summaries:
            continue
        summary = summaries.get(key, {})
        beats = _count_true(result.get("per_image", {}).get(key, {}).get("albedo_beats_flat", []))
        rows.append([label, found.get(key, "?"), _num(_mean(summary.get("albedo_si_rmse"))),
                     _num(_mean(summary.get("albedo_flat_rmse"))), f"{beats[0]} of {beats[1]}",
                     _num(_mean(summary.get("albedo_unseen_rmse"))), _num(_mean(summary.get("albedo_seen_si_rmse"))),
                     _num(_mean(summary.get("detailed_psnr_db"))), _num(_mean(summary.get("landmark_error_px")))])
    lines += _table(["path", "faces", "albedo si-RMSE ↓", "best flat colour", "beats flat ↑", "completion ↓",
                     "seen si-RMSE ↓", "PSNR own mask (dB)", "landmark error (px)"], rows)
    paired = summaries.get("paired")
    if paired:
        lines += ["", "On the faces both paths reconstructed: albedo si-RMSE " + ", ".join(
            f"{label} {_num(_mean(paired.get(key, {}).get('albedo_si_rmse')))}" for key, label in IMAGE_ROWS
            if key in paired) + "."]
    return lines + [""]


# ------------------------------------------------------------------------------------------ real photos with labels
CLEAN_TABLE_ROWS = (
    ("occluder leak, nearest pixel (share of seen texels) ↓", "leak_nearest"),
    ("occluder leak, bilinear-weighted ↓", "leak_weighted"),
    ("seen texels per face", "seen_texels"),
    ("coverage of the labelled face ↑", "coverage_face"),
    ("coverage of the labelled eyes ↑", "coverage_eyes"),
    ("coverage of the labelled mouth ↑", "coverage_mouth"),
    ("PSNR labelled face (dB) ↑", "labelled_face_psnr_db"),
    ("L1 labelled face ↓", "labelled_face_l1"),
    ("SSIM labelled face ↑", "labelled_face_ssim"),
    ("PSNR landmark hull (dB) ↑", "landmark_hull_psnr_db"),
    ("L1 landmark hull ↓", "landmark_hull_l1"),
    ("SSIM landmark hull ↑", "landmark_hull_ssim"),
    ("PSNR own face mask (dB)", "own_mask_psnr_db"),
    ("PSNR eyes (dB) ↑", "eyes_psnr_db"),
    ("PSNR mouth (dB) ↑", "mouth_psnr_db"),
)


def comparison_table(runs) -> str:
    """Markdown table of clean-albedo results side by side: [(name, result dict)] -> str.

    Per-image means (medians in brackets); the pooled leak (all seen texels of all faces together) below."""
    header = "| metric | " + " | ".join(name for name, _ in runs) + " |"
    lines = [header, "|---" * (len(runs) + 1) + "|"]
    for label, key in CLEAN_TABLE_ROWS:
        cells = []
        for _, result in runs:
            entry = result["summary"].get(key)
            cells.append("–" if entry is None else f"{entry['mean']:.4g} ({entry['median']:.4g})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| occluder leak pooled over texels ↓ | " + " | ".join(
        _num((result.get("leak_pooled_over_texels") or {}).get("leak_nearest")) for _, result in runs) + " |")
    lines.append("| faces | " + " | ".join(str(result.get("num_faces", "?")) for _, result in runs) + " |")
    return "\n".join(lines) + "\n"


def clean_albedo_lines(result) -> list:
    """This run (today) beside the baselines copied into its JSON (``baselines``)."""
    runs = [("today" + (f": {result['label']}" if result.get("label") else ""), result)]
    runs += [(b["label"] if str(b.get("label", "")).startswith(name) else
              f"{name}" + (f": {b['label']}" if b.get("label") else ""), b)
             for name, b in (result.get("baselines") or {}).items()]
    masker = result.get("masker", {})
    lines = [f"Protocol: {result.get('protocol', '?')}; masker {masker.get('name', '?')}; "
             f"{result.get('num_faces', '?')} of {result.get('num_files', '?')} photos with a face.", "",
             "Per-image means (medians in brackets):", ""]
    return lines + comparison_table(runs).rstrip("\n").split("\n") + [""]


def figure_lines(result) -> list:
    """The before/after albedo figure, inline, with what was chosen and how."""
    name = str(result.get("figure", "")).rsplit("/", 1)[-1]
    lines = [f"![before/after albedos](results/{name})", "",
             f"Photos: {result.get('source', '?')}. Selection: {result.get('selection', '?')}. "
             f"Layout: {result.get('layout', '?')}.", "",
             "With hair over the forehead (share of the forehead labelled hair or hat): "
             + ", ".join(f"{stem} ({share:.2f})" for stem, share in result.get("with_hair", {}).items()) + "; without: "
             + ", ".join(f"{stem} ({share:.2f})" for stem, share in result.get("without_hair", {}).items()) + ".", ""]
    before, after = result.get("before", {}), result.get("after", {})
    lines += [f"Before: masker {before.get('masker', '?')}, albedo prior {before.get('albedo_prior', '?')}, detail "
              f"stage {before.get('refiner', '?')}. After: masker {after.get('masker', '?')}, "
              f"{after.get('reconstructor', '?')}.", ""]
    return lines
