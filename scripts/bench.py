"""Reconstruction speed on this machine: the default path per photo (issue 19), images/s and ms/image by stage,
peak memory, FLOPs per image, and a machine yardstick.

  .venv/bin/python scripts/bench.py --json docs/results/bench.json          # the default run (~25 min on 2 cores)
  .venv/bin/python scripts/bench.py --json /tmp/bench.json --quick          # smoke run (batch 1, xla, 1 repeat)
  .venv/bin/python scripts/bench.py --batches 1,16 --fit_batches 1 --repeats 2 --images photos/

What it runs (the product pipeline, `tf_facetex.pipeline`, as scripts/reconstruct.py does, on the same photo
replicated to the batch size; default photo: scikit-image's astronaut, as scripts/run_demo.sh writes it):
  'default_path' (first; --default_path_batches, default 1 and 16): the product's default reconstruction
    (`pipeline.build_reconstructor` with its defaults: landmark + photometric fit prior, the compiled UV fit) and
    the same with the previous UV-fit solver ('adam', the per-step loop; --default_path_solvers), each solver in
    a FRESH PROCESS (this script again, --default_path_worker) with an EMPTY persistent XLA cache, so that its
    first call at the first batch size is cold (nothing traced or compiled before it: a fresh machine's first
    run); then one more fresh process with the first solver's XLA cache filled (a later run's first call).
    Per solver and batch: ms/photo of the reconstruction of aligned faces (median of --default_path_repeats
    calls), first-call seconds, tf.function traces of the first and of the later calls (0 = no retracing per
    photo), the detailed PSNR; detection + alignment + mask are timed apart (ms/photo); and the ResNet-50
    batch-1 forward ms of the same process (the machine yardstick, measured after the timings) with ms/photo /
    yardstick (`tf_facetex.evaluation.default_path_speed`);
  variant 'network' (--batches): prior = `PriorRegressor`, details = `NetworkRefiner`, with the SHIPPED weights
    (saved_models/prior_regressor/, saved_models/refinement_net/: their preset and UV size) where they exist, else
    random weights (--net_preset, the regressor's zero-initialised head gives the mean face); the JSON says which
    ("weights"); speed does not depend on the weight values;
  variant 'fit' (--fit_batches): the no-weights default of scripts/run_demo.sh through every stage below
    (`pipeline.build_reconstructor` defaults, --fit_steps UV-fit steps).
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
(not on CPU: said so). FLOPs per image of the regressor and of the refinement networks (the network variant's,
the paper and the small preset) come from the TF profiler (`tf_facetex.evaluation.flops`: multiply-add = 2
FLOPs); with the measured stage times they give the achieved GFLOP/s and GFLOP per CPU-second, compared with a
tf.matmul benchmark of this machine run at the start and at the end (`add_fractions`: on a shared machine the
per-CPU-second ratio is the one to trust).
--network_timings also times each network alone (tf.function forward) at every batch size.
Stage times come from the product's timing hook (`Reconstructor.set_timer`), the measuring tools from
`tf_facetex.evaluation.speed`.
The JSON is rewritten after every run ("partial": true until the end), so a killed run leaves what it measured.
The load average is recorded before and after each run: on a shared machine, compare figures with it in mind.
"""
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
flags.DEFINE_list("default_path_batches", ["1", "16"], "Batch sizes of the default-path timing per UV-fit solver "
                  "(empty: skip it): ms/photo, cold first call, retraces, ResNet-50 yardstick.")
flags.DEFINE_list("default_path_solvers", ["xla", "adam"], "UV-fit solvers of the default-path timing: 'xla' (the "
                  "shipped default) and 'adam' (the previous per-step loop), each in a fresh process.")
flags.DEFINE_integer("default_path_repeats", 2, "Timed calls per solver and batch size after the first call.")
flags.DEFINE_enum("network_weights", "shipped", ["shipped", "random"], "Weights of the network variant: the shipped "
                  "ones where they exist (random otherwise, said in the JSON), or random.")
flags.DEFINE_string("default_path_worker", None, "(internal) Time only this solver's default path in this process "
                    "and write the report to --default_path_out.")
flags.DEFINE_string("default_path_out", None, "(internal) Report file of --default_path_worker.")
flags.DEFINE_bool("quick", False, "Smoke run: --batches 1 --fit_batches '' --repeats 1 --nonetwork_timings "
                  "--default_path_batches 1 --default_path_solvers xla --default_path_repeats 1.")

STAGES = ("detect", "mask", "prior", "unwrap", "refine", "render", "turntable")


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


def load_networks(model):
    """The network variant's prior regressor and refinement network: the shipped ones where they exist (and
    --network_weights=shipped), else randomly initialised. -> {'regressor': (network, source or None),
    'refinement': (network, uv_size, preset, source or None)}."""
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.networks.refinement import REFINEMENT_CONFIGS
    from tf_facetex.prior.regressor import build_regressor, resolve_regressor
    from tf_facetex.refinement.checkpoint import load_refinement_net, shipped_refinement_net_or_none

    quiet = lambda *_: None  # noqa: E731
    if FLAGS.network_weights == "shipped":
        regressor, regressor_source = resolve_regressor(model, None, FLAGS.regressor_backbone, log=quiet)
        shipped = shipped_refinement_net_or_none()
    else:
        regressor, regressor_source, shipped = build_regressor(model, FLAGS.regressor_backbone), None, None
    if shipped is not None:
        net, info = load_refinement_net(shipped, log=quiet)
        refinement = (net, info["uv_size"], info["net_preset"], str(shipped))
    else:
        uv_size = REFINEMENT_CONFIGS[FLAGS.net_preset]["uv_size"]
        refinement = (build_refinement_net(FLAGS.net_preset, uv_size=uv_size), uv_size, FLAGS.net_preset, None)
    return {"regressor": (regressor, regressor_source), "refinement": refinement}


def weights_record(networks):
    """Which weights the network variant ran with: 'regressor: <source or random>; refinement net: ...'."""
    def where(source, missing):
        if source is None:
            return f"random ({missing})"
        path = pathlib.Path(source).resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)

    return (f"regressor: {where(networks['regressor'][1], 'no shipped prior regressor')}; refinement net: "
            f"{where(networks['refinement'][3], 'no shipped refinement network')}")


def build_reconstructor(variant, model, networks=None):
    """-> (Reconstructor, description dict) for 'network' (`load_networks`) or 'fit' (the product's default)."""
    from tf_facetex import pipeline

    if variant == "network":
        (regressor, regressor_source), (net, uv_size, preset, net_source) = (networks["regressor"],
                                                                             networks["refinement"])
        config = pipeline.ReconstructionConfig(prior="regressor", uv_size=uv_size)
        reconstructor = pipeline.Reconstructor(model, config, regressor=regressor)
        reconstructor.use_refiner(pipeline.NetworkRefiner(net, reconstructor.renderer.uv_mask,
                                                          source=net_source or "random init (no trained weights)"))
        description = {"prior": f"regressor ({regressor_source or 'random weights'}, "
                                f"{regressor.count_params():,} parameters)",
                       "refiner": f"network ({preset} preset, {net_source or 'random weights'}, "
                                  f"{net.count_params():,} parameters)",
                       "uv_size": uv_size, "weights": weights_record(networks)}
    else:
        reconstructor = pipeline.build_reconstructor(FLAGS.face_model, fit_steps=FLAGS.fit_steps,
                                                     landmark_steps=FLAGS.landmark_steps, log=lambda *_: None)
        description = {"prior": f"fit ({FLAGS.landmark_steps} landmark steps + photometric fit)",
                       "refiner": f"fit (UV fit, {FLAGS.fit_steps} Adam steps, solver "
                                  f"{reconstructor.refiner.describe().get('solver')})",
                       "uv_size": reconstructor.config.uv_size, "weights": "none needed"}
    return reconstructor, description


def default_path_reconstructor(solver):
    """The product's default reconstruction (`pipeline.build_reconstructor` defaults) with that UV-fit solver."""
    from tf_facetex import pipeline
    from tf_facetex.evaluation.default_path_speed import with_uv_solver

    return with_uv_solver(pipeline.build_reconstructor(FLAGS.face_model, fit_steps=FLAGS.fit_steps,
                                                       landmark_steps=FLAGS.landmark_steps, log=lambda *_: None),
                          solver)


def default_path_worker():
    """--default_path_worker: one solver's default path in this fresh process -> JSON at --default_path_out."""
    from tf_facetex import io_utils, pipeline
    from tf_facetex.evaluation import default_path_speed

    photos, names = load_photos(FLAGS.images)
    finder = pipeline.FaceFinder(masker=FLAGS.masker)
    print(f"[bench] default path, solver {FLAGS.default_path_worker}: input {', '.join(names)}", flush=True)

    def find(photo):
        return finder.from_image(photo)[0]

    load_before = default_path_speed._load_average()
    detect, faces = default_path_speed.time_detect_and_mask(find, photos, FLAGS.default_path_repeats)
    report = default_path_speed.default_path_report(
        default_path_reconstructor, faces, [int(b) for b in FLAGS.default_path_batches if b],
        (FLAGS.default_path_worker,), FLAGS.default_path_repeats)
    report.update({"detect_and_mask": detect, "load_average_start": load_before, "masker": FLAGS.masker})
    io_utils.write_json(FLAGS.default_path_out, report)


def default_path_section(result):
    """Each --default_path_solvers solver in a fresh process (`default_path_worker`) with its own empty XLA cache
    (cold: as the first run on a fresh machine) -> result['default_path']; then the first call of a fresh process
    again with the first solver's XLA cache filled (a later run: `tf_facetex.xla_cache`)."""
    import tempfile

    from tf_facetex.evaluation import default_path_speed

    passed = [f"--default_path_repeats={FLAGS.default_path_repeats}", f"--fit_steps={FLAGS.fit_steps}",
              f"--landmark_steps={FLAGS.landmark_steps}", f"--masker={FLAGS.masker}"]
    passed += [f"--{name}={getattr(FLAGS, name)}" for name in ("images", "face_model") if getattr(FLAGS, name)]
    worker = [sys.executable, os.path.abspath(__file__)]
    batches = ",".join(FLAGS.default_path_batches)
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench_xla_cache_") as caches:
        for solver in FLAGS.default_path_solvers:
            print(f"[bench] default path, solver {solver}, batches {batches}, fresh process, empty XLA cache "
                  f"(load {default_path_speed._load_average()}) ...", flush=True)
            report = default_path_speed.run_in_fresh_process(
                [*worker, f"--default_path_worker={solver}", f"--default_path_batches={batches}", *passed],
                xla_cache_dir=os.path.join(caches, solver))
            reports.append(report)
            for run in report["runs"]:
                print(f"[bench]   batch {run['batch']}: {run['ms_per_photo']} ms/photo, first call "
                      f"{run['first_call_s']} s ({run['traces_first_call']} traces; later calls "
                      f"{run['traces_per_later_call']}), {run.get('ms_per_photo_over_yardstick')} x ResNet-50",
                      flush=True)
        solver, first_batch = FLAGS.default_path_solvers[0], FLAGS.default_path_batches[0]
        print(f"[bench] default path, solver {solver}, batch {first_batch}: fresh process, XLA cache filled by the "
              "run above ...", flush=True)
        again = default_path_speed.run_in_fresh_process(
            [*worker, f"--default_path_worker={solver}", f"--default_path_batches={first_batch}", *passed],
            xla_cache_dir=os.path.join(caches, solver))
    section = default_path_speed.summarise(reports)
    section["what"] = ("the product's default reconstruction of aligned faces (prior fit + UV fit + renders + "
                       "turntable; detection and mask apart) per UV-fit solver, each solver in a fresh process "
                       "with an empty XLA cache: the first call at the first batch size is cold")
    section["first_call_with_filled_xla_cache"] = {
        "solver": solver, "batch": again["runs"][0]["batch"], "first_call_s": again["runs"][0]["first_call_s"],
        "traces_first_call": again["runs"][0]["traces_first_call"],
        "ms_per_photo": again["runs"][0]["ms_per_photo"],
        "load_average_first_call": again["runs"][0]["load_average_first_call"],
        "note": "a fresh process whose persistent XLA cache (tf_facetex.xla_cache) holds the programs compiled by "
                "the cold run: what a later run of scripts/reconstruct.py pays (tracing still happens)"}
    section["detect_and_mask"] = {report["runs"][0]["solver"]: report["detect_and_mask"]
                                  for report in reports if report["runs"]}
    section["load_average_start"] = {report["runs"][0]["solver"]: report["load_average_start"]
                                     for report in reports if report["runs"]}
    section["masker"] = FLAGS.masker
    result["default_path"] = section


def run_variant(variant, batch, repeats, model, finder, photos, names, flops, networks=None):
    import statistics
    import tempfile
    import time

    sampler = RssSampler()
    load_before = load_average()
    sampler.start()
    cpu0 = time.process_time()
    reconstructor, description = build_reconstructor(variant, model, networks)
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
        for stage, key in (("prior", "regressor"), ("refine", "refinement_network_variant")):
            per_image = flops[key]["per_image"]
            achieved[stage] = {"network": key, "gflop_per_image": round(per_image / 1e9, 3),
                               "achieved_gflop_per_s": round(per_image * batch / median[stage] / 1e9, 2),
                               "gflop_per_cpu_s": round(per_image * batch / max(median[stage + "_cpu"], 1e-9)
                                                        / 1e9, 2)}
        net_flops = flops["regressor"]["per_image"] + flops["refinement_network_variant"]["per_image"]
        achieved["end_to_end"] = {"gflop_per_image": round(net_flops / 1e9, 3),
                                  "achieved_gflop_per_s": round(net_flops * batch / total / 1e9, 2),
                                  "gflop_per_cpu_s": round(net_flops * batch / median["cpu"] / 1e9, 2),
                                  "note": "network FLOPs only (regressor + refinement); detection, rasterisation "
                                          "and rendering are not counted"}
        run["achieved"] = achieved
    return run


def count_network_flops(networks):
    """FLOPs per image (TF profiler) of the network variant's regressor and refinement network (`load_networks`)
    and of the paper and small refinement presets, and the models themselves."""
    import tensorflow as tf

    from tf_facetex.evaluation.flops import model_flops_per_example
    from tf_facetex.networks import build_refinement_net
    from tf_facetex.networks.refinement import REFINEMENT_CONFIGS

    regressor, regressor_source = networks["regressor"]
    net, uv_size, preset, net_source = networks["refinement"]

    def uv_spec(size):
        return {"texture_uv": tf.TensorSpec([size, size, 3]), "prior_albedo_uv": tf.TensorSpec([size, size, 3]),
                "base_albedo_uv": tf.TensorSpec([size, size, 3]),
                "gamma": tf.TensorSpec([27])}   # a residual network's bases (others ignore them)

    nets = {"regressor": (regressor, tf.TensorSpec([224, 224, 3]),
                          f"PriorRegressor ({regressor_source or 'random weights'}), 224 x 224 input"),
            "refinement_network_variant": (net, uv_spec(uv_size), f"RefinementNet '{preset}' preset of the network "
                                           f"variant ({net_source or 'random weights'}), UV {uv_size} x {uv_size}")}
    for name in ("paper", "small"):
        size = REFINEMENT_CONFIGS[name]["uv_size"]
        nets["refinement_" + name] = (build_refinement_net(name), uv_spec(size),
                                      f"RefinementNet '{name}' preset, UV {size} x {size}")
    out = {}
    for name, (network, spec, what) in nets.items():
        counted = model_flops_per_example(network, spec)
        by_type = counted["by_op_type"]
        out[name] = {"what": what, "parameters": int(network.count_params()), "per_image": counted["per_example"],
                     "gflop_per_image": round(counted["per_example"] / 1e9, 3),
                     "by_op_type_gflop": {k: round(v / 1e9, 4) for k, v in list(by_type.items())[:6]}}
    return out, nets


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.quick:
        FLAGS.batches, FLAGS.fit_batches, FLAGS.repeats, FLAGS.network_timings = ["1"], [], 1, False
        FLAGS.default_path_batches, FLAGS.default_path_solvers, FLAGS.default_path_repeats = ["1"], ["xla"], 1
    from tf_facetex.errors import FaceTexError

    try:
        batches = [int(b) for b in FLAGS.batches if b]
        fit_batches = [int(b) for b in FLAGS.fit_batches if b]
        default_batches = [int(b) for b in FLAGS.default_path_batches if b]
    except ValueError as err:
        raise FaceTexError(f"--batches / --fit_batches / --default_path_batches must be integers ({err})") from err
    if (any(b < 1 for b in batches + fit_batches + default_batches) or FLAGS.repeats < 1 or FLAGS.fit_repeats < 1
            or FLAGS.default_path_repeats < 1):
        raise FaceTexError("batch sizes and repeats must be >= 1")
    unknown = sorted(set(FLAGS.default_path_solvers) - {"xla", "adam"})
    if unknown:
        raise FaceTexError(f"--default_path_solvers {unknown}: the solvers are 'xla' and 'adam'")
    if FLAGS.default_path_worker:
        if not FLAGS.default_path_out:
            raise FaceTexError("--default_path_worker needs --default_path_out")
        return default_path_worker()
    import json
    import platform
    import time

    import keras
    import tensorflow as tf

    from tf_facetex import io_utils, pipeline
    from tf_facetex.evaluation.flops import matmul_gflops
    from tf_facetex.face_model import load_face_model

    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    command = " ".join(["python scripts/bench.py", *sys.argv[1:]])
    result = {
        "what": "reconstruction speed: the default path per photo (cold first call, retraces, ResNet-50 "
                "yardstick), and end to end by stage (detect -> prior -> unwrap -> refine -> render), CPU unless "
                "a GPU is visible; ms are medians over the timed iterations after one warm-up",
        "command": command,
        "machine": {"cpu_count": os.cpu_count(), "devices": [d.device_type for d in tf.config.list_physical_devices()],
                    "processor": platform.processor() or platform.machine(), "tensorflow": tf.__version__,
                    "keras": keras.__version__, "python": platform.python_version(),
                    "load_average_start": load_average()},
    }
    photos, names = load_photos(FLAGS.images)
    result["input"] = {"images": names, "shapes": [list(p.shape) for p in photos],
                       "batches": "the photos cycled (replicated) to the batch size"}
    result["masker"] = FLAGS.masker
    if default_batches and FLAGS.default_path_solvers:   # first: nothing else runs while the fresh processes start
        default_path_section(result)
        if FLAGS.json:   # partial results survive a later failure or a kill
            io_utils.write_json(FLAGS.json, {**result, "partial": True})
    print(f"[bench] input: {', '.join(names)}; matmul benchmark ...", flush=True)
    matmul = matmul_gflops(FLAGS.matmul_size, FLAGS.matmul_repeats)
    matmul["load_average"] = load_average()
    result["matmul"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in matmul.items()}
    print(f"[bench] tf.matmul {FLAGS.matmul_size}^2: {matmul['gflops_median']:.1f} GFLOP/s (median), "
          f"{matmul['gflops_best']:.1f} best; counting FLOPs ...", flush=True)
    model = load_face_model(FLAGS.face_model)
    result["face_model"] = model.name
    networks = load_networks(model)
    result["weights"] = weights_record(networks)
    print(f"[bench] network variant weights: {result['weights']}", flush=True)
    flops, nets = count_network_flops(networks)
    for name in flops:
        nets[name] = (*nets[name], flops[name]["per_image"])
    result["flops"] = flops
    result["flops_convention"] = ("TF profiler (tf.compat.v1.profiler, float_operation) on the tf.function graph at "
                                  "batch 1: multiply-add = 2 FLOPs (Conv2D, MatMul), element-wise ops with a "
                                  "registered count = 1 per element; batch norm, activations and resizes count 0")
    finder = pipeline.FaceFinder(masker=FLAGS.masker)
    runs = []
    plan = [("network", b, FLAGS.repeats) for b in sorted(batches)]
    plan[1:1] = [("fit", b, FLAGS.fit_repeats) for b in sorted(fit_batches)]   # small runs first: see ru_maxrss
    for variant, batch, repeats in plan:
        print(f"[bench] {variant} batch {batch}: warm-up + {repeats} timed (load {load_average()}) ...", flush=True)
        run = run_variant(variant, batch, repeats, model, finder, photos, names, flops, networks)
        runs.append(run)
        result["runs"] = runs
        if FLAGS.json:
            io_utils.write_json(FLAGS.json, {**result, "partial": True})
        print(f"[bench]   {run['images_per_s']} images/s, ms/image {run['ms_per_image']}, "
              f"peak RSS {run['peak_rss_mb']} MB", flush=True)
    result["runs"] = runs
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
