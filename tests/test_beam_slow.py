"""Batch reconstruction on Apache Beam's DirectRunner (slow: installs apache-beam into its own venv on top of .venv,
then reconstructs 4 photos twice): scripts/reconstruct_beam.py writes the same face folders as scripts/reconstruct.py
with the same flags, and lists the bad files in its errors.json."""
import json
import shutil
import sys

import numpy as np
import pytest

import interop_tools

pytestmark = pytest.mark.slow
FLAGS = ["--fit_steps=30", "--landmark_steps=100", "--masker=skin"]


@pytest.fixture(scope="module")
def photos(faces_dir, tmp_path_factory):
    interop_tools.install("beam")
    from tf_facetex import io_utils

    folder = tmp_path_factory.mktemp("beam_inputs")
    for path in sorted((faces_dir / "celebamask_hq_mini" / "train" / "images").glob("*.jpg"))[:4]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_text("this is not a JPEG")
    io_utils.write_image(folder / "landscape.png", np.full((160, 200, 3), 120, np.uint8))   # no face in it
    return folder


def folder_files(out_dir):
    return {p.name: sorted(f.name for f in p.iterdir()) for p in out_dir.iterdir() if p.is_dir()}


def test_beam_writes_the_same_face_folders_as_reconstruct(photos, tmp_path):
    import cv2

    interop_tools.run([sys.executable, interop_tools.ROOT / "scripts" / "reconstruct.py", f"--input={photos}",
                       f"--output_dir={tmp_path / 'cli'}", "--noprogress", *FLAGS], timeout=1800)
    beam = interop_tools.run([interop_tools.BEAM_PYTHON, interop_tools.ROOT / "scripts" / "reconstruct_beam.py",
                              f"--input={photos}", f"--output_dir={tmp_path / 'beam'}", *FLAGS, "--",
                              "--runner=DirectRunner"], timeout=1800)
    print(beam.stdout[-2000:])
    cli_folders, beam_folders = folder_files(tmp_path / "cli"), folder_files(tmp_path / "beam")
    assert len(cli_folders) == 4 and beam_folders == cli_folders           # same folders, same files, none hidden
    assert not [p for p in (tmp_path / "beam").iterdir() if p.name.startswith(".")]
    errors = {e["input"]: e["error"] for e in json.loads((tmp_path / "beam" / "errors.json").read_text())}
    assert errors == {e["input"]: e["error"] for e in json.loads((tmp_path / "cli" / "errors.json").read_text())}
    assert sorted(errors) == [str(photos / "broken.jpg"), str(photos / "landscape.png")]
    assert "not an image" in errors[str(photos / "broken.jpg")] and "no face" in errors[str(photos / "landscape.png")]
    differences = {}
    for name in cli_folders:
        a = json.loads((tmp_path / "cli" / name / "coefficients.json").read_text())
        b = json.loads((tmp_path / "beam" / name / "coefficients.json").read_text())
        assert a["source_image"] == b["source_image"]
        for part in a["coefficients"]:
            np.testing.assert_allclose(b["coefficients"][part], a["coefficients"][part], atol=1e-3, err_msg=part)
        albedo_a = cv2.imread(str(tmp_path / "cli" / name / "albedo.png")).astype(np.float64)
        albedo_b = cv2.imread(str(tmp_path / "beam" / name / "albedo.png")).astype(np.float64)
        assert np.abs(albedo_a - albedo_b).mean() < 0.5, name
        differences[name] = {"coefficients": max(float(np.abs(np.subtract(b["coefficients"][k], a["coefficients"][k])).max())
                                                 for k in a["coefficients"] if len(a["coefficients"][k])),
                             "albedo_png_levels": float(np.abs(albedo_a - albedo_b).max())}
        for key, value in a["metrics"].items():
            assert abs(b["metrics"][key] - value) < 0.05, (name, key, value, b["metrics"][key])
    print("beam vs reconstruct.py, max |difference|:", json.dumps(differences))
    index = (tmp_path / "beam" / "index.html").read_text()
    assert all(f'src="{name}/thumbnail.jpg"' in index for name in cli_folders) and "broken.jpg" in index
