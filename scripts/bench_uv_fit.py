"""Speed and quality of the UV-fit solvers (the no-weights detail stage) on the same prior outputs.

    python scripts/bench_uv_fit.py --samples 'outputs/synth_eval_samples/*.tfrecord' --limit 8 --json out.json

Solvers (``--solvers``, each ``name:steps:learning_rate:decay``, name 'adam' = `refinement.fit.UVFitRefiner`, the
previous algorithm, or 'xla' = `uv_solver.fit_uv_maps`): each runs on every sample one at a time (batch 1),
after one warm-up call on the first sample (its time is the first-call seconds: tracing and compilation).
Reported per solver: median ms/photo, first-call s, the objective reached (every solver's result scored by
the same `uv_solver.fit_terms`), and, on samples with ground truth (scripts/make_synthetic.py ->
scripts/make_refinement_samples.py), the albedo si-RMSE on the UV chart and on the seen texels, each also as
the mean paired difference to the first solver. Solvers are run interleaved per sample, so they see the same
machine load; the load average is reported.
"""
import json
import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("samples", None, "Glob of refinement-sample TFRecords (with or without ground truth); "
                                     "default: the astronaut photo through the prior fit.")
flags.DEFINE_integer("limit", 8, "Samples to use.")
flags.DEFINE_list("solvers", ["adam:150:0.01:1", "xla:150:0.01:1", "xla:50:0.02:0.05"],
                  "name:steps:learning_rate:decay for each solver (the first one is the baseline).")
flags.DEFINE_string("json", None, "Write the report here.")


def astronaut_samples():
    """[the prior output of the astronaut photo] (detect, mask, prior fit), as the product computes it."""
    import numpy as np
    import skimage.data

    from tf_facetex import pipeline
    from tf_facetex.face_model import load_face_model

    model = load_face_model(None, allow_clone=False, log=lambda *_: None)
    face = pipeline.FaceFinder(log=lambda *_: None).from_image(skimage.data.astronaut(), name="astronaut")[0]
    reconstructor = pipeline.Reconstructor(model, pipeline.ReconstructionConfig(prior="fit"))
    mask = face.mask if face.mask is not None else face.valid
    prior_out = reconstructor.prior(face.image[None].astype(np.float32) / 255.0,
                                    face.landmarks[None].astype(np.float32), mask[None, ..., None].astype(np.float32))
    return [dict(prior_out)], model


def tfrecord_samples(pattern, limit):
    import tensorflow as tf

    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.samples import sample_dataset

    model = load_face_model(None, allow_clone=False, log=lambda *_: None)
    first = next(iter(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)[:1])))
    example = tf.train.Example.FromString(first.numpy())
    with_truth = "albedo_gt_uv" in example.features.feature
    num_coeffs = len(example.features.feature["coeffs"].float_list.value)
    image_size = int(round((len(example.features.feature["pixel_uv"].bytes_list.value[0]) / 4) ** 0.5))
    dataset = sample_dataset(pattern, 1, image_size, 256, num_coeffs, training=False, with_ground_truth=with_truth,
                             deterministic=True, repeat=False)
    return [dict(batch) for batch in dataset.take(limit)], model


def make_solver(spec, renderer):
    """'name:steps:lr:decay' -> (label, callable sample -> (albedo_uv, light_uv))."""
    import tensorflow as tf

    from tf_facetex import losses
    from tf_facetex.refinement import fit as refine_fit
    from tf_facetex.refinement import uv_solver

    name, steps, learning_rate, decay = spec.split(":")
    steps, learning_rate, decay = int(steps), float(learning_rate), float(decay)
    label = f"{name} {steps} steps lr {learning_rate:g}" + (f" decay {decay:g}" if decay != 1.0 else "")
    if name == "adam":
        if decay != 1.0:
            raise ValueError("the previous solver has a constant learning rate")
        refiner = refine_fit.UVFitRefiner(renderer.uv_mask, renderer.uv_symmetry_index,
                                          refine_fit.UVFitConfig(steps=steps, learning_rate=learning_rate,
                                                                 solver="adam"))

        def run(sample):
            out = refiner(sample)
            return out["albedo_uv"], out["light_uv"]
    elif name == "xla":
        weights = uv_solver.term_weights(losses.LossWeights.preset("paper"))

        def run(sample):
            out = uv_solver.fit_uv_maps(sample, renderer.uv_mask, renderer.uv_symmetry_index, weights, steps=steps,
                                        learning_rate=learning_rate, decay=decay)
            return out["albedo_uv"], out["light_uv"]
    else:
        raise ValueError(f"unknown solver {name!r} (adam, xla)")
    return label, lambda sample: tf.nest.map_structure(lambda t: t.numpy(), run(sample))


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from tf_facetex import losses, metrics
    from tf_facetex.refinement import uv_solver
    from tf_facetex.rendering import FaceRenderer

    samples, model = (tfrecord_samples(FLAGS.samples, FLAGS.limit) if FLAGS.samples else astronaut_samples())
    renderer = FaceRenderer(model, 224, 256)
    weights = uv_solver.term_weights(losses.LossWeights.preset("paper"))
    solvers = [make_solver(spec, renderer) for spec in FLAGS.solvers]
    load_before = os.getloadavg()
    report = {}
    for label, run in solvers:
        start = time.perf_counter()
        run(samples[0])
        report[label] = {"first_call_s": round(time.perf_counter() - start, 2), "ms": [], "objective": [],
                         "albedo_si_rmse": [], "albedo_seen_si_rmse": []}
    for sample in samples:
        for label, run in solvers:
            start = time.perf_counter()
            albedo_uv, light_uv = run(sample)
            entry = report[label]
            entry["ms"].append(1e3 * (time.perf_counter() - start))
            terms = uv_solver.fit_terms(tf.constant(albedo_uv), tf.constant(light_uv),
                                        {k: tf.convert_to_tensor(sample[k], tf.float32) for k in uv_solver.SAMPLE_KEYS},
                                        renderer.uv_mask, renderer.uv_symmetry_index)
            entry["objective"].append(float(uv_solver.weighted_total(terms, weights)))
            if "albedo_gt_uv" in sample:
                truth = sample["albedo_gt_uv"]
                region = renderer.uv_mask[None] * tf.ones_like(truth[..., :1])
                seen = sample["visibility_uv"] * region
                entry["albedo_si_rmse"].append(float(metrics.albedo_metrics(albedo_uv, truth, region)["si_rmse"][0]))
                entry["albedo_seen_si_rmse"].append(
                    float(metrics.albedo_metrics(albedo_uv, truth, seen)["si_rmse"][0]))
    baseline = report[solvers[0][0]]
    summary = {}
    for label, entry in report.items():
        row = {"ms_per_photo_median": round(float(np.median(entry["ms"])), 1), "first_call_s": entry["first_call_s"],
               "objective_mean": round(float(np.mean(entry["objective"])), 6),
               "objective_paired_diff": round(float(np.mean(np.subtract(entry["objective"], baseline["objective"]))), 6)}
        for key in ("albedo_si_rmse", "albedo_seen_si_rmse"):
            if entry[key]:
                diff = np.subtract(entry[key], baseline[key])
                row[key + "_mean"] = round(float(np.mean(entry[key])), 5)
                row[key + "_paired_diff"] = round(float(np.mean(diff)), 5)
                row[key + "_paired_diff_se"] = round(float(np.std(diff, ddof=1) / np.sqrt(len(diff))), 5) \
                    if len(diff) > 1 else None
        summary[label] = row
    result = {"samples": FLAGS.samples or "astronaut (prior fit)", "count": len(samples), "solvers": summary,
              "per_sample": report, "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}
    print(json.dumps(summary, indent=1))
    print("load average", result["load_average_before"], "->", result["load_average_after"])
    if FLAGS.json:
        from tf_facetex.io_utils import write_json
        write_json(FLAGS.json, result, indent=1)


if __name__ == "__main__":
    cli.run(main)
