"""Clean-albedo metrics (occluder leak, holes, re-render on label regions) on held-out CelebAMask-HQ photos, and
the before/after albedo figure.

  nice -n 5 .venv/bin/python scripts/eval_clean_albedo.py --num_images 20 --json docs/results/clean_albedo.json
  .venv/bin/python scripts/eval_clean_albedo.py --num_images 2 --fit_steps 5 --json /tmp/clean.json  # quick run
  .venv/bin/python scripts/eval_clean_albedo.py --compare before=a.json,after=b.json --table_md table.md  # table
  nice -n 5 .venv/bin/python scripts/eval_clean_albedo.py --figure docs/results/clean_albedo_figure.png \
      --json docs/results/clean_albedo_figure.json                                    # the before/after figure

Protocol: the first ``--num_images`` of the held-out 200 CelebAMask-HQ-mini images (the last 200 by sorted name:
the parsing network never saw them) go through the product end to end: ``pipeline.FaceFinder`` (dlib detection,
68 landmarks, 224 alignment, the ``--masker`` face mask) and ``pipeline.Reconstructor`` (prior fit + UV detail
fit, as ``scripts/reconstruct.py`` with the same defaults). The label map is warped into the crop with the
crop's own transform; ``tf_facetex.evaluation.clean_albedo`` explains every number. Photos without a detection
are counted and excluded. ``--baseline name=result.json`` copies an earlier run's summary into the JSON, so the
page shows today's numbers beside it. The same protocol runs as ``scripts/evaluate.py --protocol=celebamask``.

Figure (``--figure``): the held-out photos in sorted order are aligned and their forehead (the band above the
brows) checked against the labels; the first ``--figure_faces`` with at least 30% of it hair or hat and the first
``--figure_faces`` with at most 2% are reconstructed twice: **before** = the landmark + skin-colour substitute
mask, the uniform symmetry term (weight 5 over the whole chart) and the model's uniform albedo prior (what a fresh
clone did before issue 17), **after** = the shipped defaults. Albedo thumbnails only (96 px), no photos.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import flags  # noqa: E402

from tf_facetex import cli  # noqa: E402
from tf_facetex.pipeline import setup  # noqa: E402
from tf_facetex.prior.appearance_gate import DEFAULT_GATE  # noqa: E402

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
flags.DEFINE_float("unwrap_mask_threshold", 0.97, "Mask value every bilinear tap of a seen texel's source pixel "
                   "must reach (the product's default 0.97; an ablation knob).")
flags.DEFINE_float("appearance_gate", DEFAULT_GATE, "The appearance gate (`PriorConfig.appearance_gate`: robust "
                   "standard deviations of hue against the coarse render; 0 = off; default the product's).")
flags.DEFINE_integer("batch_size", 4, "Faces reconstructed together.")
flags.DEFINE_string("label", "", "A name for this run, recorded in the JSON (e.g. 'before: skin mask, no eyes').")
flags.DEFINE_list("baseline", [], "name=result.json entries: their summaries are copied into this run's JSON "
                  "('baselines'), to be shown beside it.")
flags.DEFINE_list("compare", [], "name=result.json entries: write their side-by-side table (--table_md) and stop.")
flags.DEFINE_string("table_md", None, "Where --compare writes its markdown table.")
flags.DEFINE_string("figure", None, "Write the before/after albedo figure (PNG) instead of the metrics.")
flags.DEFINE_integer("figure_faces", 6, "Photos with and photos without hair over the forehead in the figure.")


def main(argv):
    del argv
    from tf_facetex import io_utils, pipeline
    from tf_facetex.errors import FaceTexError
    from tf_facetex.evaluation import clean_albedo

    try:
        compared = clean_albedo.baseline_summaries(FLAGS.compare)
        baselines = clean_albedo.baseline_summaries(FLAGS.baseline)
    except ValueError as err:
        raise FaceTexError(f"--compare / --baseline: {err}") from None
    if FLAGS.compare:
        table = clean_albedo.comparison_table(list(compared.items()))
        if FLAGS.table_md:
            io_utils.write_text(FLAGS.table_md, table)
        print(table)
        return
    if not FLAGS.json:
        raise FaceTexError("--json is required (where the results go), or --compare")
    if FLAGS.figure:
        _figure(clean_albedo.heldout_files(FLAGS.celebamask_dir)[0])
        return
    files, num_held_out = clean_albedo.heldout_files(FLAGS.celebamask_dir, FLAGS.num_images)
    finder = pipeline.FaceFinder(masker=FLAGS.masker, parsing_weights=FLAGS.parsing_weights)
    reconstructor = setup.build_reconstructor(FLAGS.face_model, FLAGS.checkpoint, fit_steps=FLAGS.fit_steps,
                                              landmark_steps=FLAGS.landmark_steps, refiner=FLAGS.refiner,
                                              net_fit_steps=FLAGS.net_fit_steps, turntable_yaws=(),
                                              unwrap_mask_threshold=FLAGS.unwrap_mask_threshold,
                                              appearance_gate=FLAGS.appearance_gate)
    start = time.time()
    body = clean_albedo.run_protocol(files, finder, reconstructor, FLAGS.batch_size, num_held_out)
    result = {"label": FLAGS.label, "command": " ".join(["python", *sys.argv]),
              "unwrap_mask_threshold": FLAGS.unwrap_mask_threshold, "appearance_gate": FLAGS.appearance_gate, **body,
              "baselines": baselines,
              "seconds": time.time() - start, "load_average": list(os.getloadavg())}
    io_utils.write_json(FLAGS.json, result)
    summary = result["summary"]
    for key in ("leak_nearest", "leak_weighted", "coverage_face", "coverage_eyes", "coverage_mouth",
                "labelled_face_psnr_db", "landmark_hull_psnr_db", "own_mask_psnr_db", "eyes_psnr_db",
                "mouth_psnr_db", "labelled_face_ssim"):
        if key in summary:
            print(f"{key:24s} mean {summary[key]['mean']:.4f} median {summary[key]['median']:.4f} "
                  f"(n={summary[key]['count']})")
    print("leak pooled over texels: " + ", ".join(f"{k} {v:.4f}" for k, v in result["leak_pooled_over_texels"].items()))
    print(f"wrote {FLAGS.json} ({result['num_faces']} faces, {len(result['no_face'])} without a detection, "
          f"{result['seconds']:.0f} s)")


def _figure(held_out):
    """The before/after albedo figure of held-out photos with and without hair over the forehead."""
    from tf_facetex import io_utils, pipeline
    from tf_facetex.evaluation import clean_albedo
    from tf_facetex.face_model import load_face_model
    from tf_facetex.pipeline.reconstructor import ReconstructionConfig, Reconstructor
    from tf_facetex.refinement.fit import FitRefiner, UVFitConfig

    start = time.time()
    # Selection on the labels (no reconstruction yet): the held-out photos in sorted order, aligned, until both
    # groups are full.
    finder = pipeline.FaceFinder(masker="skin")
    shares, by_stem, no_face, scanned = {}, {}, [], 0
    for path in held_out:
        faces, stems, labels, missed = clean_albedo.find_labelled_faces([path], finder, log=lambda *_: None)
        scanned, no_face = scanned + 1, no_face + missed
        for stem, face in zip(stems, faces):
            by_stem[stem] = face
            shares[stem] = clean_albedo.forehead_hair_share(labels[stem], face.landmarks)
        with_hair, without = clean_albedo.pick_forehead_examples(shares, FLAGS.figure_faces)
        if len(with_hair) == len(without) == FLAGS.figure_faces:
            break
    chosen = with_hair + without
    after = setup.build_reconstructor(FLAGS.face_model, fit_steps=FLAGS.fit_steps, landmark_steps=FLAGS.landmark_steps,
                                      turntable_yaws=())
    before_model = load_face_model(FLAGS.face_model, albedo_prior="none")
    before = Reconstructor(before_model, ReconstructionConfig(fit_steps=FLAGS.fit_steps, turntable_yaws=(),
                                                              landmark_steps=FLAGS.landmark_steps))
    uniform = UVFitConfig(steps=FLAGS.fit_steps, symmetry_weighting="uniform", symmetry_seen_weight=0.0,
                          symmetry_seen_scale=0.0, symmetry_unseen_mirror_weight=0.0)
    before.use_refiner(FitRefiner(before.renderer.uv_mask, before.renderer.uv_symmetry_index, uniform))
    shipped = pipeline.FaceFinder()          # the shipped default masker
    albedos = {}
    for stem in chosen:
        substitute = by_stem[stem]            # aligned with the substitute (skin) mask
        product = shipped.from_image(_load(held_out, stem), name=stem)[0]
        albedos[stem] = (before.reconstruct([substitute])[0].albedo_uv, after.reconstruct([product])[0].albedo_uv)
        print(f"  {stem}: forehead hair {shares[stem]:.2f}", flush=True)
    rows = [[(f"{hair[-5:]} hair", *albedos[hair]), (f"{clear[-5:]} clear", *albedos[clear])]
            for hair, clear in zip(with_hair, without)]
    io_utils.write_image(FLAGS.figure, clean_albedo.before_after_figure(rows))
    result = {"command": " ".join(["python", *sys.argv]), "figure": FLAGS.figure,
              "source": "CelebAMask-HQ-mini (CelebAMask-HQ, research use), the held-out last 200 by sorted name",
              "selection": "held-out photos in sorted order; forehead = the band above the brows (landmarks 17-26) "
                           "up to 0.45 x the brow-to-chin distance; with hair: >= 30% of it labelled hair or hat; "
                           "without: <= 2%; the first of each",
              "with_hair": {stem: shares[stem] for stem in with_hair},
              "without_hair": {stem: shares[stem] for stem in without},
              "layout": "each row: a photo with hair over the forehead (before | after), then one without "
                        "(before | after); captions: the last 5 characters of the image name, 'hair' or 'clear'",
              "before": {"masker": "skin (landmark + skin-colour substitute)", "refiner": before.refiner.describe(),
                         "face_model": getattr(before_model, "source", None), "albedo_prior": "none (uniform tone)"},
              "after": {"masker": "the shipped default (FaceFinder())", "reconstructor": after.describe(),
                        "face_model": getattr(after.model, "source", None)},
              "photos_scanned": scanned, "no_face": no_face, "seconds": time.time() - start,
              "load_average": list(os.getloadavg())}
    io_utils.write_json(FLAGS.json, result)
    print(f"wrote {FLAGS.figure} and {FLAGS.json} ({len(chosen)} photos, {result['seconds']:.0f} s)")


def _load(files, stem):
    from tf_facetex.data.images import load_image

    return load_image(next(path for path in files if path.stem == stem))


if __name__ == "__main__":
    cli.run(main)
