"""Markdown table cells and tables for docs/RESULTS.md and the .md files next to result JSONs (pure Python, no
TensorFlow): `evaluation.report` and the per-result formatter modules (`speed_report`) share them, so that those
modules need not import the report that lists them."""
from __future__ import annotations

import math


def fmt(value, digits=4):
    """A table cell: numbers rounded sensibly, lists short, None as an en dash; '|' escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) < 1:
            return f"{value:.{digits}g}"
        text = f"{value:.{max(1, digits - 1)}f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, (list, tuple)):
        if len(value) > 8 or any(isinstance(v, (dict, list)) for v in value):
            return f"[{len(value)} values]"
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    if isinstance(value, dict):
        return f"{{{len(value)} entries}}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _escape(text):
    """Pipes inside a table cell would split it."""
    return text.replace("\\|", "|").replace("|", "\\|").replace("\n", " ")


def table(header, rows):
    """Markdown table lines."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_escape(c) if isinstance(c, str) else fmt(c) for c in row]
        cells += [""] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return lines
