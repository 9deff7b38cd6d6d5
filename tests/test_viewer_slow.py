"""The contact sheet's 3D viewer in headless Chromium (slow: installs Debian's chromium and puppeteer-core): the
demo's index.html loaded from disk draws the face in its viewer with no console errors, and the light moves."""
import json

import numpy as np
import pytest

import interop_tools

pytestmark = pytest.mark.slow
BACKGROUND = np.array([0x20, 0x22, 0x26])          # the viewer's clear colour


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    interop_tools.install("npm", "chromium")
    return interop_tools.demo_outputs(tmp_path_factory.getbasetemp())


def screenshot(page, out, width=1100, height=520):
    proc = interop_tools.run(["node", interop_tools.ROOT / "scripts" / "screenshot_page.js", page, out, width, height],
                             env={"NODE_PATH": str(interop_tools.NPM_MODULES)}, timeout=300)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    import cv2
    return report, cv2.imread(str(out))[..., ::-1]


def face_pixels(image, rect):
    left, top, width, height = (int(round(v)) for v in rect)
    region = image[top:top + height, left:left + width].astype(np.int32)
    return region, np.abs(region - BACKGROUND).max(axis=-1) > 12


def test_contact_sheet_viewer_draws_the_face(demo_dir, tmp_path):
    report, image = screenshot(demo_dir / "index.html", tmp_path / "index.png")
    print(json.dumps(report))
    assert report["errors"] == [], report["errors"]
    assert not [m for m in report["console"] if m["kind"] in ("error", "warning", "warn")], report["console"]
    (viewer_state,) = report["viewers"]
    assert viewer_state["frames"] > 0 and viewer_state["error"] is None
    region, face = face_pixels(image, report["rects"][0])
    assert region.shape[:2] == (256, 256)
    # Not blank: a large, varied, skin-coloured blob in the middle of the viewer.
    assert 0.2 < face.mean() < 0.9, face.mean()
    centre = region[96:160, 96:160][face[96:160, 96:160]]
    assert len(centre) > 0.8 * 64 * 64
    red, green, blue = centre.mean(axis=0)
    assert red > green > blue and red > 90, (red, green, blue)
    assert region[face].std() > 10


def test_the_light_moves(demo_dir, tmp_path):
    page = demo_dir / "astronaut" / "viewer.html"
    halves = {}
    for azimuth in (-80, 80):
        report, image = screenshot(f"{page}#azimuth={azimuth}&elevation=0", tmp_path / f"a{azimuth}.png", 320, 320)
        assert report["errors"] == [] and report["viewers"][0]["frames"] > 0, report
        region, face = face_pixels(image, report["rects"][0])
        grey = region.mean(axis=-1)
        mid = region.shape[1] // 2
        halves[azimuth] = (grey[:, :mid][face[:, :mid]].mean(), grey[:, mid:][face[:, mid:]].mean())
    print(halves)
    # Light from the face's left (+x, image right) brightens the image's right half, and the other way round.
    assert halves[80][1] > halves[80][0] + 15 and halves[-80][0] > halves[-80][1] + 15, halves
