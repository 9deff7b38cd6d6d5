"""The RESULTS.md tables of scripts/eval_relight.py (docs/results/eval_relight.json): single vs multi-photo mode, and
earlier runs (``baselines``) beside this one. No TensorFlow, no numpy: plain JSON in, markdown lines out."""
from __future__ import annotations


def _cell(value, digits=3, signed=False):
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(header, rows):
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""])


def _single_row(name, summary, seconds=None):
    return [name, _cell(summary.get("ratio")), _cell(summary.get("cv_albedo")), _cell(summary.get("cv_lit")),
            _cell(summary.get("relit_psnr_mean"), 2), _cell(summary.get("baseline_psnr_mean"), 2),
            _cell(summary.get("gain_db"), 2, signed=True),
            "–" if seconds is None else f"{seconds:.1f}"]


def relight_lines(data) -> list:
    """Markdown lines: the single-photo table (earlier runs, then this one), the multi-photo comparison on the
    same photo pairs, and the per-subject values."""
    summary = data["summary"]
    protocol = data.get("protocol", {})
    lines = [f"Subjects: {', '.join(protocol.get('subjects', []))}; lights: {', '.join(protocol.get('lights', []))}; "
             f"face model: {protocol.get('face_model', 'not recorded')}.", ""]
    header = ["run", "ratio CV(A') / CV(A' x shading) ↓", "CV A'", "CV lit", "relit R(A'_i, L'_j) dB",
              "photo i dB", "gain dB ↑", "s/photo"]
    rows = [_single_row(f"{name} ({(base.get('code') or base.get('file') or '').split(' (')[0]})",
                        base.get("summary") or {}, base.get("seconds_per_photo"))
            for name, base in data.get("baselines", {}).items()]
    rows.append(_single_row("**this run**", summary, summary.get("seconds_per_photo")))
    lines += ["**Single-photo mode** (each photo reconstructed alone; targets: ratio <= 0.3, gain >= +6 dB):", ""]
    lines += _table(header, rows)
    multi = data.get("multi", {}).get("summary")
    if multi:
        halves = protocol.get("multi_halves", [[], []])
        lines += [f"**Multi-photo mode** (one albedo per half of the lights: {' + '.join(halves[0])} | "
                  f"{' + '.join(halves[1])}; each half relit to the other half's held-out lights; the single mode on "
                  f"the same {multi.get('pairs', '?')} photo pairs and texels):", ""]
        lines += _table(["measure", "single photo", "multi photo", "better"], [
            ["albedo consistency: pair CV(A') / CV(lit), halves vs single-photo pairs ↓",
             _cell(multi["ratio_single_pairs"]), _cell(multi["ratio_multi"]),
             "multi" if multi["ratio_multi"] < multi["ratio_single_pairs"] else "single"],
            ["pair CV of A' ↓", _cell(multi["cv_albedo_single_pairs"]), _cell(multi["cv_albedo_multi"]), ""],
            ["cross-relighting R(A', L'_j) dB ↑", _cell(multi["single_relit_psnr_mean"], 2),
             _cell(multi["relit_psnr_mean"], 2), ""],
            ["gain over photo i, dB ↑", _cell(multi["single_gain_db"], 2, True), _cell(multi["gain_db"], 2, True),
             "multi" if multi["gain_db"] > multi["single_gain_db"] else "single"]])
    subjects = data.get("subjects", {})
    per_multi = data.get("multi", {}).get("subjects", {})
    rows = []
    for name, scores in subjects.items():
        m = per_multi.get(name, {})
        rows.append([name, _cell(scores["ratio"]), _cell(scores["gain_db"], 2, True),
                     _cell(m.get("ratio_single_pairs")), _cell(m.get("ratio_multi")),
                     _cell(m.get("single_gain_db"), 2, True) if m else "–", _cell(m.get("gain_db"), 2, True) if m else "–",
                     ", ".join(sorted(set(scores.get("detectors", []))))])
    lines += ["Per subject:", ""]
    lines += _table(["subject", "ratio", "gain dB", "pair ratio single", "pair ratio multi", "held-out gain single",
                     "held-out gain multi", "detectors"], rows)
    return lines
