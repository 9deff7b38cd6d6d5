"""scripts/prepare_face_model.py end to end, as a subprocess, on synthetic BFM files (see test_bfm.py)."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from test_bfm import write_synthetic_bfm
from tf_facetex.face_model.model import MorphableModel

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "prepare_face_model.py"
FLAG_NAMES = ("ict_dir", "bfm_mat", "exp_pca", "bfm_aux_dir", "bfm_uv", "bfm_select_id", "out", "verbose")


def run_script(*args, cache):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_FACETEX_CACHE=str(cache))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=300)


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def bfm_folder(tmp_path_factory):
    """Synthetic BFM files with more modes than Deng keeps, so the script's defaults (80/64/80) apply."""
    folder = tmp_path_factory.mktemp("bfm_src")
    write_synthetic_bfm(folder, num_id_modes=82, num_tex_modes=81, exp_dim=66)
    return folder


def test_help_explains_every_flag(tmp_path):
    result = run_script("--help", cache=tmp_path)
    for name in FLAG_NAMES:
        line = next((line for line in result.stdout.splitlines() if line.strip().startswith(f"--{name}:")
                     or line.strip().startswith(f"--[no]{name}:")), None)
        assert line is not None and len(line.split(":", 1)[1].strip()) > 10, f"--{name} lacks a description"


def test_converts_synthetic_bfm(bfm_folder, tmp_path):
    out_dir = tmp_path / "models"
    result = run_script("--bfm_mat", bfm_folder / "01_MorphableModel.mat", "--exp_pca", bfm_folder / "Exp_Pca.bin",
                        "--bfm_aux_dir", bfm_folder, "--bfm_uv", bfm_folder / "BFM_UV.mat",
                        "--bfm_select_id", bfm_folder / "select_vertex_id.mat", "--out", out_dir,
                        cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-2000:]
    npz = out_dir / "bfm09_front.npz"
    assert f"wrote {npz}" in result.stdout and "bfm09_front:" in result.stdout
    model = MorphableModel.load(npz)
    assert (model.num_id, model.num_exp, model.num_tex) == (80, 64, 80)
    front = loadmat(out_dir / "BFM_model_front.mat")
    mean = front["meanshape"].reshape(-1, 3)
    np.testing.assert_allclose(model.mean_shape, mean - mean.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(model.landmark_indices, front["keypoints"].reshape(-1).astype(int) - 1)
    uv = loadmat(bfm_folder / "BFM_UV.mat")["UV"]
    select = loadmat(bfm_folder / "select_vertex_id.mat")["select_id"].reshape(-1).astype(int) - 1
    np.testing.assert_allclose(model.uv_coords, uv[select], atol=1e-7)
    assert not list((tmp_path / "cache").glob("*.npz")), "--out was given: nothing goes to the cache"


def test_bad_input_prints_one_line_and_fails(bfm_folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bfm_folder, broken)
    contents = {k: v for k, v in loadmat(broken / "01_MorphableModel.mat").items() if not k.startswith("__")}
    del contents["shapePC"]
    savemat(broken / "01_MorphableModel.mat", contents)
    result = run_script("--bfm_mat", broken / "01_MorphableModel.mat", "--out", tmp_path / "out",
                        cache=tmp_path / "cache")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    assert "01_MorphableModel.mat" in errors[0] and "'shapePC'" in errors[0]
    assert not (tmp_path / "out" / "bfm09_front.npz").exists()


@pytest.mark.parametrize("args, phrase", [
    (("--exp_pca", "Exp_Pca.bin"), "--exp_pca needs --bfm_mat"),
    (("--ict_dir", "nowhere", "--bfm_mat", "x.mat", "--out", "one.npz"), "names one file but 2 models"),
    (("--ict_dir", "no/such/ICT-FaceKit", "--out", "x.npz"), "not an ICT-FaceKit folder"),
])
def test_flag_mistakes_fail_with_one_line(args, phrase, tmp_path):
    result = run_script(*args, cache=tmp_path / "cache")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = error_lines(result)
    assert len(errors) == 1 and phrase in errors[0], result.stderr
