"""The speed tables of docs/RESULTS.md (no TensorFlow): the default path per photo of scripts/bench.py (its
``default_path`` section, `evaluation.default_path_speed`) and the serving renderer's ratio to the XLA one
(scripts/bench_render.py --serving-ratio). Formatters of `tf_facetex.evaluation.report.SECTIONS` (which imports
this module: the table helpers come from `evaluation.markdown`, not from the report)."""
from tf_facetex.evaluation.markdown import fmt, table


def default_path_lines(section):
    """Markdown lines of a bench.json ``default_path`` section (scripts/bench.py); [] when there is none."""
    if not isinstance(section, dict):
        return []
    runs = section.get("runs", [])
    lines = ["Default path per photo (issue 19): the product's default reconstruction of an aligned photo (prior fit, "
             "UV fit, renders, turntable) per UV-fit solver — `xla` the shipped compiled loop, `adam` the previous "
             "per-step loop — each solver in a fresh process with an empty XLA cache, so the first call of the "
             "first batch size is cold; `× ResNet-50` divides ms/photo by the same process's ResNet-50 batch-1 "
             "forward (the machine yardstick):", ""]
    rows = [[run.get("solver"), run.get("batch"), run.get("ms_per_photo"), run.get("ms_per_photo_over_yardstick"),
             run.get("first_call_s"), run.get("traces_first_call"), run.get("traces_per_later_call"),
             run.get("detailed_psnr_db"), fmt(run.get("load_average_first_call")),
             " → ".join(fmt(x) for x in run.get("load_average_timed") or [])] for run in runs]
    lines += table(["solver", "batch", "ms/photo", "× ResNet-50", "first call s", "traces, first call",
                    "traces, later calls", "detailed PSNR dB", "load avg, first call", "load avg, timed"], rows)
    lines.append("")
    facts = []
    yardstick = section.get("yardstick_resnet50_ms") or {}
    if yardstick:
        facts.append("ResNet-50 batch-1 forward: " + ", ".join(f"{fmt(ms)} ms ({solver} process)"
                                                                for solver, ms in yardstick.items()))
    for batch, row in (section.get("by_batch") or {}).items():
        if row.get("adam_over_xla") is not None:
            facts.append(f"batch {batch}: adam / xla = {fmt(row['adam_over_xla'])}")
    scaling = section.get("batch_scaling_largest_over_smallest") or {}
    if scaling:
        facts.append("ms/photo at the largest / the smallest batch: " + ", ".join(
            f"{solver} {fmt(value)}" for solver, value in scaling.items()))
    detect = section.get("detect_and_mask") or {}
    if detect:
        facts.append("detection + alignment + mask (apart): " + ", ".join(
            f"{fmt(d.get('ms_per_photo'))} ms/photo (first call {fmt(d.get('first_call_s'))} s, {solver} process)"
            for solver, d in detect.items()))
    again = section.get("first_call_with_filled_xla_cache")
    if again:
        facts.append(f"first call of a later run (fresh process, XLA cache filled; {again.get('solver')}, batch "
                     f"{again.get('batch')}): {fmt(again.get('first_call_s'))} s (load "
                     f"{fmt(again.get('load_average_first_call'))})")
    if facts:
        lines += ["; ".join(facts) + ".", ""]
    return lines


def serving_ratio_section(data):
    """scripts/bench_render.py --serving-ratio: ms/image of each renderer, its ratio to the XLA-staged one."""
    median = data.get("ms_per_image_median", {})
    lines = [f"{data.get('mesh', '?')} mesh ({fmt(data.get('triangles'))} triangles), {data.get('image_size')} px, "
             f"batch {data.get('batch')}, {data.get('rounds')} rounds (the renderers called in rotating order each "
             f"round); load {fmt(data.get('load_average_before'))} → {fmt(data.get('load_average_after'))}, "
             f"{fmt((data.get('machine') or {}).get('cpu_count'))} CPU cores.", ""]
    rows = [[name, ms, data.get("ms_per_image_min", {}).get(name), data.get("ratio_to_xla_stages", {}).get(name),
             data.get("ratio_to_faster_xla", {}).get(name), data.get("first_call_s", {}).get(name)]
            for name, ms in median.items()]
    lines += table(["renderer", "ms/image (median)", "ms/image (min)", "÷ XLA stages", "÷ faster XLA",
                    "first call s"], rows)
    return lines + [""]
