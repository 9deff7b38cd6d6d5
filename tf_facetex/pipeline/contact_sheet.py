"""The ``index.html`` contact sheet of an output folder (relative links, thumbnails, errors, file legend)."""
from __future__ import annotations

import html
import json
import pathlib
from typing import List

from tf_facetex import io_utils, viewer
from tf_facetex.pipeline.result import OUTPUT_FILES, RESULT_MARKER


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
            f'loading="lazy"></a></td>{viewer.contact_sheet_cell(folder, href(""))}<td class="links">{links}</td></tr>')
    error_rows = "".join(f"<li><code>{html.escape(e['input'])}</code>: {html.escape(e['error'])}</li>"
                         for e in errors)
    legend = "".join(f"<li><code>{html.escape(f)}</code>: {html.escape(d)}</li>" for f, d in OUTPUT_FILES.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tf_facetex results</title>
<style>body{{font-family:sans-serif;margin:1.5em}}td{{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}}
img{{height:128px}}td.links{{font-size:90%;max-width:40em}}</style></head><body>
<h1>tf_facetex results</h1>
<p>{len(rows)} face(s). Thumbnails: aligned input | R(A', L') | albedo A'. Click a thumbnail for the overlay on
the photo. 3D viewer: drag to turn, wheel to zoom; the sliders or a right-button drag move the light.</p>
<table>{''.join(rows)}</table>
{f'<h2>Errors ({len(errors)})</h2><ul>{error_rows}</ul>' if errors else ''}
<h2>Files in each folder</h2><ul>{legend}</ul>
</body></html>
"""


def write_index_html(out_dir, errors=()):
    return io_utils.write_text(pathlib.Path(out_dir) / "index.html", index_html(out_dir, errors))
