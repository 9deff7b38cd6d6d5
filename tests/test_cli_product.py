"""The product scripts as a user runs them (subprocesses): --help, one-line errors on bad input with nothing
half-written, and (slow) the README's main-job command and a relight of its result.

Bad-input runs fail before TensorFlow is imported (inputs and the output folder are checked first; detection is
dlib), so they take seconds."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ("reconstruct", "relight", "export_savedmodel", "export_tflite")


def run_script(name, *args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def listing(folder):
    """Every path under a folder (hidden ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


def assert_one_line_error(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in last or phrase in result.stdout, (phrase, last, result.stdout[-1000:])
    return last


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_explains_every_flag(name):
    result = run_script(name, "--help", timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]   # absl exits 1 after --help
    assert "Traceback" not in result.stderr
    source = (REPO / "scripts" / f"{name}.py").read_text()
    import re
    flags = re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', source)
    assert flags
    for flag in flags + ["verbose"]:
        assert f"--{flag}" in result.stdout or f"--[no]{flag}" in result.stdout, (name, flag)


@pytest.fixture
def bad_inputs(tmp_path):
    from tf_facetex import io_utils

    folder = tmp_path / "inputs"
    io_utils.write_image(folder / "landscape.png", np.full((160, 200, 3), 120, np.uint8))   # no face in it
    (folder / "broken.jpg").write_text("this is not a JPEG")
    (tmp_path / "empty").mkdir()
    return folder


def test_no_face_is_one_line_and_leaves_no_face_folder(tmp_path, bad_inputs):
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={bad_inputs / 'landscape.png'}", f"--output_dir={out}",
                        "--noprogress")
    assert_one_line_error(result, "all 1 input(s) failed", "no face found")
    assert listing(out) == ["errors.json", "index.html"]
    errors = json.loads((out / "errors.json").read_text())
    assert len(errors) == 1 and "no face found" in errors[0]["error"]


def test_unreadable_file_is_one_line(tmp_path, bad_inputs):
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={bad_inputs / 'broken.jpg'}", f"--output_dir={out}", "--noprogress")
    assert_one_line_error(result, "all 1 input(s) failed", "not an image")
    assert listing(out) == ["errors.json", "index.html"]


def test_folder_where_every_file_fails_lists_each(tmp_path, bad_inputs):
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={bad_inputs}", f"--output_dir={out}", "--noprogress")
    assert_one_line_error(result, "all 2 input(s) failed")
    errors = json.loads((out / "errors.json").read_text())
    assert sorted(pathlib.Path(e["input"]).name for e in errors) == ["broken.jpg", "landscape.png"]
    assert "failed: " in result.stdout


def test_empty_folder_and_missing_input(tmp_path, bad_inputs):
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={tmp_path / 'empty'}", f"--output_dir={out}")
    assert_one_line_error(result, "no images in this folder")
    assert not out.exists(), "nothing may be written for an empty input folder"
    result = run_script("reconstruct", f"--input={tmp_path / 'nope.jpg'}", f"--output_dir={out}")
    assert_one_line_error(result, "no such file or folder")
    result = run_script("reconstruct", f"--output_dir={out}")
    assert_one_line_error(result, "--input and --output_dir are required")
    # --verbose shows the traceback behind the one-liner.
    result = run_script("reconstruct", f"--input={tmp_path / 'empty'}", f"--output_dir={out}", "--verbose")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_output_dir_not_writable(tmp_path, bad_inputs):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    result = run_script("reconstruct", f"--input={bad_inputs / 'landscape.png'}", f"--output_dir={blocker / 'out'}")
    assert_one_line_error(result, "not writable")
    assert listing(tmp_path) == listing(tmp_path)  # (sanity) and nothing was created next to the blocker:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "inputs"]
    if os.geteuid() != 0:   # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = run_script("reconstruct", f"--input={bad_inputs / 'landscape.png'}", f"--output_dir={locked}")
        assert_one_line_error(result, "not writable")
        assert listing(locked) == []


def test_other_scripts_fail_in_one_line(tmp_path, monkeypatch):
    from PIL import Image

    result = run_script("relight", f"--reconstruction={tmp_path}", f"--out={tmp_path / 'x.png'}")
    assert_one_line_error(result, "not a reconstruction folder")
    assert not (tmp_path / "x.png").exists()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    monkeypatch.setenv("TF_FACETEX_PRIOR_REGRESSOR", str(tmp_path / "no_regressor"))   # as if none were shipped
    result = run_script("reconstruct", f"--input={photo}", f"--output_dir={tmp_path / 'out'}", "--prior=regressor")
    assert_one_line_error(result, "--regressor_weights", "no shipped regressor")
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_demo_command_produces_every_output_and_relights(tmp_path):
    """`bash scripts/run_demo.sh` (the README's main job) on the embedded astronaut photo, then the outputs as a
    user loads them: OBJ/MTL/PNG in trimesh, and a relight of the folder."""
    import time

    import trimesh

    from tf_facetex import pipeline

    start = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "scripts" / "run_demo.sh"), "--noprogress"], capture_output=True,
                            text=True, timeout=1200, cwd=REPO)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    folder = REPO / "outputs" / "demo" / "astronaut"
    for name in pipeline.OUTPUT_FILES:
        assert (folder / name).is_file(), name
    assert (REPO / "outputs" / "demo" / "index.html").is_file()
    record = json.loads((folder / "coefficients.json").read_text())
    assert record["metrics"]["detailed_psnr_db"] > record["metrics"]["prior_psnr_db"] + 3.0, record["metrics"]
    mesh = trimesh.load(folder / "mesh.obj", process=False)
    if isinstance(mesh, trimesh.Scene):   # the face and its parts (eyes, teeth, ...) as separate objects
        # trimesh names each geometry by its material
        assert {"part_sclera_left", "part_iris_left", "part_teeth"} <= set(mesh.geometry), list(mesh.geometry)
        mesh = mesh.geometry["face_albedo"]
    assert mesh.visual.material.image is not None
    assert mesh.visual.uv.min() >= 0.0 and mesh.visual.uv.max() <= 1.0
    print(f"demo: {seconds:.0f} s; metrics {record['metrics']}")
    relit = tmp_path / "relit.png"
    result = run_script("relight", f"--reconstruction={folder}", "--light=sunset", "--yaw=20", f"--out={relit}")
    assert result.returncode == 0 and relit.is_file(), result.stderr[-2000:]
