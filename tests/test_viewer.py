"""The 3D viewer page (fast checks; the browser test is tests/test_viewer_slow.py): the vendored bundle is small and
licensed, the page is self-contained and embeds a GLB of the face, the contact sheet shows it."""
import base64
import re

import numpy as np

from tf_facetex import pipeline, viewer
from tf_facetex.export import gltf


def test_vendored_bundle_is_small_and_licensed():
    assert viewer.BUNDLE.is_file() and viewer.BUNDLE.stat().st_size < 1.5e6
    text = viewer.BUNDLE.read_text()
    assert "three.js" in text.splitlines()[0] and "facetexStartViewer" in text
    assert "MIT License" in (viewer.BUNDLE.parent / "LICENSE.three.txt").read_text()
    # Offline: no module imports or network fetches left in the bundle.
    assert not re.search(r"\bimport\s*\(|^\s*import\s", text, re.M)



def test_viewer_page_embeds_the_fitted_face(tiny_model, tmp_path):
    import cv2

    (tmp_path / "face").mkdir()
    cv2.imwrite(str(tmp_path / "face" / "albedo.png"), np.full((32, 32, 3), 128, np.uint8))
    vertices = tiny_model.mean_shape + 0.1 * tiny_model.exp_basis[0]
    path = viewer.write_face_viewer(tmp_path / "face", tiny_model, vertices, tmp_path / "face" / "albedo.png")
    page = path.read_text()
    assert page.count("<script") == 3 and 'src="' not in page           # nothing loaded from elsewhere
    payload = re.search(r'id="face-glb">([^<]+)</script>', page).group(1)
    document, binary = gltf.read_glb(base64.b64decode(payload))
    (prim,) = document["meshes"][0]["primitives"]
    assert "targets" not in prim and document["images"][0]["mimeType"] == "image/png"
    assert document["accessors"][prim["indices"]]["count"] == 3 * int(tiny_model.textured_triangles.sum())

    # The contact sheet embeds it next to the thumbnails (only for folders that have one).
    (tmp_path / "face" / pipeline.RESULT_MARKER).write_text("{}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / pipeline.RESULT_MARKER).write_text("{}")
    sheet = pipeline.index_html(tmp_path)
    assert sheet.count('<iframe class="viewer" src="face/viewer.html"') == 1 and "other/viewer.html" not in sheet
