"""Clean-albedo metrics (occluder leak, holes, re-render on label regions) on held-out CelebAMask-HQ photos.

  nice -n 5 .venv/bin/python scripts/eval_clean_albedo.py --num_images 20 --json docs/results/clean_albedo.json
  .venv/bin/python scripts/eval_clean_albedo.py --num_images 2 --fit_steps 5 --json /tmp/clean.json  # quick run
  .venv/bin/python scripts/eval_clean_albedo.py --compare before=a.json,after=b.json --table_md table.md  # table

Protocol: the first ``--num_images`` of the held-out 200 CelebAMask-HQ-mini images (the last 200 by sorted name:
the parsing network never saw them) go through the product end to end: ``pipeline.FaceFinder`` (dlib detection,
68 landmarks, 224 alignment, the ``--masker`` face mask) and ``pipeline.Reconstructor`` (prior fit + UV detail
fit, as ``scripts/reconstruct.py`` with the same defaults). The label map is warped into the crop with the
crop's own transform; ``tf_facetex.evaluation.clean_albedo`` explains every number. Photos without a detection
are counted and excluded.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli  # noqa: E402
from tf_facetex.pipeline import setup  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Where the results JSON goes (written atomically).")
flags.DEFINE_string("celebamask_dir", None, "CelebAMask-HQ folder with images/ and masks/ "
                    "(default: <shared>/faces/celebamask_hq_mini/train).")
flags.DEFINE_integer("num_images", 20, "The first N of the held-out 200 images.")
flags.DEFINE_enum("masker", "parsing", ["parsing", "skin", "hull"], "Face masker (as scripts/reconstruct.py).")
flags.DEFINE_string("parsing_weights", None, "Parsing-network weights (default: the shipped file).")
flags.DEFINE_string("face_model", None, "Face model (default: as scripts/reconstruct.py).")
flags.DEFINE_integer("fit_steps", 150, "UV detail-fit steps (scripts/reconstruct.py's default).")
flags.DEFINE_enum("refiner", setup.DEFAULT_REFINER, list(setup.REFINER_MODES), "Detail stage, as "
                  "scripts/reconstruct.py --refiner (the net modes use --checkpoint, default the shipped network).")
flags.DEFINE_string("checkpoint", None, "Refinement network of the net modes (default: saved_models/refinement_net).")
flags.DEFINE_integer("net_fit_steps", setup.DEFAULT_NET_FIT_STEPS, "Fit steps after the network (--refiner=net+fit).")
flags.DEFINE_integer("landmark_steps", 300, "Landmark-fit steps (scripts/reconstruct.py's default).")
flags.DEFINE_float("unwrap_mask_threshold", 0.9, "Mask value every bilinear tap of a seen texel's source pixel "
                   "must reach (the product's default 0.9; an ablation knob).")
flags.DEFINE_integer("batch_size", 4, "Faces reconstructed together.")
flags.DEFINE_string("label", "", "A name for this run, recorded in the JSON (e.g. 'before: skin mask, no eyes').")
flags.DEFINE_list("compare", [], "name=result.json entries: write their side-by-side table (--table_md) and stop.")
flags.DEFINE_string("table_md", None, "Where --compare writes its markdown table.")

LEAK_KEYS = ("leak_nearest", "leak_any_tap", "leak_weighted", "nonface_nearest")


def main(argv):
    del argv
    from tf_facetex import io_utils, paths, pipeline
    from tf_facetex.data.images import load_image
    from tf_facetex.data.parsing_net import describe_masker
    from tf_facetex.errors import NoFaceError
    from tf_facetex.evaluation import clean_albedo, real_photos

    if FLAGS.compare:
        import json
        import pathlib
        runs = [(entry.split("=", 1)[0], json.loads(pathlib.Path(entry.split("=", 1)[1]).read_text()))
                for entry in FLAGS.compare]
        table = clean_albedo.comparison_table(runs)
        if FLAGS.table_md:
            io_utils.write_text(FLAGS.table_md, table)
        print(table)
        return
    if not FLAGS.json:
        from tf_facetex.errors import FaceTexError
        raise FaceTexError("--json is required (where the results go), or --compare")
    faces_root = paths.faces_dir()
    folder = FLAGS.celebamask_dir or (faces_root / "celebamask_hq_mini" / "train" if faces_root else None)
    if folder is None:
        raise FileNotFoundError("no --celebamask_dir given and no shared faces folder found")
    _train, held_out = real_photos.heldout_split(real_photos.celebamask_files(folder))
    files = held_out[:FLAGS.num_images]
    finder = pipeline.FaceFinder(masker=FLAGS.masker, parsing_weights=FLAGS.parsing_weights)
    reconstructor = setup.build_reconstructor(FLAGS.face_model, FLAGS.checkpoint, fit_steps=FLAGS.fit_steps,
                                              landmark_steps=FLAGS.landmark_steps, refiner=FLAGS.refiner,
                                              net_fit_steps=FLAGS.net_fit_steps, turntable_yaws=(),
                                              unwrap_mask_threshold=FLAGS.unwrap_mask_threshold)
    model = reconstructor.model
    start = time.time()
    faces, stems, labels, no_face = [], [], {}, []
    for path in files:
        image = load_image(path)
        try:
            face = finder.from_image(image, name=str(path))[0]
        except NoFaceError:
            no_face.append(path.stem)
            continue
        faces.append(face)
        stems.append(path.stem)
        labels[path.stem] = clean_albedo.labels_in_crop(real_photos.load_celebamask_labels(path, image.shape),
                                                        face.transform, face.image.shape[0])
    per_image = {}
    for first in range(0, len(faces), FLAGS.batch_size):
        batch = faces[first:first + FLAGS.batch_size]
        for stem, result in zip(stems[first:first + FLAGS.batch_size], reconstructor.reconstruct(batch)):
            per_image[stem] = clean_albedo.evaluate_result(reconstructor.renderer, result, labels[stem])
        print(f"  {min(first + FLAGS.batch_size, len(faces))}/{len(faces)} faces", flush=True)
    pooled = {}
    seen_total = sum(v["seen_texels"] for v in per_image.values())
    for key in LEAK_KEYS:
        pooled[key] = (sum(v[key] * v["seen_texels"] for v in per_image.values()) / seen_total
                       if seen_total else float("nan"))
    result = {"label": FLAGS.label, "command": " ".join(["python", *sys.argv]),
              "protocol": f"CelebAMask-HQ-mini held-out (last {len(held_out)} by sorted name), first {len(files)}; "
                          "product FaceFinder + Reconstructor; labels warped into the 224 crop",
              "masker": describe_masker(finder.face_masker()) if faces else {"name": FLAGS.masker},
              "face_model": getattr(model, "source", None), "reconstructor": reconstructor.describe(),
              "unwrap_mask_threshold": FLAGS.unwrap_mask_threshold,
              "num_files": len(files), "num_faces": len(per_image), "no_face": no_face,
              "occluder_classes": list(clean_albedo.OCCLUDER_CLASSES),
              "summary": clean_albedo.summarise(per_image), "leak_pooled_over_texels": pooled,
              "per_image": per_image, "seconds": time.time() - start}
    io_utils.write_json(FLAGS.json, result)
    summary = result["summary"]
    for key in ("leak_nearest", "leak_weighted", "coverage_face", "coverage_eyes", "coverage_mouth",
                "labelled_face_psnr_db", "landmark_hull_psnr_db", "own_mask_psnr_db", "eyes_psnr_db",
                "mouth_psnr_db", "labelled_face_ssim"):
        if key in summary:
            print(f"{key:24s} mean {summary[key]['mean']:.4f} median {summary[key]['median']:.4f} "
                  f"(n={summary[key]['count']})")
    print("leak pooled over texels: " + ", ".join(f"{k} {v:.4f}" for k, v in pooled.items()))
    print(f"wrote {FLAGS.json} ({len(per_image)} faces, {len(no_face)} without a detection, "
          f"{result['seconds']:.0f} s)")


if __name__ == "__main__":
    cli.run(main)
