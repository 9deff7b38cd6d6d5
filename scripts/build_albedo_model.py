"""Builds an albedo basis from face photos for a face model (ICT-FaceKit has none; docs/METHOD.md, "Albedo model from photos").

    python scripts/build_albedo_model.py --images /photos/folder --out models/ict_photos.npz --components 10 \
        [--face_model M] [--limit 600] [--uv_size 128] [--held_out_fraction 0.15] [--figure fig.png] \
        [--report report.json]

--images: folders of photos (searched recursively; faces detected, 68 landmarks, aligned, masked) or aligned-face
TFRecords from scripts/preprocess.py / make_synthetic.py --tfrecord (a glob, or a folder holding *.tfrecord);
comma-separated for several. Photos are taken in a fixed pseudo-random order (by content hash), so --limit samples
the whole folder; a photo is held out when its content hash says so (the rule of preprocess.py's test split).

Every photo goes through the fitting path (landmarks, then SH light and tone) and is unwrapped into UV; then
(tf_facetex.albedo_model): de-light (texture / shading, lights brought to a reference level; shadowed, saturated,
grazing, cast-shadow and highlight texels dropped), fill unseen texels from their mirror, weighted PCA over the face
region, refit the lights with that model and build again (--light_refits). Writes:
  OUT            the face model with albedo_mean / albedo_basis (x std) / albedo_source='photos';
  OUT.uv.npz     (e.g. ict_photos.uv.npz) the UV-resolution mean, components, stds, region and coverage;
  --figure       mean and +/- 3 sd of the first components, as UV maps and renders (no individual faces);
  --report       JSON: counts, times, held-out reconstruction errors (basis vs mean), variance explained.
"""
import time

from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("images", None, "Photo folders and/or aligned-face TFRecord globs (comma-separated).")
flags.DEFINE_string("face_model", None, "Face model (.npz, ICT-FaceKit folder, BFM .mat); default: see README.")
flags.DEFINE_string("out", None, "Output face model (.npz); the UV model goes next to it as <name>.uv.npz.")
flags.DEFINE_integer("components", 10, "Number of albedo components K.")
flags.DEFINE_integer("limit", 0, "Use at most this many photos / records per source, held-out ones included (0 = all).")
flags.DEFINE_integer("uv_size", 128, "UV size of the de-lit maps and of the PCA.")
flags.DEFINE_integer("batch_size", 16, "Photos per fitting batch.")
flags.DEFINE_float("min_coverage", 0.15, "Skip photos that show less than this share of the face region validly.")
flags.DEFINE_float("held_out_fraction", 0.15, "Share of photos held out (by content hash) to evaluate the model.")
flags.DEFINE_integer("light_refits", 1, "Times the lights are refitted with the model and the model rebuilt.")
flags.DEFINE_bool("white_light", True, "Refit lights with one SH shape for all channels (times a colour).")
flags.DEFINE_integer("fit_steps", 300, "Landmark-fit iterations.")
flags.DEFINE_enum("detector", "hog", ["hog", "cnn"], "Face detector for photo folders.")
flags.DEFINE_string("figure", None, "Write the mean / components figure (PNG) here.")
flags.DEFINE_string("report", None, "Write the JSON report here.")
flags.DEFINE_string("cache", None, "Keep the fitted, unwrapped photos in this .npz (reused when it was made with the "
                    "same --images, --limit, --uv_size, --held_out_fraction and face model): rebuilds skip the fitting.")
flags.DEFINE_list("compare_with", [], "Other UV albedo models (<name>.uv.npz of earlier builds) to score on this "
                  "build's held-out photos beside the new one (e.g. a build from fewer photos).")
flags.DEFINE_list("evaluate_only", [], "Build nothing: fit every photo of --images as held out and score these "
                  "UV albedo models (<name>.uv.npz) on them, e.g. two builds on a test split neither saw (--report "
                  "gets the figures).")
flags.DEFINE_bool("progress", True, "Show progress bars.")


def _is_tfrecords(spec: str) -> bool:
    import pathlib
    path = pathlib.Path(spec)
    return any(c in spec for c in "*?[") or spec.endswith(".tfrecord") or (
        path.is_dir() and any(path.glob("*.tfrecord")))


def _tfrecord_pattern(spec: str) -> str:
    import pathlib
    path = pathlib.Path(spec)
    return str(path / "*.tfrecord") if path.is_dir() else spec


def photo_batches(folders, batch_size, limit, detector, skipped):
    """Yields numpy batches {image, landmarks, mask, sha1} of aligned faces from photo folders (largest face)."""
    import numpy as np

    from tf_facetex.data.align import FacePreprocessor
    from tf_facetex.data.datasets import dedupe_by_content, hash_files, hash_fraction, list_image_files
    from tf_facetex.errors import FaceTexError

    files = []
    for folder in folders:
        files += hash_files(list_image_files(folder))
    files, _ = dedupe_by_content(files)
    files.sort(key=lambda item: hash_fraction(item.sha1, seed=1))     # a fixed sample of the whole folder
    if limit:
        files = files[:limit]
    preprocessor = FacePreprocessor(detector=detector)
    batch = []
    for item in files:
        try:
            face = preprocessor.from_file(item.path)[0]
        except FaceTexError as err:
            skipped.append(f"{item.path.name}: {err}")
            continue
        batch.append({"image": face.image.astype(np.float32) / 255.0, "landmarks": face.landmarks,
                      "mask": face.mask[..., None], "sha1": item.sha1})
        if len(batch) == batch_size:
            yield {key: np.stack([b[key] for b in batch]) for key in batch[0]}
            batch = []
    if batch:
        yield {key: np.stack([b[key] for b in batch]) for key in batch[0]}


def record_batches(pattern, batch_size, limit):
    """Yields numpy batches {image, landmarks, mask, sha1} from aligned-face TFRecords."""
    from tf_facetex.data.tfrecords import make_dataset

    count = 0
    for batch in make_dataset(pattern, batch_size, training=False, deterministic=True):
        batch = {key: batch[key].numpy() for key in ("image", "landmarks", "mask", "sha1")}
        batch["sha1"] = [s.decode() for s in batch["sha1"]]
        if limit:
            batch = {key: value[: limit - count] for key, value in batch.items()}
        count += len(batch["image"])
        if len(batch["image"]):
            yield batch
        if limit and count >= limit:
            return


def fit_photos(prior, renderer):
    """Runs the fitting path over --images: (train UnwrappedPhotos, held-out UnwrappedPhotos, skipped reasons)."""
    import numpy as np
    from tqdm import tqdm

    from tf_facetex import albedo_model as am
    from tf_facetex.data.datasets import hash_fraction

    skipped, train, held_out = [], [], []
    folders = [s for s in FLAGS.images if not _is_tfrecords(s)]
    sources = [photo_batches(folders, FLAGS.batch_size, FLAGS.limit, FLAGS.detector, skipped)] if folders else []
    sources += [record_batches(_tfrecord_pattern(s), FLAGS.batch_size, FLAGS.limit)
                for s in FLAGS.images if _is_tfrecords(s)]
    bar = tqdm(desc="fitting photos", unit="photo", disable=not FLAGS.progress)
    for batches in sources:
        for batch in batches:
            outputs = prior(batch["image"], batch["landmarks"], batch["mask"])
            photos = am.UnwrappedPhotos.from_prior_outputs(renderer, outputs)
            held = np.array([hash_fraction(sha1) < FLAGS.held_out_fraction for sha1 in batch["sha1"]])
            train.append(photos.select(np.flatnonzero(~held)))
            held_out.append(photos.select(np.flatnonzero(held)))
            bar.update(len(held))
    bar.close()
    if not train:
        from tf_facetex.errors import FaceTexError
        raise FaceTexError(f"no usable face in --images ({len(skipped)} photos skipped, e.g. "
                           f"{skipped[0] if skipped else 'none found'})")
    return am.UnwrappedPhotos.concatenate(train), am.UnwrappedPhotos.concatenate(held_out), skipped


def score_held_out(held_out, region, frontal, models):
    """Held-out photos: their de-lit albedo (the fitting path's light, independent of any model) on valid texels,
    reconstructed by each model's mean alone, mean with a per-channel gain, and basis, on the same texels and
    weights (those of the first model's mean). models: name -> UVAlbedoModel or (UVAlbedoModel, mean_uv,
    basis_uv). Returns {'photos', 'mae': name -> figures}; prints one line per model."""
    import numpy as np

    from tf_facetex import albedo_model as am

    albedo, valid = am.delight_photos(held_out, region, None, frontal)
    # The same photo checks as the training photos get (see am.build_from_photos).
    usable = ((am.coverage_fractions(valid, region) >= FLAGS.min_coverage)
              & ~am.implausible_lights(held_out.gamma, frontal, region))
    usable &= ~am.atypical_photos(albedo, valid, region)
    albedo, valid = albedo[usable], valid[usable]
    first = next(iter(models.values()))
    first = first[0] if isinstance(first, tuple) else first
    weights = am.robust_weights(albedo, valid, first.mean_uv, region)
    summary = {}
    for name, spec in models.items():
        uv_model, mean_uv, basis_uv = spec if isinstance(spec, tuple) else (spec, None, None)
        values = am.reconstruction_errors(uv_model, albedo, weights, mean_uv, basis_uv)
        summary[name] = {key: value["mae"] for key, value in values.items()}
        for split in ("all", "half"):
            basis = np.array(values[f"basis/fit={split}"]["per_photo"])
            mean = np.array(values[f"mean/fit={split}"]["per_photo"])
            summary[name][f"basis_better_than_mean/fit={split}"] = float(np.mean(basis < mean))
        e = summary[name]
        print(f"held-out albedo MAE of {name} over {int(usable.sum())} photos (coefficients fitted on half the texels, "
              f"scored on the other half): mean {e['mean/fit=half']:.4f}, mean x gain {e['mean_gain/fit=half']:.4f}, "
              f"basis {e['basis/fit=half']:.4f}; fitted and scored on all: basis {e['basis/fit=all']:.4f}")
    return {"photos": int(usable.sum()), "mae": summary}


def main(argv):
    del argv
    import json
    import pathlib

    import numpy as np

    from tf_facetex import albedo_model as am
    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.face_model import load_face_model
    from tf_facetex.prior.landmark_fit import LandmarkFitConfig
    from tf_facetex.prior.module import PriorConfig, PriorModule

    if not FLAGS.images or not (FLAGS.out or FLAGS.evaluate_only):
        raise FaceTexError("--images and --out (or --evaluate_only) are required (see --help)")
    if FLAGS.components < 1:
        raise FaceTexError("--components must be at least 1")
    start = time.perf_counter()
    out = pathlib.Path(FLAGS.out or "unused.npz")
    uv_out = out.with_name(out.name[: -len(out.suffix)] + ".uv.npz" if out.suffix else out.name + ".uv.npz")
    # The basis is built on the model's own (uniform) albedo, never on top of an earlier albedo prior.
    model = load_face_model(FLAGS.face_model, albedo_prior="none")
    prior = PriorModule(model, PriorConfig(uv_size=FLAGS.uv_size,
                                           landmark=LandmarkFitConfig(steps=FLAGS.fit_steps)))
    renderer = prior.renderer
    region = am.uv_region(renderer, model)
    frontal = am.frontal_normals_uv(renderer, model)

    # 1. The fitting path on every photo: unwrapped texture, visibility, normals, light.
    key = json.dumps({"images": FLAGS.images, "limit": FLAGS.limit, "uv_size": FLAGS.uv_size,
                      "held_out_fraction": FLAGS.held_out_fraction, "fit_steps": FLAGS.fit_steps,
                      "face_model": model.source})
    if FLAGS.evaluate_only:
        FLAGS.held_out_fraction = 1.0       # every photo is a test photo
    if FLAGS.cache and pathlib.Path(FLAGS.cache).is_file():
        with np.load(FLAGS.cache, allow_pickle=False) as cached:
            if str(cached["key"]) != key:
                raise FaceTexError(f"{FLAGS.cache} holds photos fitted with other settings; delete it or pass another "
                                   "--cache")
            train = am.UnwrappedPhotos.from_arrays(cached, "train/")
            held_out = am.UnwrappedPhotos.from_arrays(cached, "held_out/")
            skipped = [str(line) for line in cached["skipped"]]
        print(f"read {len(train)} training and {len(held_out)} held-out fitted photos from {FLAGS.cache}")
    else:
        train, held_out, skipped = fit_photos(prior, renderer)
        if FLAGS.cache:
            with io_utils.atomic_path(FLAGS.cache) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, key=np.array(key), skipped=np.array(skipped, dtype=str),
                             **train.arrays("train/"), **held_out.arrays("held_out/"))
    fit_seconds = time.perf_counter() - start
    if FLAGS.evaluate_only:
        models = {path: am.UVAlbedoModel.load(path) for path in FLAGS.evaluate_only}
        report = {"face_model": model.source, "images": FLAGS.images, "uv_size": FLAGS.uv_size,
                  "evaluate_only": FLAGS.evaluate_only, "fitted_photos": len(held_out), "skipped": len(skipped),
                  "held_out": score_held_out(held_out, region, frontal, models)}
        report["seconds"] = {"fitting": round(fit_seconds, 1), "total": round(time.perf_counter() - start, 1)}
        if FLAGS.report:
            io_utils.write_json(FLAGS.report, report)
            print(f"wrote {FLAGS.report}")
        return
    if len(train) <= FLAGS.components:
        raise FaceTexError(f"{len(train)} training photos for {FLAGS.components} components ({len(skipped)} "
                           "skipped); add photos or lower --components")
    print(f"{len(train)} training and {len(held_out)} held-out photos after {fit_seconds:.0f} s ({len(skipped)} "
          "skipped)")

    # 2. De-light, complete, weighted PCA, refit lights, rebuild.
    build_start = time.perf_counter()
    uv_model, info = am.build_from_photos(train, region, renderer.uv_symmetry_index.numpy(), frontal,
                                          FLAGS.components, light_refits=FLAGS.light_refits,
                                          white_light=FLAGS.white_light, min_coverage=FLAGS.min_coverage, log=print)
    build_seconds = time.perf_counter() - build_start
    note = f"built from {len(info['used'])} photos by build_albedo_model.py ({', '.join(FLAGS.images)})"
    built = am.face_model_with_albedo(model, uv_model, note)
    built.save(out)
    uv_model.save(uv_out)
    print(f"wrote {out} ({built.num_tex} albedo modes) and {uv_out}")

    # 3. Held-out photos: their de-lit albedo (the fitting path's light, independent of the model) on valid texels,
    # reconstructed by the mean alone, the mean with a per-channel gain, and the basis.
    report = {"face_model": model.source, "out": str(out), "uv_model": str(uv_out), "images": FLAGS.images,
              "uv_size": FLAGS.uv_size,
              "components": FLAGS.components, "limit": FLAGS.limit, "min_coverage": FLAGS.min_coverage,
              "light_refits": FLAGS.light_refits, "white_light": FLAGS.white_light,
              "photos": {"train_fitted": len(train), "train_used": len(info["used"]), "held_out_fitted": len(held_out),
                         "train_dropped": {k: len(v) for k, v in info["dropped"].items()},
                         "skipped": len(skipped), "skipped_examples": skipped[:10]},
              "seconds": {"fitting": round(fit_seconds, 1), "build": round(build_seconds, 1)},
              "stds": uv_model.stds.tolist(), "explained_fraction": uv_model.explained_fraction,
              "noise_variance": uv_model.noise_variance, "passes": info["passes"],
              "first_component_brightness_cosine": am.brightness_cosine(uv_model),
              "mean_albedo_region_average_rgb": uv_model.mean_uv[uv_model.region].mean(0).tolist()}
    if len(held_out):
        vertex_mean = renderer.rasterize_to_uv(built.albedo_mean[None]).numpy()[0]
        vertex_basis = renderer.rasterize_to_uv(built.albedo_basis).numpy()
        models = {"uv_model": uv_model, "vertex_model": (uv_model, vertex_mean, vertex_basis)}
        models.update({f"compare:{path}": am.UVAlbedoModel.load(path) for path in FLAGS.compare_with})
        report["held_out"] = score_held_out(held_out, region, frontal, models)
    if FLAGS.figure:
        io_utils.write_image(FLAGS.figure, am.albedo_model_figure(built, uv_model))
        print(f"wrote {FLAGS.figure}")
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    if FLAGS.report:
        io_utils.write_json(FLAGS.report, report)
        print(f"wrote {FLAGS.report}")


if __name__ == "__main__":
    cli.run(main)
