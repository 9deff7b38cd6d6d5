"""End-to-end reconstruction speed on this machine: images/s, ms/image by stage, peak memory, FLOPs per image.

  .venv/bin/python scripts/bench.py --json docs/results/bench.json          # the default run (~5-10 min on 2 cores)
  .venv/bin/python scripts/bench.py --json /tmp/bench.json --quick          # batch 1 only, 1 repeat, no fit path
  .venv/bin/python scripts/bench.py --batches 1,16 --fit_batches 1 --repeats 2 --images photos/

What it runs (the product pipeline, `tf_facetex.pipeline`, exactly as scripts/reconstruct.py does, on the same
photo replicated to the batch size; default photo: scikit-image's astronaut, as scripts/run_demo.sh writes it):
  variant 'network' (--batches): prior = `PriorRegressor` (ResNet-50), details = `NetworkRefiner` (`RefinementNet`
    --net_preset, UV from the preset). Neither has trained weights in this workplace, so both run with RANDOM
    weights ("weights": "random" in the JSON): speed does not depend on the weight values (the regressor's
    zero-initialised head gives the mean face, frontal, so the rasteriser sees a typical face-sized footprint);
  variant 'fit' (--fit_batches): the no-weights default of scripts/run_demo.sh: landmark + photometric fit prior
    and the per-image UV fit (`FitRefiner`, --fit_steps Adam steps).
Stages (ms/image, the median over --repeats timed iterations after one warm-up iteration whose time is reported as
first_call_s: tracing, XLA compilation, lazy loading):
  detect     dlib detection, 68 landmarks and alignment (`FaceFinder.aligner.from_image`)
  mask       the face mask (parsing network by default, --masker)
  prior      the prior's coefficients (`PriorModule.coefficients`: regressor forward, or landmark + photometric fit)
  unwrap     the rest of the prior: decode the mesh, rasterise, normals, prior albedo in UV, unwrap the photo, the
             coarse render
  refine     the detail stage (`Refiner.__call__`: the refinement network, or the UV fit)
  render     final renders R(A', L') and R(A', L), shading map, PSNRs, numpy results
  turntable  the relit 8-view turntable of each face
  write      write_face_outputs (PNGs, OBJ, JSON) into a temporary folder: reported apart, not in images_per_s
images_per_s = batch / (wall time of detect .. turntable); images_per_s_with_files adds the writing;
cpu_ms_per_image_total is the process CPU time of detect .. turntable per image (all threads: less sensitive to other
jobs than the wall time, but it counts TF's spinning worker threads too).
Memory: peak RSS during each run (sampled every 10 ms by a thread, psutil) and the process-wide peak so far
(resource.getrusage ru_maxrss; runs go in the listed order); TF's allocator statistics where the device has them
(not on CPU: said so). FLOPs per image of the regressor and of the refinement networks (paper and small preset)
come from the TF profiler (`tf_facetex.evaluation.flops`: multiply-add = 2 FLOPs); with the measured stage times
they give the achieved GFLOP/s and GFLOP per CPU-second, compared with a tf.matmul benchmark of this machine run at
the start and at the end (`add_fractions`: on a shared machine the per-CPU-second ratio is the one to trust).
--network_timings also times each network alone (tf.function forward) at every batch size.
Stage times come from the product's timing hook (`Reconstructor.set_timer`), the measuring tools from
`tf_facetex.evaluation.speed`.
The JSON is rewritten after every run ("partial": true until the end), so a killed run leaves what it measured.
The load average is recorded before and after each run: on a shared machine, compare figures with it in mind.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app, flags  # noqa: E402

from tf_facetex import cli  # noqa: E402
from tf_facetex.evaluation.speed import (RssSampler, StageClock, add_fractions, load_average,  # noqa: E402
                                         ru_maxrss_bytes, tf_allocator_stats, time_networks)

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the result JSON here (atomically); it is printed either way.")
flags.DEFINE_string("images", None, "An image file or folder (replicated / cycled to fill a batch). Default: "
                    "outputs/demo_input/astronaut.png, or skimage.data.astronaut() in memory when it is absent.")
flags.DEFINE_list("batches", ["1", "16"], "Batch sizes of the network variant (empty: skip it).")
flags.DEFINE_list("fit_batches", ["1"], "Batch sizes of the no-weights fit variant (empty: skip it).")
flags.DEFINE_integer("repeats", 2, "Timed iterations per network run after the warm-up (the median is reported).")
flags.DEFINE_integer("fit_repeats", 1, "Timed iterations per fit run after the warm-up.")
flags.DEFINE_enum("net_preset", "paper", ["paper", "small"], "RefinementNet preset of the network variant.")
flags.DEFINE_string("regressor_backbone", "resnet50", "PriorRegressor backbone of the network variant.")
flags.DEFINE_integer("fit_steps", 150, "UV-fit steps of the fit variant (the demo default).")
flags.DEFINE_integer("landmark_steps", 300, "Landmark-fit steps of the fit variant (the demo default).")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "Face masker (as scripts/reconstruct.py).")
flags.DEFINE_bool("write_outputs", True, "Also time writing the face folders (reported apart).")
flags.DEFINE_bool("network_timings", True, "Also time each network's forward pass alone at every batch size.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matrices of the matmul FLOP/s benchmark.")
flags.DEFINE_integer("matmul_repeats", 10, "Timed matmuls.")
flags.DEFINE_string("face_model", None, "Face model; default: see README.")
flags.DEFINE_list("default_path_batches", [], "Also time the no-weights default path per UV-fit solver at these "
                  "batch sizes (tf_facetex.evaluation.default_path_speed: ms/photo, first call, retraces, "
                  "ResNet-50 yardstick), e.g. 1,16.")
flags.DEFINE_bool("quick", False, "Smoke run: --batches 1 --fit_batches '' --repeats 1 --nonetwork_timings.")

STAGES = ("detect", "mask", "prior", "unwrap", "refine", "render", "turntable")
WEIGHTS_NOTE = ("no trained weights exist in this workplace: the regressor and the refinement network run with "
                "random initial weights; their speed does not depend on the weight values")


def load_photos(path):
    """-> (list of uint8 [H, W, 3] photos, description)."""
    import pathlib

    from tf_facetex.data.images import load_image
    from tf_facetex.pipeline import resolve_inputs

    if path:
        files = resolve_inputs(path)
        return [load_image(f) for f in files], [str(f) for f in files]
    default = pathlib.Path("outputs/demo_input/astronaut.png")
    if default.is_file():
        return [load_image(default)], [str(default)]
    import skimage.data

    return [skimage.data.astronaut()], ["skimage.data.astronaut() (in memory)"]


def one_iteration(finder, reconstructor, photos, batch, write_dir, names):
    """Detect -> mask -> reconstruct (-> write) one batch; returns {stage: seconds} incl. 'total' and 'write'."""
    import time

    from tf_facetex import pipeline

    clock = StageClock()
    inner = StageClock()
    reconstructor.set_timer(inner.timer)        # the product's timing hook: prior, refine, turntable
    start, cpu_start = time.perf_counter(), time.process_time()
    faces, used = [], []
    for k in range(batch):
        photo = photos[k % len(photos)]
        t0 = time.perf_counter()
        face = finder.aligner.from_image(photo, name=names[k % len(names)])[0]
        t1 = time.perf_counter()
        face.mask = finder.face_masker()(face.image, face.landmarks) * face.valid
        clock.add("detect", t1 - t0)
        clock.add("mask", time.perf_counter() - t1)
        faces.append(face)
        used.append(photo)
    t0 = time.perf_counter()
    results = reconstructor.reconstruct(faces)
    reconstruct = time.perf_counter() - t0
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    seconds = dict(clock.seconds)
    inner = inner.seconds
    seconds["prior"] = inner.get("prior", 0.0)
    seconds["unwrap"] = inner.get("prior_total", 0.0) - inner.get("prior", 0.0)
    seconds["refine"] = inner.get("refine", 0.0)
    seconds["prior_cpu"] = inner.get("prior_cpu", 0.0)
    seconds["refine_cpu"] = inner.get("refine_cpu", 0.0)
    seconds["turntable"] = inner.get("turntable", 0.0)
    seconds["render"] = reconstruct - inner.get("prior_total", 0.0) - seconds["refine"] - seconds["turntable"]
    seconds["total"] = total
    seconds["cpu"] = cpu
    if write_dir is not None:
        t0 = time.perf_counter()
        for k, (result, photo) in enumerate(zip(results, used)):
            folder = os.path.join(write_dir, f"face{k}")
            pipeline.write_face_outputs(result, folder, reconstructor.model, reconstructor.layout, photo,
                                        names[k % len(names)], reconstructor.uv_mask,
                                        info={"pipeline": reconstructor.describe()})
        seconds["write"] = time.perf_counter() - t0
    return seconds, results


def build_reconstructor(variant, model):
    """-> (Reconstructor, description dict) for 'network' (random regressor + RefinementNet) or 'fit'."""

    from tf_facetex import pipeline

    if variant == "network":
        from tf_facetex.networks import build_refinement_net
        from tf_facetex.networks.refinement import REFINEMENT_CONFIGS
        from tf_facetex.prior.regressor import build_regressor

        uv_size = REFINEMENT_CONFIGS[FLAGS.net_preset]["uv_size"]
        regressor = build_regressor(model, FLAGS.regressor_backbone)
        config = pipeline.ReconstructionConfig(prior="regressor", uv_size=uv_size)
        reconstructor = pipeline.Reconstructor(model, config, regressor=regressor)
        net = build_refinement_net(FLAGS.net_preset, uv_size=uv_size)
        reconstructor.use_refiner(pipeline.NetworkRefiner(net, reconstructor.renderer.uv_mask,
                                                          source="random init (no trained weights)"))
        description = {"prior": f"regressor ({FLAGS.regressor_backbone}, random weights, "
                                f"{regressor.count_params():,} parameters)",
                       "refiner": f"network ({FLAGS.net_preset} preset, random weights, {net.count_params():,} "
                                  "parameters)",
                       "uv_size": uv_size, "weights": "random"}
    else:
        config = pipeline.ReconstructionConfig(prior="fit", fit_steps=FLAGS.fit_steps,
                                               landmark_steps=FLAGS.landmark_steps)
        reconstructor = pipeline.Reconstructor(model, config)
        description = {"prior": f"fit ({FLAGS.landmark_steps} landmark steps + photometric fit)",
                       "refiner": f"fit (UV fit, {FLAGS.fit_steps} Adam steps)", "uv_size": config.uv_size,
                       "weights": "none needed"}
    return reconstructor, description


def run_variant(variant, batch, repeats, model, finder, photos, names, flops):
    import statistics
    import tempfile
    import time

    sampler = RssSampler()
    load_before = load_average()
    sampler.start()
    cpu0 = time.process_time()
    reconstructor, description = build_reconstructor(variant, model)
    with tempfile.TemporaryDirectory(prefix="bench_write_") as scratch:
        write_dir = scratch if FLAGS.write_outputs else None
        t0 = time.perf_counter()
        one_iteration(finder, reconstructor, photos, batch, write_dir, names)       # warm-up
        first_call = time.perf_counter() - t0
        timed = [one_iteration(finder, reconstructor, photos, batch, write_dir, names)[0] for _ in range(repeats)]
    cpu = time.process_time() - cpu0
    peak = sampler.stop()
    median = {key: statistics.median(t[key] for t in timed) for key in timed[0]}
    ms = {stage: round(1000.0 * median[stage] / batch, 2) for stage in STAGES}
    total = median["total"]
    run = {
        "variant": variant, "batch_size": batch, "repeats": repeats, **description,
        "images_per_s": round(batch / total, 4),
        "ms_per_image": ms,
        "ms_per_image_total": round(1000.0 * total / batch, 2),
        "cpu_ms_per_image_total": round(1000.0 * median["cpu"] / batch, 2),
        "stage_share": {stage: round(median[stage] / total, 4) for stage in STAGES},
        "first_call_s": round(first_call, 2),
        "cpu_s_all_iterations": round(cpu, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "ru_maxrss_mb_so_far": round(ru_maxrss_bytes() / 2**20, 1),
        "load_average_before": load_before, "load_average_after": load_average(),
    }
    if "write" in median:
        run["ms_per_image_write"] = round(1000.0 * median["write"] / batch, 2)
        run["images_per_s_with_files"] = round(batch / (total + median["write"]), 4)
    if variant == "network":
        achieved = {}
        for stage, key in (("prior", "regressor"), ("refine", "refinement_" + FLAGS.net_preset)):
            per_image = flops[key]["per_image"]
            achieved[stage] = {"network": key, "gflop_per_image": round(per_image / 1e9, 3),
                               "achieved_gflop_per_s": round(per_image * batch / median[stage] / 1e9, 2),
                               "gflop_per_cpu_s": round(per_image * batch / max(median[stage + "_cpu"], 1e-9)
                                                        / 1e9, 2)}
        net_flops = flops["regressor"]["per_image"] + flops["refinement_" + FLAGS.net_preset]["per_image"]
        achieved["end_to_end"] = {"gflop_per_image": round(net_flops / 1e9, 3),
                                  "achieved_gflop_per_s": round(net_flops * batch / total / 1e9, 2),
                                  "gflop_per_cpu_s": round(net_flops * batch / median["cpu"] / 1e9, 2),
                                  "note": "network FLOPs only (regressor + refinement); detection, rasterisation "
                                          "and rendering are not counted"}
        run["achieved"] = achieved
    return run


def count_network_flops():
    """FLOPs per image (TF profiler) of the regressor and both refinement presets, and the models themselves."""
    import tensorflow as tf

    from tf_facetex.evaluation.flops import model_flops_per_example
    from tf_facetex.face_model import load_face_model
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.networks.refinement import REFINEMENT_CONFIGS
    from tf_facetex.prior.regressor import build_regressor

    model = load_face_model(FLAGS.face_model, log=lambda *_: None)
    regressor = build_regressor(model, FLAGS.regressor_backbone)
    nets = {"regressor": (regressor, tf.TensorSpec([224, 224, 3]),
                          f"PriorRegressor {FLAGS.regressor_backbone}, 224 x 224 input")}
    for preset in ("paper", "small"):
        size = REFINEMENT_CONFIGS[preset]["uv_size"]
        net = build_refinement_net(preset)
        spec = {"texture_uv": tf.TensorSpec([size, size, 3]), "prior_albedo_uv": tf.TensorSpec([size, size, 3])}
        nets["refinement_" + preset] = (net, spec, f"RefinementNet '{preset}' preset, UV {size} x {size}")
    out = {}
    for name, (net, spec, what) in nets.items():
        counted = model_flops_per_example(net, spec)
        by_type = counted["by_op_type"]
        out[name] = {"what": what, "parameters": int(net.count_params()), "per_image": counted["per_example"],
                     "gflop_per_image": round(counted["per_example"] / 1e9, 3),
                     "by_op_type_gflop": {k: round(v / 1e9, 4) for k, v in list(by_type.items())[:6]}}
    return out, nets


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.quick:
        FLAGS.batches, FLAGS.fit_batches, FLAGS.repeats, FLAGS.network_timings = ["1"], [], 1, False
    import json
    import platform
    import time

    import keras
    import tensorflow as tf

    from tf_facetex import io_utils, pipeline
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation.flops import matmul_gflops
    from tf_facetex.face_model import load_face_model

    try:
        batches = [int(b) for b in FLAGS.batches if b]
        fit_batches = [int(b) for b in FLAGS.fit_batches if b]
    except ValueError as err:
        raise FaceTexError(f"--batches / --fit_batches must be integers ({err})") from err
    if any(b < 1 for b in batches + fit_batches) or FLAGS.repeats < 1 or FLAGS.fit_repeats < 1:
        raise FaceTexError("batch sizes and repeats must be >= 1")
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    command = " ".join(["python scripts/bench.py", *sys.argv[1:]])
    result = {
        "what": "end-to-end reconstruction speed (detect -> prior -> unwrap -> refine -> render), CPU unless a "
                "GPU is visible; ms/image are medians over the timed iterations after one warm-up",
        "command": command,
        "weights": "random",
        "weights_note": WEIGHTS_NOTE,
        "machine": {"cpu_count": os.cpu_count(), "devices": [d.device_type for d in tf.config.list_physical_devices()],
                    "processor": platform.processor() or platform.machine(), "tensorflow": tf.__version__,
                    "keras": keras.__version__, "python": platform.python_version(),
                    "load_average_start": load_average()},
    }
    photos, names = load_photos(FLAGS.images)
    result["input"] = {"images": names, "shapes": [list(p.shape) for p in photos],
                       "batches": "the photos cycled (replicated) to the batch size"}
    print(f"[bench] input: {', '.join(names)}; matmul benchmark ...", flush=True)
    matmul = matmul_gflops(FLAGS.matmul_size, FLAGS.matmul_repeats)
    matmul["load_average"] = load_average()
    result["matmul"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in matmul.items()}
    print(f"[bench] tf.matmul {FLAGS.matmul_size}^2: {matmul['gflops_median']:.1f} GFLOP/s (median), "
          f"{matmul['gflops_best']:.1f} best; counting FLOPs ...", flush=True)
    flops, nets = count_network_flops()
    for name in flops:
        nets[name] = (*nets[name], flops[name]["per_image"])
    result["flops"] = flops
    result["flops_convention"] = ("TF profiler (tf.compat.v1.profiler, float_operation) on the tf.function graph at "
                                  "batch 1: multiply-add = 2 FLOPs (Conv2D, MatMul), element-wise ops with a "
                                  "registered count = 1 per element; batch norm, activations and resizes count 0")
    model = load_face_model(FLAGS.face_model)
    result["face_model"] = model.name
    finder = pipeline.FaceFinder(masker=FLAGS.masker)
    runs = []
    plan = [("network", b, FLAGS.repeats) for b in sorted(batches)]
    plan[1:1] = [("fit", b, FLAGS.fit_repeats) for b in sorted(fit_batches)]   # small runs first: see ru_maxrss
    for variant, batch, repeats in plan:
        print(f"[bench] {variant} batch {batch}: warm-up + {repeats} timed (load {load_average()}) ...", flush=True)
        run = run_variant(variant, batch, repeats, model, finder, photos, names, flops)
        runs.append(run)
        result["runs"] = runs
        if FLAGS.json:   # partial results survive a later failure or a kill
            io_utils.write_json(FLAGS.json, {**result, "partial": True})
        print(f"[bench]   {run['images_per_s']} images/s, ms/image {run['ms_per_image']}, "
              f"peak RSS {run['peak_rss_mb']} MB", flush=True)
    result["runs"] = runs
    if FLAGS.default_path_batches:
        from tf_facetex.evaluation.default_path_speed import default_path_report
        faces = [finder.from_image(photo, name=name)[0] for photo, name in zip(photos, names)]
        def make_reconstructor(fit_config):   # the product's reconstructor with that UV-fit solver
            reconstructor = pipeline.Reconstructor(model, pipeline.ReconstructionConfig(prior="fit",
                                                                                        fit_steps=fit_config.steps))
            renderer = reconstructor.renderer
            reconstructor.use_refiner(pipeline.FitRefiner(renderer.uv_mask, renderer.uv_symmetry_index, fit_config))
            return reconstructor

        result["default_path"] = default_path_report(make_reconstructor, faces,
                                                     [int(b) for b in FLAGS.default_path_batches])
    result["masker"] = FLAGS.masker
    if FLAGS.network_timings and batches:
        print("[bench] networks alone ...", flush=True)
        result["networks_alone"] = time_networks(nets, sorted(batches), FLAGS.repeats)
    result["memory"] = {"ru_maxrss_mb": round(ru_maxrss_bytes() / 2**20, 1),
                        "tf_allocator": tf_allocator_stats(),
                        "note": "peak_rss_mb per run: sampled every 10 ms during that run (model building, warm-up "
                                "and timed iterations); ru_maxrss: the process-wide peak (runs in listed order)"}
    print("[bench] matmul benchmark again ...", flush=True)
    again = matmul_gflops(FLAGS.matmul_size, FLAGS.matmul_repeats)
    again["load_average"] = load_average()
    result["matmul_end"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in again.items()}
    add_fractions(result, matmul, again)
    result["machine"]["load_average_end"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if FLAGS.json:
        io_utils.write_json(FLAGS.json, result)
        print(f"[bench] wrote {FLAGS.json}", flush=True)


if __name__ == "__main__":
    cli.run(main)
