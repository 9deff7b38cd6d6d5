"""docs/RESULTS.md from the result JSON files in docs/results/ (no TensorFlow): scripts/make_results.py.

One section per known result (in a fixed order), each with a short explanation of what the numbers mean, the
command that produced it (the JSON's "command" key when it has one, else the documented command) and markdown
tables. A known result whose JSON is missing gets "not yet produced: run ...". Any other *.json in the folder gets
a section with a generic table (scalars, then one table per group of like records); a file that does not parse,
or whose layout a section formatter does not expect, falls back to the generic table with a note, so the page is
always written. PNG figures in the folder are linked at the end. The page is written atomically (temporary file +
rename).
"""
from __future__ import annotations

import json
import pathlib

from tf_facetex import io_utils
from tf_facetex.evaluation import clean_report
from tf_facetex.evaluation import speed_report
from tf_facetex.evaluation.markdown import fmt, table

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = ROOT / "docs" / "results"
DEFAULT_OUT = ROOT / "docs" / "RESULTS.md"
MAX_GENERIC_ROWS = 60
MAX_GENERIC_COLUMNS = 12
BIG_COLLECTION = 40          # dicts / lists longer than this are summarised ("[1000 entries]"), not expanded


def flatten(value, prefix="", depth=4):
    """{'a.b.c': scalar} of a nested dict; big collections and deep levels are summarised as one cell."""
    out = {}
    if isinstance(value, dict) and depth > 0 and len(value) <= BIG_COLLECTION:
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key), depth - 1))
    elif isinstance(value, dict):
        out[prefix] = f"{{{len(value)} entries, not shown}}"
    else:
        out[prefix] = value
    return out


def _record_group(value):
    """True for a dict of dicts or a list of dicts (rows of a table), not too many of them."""
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return False
    return 2 <= len(items) <= BIG_COLLECTION and all(isinstance(v, dict) for v in items)


def generic_section(data):
    """Markdown lines for any JSON value: a key/value table of the scalars, one table per group of records."""
    if not isinstance(data, dict):
        data = {"value": data}
    lines, scalars, groups = [], {}, {}
    for key, value in data.items():
        if key == "command":
            continue
        if _record_group(value):
            groups[key] = value
        else:
            scalars.update(flatten(value, str(key)))
    if scalars:
        items = list(scalars.items())
        lines += table(["key", "value"], [[f"`{k}`", v] for k, v in items[:MAX_GENERIC_ROWS]])
        if len(items) > MAX_GENERIC_ROWS:
            lines.append(f"\n({len(items) - MAX_GENERIC_ROWS} more values in the JSON)")
        lines.append("")
    for key, value in groups.items():
        entries = list(value.items()) if isinstance(value, dict) else [(str(i), v) for i, v in enumerate(value)]
        flat = [(name, flatten(record, depth=3)) for name, record in entries]
        columns = []
        for _, record in flat:
            columns += [c for c in record if c not in columns]
        shown = columns[:MAX_GENERIC_COLUMNS]
        lines.append(f"`{key}`:\n")
        lines += table([key] + [f"`{c}`" for c in shown], [[name] + [rec.get(c) for c in shown] for name, rec in flat])
        if len(columns) > len(shown):
            lines.append(f"\n({len(columns) - len(shown)} more columns in the JSON: "
                         + ", ".join(f"`{c}`" for c in columns[len(shown):len(shown) + 10])
                         + (", ..." if len(columns) > len(shown) + 10 else "") + ")")
        lines.append("")
    return lines


# ================================================================================================ known sections
def _percent(fraction):
    return None if fraction is None else f"{fmt(100.0 * fraction, 3)} %"


def bench_section(data):
    lines = []
    machine = data.get("machine", {})
    matmul, matmul_end = data.get("matmul", {}), data.get("matmul_end", {})
    facts = [f"{machine.get('cpu_count', '?')} CPU cores ({', '.join(machine.get('devices', [])) or '?'})",
             f"TensorFlow {machine.get('tensorflow', '?')}",
             f"weights: **{data.get('weights', '?')}**"]
    if matmul:
        facts.append(f"tf.matmul {matmul.get('size')}²: {fmt(matmul.get('gflops_median'))} GFLOP/s at the start"
                     + (f", {fmt(matmul_end.get('gflops_median'))} at the end" if matmul_end else "")
                     + f" (load {fmt(matmul.get('load_average'))})")
    lines += ["Machine: " + "; ".join(facts) + ".", ""]
    if data.get("partial"):
        lines += ["**Partial result: the run did not finish (the runs below are those it completed).**", ""]
    runs = data.get("runs", [])
    if runs:
        lines.append("End to end (no file writing; `with files` adds writing the face folder; CPU ms/image: process "
                     "CPU time, all threads):\n")
        rows = []
        for run in runs:
            rows.append([run.get("variant"), run.get("batch_size"), run.get("images_per_s"),
                         run.get("images_per_s_with_files"), run.get("ms_per_image_total"), run.get("first_call_s"),
                         run.get("peak_rss_mb"),
                         f"{fmt(run.get('load_average_before'))} → {fmt(run.get('load_average_after'))}",
                         run.get("cpu_ms_per_image_total")])
        lines += table(["variant", "batch", "images/s", "images/s with files", "ms/image", "first call s",
                        "peak RSS MB", "load avg before → after", "CPU ms/image"], rows)
        lines.append("")
        stages = []
        for run in runs:
            stages += [s for s in run.get("ms_per_image", {}) if s not in stages]
        extra = any("ms_per_image_write" in run for run in runs)
        lines.append("ms/image by stage:\n")
        header = ["variant", "batch"] + stages + (["(write)"] if extra else [])
        rows = [[run.get("variant"), run.get("batch_size")] + [run.get("ms_per_image", {}).get(s) for s in stages]
                + ([run.get("ms_per_image_write")] if extra else []) for run in runs]
        lines += table(header, rows)
        lines.append("")
        variants = {run.get("variant"): run for run in runs}
        described = [f"**{name}**: prior {run['prior']}; details {run['refiner']}"
                     for name, run in variants.items() if "prior" in run and "refiner" in run]
        if described:
            lines += ["; ".join(described) + ".", ""]
    flops = data.get("flops", {})
    if flops:
        lines.append("FLOPs per image (TF profiler):\n")
        lines += table(["network", "what", "parameters", "GFLOP/image"],
                       [[name, info.get("what"), info.get("parameters"), info.get("gflop_per_image")]
                        for name, info in flops.items()])
        lines.append("")
    reference = data.get("matmul_reference", {})
    rates = []
    for run in runs:
        for stage, a in run.get("achieved", {}).items():
            if isinstance(a, dict):
                rates.append([a.get("network", "regressor + refinement"),
                              f"{run.get('variant')} pipeline, {stage} stage", run.get("batch_size"), None,
                              a.get("achieved_gflop_per_s"), _percent(a.get("fraction_of_matmul")),
                              a.get("gflop_per_cpu_s"), _percent(a.get("fraction_of_matmul_cpu")),
                              f"{fmt(run.get('load_average_before'))} → {fmt(run.get('load_average_after'))}"])
    for r in data.get("networks_alone", []):
        rates.append([r.get("network"), "alone (tf.function)", r.get("batch_size"), r.get("ms_per_image"),
                      r.get("achieved_gflop_per_s"), _percent(r.get("fraction_of_matmul")), r.get("gflop_per_cpu_s"),
                      _percent(r.get("fraction_of_matmul_cpu")),
                      f"{fmt(r.get('load_average_before'))} → {fmt(r.get('load_average_after'))}"])
    if rates:
        lines.append("Achieved rates (matmul reference: "
                     + (f"{fmt(reference.get('gflops'))} GFLOP/s wall, {fmt(reference.get('gflops_per_cpu_s'))} "
                        "GFLOP per CPU-second" if reference else "–")
                     + "; the per-CPU-second columns are the ones to trust while other jobs share the cores):\n")
        lines += table(["network", "where", "batch", "ms/image", "GFLOP/s", "% of matmul", "GFLOP/CPU-s",
                        "% of matmul (CPU)", "load avg before → after"], rates)
        lines.append("")
    memory = data.get("memory", {})
    if memory:
        allocator = memory.get("tf_allocator", {})
        lines += [f"Memory: process peak (ru_maxrss) {fmt(memory.get('ru_maxrss_mb'))} MB; TF allocator: "
                  + ("; ".join(f"{k}: {fmt(v)}" for k, v in allocator.items()) or "–") + ".", ""]
    return lines


def masks_section(data):
    lines = [f"Protocol: {data.get('protocol', '?')}. {fmt(data.get('num_files'))} files, "
             f"{len(data.get('no_face', []))} without a detected face.", ""]
    rows = []
    for name, m in data.get("maskers", {}).items():
        iou = m.get("iou", {})
        rows.append([name, m.get("num_images"), iou.get("mean"), iou.get("median"), iou.get("p10"),
                     m.get("precision", {}).get("mean"), m.get("recall", {}).get("mean"),
                     m.get("pixel_pooled", {}).get("iou"), m.get("ms_per_image"),
                     (f"{fmt(m['vs_skin'].get('mean_iou_difference'))} "
                      f"({m['vs_skin'].get('images_better')} better / {m['vs_skin'].get('images_worse')} worse)")
                     if isinstance(m.get("vs_skin"), dict) else "–"])
    lines += table(["masker", "images", "IoU mean ↑", "IoU median", "IoU p10", "precision", "recall",
                    "pooled IoU", "ms/image", "IoU vs skin"], rows)
    return lines + [""]


def net_fit_tuning_section(data):
    """scripts/tune_net_fit.py: one row per (data set, setting)."""
    keys = ("od_psnr", "oc_psnr", "albedo_si_rmse", "relight_rmse", "ms_per_image", "images")
    rows = [[name, label] + [result.get(key) for key in keys]
            for name, entry in data.get("data", {}).items() for label, result in entry.get("results", {}).items()]
    return table(["data", "setting (net+fit/start/steps/lr)", "OD PSNR ↑", "OC PSNR ↑", "albedo si-RMSE ↓",
                  "relight RMSE ↓", "ms/image", "images"], rows) + [""]


def landmarks_section(data):
    lines = [f"Protocol: {data.get('protocol', '?')}. Detector {data.get('detector', '?')}, "
             f"fit {data.get('fit_steps', '?')} steps.", ""]
    groups = [("all", data.get("overall", {}))] + list(data.get("by_abs_yaw_deg", {}).items())
    rows = []
    for label, group in groups:
        for method in ("dlib", "fit"):
            m = group.get(method)
            if not isinstance(m, dict):
                continue
            rows.append([label if label == "all" else f"yaw ±{label}°", method, group.get("num_images"),
                         group.get("failure_rate"), m.get("nme68", {}).get("mean"), m.get("nme68", {}).get("median"),
                         m.get("nme51", {}).get("mean"), m.get("fraction_nme68_over_10pct")])
    lines += table(["faces", "landmarks", "images", "share without detection", "NME68 mean % ↓", "NME68 median %",
                    "NME51 mean %", "share NME68 > 10 %"], rows)
    balanced = data.get("balanced_mean_over_bins", {})
    if balanced:
        lines += ["", "Balanced (mean over the yaw bins): " + "; ".join(
            f"{method} NME68 {fmt(v.get('nme68'))} %, NME51 {fmt(v.get('nme51'))} %" for method, v in balanced.items())
            + "."]
    pose_rows = [[label if label == "all" else f"yaw ±{label}°"]
                 + [group["pose"].get("mae_deg", {}).get(a) for a in ("pitch", "yaw", "roll", "mean")]
                 for label, group in groups if isinstance(group.get("pose"), dict)]
    if pose_rows:
        lines += ["", "Pose error of the fit (MAE, degrees, after the sign convention is matched):", ""]
        lines += table(["faces", "pitch", "yaw", "roll", "mean"], pose_rows)
    return lines + [""]


SYNTH_COLUMNS = (("l1", "L1 ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("identity", "identity ↑"))


def synthetic_section(data):
    variants = data.get("variants", {})
    light = data.get("detailed_light", {})
    lines = [f"{fmt(data.get('images'))} images from `{data.get('data', '?')}`; ground-truth albedo: "
             f"{fmt(data.get('ground_truth'))}.", ""]
    metric_keys = []
    for metrics in variants.values():
        metric_keys += [k for k in metrics if k not in metric_keys]
    other = [k for k in metric_keys if not k.startswith(("od_", "oc_"))]
    timing = data.get("ms_per_image") or {}
    header = (["variant"] + [label for _, label in SYNTH_COLUMNS] + [f"`{k}`" for k in other]
              + (["ms/image (detail stage)"] if timing else []))
    rows, ranking = [], []
    for name, metrics in variants.items():
        tags = [("OD (A', L')", "od"), ("OC (A', L)", "oc")] if light.get(name) else [("", "oc")]
        for label, tag in tags:
            row = [f"{name} {label}".strip() if name != "prior" or label else "prior (A, L)"]
            row += [metrics.get(f"{tag}_{key}") for key, _ in SYNTH_COLUMNS] + [metrics.get(k) for k in other]
            rows.append(row + ([timing.get(name)] if timing else []))
            if metrics.get(f"{tag}_psnr") is not None:
                ranking.append((metrics[f"{tag}_psnr"], row[0]))
    lines += table(header, rows)
    if ranking:
        lines += ["", "Ranked by re-render PSNR: " + " > ".join(f"{n} ({fmt(v)} dB)" for v, n in
                                                                  sorted(ranking, reverse=True)) + "."]
    albedo = [(m["albedo_si_rmse"], n) for n, m in variants.items() if m.get("albedo_si_rmse") is not None]
    if albedo:
        lines += ["Ranked by albedo si-RMSE against the ground truth (lower is better): "
                  + " < ".join(f"{n} ({fmt(v)})" for v, n in sorted(albedo)) + "."]
    lines += ["", f"Identity: {data.get('identity_network', '?')}."]
    return lines + [""]


from tf_facetex.evaluation import relight_report  # noqa: E402 - plain JSON -> markdown, no TensorFlow

# (file, title, command, explanation, formatter or None for the generic table)
SECTIONS = [
    ("bench.json", "Speed: end-to-end reconstruction on this machine",
     ".venv/bin/python scripts/bench.py --json docs/results/bench.json",
     "Images per second of the whole product pipeline (detect → prior → unwrap → refine → render, the photo "
     "replicated to the batch), the median ms/image of each stage after one warm-up call (`first call s`: tracing, "
     "compilation, lazy loading), the peak resident memory of each run, and the FLOPs per image of the "
     "networks from the TensorFlow profiler (a multiply-add counts 2). `network` runs the regressor prior and the "
     "refinement network with the shipped weights where they exist (random otherwise; `weights` says which; speed "
     "does not depend on them); `fit` is the no-weights default of `scripts/run_demo.sh`. The achieved GFLOP/s of "
     "a network stage divided by the machine's measured `tf.matmul` rate says how far the stage is from being "
     "compute-bound. The default-path table (issue 19) times the product's default per photo at batch 1 and 16, "
     "its cold first call and retraces, against the previous UV-fit solver and a ResNet-50 yardstick. "
     "The machine is shared: read every figure with the load average next to it.",
     lambda data: bench_section(data) + speed_report.default_path_lines(data.get("default_path"))),
    ("bench_serving_ratio.json", "Serving renderer (no XLA) against the XLA renderer",
     ".venv/bin/python scripts/bench_render.py --meshes ict --sizes 224 --batches 16 --serving-ratio 12 --json "
     "> docs/results/bench_serving_ratio.json",
     "The full per-texel render that a stock TF Serving SavedModel must use (`FaceRenderer(jit_stages=False)`, no "
     "XLA) against the XLA-staged default and the whole render under `jit_compile`, called in rotating order each "
     "round so that they share the load; issue 19 asks for at most 2.5x the XLA renderer's ms/image at 224, "
     "batch 16. `previous_serving_no_xla` is the serving renderer before its foreground-only stages and early "
     "culling.", speed_report.serving_ratio_section),
    ("eval_synthetic.json", "Method variants on synthetic faces (the paper's Table 1 columns + albedo error)",
     ".venv/bin/python scripts/evaluate.py --flagfile configs/eval_synthetic.cfg "
     "--json docs/results/eval_synthetic.json",
     "Each variant reconstructs the same synthetic faces. L1 / PSNR / SSIM compare the re-render with the input "
     "photo on the face mask (OD: detailed light L', OC: the coarse global light L); identity is the cosine "
     "similarity of face-recognition embeddings of input and re-render. With ground truth, the albedo columns give "
     "the scale-invariant RMSE and SSIM of the albedo in UV on the face region (after a global scale alignment), "
     "on all and on the seen texels, and the RMSE of a render under a new light. Re-render scores reward "
     "explaining the photo; the albedo columns reward separating albedo from light (an albedo with the photo's "
     "lighting baked in can re-render well and still score badly there). The two rankings under the table are "
     "computed from these numbers.", synthetic_section),
    ("eval_real.json", "Method variants on real photos (the paper's Table 1 on a held-out real split)",
     "bash scripts/run_real_recipe.sh",
     "The same columns as the synthetic table, on real test photos no training image comes from (split by "
     "content hash, duplicates removed); there is no ground-truth albedo for real photos, so only the re-render "
     "columns exist.", synthetic_section),
    ("eval_real_net.json", "The shipped networks on the real test split: prior, fit, net, net+fit",
     ".venv/bin/python scripts/evaluate.py --data='outputs/real_recipe/samples/test/samples-*.tfrecord' "
     "--variants=prior,fit --checkpoints=net=saved_models/refinement_net --net_fit_steps=30 --identity=dlib "
     "--fit_steps=150 --face_model=default --json=docs/results/eval_real_net.json",
     "The refiner modes of `scripts/reconstruct.py --refiner` in one run on the same held-out real photos "
     "(samples from the fit prior, UV 128, the shipped network's size): `fit` = 150-step per-image fit, `net` = one "
     "forward pass of saved_models/refinement_net, `net+fit` = the network's A', L' as the start of a 30-step fit. "
     "ms/image is the detail stage alone (after the first batch, batch 8, 2 shared CPU cores).", synthetic_section),
    ("eval_synthetic_net.json", "The shipped networks on synthetic faces with ground truth: prior, fit, net, net+fit",
     ".venv/bin/python scripts/evaluate.py --data='outputs/synth_eval128_samples/*.tfrecord' --variants=prior,fit "
     "--checkpoints=net=saved_models/refinement_net --net_fit_steps=30 --identity=dlib --fit_steps=150 "
     "--face_model=default --json=docs/results/eval_synthetic_net.json",
     "The same four modes on the 32 held-out synthetic faces of the synthetic table (seed 777), made at UV 128 so "
     "that the shipped network can run on them (`make_synthetic.py --uv_size 128`, `make_refinement_samples.py "
     "--uv_size 128`): the albedo columns measure against the ground truth.", synthetic_section),
    ("net_fit_tuning.json", "net+fit settings chosen on the validation splits",
     ".venv/bin/python scripts/tune_net_fit.py --checkpoint=saved_models/refinement_net "
     "--data=real_val='outputs/real_recipe/samples/val/samples-*.tfrecord' "
     "--data=synthetic_val='outputs/i18/synth_val_samples/*.tfrecord' --starts=network,photo --steps=30 "
     "--learning_rates=0.01,0.02 --json=docs/results/net_fit_tuning.json",
     "The start, step count and learning rate of `net+fit`'s short fit (`refinement.net_fit`), against the 150-step "
     "fit and a 30-step fit alone, on 48 validation samples of each set (never the test split). ms_per_image: the "
     "detail stage, batch 8, 2 CPU cores.", net_fit_tuning_section),
    ("eval_synthetic_hard.json", "Synthetic faces under hard light: the albedo against the best flat colour",
     ".venv/bin/python scripts/evaluate.py --data='outputs/synth_hard_samples/*.tfrecord' "
     "--synthetic_dir=outputs/synth_hard --variants=prior,fit --identity=none "
     "--json=docs/results/eval_synthetic_hard.json",
     "Synthetic faces lit by a hard directional light on every face, coloured light, specular highlights and an "
     "occluder (the knobs are listed under the command), true landmarks and masks. The albedo's scale-aligned RMSE "
     "against the true albedo (per-channel least-squares scale, over the face chart's texels) beside the error of "
     "the best flat colour under the same alignment (per channel the chart's mean true albedo; "
     "`metrics.flat_colour_rmse`): an albedo above it describes the face worse than no detail at all. 'Beats flat' "
     "counts the faces where the albedo's error is the lower. Completion = the error on the texels the photo did not "
     "show (scale from the whole chart). The re-render is also scored on the hull of the 68 landmarks, a region the "
     "method's own mask does not decide.",
     lambda data: clean_report.flat_colour_lines(data) + clean_report.hull_lines(data) + synthetic_section(data)),
    ("eval_synthetic_images.json", "The synthetic evaluation end to end from the image files",
     ".venv/bin/python scripts/evaluate.py --protocol=images --data=outputs/synth_eval --batch_size=4 "
     "--json=docs/results/eval_synthetic_images.json",
     "The synthetic evaluation faces read from their image files and reconstructed as `scripts/reconstruct.py` "
     "does (the product's detection, 68 landmarks, alignment, face masker and fit, its defaults), beside the same "
     "reconstruction from the generator's true landmarks and mask; the albedo scored against the true albedo as "
     "above. A face the detector misses is not reconstructed and is counted.", clean_report.from_images_lines),
    ("eval_synthetic_hard_images.json", "Synthetic faces under hard light, end to end from the image files",
     ".venv/bin/python scripts/evaluate.py --protocol=images --data=outputs/synth_hard --batch_size=4 "
     "--json=docs/results/eval_synthetic_hard_images.json",
     "The hard-light faces of the section above, read from their image files and reconstructed as "
     "`scripts/reconstruct.py` does, beside the same reconstruction from the true landmarks and mask (through the "
     "product's `Reconstructor` at UV 256, so the true-landmark row differs slightly from the samples' fit row).",
     clean_report.from_images_lines),
    ("issue17_ghosting.json", "Ghosting and completion: what the symmetry term copies",
     ".venv/bin/python scripts/evaluate.py --protocol=ghosting --data=outputs/synth_ghost "
     "--json=docs/results/issue17_ghosting.json --figure=docs/results/issue17_ghosting.png",
     "Synthetic faces with an occluder on each (`--occluder_prob 1`), and the same render without it. Ghosting = "
     "the albedo error on the mirror image of the occluded region (texels the photo shows, free of the occluder, "
     "whose mirror is occluded), against the same region of the same method's albedo from the unoccluded render "
     "(what the occluder added there) and against the truth; completion = the error on the texels the photo did not "
     "show. Scale-aligned RMSEs, the scale fitted on the whole chart. 'uniform' is the paper's symmetry term the fit "
     "had before issue 17 (weight 5, every chart texel pulled to its mirror, seen or not), 'fit' the shipped one, "
     "'prior' the prior albedo. Mask `true`: the occluder is masked out; `none`: it counts as seen (a masker that "
     "misses a strand of hair).", clean_report.ghosting_lines),
    ("issue18_ghosting_net.json", "Ghosting and completion: the shipped network against the fit",
     ".venv/bin/python scripts/evaluate.py --protocol=ghosting --data=outputs/synth_ghost "
     "--ghost_variants=fit,net,net+fit --ghost_masks=true,none --json=docs/results/issue18_ghosting_net.json",
     "The protocol of the previous section on the same 24 faces, with the refiner modes of `scripts/reconstruct.py`: "
     "'net' = one forward pass of saved_models/refinement_net, 'net+fit' = its A', L' as the start of a 30-step fit. "
     "A network trained on a population should in-paint what an occluder hides rather than copy it.",
     clean_report.ghosting_lines),
    ("eval_relight.json", "Relighting truth on real photos: one face under many lights (Extended Yale B)",
     "nice -n 5 .venv/bin/python scripts/eval_relight.py --mode single,multi --json docs/results/eval_relight.json "
     "--figure docs/results/eval_relight.png",
     "Frontal photos of one person under one point light at a time (6 subjects x 6 lights), reconstructed by the "
     "product. Albedo consistency: the per-texel coefficient of variation of A' across a subject's lights (texels "
     "seen in every photo, each map divided by its mean) over the same for the lit texture A' x shading: how much of "
     "the light is left in A' (0: none, 1: all). Cross-relighting: photo i's albedo under photo j's estimated light, "
     "at i's pose, against photo j (PSNR on the face mask), against photo i itself. The multi-photo mode "
     "(`reconstruct.py --same_person`) fits one albedo to half of the lights and relights it to the other half "
     "(each held-out light fitted with the albedo fixed); its consistency compares the two halves' albedos, "
     "beside the single-photo albedos of the same photo pairs (tf_facetex/evaluation/relight.py).",
     relight_report.relight_lines),
    ("clean_albedo.json", "Clean albedo on real photos: occluder leak, holes, re-render on label regions",
     ".venv/bin/python scripts/evaluate.py --protocol=celebamask --limit=20 --batch_size=4 "
     "--baseline=before=docs/results/issue17/clean_albedo_before_skin.json,"
     "uniform_prior=docs/results/issue17/clean_albedo_uniform_prior.json --json=docs/results/clean_albedo.json",
     "Held-out CelebAMask-HQ photos (the parsing network never saw them) reconstructed end to end by the product, "
     "measured against their human labels warped into the crop: occluder leak = share of the albedo texels marked "
     "seen whose source pixel is hair, hat, glasses, earring, cloth or background; coverage = share of the labelled "
     "face / eyes / mouth the render covers (holes); re-render L1 / PSNR / SSIM on the labelled face and on the hull "
     "of the 68 detected landmarks (neither depends on the method's mask; empty render pixels count as black) beside "
     "the method's own face mask, and PSNR inside the labelled eyes and mouth. `tf_facetex/evaluation/clean_albedo.py` "
     "defines each.", clean_report.clean_albedo_lines),
    ("clean_albedo_leak100.json", "Occluder leak on 100 held-out photos (the figure of record)",
     ".venv/bin/python scripts/eval_clean_albedo.py --num_images 100 --json docs/results/clean_albedo_leak100.json",
     "The same measurements as above on the first 100 held-out CelebAMask-HQ photos with the shipped defaults. "
     "The unwrap gate (`ReconstructionConfig.unwrap_mask_threshold` 0.97: a texel counts as seen only where the "
     "face mask, resampled into the chart, is at least this) was chosen on the next 100 held-out photos "
     "(100-199) as the smallest threshold whose pooled leak is at most half the 1% target (0.9: 1.05%, 0.97: 0.49%, "
     "0.985: 0.30%), so these 100 photos did not choose it.", clean_report.clean_albedo_lines),
    ("clean_albedo_figure.json", "Before and after: albedos of held-out photos with and without hair on the forehead",
     ".venv/bin/python scripts/eval_clean_albedo.py --figure docs/results/clean_albedo_figure.png "
     "--json docs/results/clean_albedo_figure.json",
     "Albedo maps (96-pixel thumbnails, no photos) of held-out CelebAMask-HQ photos, before issue 17's changes and "
     "with the shipped defaults.", clean_report.figure_lines),
    ("bench_refiner_modes.json", "Refiner modes end to end",
     ".venv/bin/python scripts/bench_refiner_modes.py --json docs/results/bench_refiner_modes.json",
     "The whole reconstruction of an aligned photo (prior, unwrap, detail stage, renders, turntable) per refiner "
     "mode, at batch 1, the modes interleaved so that they share the load; `regressor+net` uses the shipped prior "
     "regressor instead of the landmark + photometric fit. `speedup_over_fit` = fit's ms/photo / the mode's.", None),
    ("refine_cpu_preset.json", "Loss presets of the CPU refinement network",
     ".venv/bin/python scripts/compare_runs.py --runs=shipped=outputs/preset/shipped,"
     "paper_plain=outputs/preset/paper_plain,authors_plain=outputs/preset/authors_plain,"
     "no_illum10=outputs/preset/no_illum10 --json=docs/results/refine_cpu_preset.json",
     "600-step runs of configs/refine_cpu.cfg with the loss settings changed, compared on the validation split "
     "(real re-render) and the synthetic validation faces (albedo against the truth); the weighted validation loss "
     "is not compared, since each preset weights its terms differently.", None),
    ("refine_cpu_curves.json", "Learning curves of the shipped refinement network",
     ".venv/bin/python scripts/plot_learning_curves.py --run_dir=outputs/refine_cpu/final "
     "--out=docs/results/refine_cpu_curves.png --json=docs/results/refine_cpu_curves.json",
     "Validation (160 photos of train shards 60-63, never trained on) every 250 steps: the weighted UV loss terms "
     "and the re-render PSNR; `flattening` is the relative change of the validation loss over the last ~20% of the "
     "steps.", None),
    ("eval_masks.json", "Face masks against CelebAMask-HQ labels",
     ".venv/bin/python scripts/eval_masks.py --json docs/results/eval_masks.json --parsing_weights "
     "outputs/parsing_net/parsing_net.keras",
     "How well each face masker (the pixels the fit explains and the unwrap keeps) matches the human face "
     "labels on 200 held-out aligned crops: per-image IoU (mean, median, 10th percentile), precision (share of the "
     "mask that is face) and recall (share of the face that is masked), the pixel-pooled IoU, and the paired IoU "
     "difference against the landmark + skin-colour masker.", masks_section),
    ("eval_landmarks.json", "68-point landmarks and head pose on AFLW2000-3D",
     ".venv/bin/python scripts/eval_landmarks.py --json docs/results/eval_landmarks.json",
     "Normalised mean error (NME, percent of the ground-truth box size) of dlib's 68 landmarks and of the fitted "
     "face model's projected landmarks, over all images and by |yaw|; images without a detection are failures "
     "and excluded from the NME. The pose table is the fit's mean absolute angle error.", landmarks_section),
    ("eval_detection.json", "Face detection + 68-landmark alignment on hard inputs",
     "nice -n 5 .venv/bin/python scripts/eval_detection.py --json docs/results/eval_detection.json "
     "--yale_configs auto,auto+group --configs hog,auto_dlib,auto "
     "--synthetic_sets synthetic_eval=SYNTH_EVAL,synthetic_hard_light=SYNTH_HARD",
     "How often the product's detector (`tf_facetex.data.detect.FaceDetector`, the default of every entry point) "
     "finds the face and aligns it: *aligned* = the five alignment points (eye centres, nose tip, mouth corners) "
     "within 0.15 eye-centre distances of the reference (Yale B: the subject's frontal-light frame; synthetic: "
     "the true landmarks; CelebAMask-HQ: the eye labels). `summary` has one row per set and configuration; "
     "`auto` is the default, `auto_dlib` the detector before the landmark network, `hog` HOG alone.", None),
    ("prior_training.json", "Prior regressor training",
     ".venv/bin/python scripts/train_prior.py --flagfile=configs/prior_synthetic.cfg "
     "--results_json docs/results/prior_training.json",
     "The prior regressor's held-out evaluation against the mean face and the landmark fit: landmark error in "
     "pixels at 224, shape RMSE in mm, coefficient errors and the skin-mask PSNR of the re-render.", None),
    ("landmark_fit_noise.json", "Landmark fit: shape error against landmark noise",
     ".venv/bin/python scripts/sweep_landmark_fit.py --data 'outputs/prior_synth/faces3000/tfrecords/test-*.tfrecord' "
     "--json docs/results/landmark_fit_noise.json",
     "Shape RMSE (mm) of the landmark fit on held-out synthetic faces when Gaussian noise is added to their exact 68 "
     "landmarks, for several identity:expression prior weights, against the mean face.", None),
    ("albedo_model.json", "Albedo model built from photos",
     ".venv/bin/python scripts/build_albedo_model.py --images 'outputs/real_recipe/faces/train-*.tfrecord' "
     "--components 10 --uv_size 128 --out outputs/albedo_model/recipe_train.npz "
     "--figure docs/results/albedo_model.png --report outputs/albedo_model/recipe_train.json; then --evaluate_only "
     "on 'outputs/real_recipe/faces/test-*.tfrecord' (saved_models/albedo_model/MODEL_CARD.md has both commands)",
     "The photo-built albedo basis that is ICT-FaceKit's default albedo prior (saved_models/albedo_model/): how "
     "many photos were used, the variance the components explain, and the test-split reconstruction error of the "
     "basis against the mean alone, for the shipped build and two smaller ones.", None),
    ("bench_render.json", "Rendering stack speed",
     ".venv/bin/python scripts/bench_render.py --json > docs/results/bench_render.json",
     "ms/image of visibility, interpolation and the full per-texel-shaded render by mesh, image size, batch and "
     "execution mode.", None),
    ("bench_train.json", "Training step speed",
     ".venv/bin/python scripts/bench_train.py --json > docs/results/bench_train.json",
     "Seconds per training step of the refinement module (small and paper networks) and the share of input, "
     "forward, rendering, losses and backward.", None),
    ("bench_prior.json", "Prior module speed",
     ".venv/bin/python scripts/bench_prior.py --json > docs/results/bench_prior.json",
     "Fitting ms/image by stage and regressor images/s.", None),
]


def section(path, title, command, explanation, formatter):
    """Markdown lines of one section (path may be missing: a 'not yet produced' note), then its notes.

    ``<name>.notes.md`` next to the JSON, when present, is the hand-written reading of the numbers (why the
    variants rank as they do); it is appended verbatim, so the tables stay generated and the prose stays put.
    """
    lines = _section_lines(path, title, command, explanation, formatter)
    notes = path.with_name(path.stem + ".notes.md")
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    return lines


def _section_lines(path, title, command, explanation, formatter):
    lines = [f"## {title}", "", explanation, ""]
    if not path.is_file():
        return lines + [f"*Not yet produced: run `{command}`.*", ""]
    how = f"documented command: `{command}`" if command else "no documented command"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return lines + [f"*`{path.name}` could not be read ({' '.join(str(err).split())}); {how}.*", ""]
    recorded = data.get("command") if isinstance(data, dict) and isinstance(data.get("command"), str) else None
    lines += [f"Source: `docs/results/{path.name}`, produced by `{recorded}`." if recorded else
              f"Source: `docs/results/{path.name}` (the JSON does not record its command; {how}).", ""]
    if formatter is not None and isinstance(data, dict):
        try:
            return lines + formatter(data)
        except Exception as err:  # noqa: BLE001 - an unexpected layout falls back to the generic table
            lines += [f"*(the {path.name} layout was not the expected one: {type(err).__name__}: {err}; "
                      "generic table below)*", ""]
    return lines + generic_section(data)


def render(results_dir) -> str:
    """The whole RESULTS.md text for the JSON files in ``results_dir``."""
    results_dir = pathlib.Path(results_dir)
    known = {name for name, *_ in SECTIONS}
    lines = ["# Results", "",
             "Generated by `.venv/bin/python scripts/make_results.py` from the JSON files in `docs/results/` "
             "(and the hand-written `<name>.notes.md` next to them, which interpret the numbers); do not edit by "
             "hand: rerun the command under each section, then this script.", ""]
    present = [name for name, *_ in SECTIONS if (results_dir / name).is_file()]
    missing = [name for name, *_ in SECTIONS if name not in present]
    others = sorted(p.name for p in results_dir.glob("*.json") if p.name not in known) if results_dir.is_dir() else []
    lines += [f"Contents: {', '.join(present + others) or 'no results yet'}"
              + (f"; not yet produced: {', '.join(missing)}" if missing else "") + ".", ""]
    for name, title, command, explanation, formatter in SECTIONS:
        lines += section(results_dir / name, title, command, explanation, formatter)
    for name in others:
        lines += section(results_dir / name, f"Other result: {name}", None,
                         "A result file this page has no section for (add one to `SECTIONS` in "
                         "`tf_facetex/evaluation/report.py`); its values are shown as they are.", None)
    figures = sorted(p.name for p in results_dir.glob("*.png")) if results_dir.is_dir() else []
    if figures:
        lines += ["## Figures", ""] + [f"- [{name}](results/{name})" for name in figures] + [""]
    return "\n".join(lines).rstrip() + "\n"


def make_results(results_dir=DEFAULT_RESULTS, out=DEFAULT_OUT) -> pathlib.Path:
    return io_utils.write_text(out, render(results_dir))  # atomic: temporary file, then rename
