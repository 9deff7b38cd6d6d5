"""The results page (`tf_facetex.evaluation.report`, scripts/make_results.py) and the FLOP counter of scripts/bench.py."""
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
