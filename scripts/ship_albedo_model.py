"""Ships a photo-built albedo model as ICT-FaceKit's default albedo prior: saved_models/albedo_model/
(ict_albedo_prior.npz: per-vertex mean and basis + the mesh fingerprint; MODEL_CARD.md: data, split, photos,
components, held-out figures, command, sha256).

    python scripts/build_albedo_model.py --images DIR --out outputs/albedo_model/M.npz --report outputs/albedo_model/M.json
    python scripts/ship_albedo_model.py --built outputs/albedo_model/M.npz --report outputs/albedo_model/M.json \
        --build_command "python scripts/build_albedo_model.py ..."

`load_face_model` then attaches it to ICT-FaceKit by default (``TF_FACETEX_ALBEDO_PRIOR`` points elsewhere, or
``none`` keeps the uniform tone).
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("built", None, "The face model written by scripts/build_albedo_model.py --out.")
flags.DEFINE_string("report", None, "Its --report JSON.")
flags.DEFINE_string("out", "saved_models/albedo_model", "Shipped albedo-prior folder.")
flags.DEFINE_string("build_command", "", "The build command, for the card.")
flags.DEFINE_string("test_report", "", "build_albedo_model.py --evaluate_only --report JSON on a test split (optional).")
flags.DEFINE_string("test_command", "", "The command of --test_report, for the card.")
flags.DEFINE_string("notes", "", "Extra paragraph for the card (e.g. why this build was chosen).")

FILE_NAME = "ict_albedo_prior.npz"


def _card(report, path, sha256, size, prior, command, notes, test=None):
    held = report.get("held_out", {})
    mae = held.get("mae", {}).get("uv_model", {})
    photos = report["photos"]
    lines = [
        "# Albedo prior built from photos (ICT-FaceKit)",
        "",
        "ICT-FaceKit has no albedo modes. This file gives it a linear albedo model built from photos, so that the",
        "per-image fit and the network complete what a photo does not show with a plausible face of the person's",
        "tone. `tf_facetex.face_model.load_face_model` attaches it by default (`$TF_FACETEX_ALBEDO_PRIOR` = a path,",
        "or `none` for the uniform tone); it refuses to attach it to another mesh (fingerprint check).",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{path.name}` ({size / 1e6:.2f} MB), sha256 `{sha256}` |",
        f"| contents | per-vertex mean [N, 3] and basis [K, N, 3] (components x their standard deviations, "
        f"coefficients ~N(0, 1)); N = {prior.albedo_mean.shape[0]}, K = {prior.num_components} |",
        f"| mesh | {prior.meta.get('model_name')} (fingerprint `{prior.fingerprint[:16]}...`) |",
        f"| data | {', '.join(report['images'])} |",
        f"| split | content hash: {photos['train_fitted']} training photos fitted, {photos['train_used']} used "
        f"({', '.join(f'{v} {k}' for k, v in photos['train_dropped'].items())} dropped), "
        f"{photos['held_out_fitted']} held out; {photos['skipped']} had no usable face |",
        f"| method | fitting path (landmarks, SH light, tone) per photo, de-lit in UV {report['uv_size']}, unseen "
        f"texels from their mirror, weighted PCA, {report['light_refits']} light refit(s) "
        "(docs/METHOD.md, 'Albedo model from photos') |",
        f"| variance explained | {report['explained_fraction']:.3f} by {report['components']} components |",
        f"| build time | {report['seconds']['total']:.0f} s on 2 shared CPU cores |",
    ]
    if held.get("photos"):
        lines += [
        "",
        f"Held-out photos ({held.get('photos', 0)}; coefficients fitted on half the texels, scored on the other half),",
        "mean absolute albedo error:",
        "",
        "| model | MAE |",
        "|---|---|",
        f"| mean only | {mae.get('mean/fit=half', float('nan')):.4f} |",
        f"| mean x per-channel gain | {mae.get('mean_gain/fit=half', float('nan')):.4f} |",
        f"| mean + {report['components']} components | {mae.get('basis/fit=half', float('nan')):.4f} |",
        ]
    for key, values in held.get("mae", {}).items():
        if key.startswith("compare:"):
            lines.append(f"| {key[len('compare:'):]}: mean + components (same held-out photos) | "
                         f"{values.get('basis/fit=half', float('nan')):.4f} |")
    if test is not None:
        lines += ["", f"Test split ({test['held_out']['photos']} photos of {', '.join(test['images'])}, never used by "
                  "any build; same texels for every model; coefficients fitted on half the texels, scored on the other "
                  "half), mean absolute albedo error:", "",
                  "| model | mean only | mean x gain | mean + components |", "|---|---|---|---|"]
        for name, e in test["held_out"]["mae"].items():
            lines.append(f"| `{name}` | {e['mean/fit=half']:.4f} | {e['mean_gain/fit=half']:.4f} | "
                         f"{e['basis/fit=half']:.4f} |")
        lines += ["", f"    {FLAGS.test_command or '(command not recorded)'}"]
    lines += ["", "Command:", "", f"    {command or '(not recorded)'}",
              f"    python scripts/ship_albedo_model.py --built {FLAGS.built} --report {FLAGS.report}", ""]
    if notes:
        lines += [notes, ""]
    lines += ["The photos are research material (CelebAMask-HQ and others, see the data row); the file holds only the",
              "population mean and principal components, no individual face.", ""]
    return "\n".join(lines)


def main(argv):
    del argv
    import json
    import pathlib

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.face_model import MorphableModel, albedo_prior

    if not FLAGS.built or not FLAGS.report:
        raise FaceTexError("--built and --report are required (see --help)")
    built = MorphableModel.load(FLAGS.built)
    report = json.loads(pathlib.Path(FLAGS.report).read_text())
    test = json.loads(pathlib.Path(FLAGS.test_report).read_text()) if FLAGS.test_report else None
    prior = albedo_prior.from_model(built, built_from=report["images"], photos_used=report["photos"]["train_used"],
                                    uv_size=report["uv_size"], explained_fraction=report["explained_fraction"])
    out = pathlib.Path(FLAGS.out)
    path = out / FILE_NAME
    prior.save(path)
    size = path.stat().st_size
    if size >= 25e6:
        raise FaceTexError(f"{path}: {size / 1e6:.1f} MB; shipped files must stay under 25 MB")
    sha256 = io_utils.file_sha256(path)
    io_utils.write_text(out / "MODEL_CARD.md", _card(report, path, sha256, size, albedo_prior.AlbedoPrior.load(path),
                                                     FLAGS.build_command, FLAGS.notes, test))
    io_utils.write_json(out / "build_report.json", {"build": report, "test": test})
    print(f"wrote {path} ({size / 1e6:.2f} MB, sha256 {sha256[:16]}...) and {out / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    cli.run(main)
