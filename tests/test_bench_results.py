"""The results page (`tf_facetex.evaluation.report`, scripts/make_results.py), the FLOP counter and the
default-path measurement of scripts/bench.py (`evaluation.default_path_speed`), and the recorded bench report
(docs/results/bench.json)."""
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def make_results():
    from tf_facetex.evaluation import report

    return report


FAKE_BENCH = {
    "command": "python scripts/bench.py --json X --batches 1",
    "weights": "random",
    "machine": {"cpu_count": 2, "devices": ["CPU"], "tensorflow": "2.21.0"},
    "matmul": {"size": 512, "gflops_median": 100.0, "load_average": [1.0, 1.0, 1.0]},
    "flops": {"refinement_small": {"what": "RefinementNet 'small'", "parameters": 1000, "gflop_per_image": 0.151}},
    "runs": [{"variant": "network", "batch_size": 1, "images_per_s": 0.5, "images_per_s_with_files": 0.4,
              "ms_per_image_total": 2000.0, "first_call_s": 30.0, "peak_rss_mb": 1700.0,
              "load_average_before": [1.0, 1.0, 1.0], "load_average_after": [2.0, 1.0, 1.0],
              "ms_per_image": {"detect": 50.0, "refine": 1500.0}, "ms_per_image_write": 800.0,
              "achieved": {"refine": {"network": "refinement_small", "achieved_gflop_per_s": 25.0,
                                      "fraction_of_matmul": 0.25, "gflop_per_cpu_s": 50.0,
                                      "fraction_of_matmul_cpu": 0.4}}}],
    "memory": {"ru_maxrss_mb": 1700.0, "tf_allocator": {"/device:CPU:0": "not available"}},
}

FAKE_MASKS = {
    "protocol": "fake protocol", "num_files": 3, "no_face": ["x"],
    "maskers": {"skin": {"num_images": 2, "iou": {"mean": 0.9, "median": 0.91, "p10": 0.8},
                         "precision": {"mean": 0.95}, "recall": {"mean": 0.96},
                         "pixel_pooled": {"iou": 0.89}, "ms_per_image": 8.0}},
}


def _write(folder, name, data):
    (folder / name).write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_make_results_tables_and_missing_notes(make_results, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _write(results, "bench.json", FAKE_BENCH)
    _write(results, "eval_masks.json", FAKE_MASKS)
    out = tmp_path / "RESULTS.md"
    out.write_text("old content")
    make_results.make_results(results, out)
    text = out.read_text()
    assert "old content" not in text
    # bench: recorded command, the end-to-end table row and the stage row.
    assert "produced by `python scripts/bench.py --json X --batches 1`" in text
    assert "| variant | batch | images/s | images/s with files | ms/image | first call s | peak RSS MB |" in text
    assert "| network | 1 | 0.5 | 0.4 | 2000.0 | 30.0 | 1700.0 | [1.0, 1.0, 1.0] → [2.0, 1.0, 1.0] |" in text
    assert "| variant | batch | detect | refine | (write) |" in text
    assert "| network | 1 | 50.0 | 1500.0 | 800.0 |" in text
    assert "| refinement_small | RefinementNet 'small' | 1000 | 0.151 |" in text
    assert ("| refinement_small | network pipeline, refine stage | 1 | – | 25.0 | 25.0 % | 50.0 | 40.0 % | "
            "[1.0, 1.0, 1.0] → [2.0, 1.0, 1.0] |") in text
    # masks: no recorded command -> the documented one; the masker row.
    assert "does not record its command; documented command: `.venv/bin/python scripts/eval_masks.py" in text
    assert "| skin | 2 | 0.9 | 0.91 | 0.8 | 0.95 | 0.96 | 0.89 | 8.0 | – |" in text
    # Missing known results get a note with the command to run, and the explanatory text is there.
    assert ("*Not yet produced: run `.venv/bin/python scripts/evaluate.py --flagfile configs/eval_synthetic.cfg "
            "--json docs/results/eval_synthetic.json`.*") in text
    assert "*Not yet produced: run `.venv/bin/python scripts/eval_landmarks.py" in text
    assert "Images per second of the whole product pipeline" in text
    # Sections come in the fixed order; no temporary file is left behind.
    assert text.index("## Speed") < text.index("## Method variants") < text.index("## Face masks")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md", "results"]


def test_make_results_unknown_broken_and_unexpected_files(make_results, tmp_path):
    _write(tmp_path, "my_new_result.json", {
        "command": "python scripts/new.py --json my_new_result.json", "accuracy": 0.75, "nested": {"depth": {"x": 1}},
        "per_image": {f"img{i}": {"err": i} for i in range(100)},          # big: summarised, not expanded
        "models": {"a": {"err": 0.1, "speed": {"ms": 3}}, "b": {"err": 0.2, "extra": "y"}}})
    _write(tmp_path, "broken.json", "{not json")
    _write(tmp_path, "eval_masks.json", {"maskers": [1, 2]})             # known file, unexpected layout
    text = make_results.render(tmp_path)
    assert "## Other result: my_new_result.json" in text
    assert "produced by `python scripts/new.py --json my_new_result.json`" in text
    assert "| `accuracy` | 0.75 |" in text
    assert "| `nested.depth.x` | 1 |" in text
    assert "| `per_image` | {100 entries, not shown} |" in text
    assert "| models | `err` | `speed.ms` | `extra` |" in text
    assert "| a | 0.1 | 3 | – |" in text and "| b | 0.2 | – | y |" in text
    assert "## Other result: broken.json" in text and "could not be read" in text
    assert "layout was not the expected one" in text and "## Face masks" in text
    assert "*Not yet produced: run `.venv/bin/python scripts/bench.py --json docs/results/bench.json`.*" in text


def test_make_results_synthetic_variants_and_ranking(make_results, tmp_path):
    _write(tmp_path, "eval_synthetic.json", {
        "images": 8, "data": "samples-*.tfrecord", "ground_truth": True, "identity_network": "dlib ResNet",
        "detailed_light": {"prior": False, "fit": True},
        "variants": {"prior": {"oc_l1": 0.05, "oc_psnr": 25.0, "albedo_si_rmse": 0.2},
                     "fit": {"od_l1": 0.02, "od_psnr": 31.0, "oc_l1": 0.04, "oc_psnr": 27.5, "albedo_si_rmse": 0.1}}})
    text = make_results.render(tmp_path)
    assert "| variant | L1 ↓ | PSNR ↑ | SSIM ↑ | identity ↑ | `albedo_si_rmse` |" in text
    assert "| prior (A, L) | 0.05 | 25.0 | – | – | 0.2 |" in text
    assert "| fit OD (A', L') | 0.02 | 31.0 | – | – | 0.1 |" in text
    assert "| fit OC (A', L) | 0.04 | 27.5 | – | – | 0.1 |" in text
    assert "Ranked by re-render PSNR: fit OD (A', L') (31.0 dB) > fit OC (A', L) (27.5 dB) > prior (A, L) (25.0 dB)." \
        in text
    assert "lower is better): fit (0.1) < prior (0.2)." in text
    # The hand-written reading of the numbers is appended to its section, and regenerating is deterministic.
    (tmp_path / "eval_synthetic.notes.md").write_text("**Why** the fit wins.\n")
    with_notes = make_results.render(tmp_path)
    assert with_notes.index("**Why** the fit wins.") > with_notes.index("lower is better): fit (0.1)")
    assert make_results.render(tmp_path) == with_notes


def test_make_results_empty_or_missing_folder(make_results, tmp_path):
    text = make_results.render(tmp_path / "does_not_exist")
    assert "no results yet" in text
    assert text.count("*Not yet produced: run") == len(make_results.SECTIONS)
    out = make_results.make_results(tmp_path / "does_not_exist", tmp_path / "docs" / "RESULTS.md")
    assert out.read_text() == text


def test_table_cells_escape_pipes(make_results):
    lines = make_results.table(["a", "b"], [["x|y", 1.5], [None, [1, 2]]])
    assert lines == ["| a | b |", "|---|---|", "| x\\|y | 1.5 |", "| – | [1, 2] |"]


# ------------------------------------------------------------------------------------------------ FLOP counter
def test_flops_dense_layer_matches_analytic_count():
    import keras
    import tensorflow as tf

    from tf_facetex.evaluation import flops

    n_in, n_out = 8, 4
    no_bias = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out, use_bias=False)])
    counted = flops.model_flops_per_example(no_bias, tf.TensorSpec([n_in]), batch_size=3)
    # TF's convention: a multiply-add is 2 FLOPs -> MatMul = 2 * in * out per example.
    assert counted["per_example"] == 2 * n_in * n_out
    assert counted["total"] == 3 * 2 * n_in * n_out
    assert counted["by_op_type"] == {"MatMul": 2 * n_in * n_out}
    with_bias = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out)])
    counted = flops.model_flops_per_example(with_bias, tf.TensorSpec([n_in]), batch_size=3)
    # ... and the bias add 1 FLOP per output element.
    assert counted["per_example"] == 2 * n_in * n_out + n_out
    assert counted["by_op_type"] == {"MatMul": 2 * n_in * n_out, "BiasAdd": n_out}


def test_flops_conv_and_dict_inputs():
    import keras
    import tensorflow as tf

    from tf_facetex.evaluation import flops

    conv = keras.Sequential([keras.Input((16, 16, 3)),
                             keras.layers.Conv2D(5, 3, padding="same", use_bias=False)])
    counted = flops.model_flops_per_example(conv, tf.TensorSpec([16, 16, 3]), batch_size=2)
    assert counted["per_example"] == 2 * (16 * 16 * 5) * (3 * 3 * 3)
    # A dict-input model (as RefinementNet), traced through function_flops.
    total = flops.function_flops(lambda d: tf.matmul(d["a"], d["b"]),
                                 {"a": tf.TensorSpec([4, 6]), "b": tf.TensorSpec([6, 5])})
    assert total["total"] == 2 * 4 * 6 * 5


def test_matmul_gflops_reports_a_rate():
    from tf_facetex.evaluation import flops

    rate = flops.matmul_gflops(size=64, repeats=2)
    assert rate["gflops_median"] > 0 and rate["gflops_best"] >= rate["gflops_median"]
    assert rate["repeats"] == 2 and rate["size"] == 64


# ------------------------------------------------------------------------------------------------ default path
FAKE_DEFAULT_PATH = {
    "runs": [{"solver": "xla", "batch": 1, "ms_per_photo": 1600.0, "ms_per_photo_over_yardstick": 16.0,
              "first_call_s": 9.5, "traces_first_call": 17, "traces_per_later_call": 0, "detailed_psnr_db": 31.6,
              "load_average_first_call": [1.0, 1.0, 1.0], "load_average_timed": [[1.0, 1.0, 1.0], [1.1, 1.0, 1.0]]},
             {"solver": "adam", "batch": 1, "ms_per_photo": 5400.0, "ms_per_photo_over_yardstick": 54.0,
              "first_call_s": 30.0, "traces_first_call": 20, "traces_per_later_call": 2, "detailed_psnr_db": 31.6}],
    "yardstick_resnet50_ms": {"xla": 100.0, "adam": 100.0},
    "by_batch": {"1": {"xla_ms_per_photo": 1600.0, "adam_ms_per_photo": 5400.0, "adam_over_xla": 3.38}},
    "batch_scaling_largest_over_smallest": {"xla": 1.46},
    "detect_and_mask": {"xla": {"first_call_s": 3.0, "ms_per_photo": 150.0}},
    "first_call_with_filled_xla_cache": {"solver": "xla", "batch": 1, "first_call_s": 5.2,
                                         "load_average_first_call": [1.0, 1.0, 1.0]},
}

FAKE_SERVING = {"mesh": "ict", "triangles": 22288, "image_size": 224, "batch": 16, "rounds": 12,
                "ms_per_image_median": {"serving_no_xla": 34.5, "xla_stages": 20.5},
                "ms_per_image_min": {"serving_no_xla": 18.3, "xla_stages": 14.3},
                "ratio_to_xla_stages": {"serving_no_xla": 1.48, "xla_stages": 1.0},
                "ratio_to_faster_xla": {"serving_no_xla": 1.66, "xla_stages": 1.0},
                "first_call_s": {"serving_no_xla": 2.0, "xla_stages": 3.9},
                "load_average_before": [3.4, 2.8, 1.7], "load_average_after": [4.4, 3.0, 1.8],
                "machine": {"cpu_count": 2}}


def test_default_path_and_serving_ratio_tables(make_results, tmp_path):
    _write(tmp_path, "bench.json", {**FAKE_BENCH, "default_path": FAKE_DEFAULT_PATH})
    _write(tmp_path, "bench_serving_ratio.json", FAKE_SERVING)
    text = make_results.render(tmp_path)
    assert ("| solver | batch | ms/photo | × ResNet-50 | first call s | traces, first call | traces, later calls | "
            "detailed PSNR dB | load avg, first call | load avg, timed |") in text
    assert "| xla | 1 | 1600.0 | 16.0 | 9.5 | 17 | 0 | 31.6 | [1.0, 1.0, 1.0] | [1.0, 1.0, 1.0] → [1.1, 1.0, 1.0] |" \
        in text
    assert "| adam | 1 | 5400.0 | 54.0 | 30.0 | 20 | 2 | 31.6 | – |  |" in text
    assert "batch 1: adam / xla = 3.38" in text and "xla 1.46" in text
    assert "first call of a later run (fresh process, XLA cache filled; xla, batch 1): 5.2 s" in text
    # the end-to-end tables of the same file are still there, before the default path
    assert text.index("| network | 1 | 0.5 |") < text.index("| xla | 1 | 1600.0 |")
    assert "## Serving renderer (no XLA) against the XLA renderer" in text
    assert "| renderer | ms/image (median) | ms/image (min) | ÷ XLA stages | ÷ faster XLA | first call s |" in text
    assert "| serving_no_xla | 34.5 | 18.3 | 1.48 | 1.66 | 2.0 |" in text
    assert "Other result: bench_serving_ratio.json" not in text


def test_default_path_summary_of_fresh_processes():
    from tf_facetex.evaluation.default_path_speed import summarise

    def report(solver, ms1, ms16, yardstick):
        return {"yardstick_resnet50_ms": yardstick,
                "runs": [{"solver": solver, "batch": 1, "ms_per_photo": ms1, "first_call_s": 9.0},
                         {"solver": solver, "batch": 16, "ms_per_photo": ms16, "first_call_s": 60.0}]}

    section = summarise([report("xla", 1600.0, 2400.0, 100.0), report("adam", 5600.0, 5600.0, 110.0)])
    assert len(section["runs"]) == 4
    assert section["yardstick_resnet50_ms"] == {"xla": 100.0, "adam": 110.0}
    assert section["by_batch"]["1"]["adam_over_xla"] == 3.5 and section["by_batch"]["16"]["adam_over_xla"] == 2.33
    assert section["batch_scaling_largest_over_smallest"] == {"xla": 1.5, "adam": 1.0}


def test_fresh_process_env_points_xla_at_the_given_cache(monkeypatch, tmp_path):
    from tf_facetex.evaluation.default_path_speed import fresh_process_env

    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=/old --xla_cpu_foo=1")
    env = fresh_process_env(tmp_path / "empty")
    assert env["TF_XLA_FLAGS"].split() == ["--xla_cpu_foo=1", f"--tf_xla_persistent_cache_directory={tmp_path}/empty"]
    off = fresh_process_env(None)
    assert off["TF_FACETEX_XLA_CACHE"] == "0" and "persistent" not in off["TF_XLA_FLAGS"]


def _procedural_default_path_report(tiny_model, solvers):
    """`default_path_report` on the procedural model at tiny sizes (UV 32, 10 fit steps), batch 1, one face."""
    import numpy as np

    from tf_facetex import pipeline
    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.evaluation.default_path_speed import default_path_report, with_uv_solver
    from tf_facetex.rendering import FaceRenderer
    from test_batch_equivalence import aligned

    uv = 32
    config = SyntheticConfig(image_size=224, uv_size=uv, directional_prob=0.0, occluder_prob=0.0, specular_prob=0.0,
                             noise_std=0.0, max_yaw=20)
    faces = aligned(SyntheticFaceGenerator(tiny_model, FaceRenderer(tiny_model, 224, uv), config).generate(
        np.random.default_rng(5), 1))

    def make_reconstructor(solver):
        return with_uv_solver(pipeline.Reconstructor(tiny_model, pipeline.ReconstructionConfig(
            uv_size=uv, fit_steps=10, landmark_steps=20, turntable_yaws=(0.0,))), solver)

    return default_path_report(make_reconstructor, faces, batches=(1,), solvers=solvers, repeats=1)


def _check_report(report, solvers):
    import math

    assert set(report) >= {"runs", "yardstick_resnet50_ms", "load_average", "cpu_count"}
    assert 0.5 < report["yardstick_resnet50_ms"] < 60_000
    runs = {run["solver"]: run for run in report["runs"]}
    assert sorted(runs) == sorted(solvers)
    for solver, run in runs.items():
        assert run["batch"] == 1 and run["refiner"]["solver"] == solver and run["refiner"]["steps"] == 10
        assert run["first_call_s"] > 0 and run["ms_per_photo"] > 0
        assert math.isclose(run["ms_per_photo_over_yardstick"], run["ms_per_photo"] / report["yardstick_resnet50_ms"],
                            rel_tol=0.02, abs_tol=0.01)
        assert 10.0 < run["detailed_psnr_db"] < 80.0
        assert len(run["load_average_timed"]) == 2 and len(run["load_average_first_call"]) == 3
    # The first call traces (nothing was traced for this reconstructor before); a later call of the compiled
    # path traces nothing: no retracing per photo.
    assert runs["xla"]["traces_first_call"] > 0
    assert runs["xla"]["traces_per_later_call"] == 0
    return runs


def test_default_path_report_on_the_procedural_model(tiny_model):
    """The default-path measurement of the shipped solver on tiny sizes: every key, sane values, no retracing."""
    _check_report(_procedural_default_path_report(tiny_model, ("xla",)), ("xla",))


@pytest.mark.slow
def test_default_path_report_sees_the_previous_solvers_retracing(tiny_model):
    """Both solvers in one report (the comparison of scripts/bench.py): the trace counter sees that the previous
    per-step solver builds new functions for every photo, which the compiled one does not."""
    runs = _check_report(_procedural_default_path_report(tiny_model, ("xla", "adam")), ("xla", "adam"))
    assert runs["adam"]["traces_per_later_call"] > 0


# ------------------------------------------------------------------------------------------------ bench.json
BENCH_JSON = ROOT / "docs" / "results" / "bench.json"


def test_recorded_bench_json_default_path_is_complete_and_consistent():
    """docs/results/bench.json (scripts/bench.py, the figures of record): a finished run with the default path of
    both solvers at batch 1 and 16, the product's default UV fit, no retracing of the shipped path, load averages
    recorded, and its summary rows recomputable from its runs (nothing edited by hand)."""
    from tf_facetex.evaluation.default_path_speed import summarise
    from tf_facetex.evaluation.speed_report import default_path_lines

    data = json.loads(BENCH_JSON.read_text())
    assert not data.get("partial"), "bench.json is a partial run"
    assert data["command"].startswith("python scripts/bench.py")
    assert len(data["machine"]["load_average_start"]) == 3 and len(data["machine"]["load_average_end"]) == 3
    section = data["default_path"]
    runs = section["runs"]
    assert sorted((run["solver"], run["batch"]) for run in runs) == [("adam", 1), ("adam", 16), ("xla", 1),
                                                                     ("xla", 16)]
    for run in runs:
        assert run["refiner"]["solver"] == run["solver"] and run["refiner"]["steps"] == 150, run["refiner"]
        assert run["ms_per_photo"] > 0 and run["first_call_s"] > 0 and run["traces_first_call"] > 0
        assert len(run["load_average_first_call"]) == 3 and len(run["load_average_timed"]) == 2
        assert run["ms_per_photo_over_yardstick"] == pytest.approx(
            run["ms_per_photo"] / section["yardstick_resnet50_ms"][run["solver"]], rel=2e-3, abs=0.01)  # 0.1 ms
        if run["solver"] == "xla":
            assert run["traces_per_later_call"] == 0, "the shipped path retraces per photo"
    # Same photo, same objective: the two solvers' re-render quality agrees (batch 1).
    psnr = {run["solver"]: run["detailed_psnr_db"] for run in runs if run["batch"] == 1}
    assert abs(psnr["xla"] - psnr["adam"]) < 0.5, psnr
    reports = [{"runs": [run for run in runs if run["solver"] == solver],
                "yardstick_resnet50_ms": section["yardstick_resnet50_ms"][solver]} for solver in ("xla", "adam")]
    again = summarise(reports)
    assert again["by_batch"] == section["by_batch"]
    assert again["batch_scaling_largest_over_smallest"] == section["batch_scaling_largest_over_smallest"]
    cached = section["first_call_with_filled_xla_cache"]
    assert cached["solver"] == "xla" and cached["first_call_s"] > 0 and len(cached["load_average_first_call"]) == 3
    assert set(section["detect_and_mask"]) == {"xla", "adam"}
    # The RESULTS table shows every run.
    text = "\n".join(default_path_lines(section))
    for run in runs:
        assert f"| {run['solver']} | {run['batch']} | {run['ms_per_photo']} |" in text
