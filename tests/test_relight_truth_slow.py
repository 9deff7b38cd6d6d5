"""(slow) End to end on Yale B frames: a grey, harshly side-lit frame is reconstructed by scripts/reconstruct.py
(face borrowed from its subject's best-lit frame; grey albedo; both recorded in coefficients.json), and
scripts/eval_relight.py runs the product's Reconstructor on two lights of one subject."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_script(name, *args, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def yale(faces_dir):
    folder = faces_dir / "yaleb_cropped_dev"
    if not (folder / "index.tsv").is_file():
        pytest.skip("yaleb_cropped_dev not in ../shared/faces")
    return folder


def test_reconstruct_side_lit_grey_frame_with_group_fallback(yale, tmp_path):
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import NoFaceError

    subject = yale / "yaleB03"
    frames = sorted(subject.glob("*.png"))
    plain = FaceDetector("auto")
    lost = []
    for frame in frames:
        try:
            plain.detect(load_image(frame), name=str(frame))
        except NoFaceError:
            lost.append(frame)
    if not lost:
        pytest.skip("every yaleB03 frame is detected on its own; nothing for the fallback to do")
    photos = tmp_path / "yaleB03"
    photos.mkdir()
    for frame in (lost[0], subject / "yaleB03_P00A+000E+00.png"):
        shutil.copy(frame, photos / frame.name)
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={photos / lost[0].name}", f"--output_dir={out}", "--noprogress",
                        "--group_fallback=landmarks", "--fit_steps=10", "--landmark_steps=30", "--masker=hull")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / lost[0].stem / "coefficients.json").read_text())
    assert record["alignment"]["detector"] == "group:yaleB03_P00A+000E+00.png:landmarks"
    assert record["grayscale_input"] is True
    albedo = load_image(out / lost[0].stem / "albedo.png").astype(int)
    assert np.abs(albedo - albedo.mean(axis=-1, keepdims=True)).max() <= 1     # grey


def test_eval_relight_quick_run(yale, tmp_path):
    out = tmp_path / "relight.json"
    figure = tmp_path / "relight.png"
    result = run_script("eval_relight", f"--json={out}", f"--figure={figure}", "--subjects=1",
                        "--lights=A+000E+00,A+050E+00", "--fit_steps=5", "--landmark_steps=20", "--masker=hull")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    scores = next(iter(report["subjects"].values()))
    assert 0.0 <= scores["ratio"] < 5.0 and scores["common_texels"] > 0
    assert np.isfinite(scores["relit_psnr_mean"]) and np.isfinite(scores["baseline_psnr_mean"])
    assert scores["grayscale_input"] == [True, True]
    assert figure.is_file() and report["summary"]["subjects"] == 1
