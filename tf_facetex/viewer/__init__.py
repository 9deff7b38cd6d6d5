"""The interactive 3D face viewer: a self-contained HTML page per face, shown in the contact sheet.

``viewer.html`` holds everything it needs inline, so it opens offline from ``file://`` (where Chromium blocks
``fetch`` and ES-module imports): the vendored bundle ``facetex_viewer.js`` (three.js r187 with its GLTFLoader and
OrbitControls, MIT, `LICENSE.three.txt`; rebuilt from ``src/viewer.mjs`` by ``scripts/build_viewer.sh``) and the
face as a base64 GLB written by `tf_facetex.export.gltf` from the same mesh and albedo as ``mesh.glb``, without the
morph targets (the viewer shows the fitted face; the targets would make the page ~17 MB). Drag to orbit, wheel to
zoom; the light is moved with the sliders or by dragging with the right mouse button.
"""
import base64
import html
import pathlib

BUNDLE = pathlib.Path(__file__).resolve().with_name("facetex_viewer.js")
PAGE_NAME = "viewer.html"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>html,body{{margin:0;height:100%;background:#202226;color:#ddd;font:11px sans-serif;overflow:hidden}}
#view{{position:absolute;inset:0}}#ui{{position:absolute;left:4px;top:4px;background:rgba(0,0,0,.4);padding:2px 4px;
border-radius:3px;opacity:.85}}#ui label{{display:block;white-space:nowrap}}#ui input{{width:64px;height:10px;
vertical-align:middle}}</style>
</head><body><div id="view"></div>
<div id="ui" title="light: sliders or right-button drag; view: drag, wheel">
<label><input id="light-azimuth" type="range" min="-180" max="180" step="1"> light azimuth</label>
<label><input id="light-elevation" type="range" min="-90" max="90" step="1"> elevation</label>
<label><input id="light-intensity" type="range" min="0" max="6" step="0.1"> intensity</label></div>
<script type="application/octet-stream" id="face-glb">{glb}</script>
<script>{bundle}</script>
<script>
// The initial light can be given in the address: viewer.html#azimuth=-60&elevation=10&intensity=3
const options = Object.fromEntries(location.hash.slice(1).split("&").filter(Boolean)
  .map((kv) => kv.split("=")).map(([k, v]) => [k, parseFloat(v)]));
facetexStartViewer(document.getElementById("view"), document.getElementById("face-glb").textContent, options);
</script>
</body></html>
"""


def viewer_html(glb_bytes: bytes, title="tf_facetex face") -> str:
    """The viewer page for one face: GLB bytes -> HTML text (self-contained)."""
    bundle = BUNDLE.read_text(encoding="utf-8")
    if "</script" in bundle.lower():
        raise ValueError(f"{BUNDLE} contains '</script', it cannot be inlined")
    return _PAGE.format(title=html.escape(title), glb=base64.b64encode(bytes(glb_bytes)).decode("ascii"),
                        bundle=bundle)


def write_viewer(path, glb_bytes: bytes, title="tf_facetex face") -> pathlib.Path:
    """Writes `viewer_html` atomically; returns the path."""
    from tf_facetex import io_utils

    return io_utils.write_text(path, viewer_html(glb_bytes, title))


def write_face_viewer(folder, model, vertices, texture_path, posed_vertices=None, parts=None,
                      part_albedo=None) -> pathlib.Path:
    """``folder/viewer.html`` for a face folder: the fitted mesh (as `gltf.face_glb` without morph targets, with the
    model's parts when it has them) and the albedo PNG at ``texture_path``."""
    from tf_facetex.export import gltf

    texture_png = pathlib.Path(texture_path).read_bytes()
    if parts is None:
        parts = gltf.model_parts(model, part_albedo)
    glb = gltf.face_glb(model, vertices, None, texture_png, gltf.png_size(texture_png), posed_vertices=posed_vertices,
                        parts=parts, with_morph_targets=False)
    return write_viewer(pathlib.Path(folder) / PAGE_NAME, glb, title=f"tf_facetex: {pathlib.Path(folder).name}")


def contact_sheet_cell(folder: pathlib.Path, href_prefix: str, height=256) -> str:
    """The contact sheet's table cell with the face's viewer (an iframe, loaded when scrolled to), or '' when the
    folder has no viewer page."""
    if not (pathlib.Path(folder) / PAGE_NAME).is_file():
        return ""
    src = html.escape(f"{href_prefix}{PAGE_NAME}", quote=True)
    return (f'<td><iframe class="viewer" src="{src}" loading="lazy" width="{height}" height="{height}" '
            f'title="3D viewer" style="border:0"></iframe><br><small><a href="{src}">open the 3D viewer</a></small></td>')
