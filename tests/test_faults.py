"""Fault injection: corrupt checkpoints, kill -9 mid-batch and mid-training, output inside the input, unwritable and
full output locations, NaN/Inf in the numbers the CLIs read.

Every test provokes the fault for real (truncated files, SIGKILL of a subprocess, an ENOSPC raised by the write
itself) and then checks the two promises of the README's "Bad input and faults" section: the user gets one clear
line, and nothing finished is lost or duplicated.
"""
import dataclasses
import errno
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_facetex import io_utils
from tf_facetex.errors import FaceTexError, TrainingError

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_NET = {"base_filters": 8, "num_down": 2, "num_res_blocks": 1}
TINY_DISCRIMINATOR = {"n_layers": 2}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}


def run_script(name, *args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=ENV)


def assert_one_line_error(result, *phrases):
    assert result.returncode == 2, (result.args[2:], result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in last, (phrase, last)
    return last


def listing(folder):
    """Every path under a folder (hidden ones included), relative."""
    return sorted(str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*"))


# ================================================================================================ checkpoints
def tiny_trainer(model_dir, uv=32):
    from tf_facetex.refinement.train import TrainConfig, build_trainer

    config = TrainConfig(net_preset="small", net_overrides=TINY_NET, discriminator_ndf=8,
                         discriminator_overrides=TINY_DISCRIMINATOR, model_dir=str(model_dir), face_model="none")
    return build_trainer(config, uv, np.ones((uv, uv, 1), np.float32), None, steps_per_epoch=2)


def first_kernel(trainer):
    return next(v for v in trainer.generator.weights if "kernel" in v.path)


@pytest.fixture(scope="module")
def shared_trainer(tmp_path_factory):
    """One tiny trainer for the restore tests (a restore overwrites every variable, so they can share it)."""
    return tiny_trainer(tmp_path_factory.mktemp("trainer"))


@pytest.fixture
def trainer(shared_trainer):
    """The shared trainer with a sentinel in its first kernel and step 0 (a restore must really replace them)."""
    kernel = first_kernel(shared_trainer)
    kernel.assign(np.full(kernel.shape, -1.0, np.float32))
    shared_trainer.step.assign(0)
    return shared_trainer


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory, shared_trainer):
    """A checkpoint folder with ckpt-2, ckpt-4, ckpt-6; each step's first kernel holds the value `step`."""
    from tf_facetex.training.checkpoints import CheckpointKeeper

    folder = tmp_path_factory.mktemp("ckpts") / "checkpoints"
    trainer = shared_trainer
    keeper = CheckpointKeeper(folder, trainer, max_to_keep=3)
    for step in (2, 4, 6):
        trainer.step.assign(step)
        kernel = first_kernel(trainer)
        kernel.assign(np.full(kernel.shape, float(step), np.float32))
        keeper.save()
    return folder


def data_file(folder, step):
    return next(pathlib.Path(folder).glob(f"ckpt-{step}.data-*"))


def truncate(path, fraction=0.5):
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * fraction))


def garble(path, seed=0):
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())


CORRUPTIONS = {
    "data_truncated": lambda folder, step: truncate(data_file(folder, step)),
    "data_garbage": lambda folder, step: garble(data_file(folder, step)),
    "data_missing": lambda folder, step: data_file(folder, step).unlink(),
    "index_truncated": lambda folder, step: truncate(folder / f"ckpt-{step}.index"),
    "index_garbage": lambda folder, step: garble(folder / f"ckpt-{step}.index"),
    "index_empty": lambda folder, step: truncate(folder / f"ckpt-{step}.index", 0.0),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(three_checkpoints, tmp_path, corruption,
                                                                        trainer):
    from tf_facetex.training.checkpoints import CheckpointKeeper

    folder = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, folder)
    CORRUPTIONS[corruption](folder, 6)
    lines = []
    keeper = CheckpointKeeper(folder, trainer, max_to_keep=3, log=lines.append)
    assert keeper.restore_latest() == 4
    np.testing.assert_array_equal(first_kernel(trainer).numpy(), 4.0)
    text = "\n".join(lines)
    assert "ckpt-6" in text and "ckpt-4" in text and "steps 5-6" in text and "lost" in text, text
    # The corrupt files are kept aside (evidence), no longer taken as the newest, and a new save at step 6 works.
    assert keeper.latest.endswith("ckpt-4")
    assert list(folder.glob("ckpt-6.*")) == [] and list(folder.glob("corrupt-ckpt-6*"))
    trainer.step.assign(6)
    keeper.save()
    trainer.step.assign(0)
    assert CheckpointKeeper(folder, trainer).restore_latest() == 6


def test_resume_step_falls_back_says_what_is_lost_and_drops_later_metrics(three_checkpoints, tmp_path, trainer):
    """What both training loops call on --resume: the newest checkpoint is truncated (a kill during a save, a full
    disk), the run had logged steps 1-6 and was killed mid-line; it resumes at 4 and metrics.jsonl keeps 1-4 only,
    so the retrained steps 5-6 are logged once. (The same through train() and train.py: the slow tests.)"""
    from tf_facetex.training import checkpoints, summaries
    from tf_facetex.training.checkpoints import CheckpointKeeper

    folder = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, folder)
    truncate(data_file(folder, 6))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "kind": "loss", "total": 1.0}) + "\n" for s in range(1, 7))
                       + '{"step": 7, "ki')
    lines = []
    step = checkpoints.resume_step(CheckpointKeeper(folder, trainer), True, lines.append, "train")
    assert step == 4
    text = "\n".join(lines)
    assert "[train] ckpt-6 is damaged" in text and "steps 5-6 lost" in text and "dropped 3 record(s)" in text, text
    assert [r["step"] for r in summaries.read_metrics(metrics)] == [1, 2, 3, 4]
    # Without --resume nothing is read or dropped.
    metrics.write_text(json.dumps({"step": 9, "kind": "loss"}) + "\n")
    assert checkpoints.resume_step(CheckpointKeeper(folder, trainer), False, lines.append, "train") == 0
    assert metrics.read_text().count("\n") == 1


def test_every_checkpoint_corrupt_is_one_clear_error(three_checkpoints, tmp_path, trainer):
    from tf_facetex.training.checkpoints import CheckpointKeeper

    folder = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, folder)
    for step in (2, 4, 6):
        truncate(data_file(folder, step))
    keeper = CheckpointKeeper(folder, trainer, log=lambda *_: None)
    with pytest.raises(TrainingError, match=r"no intact checkpoint .*ckpt-6.*ckpt-4.*ckpt-2"):
        keeper.restore_latest()


def test_another_architecture_is_still_reported_as_such(three_checkpoints, tmp_path):
    """A checkpoint that reads fine but does not fit the model is not 'corrupt': no fallback, the old message."""
    from tf_facetex.training.checkpoints import CheckpointKeeper
    from tf_facetex.refinement.train import TrainConfig, build_trainer

    folder = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, folder)
    config = TrainConfig(net_preset="small", net_overrides={**TINY_NET, "base_filters": 4}, discriminator_ndf=8,
                         discriminator_overrides=TINY_DISCRIMINATOR, model_dir=str(tmp_path), face_model="none")
    trainer = build_trainer(config, 32, np.ones((32, 32, 1), np.float32), None, steps_per_epoch=2)
    with pytest.raises(TrainingError, match="another network preset or UV size"):
        CheckpointKeeper(folder, trainer, log=lambda *_: None).restore_latest()
    assert len(list(folder.glob("ckpt-*.index"))) == 3   # nothing moved aside


# ------------------------------------------------------------------------------------------------ training resume
@pytest.fixture(scope="module")
def toy32(tmp_path_factory):
    from tf_facetex.refinement import toy_data

    return toy_data.write_toy_dataset(tmp_path_factory.mktemp("toy32"), 20, eval_fraction=0.2, image_size=32,
                                      uv_size=32, num_shards=2)


def tiny_config(toy, model_dir, **changes):
    from tf_facetex.refinement.train import TrainConfig

    config = TrainConfig(train_data=toy["train"], model_dir=str(model_dir), net_preset="small",
                         net_overrides=TINY_NET, discriminator_ndf=8, discriminator_overrides=TINY_DISCRIMINATOR,
                         face_model="toy", global_batch_size=4, steps_per_epoch=2, max_steps=8, learning_rate=1e-3,
                         log_every=1, image_every=0, checkpoint_every=100, progress=False, shuffle_buffer=16)
    return dataclasses.replace(config, **changes)


def metric_steps(model_dir, kind="loss"):
    from tf_facetex.training import summaries

    return [r["step"] for r in summaries.read_metrics(pathlib.Path(model_dir) / "metrics.jsonl", kind)]


@pytest.mark.slow
def test_resume_from_a_corrupt_latest_checkpoint_retrains_the_lost_steps_once(toy32, tmp_path):
    """The issue's case: the newest checkpoint is truncated; --resume continues from the previous one, says which
    steps are lost, and metrics.jsonl ends up with every step exactly once."""
    from tf_facetex.refinement.train import train

    config = tiny_config(toy32, tmp_path, max_steps=6, checkpoint_every=2)
    train(config, log=lambda *_: None)
    assert metric_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    truncate(data_file(tmp_path / "checkpoints", 6))
    lines = []
    resumed = train(dataclasses.replace(config, resume=True, max_steps=8), log=lines.append)
    text = "\n".join(lines)
    assert "steps 5-6" in text and "lost" in text and "resumed from" in text, text
    assert resumed.step == 8
    assert metric_steps(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.slow
def test_resume_drops_metrics_logged_after_the_restored_step(toy32, tmp_path):
    """A run killed between checkpoints logged steps its checkpoint does not have; a resume must not log them twice
    (and a torn last line from the kill is dropped, not a crash)."""
    from tf_facetex.refinement.train import train

    config = tiny_config(toy32, tmp_path, max_steps=4, checkpoint_every=2)
    train(config, log=lambda *_: None)
    (tmp_path / "checkpoints" / "ckpt-4.index").unlink()   # as if killed after logging 3-4, before saving 4
    for path in (tmp_path / "checkpoints").glob("ckpt-4.data-*"):
        path.unlink()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "kind": "lo')              # torn line of a kill -9
    resumed = train(dataclasses.replace(config, resume=True, max_steps=6), log=lambda *_: None)
    assert resumed.step == 6
    assert metric_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


# ================================================================================================ inputs and outputs
def grey_photo(path, fmt=None, size=(160, 200)):
    """A photo without a face (every detector finds none), in any format Pillow writes."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(path, format=fmt)
    return path


def fake_result_folder(folder):
    """What a finished reconstruction folder looks like to a file lister (images + coefficients.json)."""
    for name in ("aligned.png", "albedo.png", "render_detailed.png", "overlay.jpg", "thumbnail.jpg"):
        grey_photo(folder / name)
    io_utils.write_json(folder / "coefficients.json", {"metrics": {}})


def test_output_dir_inside_the_input_is_never_read_as_input(tmp_path):
    photos = tmp_path / "photos"
    grey_photo(photos / "landscape.png")
    out = photos / "out"
    fake_result_folder(out / "earlier")   # a previous run's results inside the input folder
    result = run_script("reconstruct", f"--input={photos}", f"--output_dir={out}", "--noprogress")
    assert_one_line_error(result, "all 1 input(s) failed")
    errors = json.loads((out / "errors.json").read_text())
    assert [pathlib.Path(e["input"]).name for e in errors if not e.get("skipped")] == ["landscape.png"], errors
    assert f"skipping {out}" in result.stdout and "output folder" in result.stdout, result.stdout
    assert (out / "earlier" / "albedo.png").is_file()   # and nothing of it was touched


def test_output_dir_equal_to_the_input_reads_only_the_photos(tmp_path):
    """--input out --output_dir out: the photos at the top are inputs; the run's own files and face folders
    (and hidden staging folders) are not."""
    from tf_facetex.inputs import list_inputs

    grey_photo(tmp_path / "a.jpg")
    grey_photo(tmp_path / "sub" / "b.png")
    fake_result_folder(tmp_path / "a")
    (tmp_path / "errors.json").write_text("[]")
    (tmp_path / "index.html").write_text("<html>")
    (tmp_path / ".a.123@host.abcdefgh.partial").mkdir()
    listing = list_inputs(tmp_path, output_dir=tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listing.files] == ["a.jpg", "sub/b.png"]
    assert listing.skipped == []
    assert any("1 reconstruction folder(s)" in note for note in listing.notes), listing.notes
    flat = list_inputs(tmp_path, recursive=False, output_dir=tmp_path)
    assert [p.name for p in flat.files] == ["a.jpg"]


def test_folder_run_accounts_for_every_entry(tmp_path):
    """GIF and TIFF are photos like the others; a sub-folder named like an image, a broken symlink and a text file
    are each listed (errors.json and the count) instead of vanishing."""
    photos = tmp_path / "photos"
    grey_photo(photos / "landscape.png")
    grey_photo(photos / "animation.gif", "GIF")
    grey_photo(photos / "scan.tiff", "TIFF")
    (photos / "folder.jpg").mkdir()
    (photos / "gone.png").symlink_to(tmp_path / "deleted.png")
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    result = run_script("reconstruct", f"--input={photos}", f"--output_dir={out}", "--noprogress")
    assert_one_line_error(result, "all 3 input(s) failed")
    errors = {pathlib.Path(e["input"]).name: e for e in json.loads((out / "errors.json").read_text())}
    assert sorted(errors) == ["animation.gif", "folder.jpg", "gone.png", "landscape.png", "notes.txt", "scan.tiff"]
    for name in ("animation.gif", "scan.tiff", "landscape.png"):
        assert "no face found" in errors[name]["error"], errors[name]   # decoded and searched, like a .png
    assert "folder" in errors["folder.jpg"]["error"] and errors["folder.jpg"]["skipped"]
    assert "broken symbolic link" in errors["gone.png"]["error"] and errors["gone.png"]["skipped"]
    assert "not an image" in errors["notes.txt"]["error"] and errors["notes.txt"]["skipped"]
    assert "0/3 input(s)" in result.stdout and "3 entries skipped" in result.stdout, result.stdout


def test_output_dir_that_is_a_regular_file(tmp_path):
    grey_photo(tmp_path / "landscape.png")
    target = tmp_path / "results"
    target.write_text("my notes")
    result = run_script("reconstruct", f"--input={tmp_path / 'landscape.png'}", f"--output_dir={target}")
    assert_one_line_error(result, f"{target}", "is a file, not a folder")
    assert target.read_text() == "my notes"


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_partial_folders_are_removed_only_ours_only_stale(tmp_path):
    import socket

    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    out = tmp_path / "out"
    old = time.time() - 3 * 3600

    def partial(name, files=("albedo.png",), age=None, subfolder=False):
        folder = out / name
        folder.mkdir(parents=True)
        for file in files:
            (folder / file).write_bytes(b"half")
        if subfolder:
            (folder / "inner").mkdir()
        if age is not None:
            for path in [*folder.iterdir(), folder]:
                os.utime(path, (age, age))
        return folder

    stale_killed = partial(f".face.{dead_pid()}@{host}.k1x2y3z4.partial")      # its writer is dead
    stale_old = partial(".face.abc_1234.partial", age=old)                    # old format, hours old
    live = partial(f".face.{os.getpid()}@{host}.a1b2c3d4.partial")            # a running writer: kept
    fresh = partial(".face.xyz_9876.partial")                                 # recent: maybe a running run
    not_ours = partial(".face.nested_01.partial", age=old, subfolder=True)    # has a sub-folder: not a staging dir
    user_hidden = partial(".my_notes", age=old)
    killed_write = out / f".errors.json.{dead_pid()}@{host}.q1w2e3r4.tmp"     # a killed atomic write
    killed_write.write_text("[")
    live_write = out / f".index.html.{os.getpid()}@{host}.z9x8c7v6.tmp"
    live_write.write_text("<")
    grey_photo(tmp_path / "landscape.png")
    result = run_script("reconstruct", f"--input={tmp_path / 'landscape.png'}", f"--output_dir={out}",
                        "--noprogress")
    assert_one_line_error(result, "all 1 input(s) failed")
    assert not stale_killed.exists() and not stale_old.exists() and not killed_write.exists()
    for kept in (live, fresh, not_ours, user_hidden, live_write):
        assert kept.exists(), kept
    assert "removed 2 stale" in result.stdout, result.stdout


# ================================================================================================ relight
@pytest.fixture(scope="module")
def face_folder(tmp_path_factory, tiny_model):
    """A minimal reconstruction folder of the procedural test model (mean face, frontal, grey albedo)."""
    from tf_facetex.face_model import CoefficientLayout

    root = tmp_path_factory.mktemp("relight")
    model_file = root / "procedural.npz"
    tiny_model.save(model_file)
    folder = root / "face"
    layout = CoefficientLayout.for_model(tiny_model)
    record = {"face_model": {"name": tiny_model.name},
              "coefficients": {name: [0.0] * size for name, size in layout.sizes.items()},
              "alignment": {"crop_size": 64}}
    io_utils.write_image(folder / "albedo.png", np.full((32, 32, 3), 150, np.uint8))
    io_utils.write_npy(folder / "illumination.npy", np.zeros((32, 32, 27), np.float32))
    io_utils.write_json(folder / "coefficients.json", record)
    return {"folder": folder, "model": model_file, "record": record}


def copy_folder(face_folder, tmp_path):
    folder = tmp_path / "face"
    shutil.copytree(face_folder["folder"], folder)
    return folder


def run_all(commands, timeout=120):
    """Runs script invocations concurrently (each is a fresh process, as a user runs it)."""
    procs = [subprocess.Popen([sys.executable, str(REPO / "scripts" / f"{name}.py"), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV) for name, *args in commands]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


RELIGHT_BAD_NUMBERS = [("--light_scale=nan", "--light_scale=nan: must be a finite number"),
                       ("--light_scale=inf", "--light_scale=inf: must be a finite number"),
                       ("--light_scale=-1", "--light_scale=-1.0: must be >= 0"),
                       ("--yaw=nan", "--yaw=nan: must be a finite number"),
                       ("--pitch=inf", "--pitch=inf: must be a finite number"),
                       ("--roll=-inf", "--roll=-inf: must be a finite number"),
                       ("--background=nan", "--background=nan: must be a finite number >= 0 and <= 1"),
                       ("--background=1.5", "--background=1.5: must be >= 0, <= 1"),
                       ("--size=0", "--size must be between 16 and 4096")]


def test_relight_refuses_non_finite_or_out_of_range_numbers(face_folder, tmp_path):
    folder = copy_folder(face_folder, tmp_path)
    out = tmp_path / "relit.png"
    results = run_all([("relight", f"--reconstruction={folder}", f"--out={out}", flag)
                       for flag, _ in RELIGHT_BAD_NUMBERS])
    for (flag, message), result in zip(RELIGHT_BAD_NUMBERS, results):
        assert_one_line_error(result, message)
    assert not out.exists()


def test_relight_files_with_nan_inf_or_damage_get_precise_messages(face_folder, tmp_path):
    folder = copy_folder(face_folder, tmp_path)
    light = tmp_path / "light.json"
    light.write_text("[0.5, 0.1, NaN" + ", 0.0" * 24 + "]")              # Python's json reads NaN
    light_inf = tmp_path / "light_inf.json"
    light_inf.write_text("[1, 2, 3, 4, 5, 6, 7, Infinity, 9]")
    short = tmp_path / "short.json"
    short.write_text(json.dumps([0.1] * 26))
    bad_coeffs = tmp_path / "bad_coeffs"
    shutil.copytree(folder, bad_coeffs)
    record = json.loads((bad_coeffs / "coefficients.json").read_text())
    record["coefficients"]["angles"][1] = float("nan")
    (bad_coeffs / "coefficients.json").write_text(json.dumps(record))
    nan_light = tmp_path / "nan_light"
    shutil.copytree(folder, nan_light)
    light_map = np.zeros((32, 32, 27), np.float32)
    light_map[3, 4, 5] = np.inf
    np.save(nan_light / "illumination.npy", light_map)
    corrupt = tmp_path / "corrupt_light"
    shutil.copytree(folder, corrupt)
    (corrupt / "illumination.npy").write_bytes((corrupt / "illumination.npy").read_bytes()[:200])
    out = tmp_path / "relit.png"
    cases = [((f"--reconstruction={folder}", f"--light={light}"), ("R2 = nan", "must be finite")),
             ((f"--reconstruction={folder}", f"--light={light_inf}"), ("entry 7 = inf",)),
             ((f"--reconstruction={folder}", f"--light={short}"), ("got 26 values",)),
             ((f"--reconstruction={bad_coeffs}", "--light=front"), ("coefficients 'angles'", "entry 1 = nan")),
             ((f"--reconstruction={nan_light}", "--light=estimated"), ("illumination.npy", "non-finite")),
             ((f"--reconstruction={corrupt}", "--light=estimated"), ("illumination.npy: unreadable",)),
             ((f"--reconstruction={folder}", f"--out={tmp_path / 'relit.txt'}"),
              ("unsupported image type '.txt'", ".png", ".jpg"))]
    results = run_all([("relight", f"--face_model={face_folder['model']}", f"--out={out}", *args)
                       for args, _ in cases])   # (a later --out replaces the first)
    for (args, phrases), result in zip(cases, results):
        assert_one_line_error(result, *phrases)
    assert not out.exists() and not (tmp_path / "relit.txt").exists()


def test_a_damaged_light_map_is_read_only_for_the_estimated_light(face_folder, tmp_path, monkeypatch):
    """Only --light=estimated needs illumination.npy (the CLI run under a preset is the slow test below)."""
    from tf_facetex import pipeline

    folder = copy_folder(face_folder, tmp_path)
    (folder / "illumination.npy").write_bytes(b"\x93NUMPY garbage")
    data = pipeline.load_reconstruction(folder, need_light=False)
    assert data["light_uv"] is None and data["albedo_uv"].shape == (32, 32, 3)
    with pytest.raises(FaceTexError, match="illumination.npy: unreadable"):
        pipeline.load_reconstruction(folder)
    asked = []

    class Stop(Exception):
        pass

    def recording_load(folder, need_light=True):
        asked.append(need_light)
        raise Stop   # stops before TensorFlow and the renderer load

    from tf_facetex.pipeline import relight

    monkeypatch.setattr(relight, "load_reconstruction", recording_load)
    for light in ("front", "estimated", "coarse"):
        with pytest.raises(Stop):
            pipeline.relight_reconstruction(folder, light)
    assert asked == [False, True, False]


@pytest.mark.slow
def test_relight_to_jpeg_on_white_and_a_damaged_light_map_does_not_block_presets(face_folder, tmp_path):
    """A preset does not need illumination.npy: a truncated one must not stop it. A .jpg has no alpha: the
    background is white, and the user is told so."""
    import cv2

    folder = copy_folder(face_folder, tmp_path)
    (folder / "illumination.npy").write_bytes(b"\x93NUMPY garbage")
    out = tmp_path / "relit.jpg"
    result = run_script("relight", f"--reconstruction={folder}", "--light=front", "--size=64",
                        f"--face_model={face_folder['model']}", f"--out={out}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no transparency" in result.stdout and "white" in result.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (64, 64, 3)
    assert image[0, 0].min() >= 250   # the corner is background: white, not black
    assert image[32, 32].max() < 250 and image[32, 32].max() > 5   # the face is rendered and lit


# ================================================================================================ kill -9
BATCH_DRIVER = '''
"""A real batch run (`pipeline.reconstruct_inputs`: listing, staging folders, publishing, cleanup, the CLI's error
policy) whose reconstruction and file contents are stand-ins that take time, so that a SIGKILL lands anywhere in
it. FAKE_REPEAT sets the file sizes; FAKE_DISK_BYTES (optional) makes every write through io_utils fail with ENOSPC
once that many bytes have been written (a full disk where no small file system can be mounted)."""
import builtins, errno, os, sys, time, types
sys.path.insert(0, sys.argv[1])
import numpy as np
from tf_facetex import cli, io_utils, pipeline
from tf_facetex.inputs import list_inputs
from tf_facetex.pipeline import batch

FILES = ("albedo.png", "illumination.npy", "mesh.obj", "render_detailed.png", "overlay.jpg", "thumbnail.jpg")
REPEAT = int(os.environ.get("FAKE_REPEAT", "2000"))
BUDGET = [int(os.environ["FAKE_DISK_BYTES"])] if "FAKE_DISK_BYTES" in os.environ else None


class FullDiskFile:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        if len(data) > BUDGET[0]:
            self.handle.write(data[:BUDGET[0]])
            BUDGET[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.handle.name)
        BUDGET[0] -= len(data)
        return self.handle.write(data)
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()


def limited_open(path, mode="r", *args, **kwargs):
    handle = builtins.open(path, mode, *args, **kwargs)
    return FullDiskFile(handle) if "w" in mode else handle


if BUDGET is not None:
    io_utils.open = limited_open   # every atomic write of the product goes through io_utils


def write_face_outputs(result, folder, *args, **kwargs):
    written = []
    for name in FILES:
        written.append(io_utils.write_bytes(folder / name, (name + result.source).encode() * REPEAT))
        time.sleep(0.01)
    written.append(io_utils.write_json(folder / pipeline.RESULT_MARKER, {"source": result.source}))
    return written


class Reconstructor:
    model = layout = uv_mask = None
    def describe(self):
        return {}
    def reconstruct(self, faces):
        time.sleep(0.02)
        return [types.SimpleNamespace(source=face.source, metrics={}) for face in faces]


class Finder:
    def from_image(self, image, name):
        return [types.SimpleNamespace(source=name, face_index=0)]


def main(argv):
    batch.write_face_outputs = write_face_outputs   # the batch runner's writer (tf_facetex/pipeline/batch.py)
    listing = list_inputs(argv[2], output_dir=argv[3])
    out = pipeline.check_output_dir(argv[3])
    summary = pipeline.reconstruct_inputs(listing.files, out, Reconstructor, Finder(), batch_size=2,
                                          progress=False, skipped=listing.skipped)
    print("done", len(summary.outputs), len(summary.errors))


cli.run(main)
'''


def check_output_folder(out, photos, complete, repeat=2000):
    """Every face folder under its final name is complete; with ``complete``, every photo has exactly one and
    nothing else (no leftovers, no duplicates) is there."""
    names = {p.stem for p in photos}
    for folder in out.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            assert folder.name in names, folder              # no 'face_3_2' duplicates
            marker = json.loads((folder / "coefficients.json").read_text())
            assert marker["source"].endswith(folder.name + ".png")
            for name in ("albedo.png", "illumination.npy", "mesh.obj", "overlay.jpg", "thumbnail.jpg"):
                assert (folder / name).read_bytes() == (name + marker["source"]).encode() * repeat, (folder, name)
    if complete:
        assert sorted(p.name for p in out.iterdir()) == sorted(names | {"errors.json", "index.html"}), listing(out)
        assert json.loads((out / "errors.json").read_text()) == []


def test_kill_9_mid_batch_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """SIGKILL at random moments of a folder run (a different point each time, seeded), then a full run: every
    photo has exactly one complete folder, the killed runs' staging folders are gone, nothing is duplicated."""
    driver = tmp_path / "batch_driver.py"
    driver.write_text(BATCH_DRIVER)
    photos = [grey_photo(tmp_path / "photos" / f"face_{k}.png", size=(40, 40)) for k in range(6)]
    out = tmp_path / "photos" / "out"   # inside the input, as a user may do
    command = [sys.executable, str(driver), str(REPO), str(tmp_path / "photos"), str(out)]
    rng = random.Random(22)
    start = time.perf_counter()
    full = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)
    assert full.returncode == 0 and "done 6 0" in full.stdout, full.stderr[-3000:]
    run_seconds = time.perf_counter() - start
    check_output_folder(out, photos, complete=True)
    shutil.rmtree(out)
    kills = []
    for _ in range(3):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        delay = rng.uniform(0.3, 0.9) * run_seconds
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills.append(round(delay, 2))
        if out.exists():
            check_output_folder(out, photos, complete=False)   # a killed run never leaves a half folder visible
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV)
    assert rerun.returncode == 0 and "done 6 0" in rerun.stdout, rerun.stderr[-3000:]
    check_output_folder(out, photos, complete=True)
    print(f"batch killed at {kills} s of a {run_seconds:.1f} s run; the rerun completed all 6")


def train_command(toy, model_dir, *extra):
    return [sys.executable, str(REPO / "scripts" / "train.py"), f"--train_data={toy['train']}",
            f"--model_dir={model_dir}", "--net=small", "--discriminator_ndf=8", "--face_model=toy", "--identity=none",
            "--batch_size=4", "--steps_per_epoch=4", "--max_steps=14", "--log_every=1", "--image_every=0",
            "--checkpoint_every=2", "--keep_checkpoints=3", "--shuffle_buffer=16", "--learning_rate=1e-3",
            "--noprogress", *extra]


def newest_checkpoint(model_dir):
    steps = [int(p.name.split("-")[1].split(".")[0]) for p in (model_dir / "checkpoints").glob("ckpt-*.index")]
    return max(steps, default=0)


def run_and_kill(command, model_dir, after_step, rng, timeout=300):
    """Starts a training, waits until it has a checkpoint past ``after_step``, kills it (SIGKILL) a random moment
    later; returns the delay."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    deadline = time.time() + timeout
    while newest_checkpoint(model_dir) <= after_step:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, f"no checkpoint past step {after_step} within {timeout} s"
        time.sleep(0.05)
    delay = rng.uniform(0.0, 1.0)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return delay


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_from_a_damaged_checkpoint(toy32, tmp_path):
    """scripts/train.py killed with SIGKILL at random moments (a first run after its second checkpoint, then a
    resumed run after its next one); the newest checkpoint is then truncated (as a kill during a save or a full disk
    leaves it). --resume continues from the previous one, says which steps were lost, and finishes with every step
    logged exactly once."""
    from tf_facetex.training import checkpoints

    model_dir = tmp_path / "run"
    rng = random.Random(7)
    delays = [run_and_kill(train_command(toy32, model_dir), model_dir, 2, rng)]
    delays.append(run_and_kill(train_command(toy32, model_dir, "--resume"), model_dir, newest_checkpoint(model_dir),
                               rng))
    newest = newest_checkpoint(model_dir)
    assert newest < 14, "the run finished before the kill"
    truncate(data_file(model_dir / "checkpoints", newest))
    result = subprocess.run(train_command(toy32, model_dir, "--resume"), capture_output=True, text=True, timeout=300,
                            env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"ckpt-{newest} is damaged" in log and "lost" in log and "resumed from" in log, log[-3000:]
    assert metric_steps(model_dir) == list(range(1, 15))
    assert checkpoints.checkpoint_step(str(model_dir / "checkpoints" / "ckpt-14")) == 14
    print(f"training killed at random moments ({', '.join(f'{d:.2f}' for d in delays)} s after a checkpoint; "
          f"newest then ckpt-{newest}, truncated); resumed to 14: "
          + next(line for line in log.splitlines() if "is damaged" in line))


# ================================================================================================ full / unwritable
def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "errors.json"
    target.write_text("[]\n")

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    real_open = open
    monkeypatch.setattr(io_utils, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k)),
                        raising=False)
    with pytest.raises(OSError) as error:
        io_utils.write_json(target, [{"input": "x", "error": "y"}])
    assert error.value.errno == errno.ENOSPC
    assert target.read_text() == "[]\n" and listing(tmp_path) == ["errors.json"]
    from tf_facetex import cli

    assert "disk is full" in cli._os_error_hint(error.value) and "finished results are kept" in \
        cli._os_error_hint(error.value)


def test_unwritable_output_location_is_one_clear_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(io_utils.tempfile, "mkstemp", refuse)   # root ignores mode bits: refuse the probe itself
    with pytest.raises(FaceTexError, match=r"output folder is not writable \(Permission denied\)"):
        io_utils.ensure_output_dir(tmp_path / "out")


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True,
                             timeout=20)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()[:100]}); the simulated "
                    "full disk covers this")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=20)


def full_disk_run(tmp_path, out, extra_env):
    """One finished result (face_0), then a folder run of 4 photos into the same output on a disk that fills up."""
    driver = tmp_path / "batch_driver.py"
    driver.write_text(BATCH_DRIVER)
    photos = [grey_photo(tmp_path / "photos" / f"face_{k}.png", size=(40, 40)) for k in range(4)]
    env = {**ENV, "FAKE_REPEAT": "20"}
    first = subprocess.run([sys.executable, str(driver), str(REPO), str(photos[0]), str(out)], capture_output=True,
                           text=True, timeout=120, env=env)
    assert first.returncode == 0 and "done 1 0" in first.stdout, first.stderr[-3000:]
    finished = {p.name: p.read_bytes() for p in (out / "face_0").iterdir()}
    second = subprocess.run([sys.executable, str(driver), str(REPO), str(tmp_path / "photos"), str(out)],
                            capture_output=True, text=True, timeout=120, env={**env, **extra_env})
    assert "Traceback" not in second.stderr, second.stderr[-3000:]
    # Nothing finished is destroyed: face_0 is there, whole (the old one or its complete replacement); every
    # visible folder is complete; no half-written hidden leftovers.
    assert {p.name: p.read_bytes() for p in (out / "face_0").iterdir()} == finished
    check_output_folder(out, photos, complete=False, repeat=20)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], listing(out)
    if second.returncode == 0:
        errors = json.loads((out / "errors.json").read_text())
        assert errors and all("No space left on device" in e["error"] for e in errors), errors
    else:
        last = assert_one_line_error(second, "No space left on device", "the disk is full", "results are kept")
        assert ".tmp" not in last   # the file the user knows is named, not the temporary one
        print(last)
    return second


def test_full_disk_simulated_keeps_finished_results_and_says_so(tmp_path):
    result = full_disk_run(tmp_path, tmp_path / "out", {"FAKE_DISK_BYTES": "8000"})
    assert result.returncode == 2   # the budget never comes back: even errors.json cannot be written


def test_full_disk_real_tmpfs_keeps_finished_results_and_says_so(tmp_path, small_disk):
    full_disk_run(tmp_path, small_disk / "out", {})
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, timeout=20)
    result = run_script("reconstruct", f"--input={tmp_path / 'photos'}", f"--output_dir={small_disk / 'out'}")
    assert_one_line_error(result, "not writable (Read-only file system)")


# ================================================================================================ NaN / Inf flags
TRAIN_BAD_NUMBERS = [("--learning_rate=nan", "--learning_rate=nan: must be a finite number"),
                     ("--learning_rate=0", "--learning_rate=0: must be > 0"),
                     ("--lr_decay=inf", "--lr_decay=inf: must be a finite number"),
                     ("--lr_decay=1.5", "--lr_decay=1.5: must be in (0, 1]"),
                     ("--lr_floor=-inf", "--lr_floor=-inf: must be a finite number"),
                     ("--d_learning_rate=-1", "--d_learning_rate=-1: must be >= 0"),
                     ("--beta_1=nan", "--beta_1=nan: must be a finite number"),
                     ("--beta_2=1", "--beta_2=1: must be in [0, 1)"),
                     ("--clip_norm=nan", "--clip_norm=nan: must be a finite number"),
                     ("--loss_weights=image=-2", "weights must be >= 0")]


def test_train_refuses_non_finite_or_out_of_range_numbers(tmp_path):
    """Each bad number is refused before TensorFlow loads, in one line; so is a NaN in a flagfile and in
    --loss_weights (absl's flag-parsing message)."""
    flagfile = tmp_path / "run.cfg"
    flagfile.write_text("--batch_size=8\n--learning_rate=nan\n")
    common = (f"--train_data={tmp_path / 'none-*.tfrecord'}", f"--model_dir={tmp_path / 'run'}")
    commands = [("train", *common, flag) for flag, _ in TRAIN_BAD_NUMBERS]
    commands += [("train", f"--flagfile={flagfile}", *common), ("train", *common, "--loss_weights=image=nan"),
                 ("train_prior", f"--model_dir={tmp_path / 'prior'}", "--learning_rate=inf"),
                 ("reconstruct", "--input=x.jpg", f"--output_dir={tmp_path / 'out'}", "--fit_steps=nan"),
                 ("preprocess", "--test_fraction=nan")]
    results = run_all(commands)
    for (flag, message), result in zip(TRAIN_BAD_NUMBERS, results):
        assert_one_line_error(result, message)
    flagfile_result, weights_result, prior_result, reconstruct_result, preprocess_result = results[len(TRAIN_BAD_NUMBERS):]
    assert_one_line_error(flagfile_result, "--learning_rate=nan: must be a finite number")
    assert_one_line_error(prior_result, "--learning_rate=inf: must be a finite number")
    assert_one_line_error(preprocess_result, "--test_fraction=nan: must be a finite number")
    for result, phrase in ((weights_result, "must be a finite number"), (reconstruct_result, "--fit_steps")):
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert phrase in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_reconstruct_checkpoint_truncated_or_with_nan_weights_is_refused(tmp_path, trainer):
    """reconstruct.py --checkpoint: a truncated checkpoint or one holding NaN weights is an AssetError naming it,
    not a traceback or a NaN albedo."""
    import tensorflow as tf

    from tf_facetex import pipeline
    from tf_facetex.errors import AssetError
    from tf_facetex.training.checkpoints import CheckpointKeeper

    def run_folder(name, poison):
        folder = tmp_path / name
        io_utils.write_json(folder / "run_config.json", {"net_preset": "small", "net_overrides": TINY_NET,
                                                         "uv_size": 32, "image_size": 32})
        kernel = first_kernel(trainer)
        kernel.assign(tf.fill(kernel.shape, np.nan if poison else 0.5))
        trainer.step.assign(1)
        keeper = CheckpointKeeper(folder / "checkpoints", trainer)
        keeper.manager.save(checkpoint_number=1)   # (the keeper's own save would refuse the NaN)
        return folder

    good = run_folder("good", poison=False)
    net, info = pipeline.load_refinement_net(good, log=lambda *_: None)
    assert info["uv_size"] == 32
    truncated = run_folder("truncated", poison=False)
    truncate(data_file(truncated / "checkpoints", 1))
    with pytest.raises(AssetError, match="cannot restore the refinement network"):
        pipeline.load_refinement_net(truncated, log=lambda *_: None)
    with pytest.raises(AssetError, match=r"hold NaN/Inf"):
        pipeline.load_refinement_net(run_folder("nan", poison=True), log=lambda *_: None)


def test_two_jobs_unpacking_the_face_kit_at_once_both_get_a_complete_folder(tmp_path, monkeypatch):
    """Two processes started together (the recipe's train and test sample makers) once deleted each other's
    unpacked ICT-FaceKit ('identity003.obj: missing'); each now unpacks into its own staging folder and keeps the
    first complete folder."""
    import tarfile
    import threading

    from tf_facetex import paths

    kit = tmp_path / "src" / "ICT-FaceKit" / "FaceXModel"
    kit.mkdir(parents=True)
    for i in range(200):                      # enough files that the two extractions overlap
        (kit / f"identity{i:03d}.obj").write_text("v 0 0 0\n" * 50)
    (kit / "generic_neutral_mesh.obj").write_text("v 0 0 0\n")
    archive = tmp_path / "kit.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "ICT-FaceKit", arcname="ICT-FaceKit")
    monkeypatch.setenv("TF_FACETEX_CACHE", str(tmp_path / "cache"))
    results, errors = [], []

    def unpack():
        try:
            results.append(paths._unpack_ict(archive, log=lambda *_: None))
        except Exception as err:  # noqa: BLE001 - the test reports any failure of either job
            errors.append(err)

    jobs = [threading.Thread(target=unpack) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert not errors, errors
    assert len(set(results)) == 1
    assert len(list((results[0] / "FaceXModel").glob("identity*.obj"))) == 200
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["ICT-FaceKit"]   # no staging folder left
    inode = (results[0] / "FaceXModel" / "identity000.obj").stat().st_ino
    assert paths._unpack_ict(archive, log=lambda *_: None) == results[0]         # a complete folder is kept
    assert (results[0] / "FaceXModel" / "identity000.obj").stat().st_ino == inode
