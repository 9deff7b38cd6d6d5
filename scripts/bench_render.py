#!/usr/bin/env python
"""Benchmarks the TF rendering stack: visibility, interpolation and a full per-texel-shaded render.

Prints ONE JSON object (with ``--json``; a readable table otherwise) with ms/image for every configuration of
  mesh (``ict``: the ICT-FaceKit face mesh, 22288 triangles; ``dense``: it subdivided once, 89152 triangles)
  x image size x batch x mode (``eager``, ``function`` = `tf.function`, ``xla`` = `tf.function(jit_compile=True)`)
  x stage:
  - ``visibility``: `rasterize.visibility` (z-buffer, triangle ids) from projected vertices;
  - ``interpolation``: perspective-correct barycentrics + interpolation of a per-vertex RGB attribute,
    given the triangle ids;
  - ``render``: the full render from posed vertices: rasterisation (visibility + barycentrics) + camera-frame
    UV normal map + per-texel SH shading of a 27-channel light map + sampling the colour map into the image.
``FaceRenderer(jit_stages=...)`` is benchmarked as given by ``--jit-stages`` (default: the renderer default,
XLA-compiled fixed-shape stages) in the eager and function modes; ``--jit-stages both`` runs both.
A ``breakdown`` of the full render (function mode) says where the time goes, and ``reference`` gives a
numpy brute-force z-buffer and an OpenCV (painter's algorithm, cv2.fillConvexPoly) timing for comparison.

Examples:
  python scripts/bench_render.py --json                                   # the whole grid (minutes)
  python scripts/bench_render.py --json --quick                           # ICT, 224, batch 16, function
  python scripts/bench_render.py --json --meshes ict --sizes 224 --batches 16 --modes function,xla
"""
import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_facetex import camera  # noqa: E402
from tf_facetex.rendering import FaceRenderer, interpolate, rasterize  # noqa: E402


def subdivide(model):
    """One midpoint subdivision (each triangle -> 4) of geometry and UVs; symmetry follows the edges."""
    triangles, uv_triangles = model.triangles, model.uv_triangles

    def split(points, faces):
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        inverse = inverse.reshape(3, -1).T + len(points)                 # [F, 3] midpoints of 01, 12, 20
        midpoints = 0.5 * (points[unique[:, 0]] + points[unique[:, 1]])
        a, b, c = faces.T
        ab, bc, ca = inverse.T
        new_faces = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        return np.concatenate([points, midpoints]), new_faces.astype(np.int32), unique

    vertices, new_triangles, edges = split(model.mean_shape, triangles)
    uv_coords, new_uv_triangles, _ = split(model.uv_coords, uv_triangles)
    # Mirror of the midpoint of edge (i, j) = midpoint of edge (sym i, sym j).
    lookup = {tuple(e): k for k, e in enumerate(edges.tolist())}
    sym = model.symmetry_indices
    mirrored = [lookup.get(tuple(sorted((sym[i], sym[j]))), k) for k, (i, j) in enumerate(edges.tolist())]
    symmetry = np.concatenate([sym, len(sym) + np.asarray(mirrored)]).astype(np.int32)
    n = len(vertices)

    def extend(basis):      # [K, N, 3] -> [K, n, 3] with midpoint values
        if basis.shape[0] == 0:
            return np.zeros((0, n, 3), np.float32)
        mid = 0.5 * (basis[:, edges[:, 0]] + basis[:, edges[:, 1]])
        return np.concatenate([basis, mid], axis=1)

    extra = np.zeros(n - model.num_vertices, bool)
    return model.replace(
        name=model.name + "_subdivided", mean_shape=vertices, triangles=new_triangles,
        uv_coords=uv_coords, uv_triangles=new_uv_triangles,
        textured_triangles=np.tile(model.textured_triangles, 4),
        id_basis=extend(model.id_basis), exp_basis=extend(model.exp_basis),
        albedo_mean=np.concatenate([model.albedo_mean, 0.5 * (model.albedo_mean[edges[:, 0]]
                                                              + model.albedo_mean[edges[:, 1]])]),
        albedo_basis=extend(model.albedo_basis), symmetry_indices=symmetry,
        face_region_mask=np.concatenate([model.face_region_mask, extra]),
        skin_mask=np.concatenate([model.skin_mask, extra]))


def poses(model, batch, seed=0):
    """Posed vertices [B, N, 3] of the mean face: random small rotations, face framed like Deng's crops."""
    rng = np.random.default_rng(seed)
    angles = rng.normal(0.0, 0.15, (batch, 3)).astype(np.float32)
    angles[0] = 0.0
    translation = np.tile(np.array([[0.0, 0.3, -1.0]], np.float32), (batch, 1))
    vertices = np.repeat(model.mean_shape[None], batch, 0)
    return camera.rigid_transform(tf.constant(vertices), tf.constant(angles), tf.constant(translation))


def timed(function, args, repeats, min_seconds):
    """(first call s, median ms, minimum ms, median CPU ms) per call after the first (which traces/compiles).

    The machine is shared: the median wall time shows what a user sees under the current load, the minimum
    what the code costs when it gets the cores, and the CPU time (all threads of this process) the work done
    whatever the load."""
    start = time.perf_counter()
    result = function(*args)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
    first = time.perf_counter() - start
    times, cpu_times = [], []
    begin = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - begin < min_seconds and len(times) < 50):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return (first, 1e3 * float(np.median(times)), 1e3 * float(np.min(times)),
            1e3 * float(np.median(cpu_times)))


def wrap(function, mode):
    if mode == "eager":
        return function
    return tf.function(function, jit_compile=(mode == "xla"), autograph=False)


def stage_functions(renderer, mode):
    """The three benchmarked stages for one renderer and mode."""
    size = renderer.image_size

    def visibility(pixels, depth):
        return rasterize.visibility(pixels, depth, renderer.triangles, size, renderer.cull_backfaces,
                                    jit_static_parts=renderer.jit_stages)

    def interpolation(pixels, depth, triangle_id, colours):
        weights = interpolate.perspective_barycentrics(pixels, depth, renderer.triangles, triangle_id)
        return interpolate.interpolate_vertex_attributes(colours, renderer.triangles, triangle_id, weights)

    if renderer.jit_stages and mode != "xla":
        interpolation = tf.function(interpolation, jit_compile=True, autograph=False)

    def render(posed, albedo_uv, light_uv):
        raster = renderer.rasterize(posed)
        return renderer.render(albedo_uv, light_uv, raster, renderer.normals_uv(posed))[0]

    return {"visibility": wrap(visibility, mode), "interpolation": wrap(interpolation, mode),
            "render": wrap(render, mode)}


def breakdown(renderer, posed, albedo_uv, light_uv, repeats, min_seconds):
    """Where the time of the full render goes (function mode), ms per image."""
    batch = int(posed.shape[0])
    pixels, depth = renderer.project(posed)
    jit = renderer.jit_stages
    parts = {
        "visibility": (lambda p, d: rasterize.visibility(p, d, renderer.triangles, renderer.image_size,
                                                         renderer.cull_backfaces, jit_static_parts=jit),
                       (pixels, depth)),
    }
    triangle_id, _ = parts["visibility"][0](pixels, depth)
    parts["barycentrics"] = (lambda p, d, t: renderer._barycentrics(p, d, t), (pixels, depth, triangle_id))
    parts["normals_uv"] = (lambda p: renderer.normals_uv(p), (posed,))
    normals_uv = renderer.normals_uv(posed)
    parts["shading_uv"] = (lambda a, l, n: a * renderer.shading_uv(l, n), (albedo_uv, light_uv, normals_uv))
    raster = renderer.rasterize(posed)
    parts["render_uv_maps"] = (lambda a, t, b: renderer.render_uv_maps(a, raster._replace(triangle_id=t,
                                                                                          barycentrics=b))[0],
                               (albedo_uv, raster.triangle_id, raster.barycentrics))
    result = {}
    for name, (function, args) in parts.items():
        _, ms, best, cpu = timed(tf.function(function, autograph=False), args, repeats, min_seconds)
        result[name] = {"median": round(ms / batch, 3), "min": round(best / batch, 3), "cpu": round(cpu / batch, 3)}
    return result


def reference_timings(model, size, repeats=1):
    """numpy brute-force z-buffer and an OpenCV painter's-algorithm id buffer, one image, ms."""
    import cv2

    posed = poses(model, 1)
    pixels, depth = camera.project(posed, size)
    pixels, depth = pixels.numpy(), depth.numpy()
    out = {}
    start = time.perf_counter()
    for _ in range(repeats):
        rasterize.reference_visibility(pixels, depth, model.triangles, size, cull_backfaces=True)
    out["numpy_brute_force_ms"] = round(1e3 * (time.perf_counter() - start) / repeats, 1)

    def painter():
        corners = pixels[0][model.triangles]
        area = rasterize.signed_area(tf.constant(corners)).numpy()
        order = np.argsort(-depth[0][model.triangles].mean(1))          # far to near
        ids = np.full((size, size), -1, np.int32)
        scaled = np.round(corners * 16).astype(np.int32)                  # 4 bits of sub-pixel precision
        for t in order:
            if area[t] < 0:
                cv2.fillConvexPoly(ids, scaled[t], int(t), lineType=cv2.LINE_8, shift=4)
        return ids

    _, ms, _, _ = timed(lambda: painter(), (), max(repeats, 3), 0.5)
    out["opencv_painter_ms"] = round(ms, 1)
    out["note"] = ("numpy: exact float64 z-buffer, a Python loop over triangles (tests' reference); OpenCV: "
                   "fillConvexPoly per front-facing triangle sorted by mean depth (per-triangle depth, not a "
                   "per-pixel z-buffer), single image")
    return out


class PreviousServingRenderer(FaceRenderer):
    """The serving renderer as it was before the foreground-only stages and the early culling (for the
    before/after comparison): full-image barycentrics and UV sampling, broadcast-and-reduce shading."""

    def __init__(self, model, image_size, uv_size):
        super().__init__(model, image_size, uv_size, jit_stages=False)

    def rasterize(self, posed_vertices, **visibility_options):
        visibility_options.setdefault("cull_early", False)
        return super().rasterize(posed_vertices, **visibility_options)

    def _barycentrics_impl(self, pixels, depth, triangle_id):
        return interpolate.perspective_barycentrics(pixels, depth, self.triangles, triangle_id)

    def _shading_uv_impl(self, light, normals_uv):
        from tf_facetex import sh
        return sh.shading(normals_uv, light[:, None, None, :] if light.shape.rank == 2 else light)

    def _render_uv_maps_impl(self, uv_maps, triangle_id, barycentrics, background):
        from tf_facetex.rendering import uv as uv_lib
        texel_coords = uv_lib.pixel_texel_coords(triangle_id, barycentrics, self.texel_corners)
        mask = uv_lib.projection_mask(triangle_id, self.textured_triangles)
        return uv_lib.render_uv_maps(uv_maps, texel_coords, mask, tf.cast(background, uv_maps.dtype)), mask


def serving_ratio(model, size, batch, uv_size, pairs, previous=None):
    """The serving renderer (no XLA) against the XLA ones, calls interleaved so both see the same load.

    Renders the full per-texel-shaded image (`stage_functions`' ``render``) with ``FaceRenderer(jit_stages=
    False)`` in a `tf.function`, ``jit_stages=True`` in a `tf.function` (the default renderer) and the whole
    render under ``jit_compile=True``; each round calls each once, in rotating order. Reported: median
    ms/image of each and the median over rounds of the per-round ratios (robust to load changes between
    rounds). ``previous`` adds `PreviousServingRenderer` to the rotation.
    """
    posed = poses(model, batch)
    rng = np.random.default_rng(0)
    albedo_uv = tf.constant(rng.uniform(size=(batch, uv_size, uv_size, 3)), tf.float32)
    light_uv = tf.constant(rng.normal(0, 0.1, (batch, uv_size, uv_size, 27)), tf.float32)
    args = (posed, albedo_uv, light_uv)
    contenders = {
        "serving_no_xla": stage_functions(FaceRenderer(model, size, uv_size, jit_stages=False), "function")["render"],
        "xla_stages": stage_functions(FaceRenderer(model, size, uv_size, jit_stages=True), "function")["render"],
        "xla_whole": stage_functions(FaceRenderer(model, size, uv_size, jit_stages=True), "xla")["render"],
    }
    if previous:
        contenders["previous_serving_no_xla"] = stage_functions(PreviousServingRenderer(model, size, uv_size),
                                                                "function")["render"]
    first = {}
    for name, function in contenders.items():
        start = time.perf_counter()
        function(*args).numpy()
        first[name] = round(time.perf_counter() - start, 2)
    names = list(contenders)
    times = {name: [] for name in names}
    load_before = os.getloadavg()
    for round_index in range(pairs):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            start = time.perf_counter()
            contenders[name](*args).numpy()
            times[name].append(1e3 * (time.perf_counter() - start) / batch)
    per_round = {name: np.asarray(values) for name, values in times.items()}
    reference = np.minimum(per_round["xla_stages"], per_round["xla_whole"])
    return {
        "image_size": size, "batch": batch, "rounds": pairs,
        "ms_per_image_median": {name: round(float(np.median(v)), 3) for name, v in per_round.items()},
        "ms_per_image_min": {name: round(float(np.min(v)), 3) for name, v in per_round.items()},
        "ratio_to_xla_stages": {name: round(float(np.median(v / per_round["xla_stages"])), 3)
                                for name, v in per_round.items()},
        "ratio_to_faster_xla": {name: round(float(np.median(v / reference)), 3) for name, v in per_round.items()},
        "first_call_s": first,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="ICT, 224, batch 16, function mode, render only")
    parser.add_argument("--meshes", default="ict,dense")
    parser.add_argument("--sizes", default="224,512")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--modes", default="eager,function,xla")
    parser.add_argument("--stages", default="visibility,interpolation,render")
    parser.add_argument("--jit-stages", default="default", choices=["default", "on", "off", "both"])
    parser.add_argument("--uv-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="keep repeating up to this long")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--serving-ratio", type=int, default=0, metavar="ROUNDS",
                        help="only compare the serving renderer (no XLA) with the XLA ones, interleaved, for "
                             "ROUNDS rounds at the first size and largest batch on the first mesh")
    args = parser.parse_args(argv)
    if args.quick:
        args.meshes, args.sizes, args.batches, args.modes, args.stages = "ict", "224", "16", "function", "render"

    from tf_facetex.face_model import load_face_model

    base = load_face_model(None, allow_clone=False, log=lambda *_: None)
    meshes = {}
    for name in args.meshes.split(","):
        meshes[name] = base if name == "ict" else subdivide(base)
    if args.serving_ratio:
        mesh_name, model = next(iter(meshes.items()))
        report = {"mesh": mesh_name, "triangles": model.num_triangles,
                  **serving_ratio(model, int(args.sizes.split(",")[0]), max(int(b) for b in args.batches.split(",")),
                                  args.uv_size, args.serving_ratio, previous=True),
                  "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                              "tensorflow": tf.__version__}}
        print(json.dumps(report, indent=None if args.json else 1))
        return
    jit_options = {"default": [True], "on": [True], "off": [False], "both": [True, False]}[args.jit_stages]
    results = []
    breakdowns = []
    references = []
    for mesh_name, model in meshes.items():
        for size in [int(s) for s in args.sizes.split(",")]:
            for jit_stages in jit_options:
                renderer = FaceRenderer(model, image_size=size, uv_size=args.uv_size, jit_stages=jit_stages)
                for batch in [int(b) for b in args.batches.split(",")]:
                    posed = poses(model, batch)
                    pixels, depth = renderer.project(posed)
                    triangle_id, _ = rasterize.visibility(pixels, depth, renderer.triangles, size, True)
                    rng = np.random.default_rng(0)
                    colours = tf.constant(rng.uniform(size=(batch, model.num_vertices, 3)).astype(np.float32))
                    albedo_uv = tf.constant(rng.uniform(size=(batch, args.uv_size, args.uv_size, 3)), tf.float32)
                    light_uv = tf.constant(rng.normal(0, 0.1, (batch, args.uv_size, args.uv_size, 27)), tf.float32)
                    inputs = {"visibility": (pixels, depth), "interpolation": (pixels, depth, triangle_id, colours),
                              "render": (posed, albedo_uv, light_uv)}
                    for mode in args.modes.split(","):
                        if mode == "xla" and jit_stages != jit_options[0]:
                            continue          # jit_stages is moot under XLA: run it once
                        functions = stage_functions(renderer, mode)
                        for stage in args.stages.split(","):
                            first, ms, best, cpu = timed(functions[stage], inputs[stage], args.repeats,
                                                         args.min_seconds)
                            results.append({
                                "mesh": mesh_name, "triangles": model.num_triangles, "image_size": size,
                                "batch": batch, "mode": mode, "jit_stages": jit_stages if mode != "xla" else None,
                                "stage": stage, "ms_per_image": round(ms / batch, 3),
                                "ms_per_image_min": round(best / batch, 3),
                                "cpu_ms_per_image": round(cpu / batch, 3), "ms_per_batch": round(ms, 2),
                                "first_call_s": round(first, 2)})
                            if not args.json:
                                print(json.dumps(results[-1]), flush=True)
                    if (not args.no_breakdown and batch == max(int(b) for b in args.batches.split(","))
                            and "render" in args.stages):
                        breakdowns.append({"mesh": mesh_name, "image_size": size, "batch": batch,
                                           "jit_stages": jit_stages, "mode": "function",
                                           "ms_per_image": breakdown(renderer, posed, albedo_uv, light_uv,
                                                                     args.repeats, args.min_seconds)})
            if not args.no_reference and not (mesh_name == "dense" and size > 224):
                references.append({"mesh": mesh_name, "image_size": size, **reference_timings(model, size)})
    report = {
        "machine": {"cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "platform": platform.platform(), "tensorflow": tf.__version__,
                    "devices": [d.device_type for d in tf.config.list_logical_devices()]},
        "results": results, "breakdown": breakdowns, "reference": references,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps({"breakdown": breakdowns, "reference": references, "machine": report["machine"]},
                         indent=1))


if __name__ == "__main__":
    main()
