"""How the landmark fit's shape error grows with landmark noise, for several identity / expression priors.

  .venv/bin/python scripts/sweep_landmark_fit.py --data 'outputs/prior_synth/faces3000/tfrecords/test-*.tfrecord' \
      --json docs/results/landmark_fit_noise.json

On synthetic faces with true coefficients (scripts/make_synthetic.py --tfrecord): Gaussian noise of each
``--noise_px`` (per coordinate, pixels of the crop, seeded) is added to the records' exact 68 landmarks, the
`LandmarkFitter` fits each ``--priors`` pair ``id_prior:exp_prior``, and the face-region shape RMSE (mm, unposed
identity + expression) against the truth is reported next to the mean face's — detected landmarks on photos are
2-3 px off, so this says how much of a fitted shape to trust.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tf_facetex import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "TFRecords of synthetic faces with coefficients (glob).")
flags.DEFINE_string("json", "", "Where the results JSON goes (written atomically); empty = print only.")
flags.DEFINE_string("face_model", "default", "The face model the faces were made with.")
flags.DEFINE_list("noise_px", ["0", "1", "2", "3"], "Landmark noise levels (std per coordinate, px).")
flags.DEFINE_list("priors", ["2:2", "2:40", "10:150"], "id_prior:exp_prior pairs of LandmarkFitConfig.")
flags.DEFINE_integer("steps", 300, "Fit steps.")
flags.DEFINE_integer("max_faces", 0, "Use only the first N faces (0 = all).")
flags.mark_flag_as_required("data")


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError
    from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
    from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter
    from tf_facetex.prior.train import load_model_for_training, make_prior_dataset
    from tf_facetex.prior.trainer import shape_rmse_mm

    model = load_model_for_training(FLAGS.face_model)
    layout = CoefficientLayout.for_model(model)
    landmarks, coeffs = [], []
    for batch in make_prior_dataset(FLAGS.data, 64, training=False):
        if "gt_coeffs" not in batch:
            raise FaceTexError(f"{FLAGS.data}: the records carry no coefficients (make them with "
                                 "scripts/make_synthetic.py --tfrecord)")
        landmarks.append(batch["landmarks"].numpy())
        coeffs.append(batch["gt_coeffs"].numpy())
        image_size = int(batch["image"].shape[1])
    landmarks, coeffs = np.concatenate(landmarks), np.concatenate(coeffs)
    if FLAGS.max_faces:
        landmarks, coeffs = landmarks[: FLAGS.max_faces], coeffs[: FLAGS.max_faces]
    decoder = FaceDecoder(model)
    true = layout.split(tf.constant(coeffs))

    def shape_error(id_coeffs, exp_coeffs):
        predicted = {"id": tf.constant(id_coeffs, tf.float32), "exp": tf.constant(exp_coeffs, tf.float32)}
        return float(tf.reduce_mean(shape_rmse_mm(decoder, model.face_region_mask, predicted, true)))

    count = len(coeffs)
    results = {"num_faces": count, "data": FLAGS.data, "face_model": model.source, "steps": FLAGS.steps,
               "mean_face_shape_rmse_mm": shape_error(np.zeros((count, model.num_id)),
                                                      np.zeros((count, model.num_exp))),
               "fits": []}
    print(f"{count} faces; mean face: {results['mean_face_shape_rmse_mm']:.3f} mm")
    for pair in FLAGS.priors:
        id_prior, exp_prior = (float(v) for v in pair.split(":"))
        fitter = LandmarkFitter(model, LandmarkFitConfig(image_size=image_size, steps=FLAGS.steps,
                                                         id_prior=id_prior, exp_prior=exp_prior))
        for noise in (float(v) for v in FLAGS.noise_px):
            rng = np.random.default_rng(int(noise * 1000))
            noisy = landmarks + rng.normal(0.0, noise, landmarks.shape).astype(np.float32) if noise else landmarks
            fit = fitter(noisy)
            row = {"id_prior": id_prior, "exp_prior": exp_prior, "noise_px": noise,
                   "shape_rmse_mm": shape_error(fit["id"], fit["exp"]),
                   "landmark_error_px": float(fit["landmark_error"].mean())}
            results["fits"].append(row)
            print(f"id_prior {id_prior:g} exp_prior {exp_prior:g} noise {noise:g} px: shape "
                  f"{row['shape_rmse_mm']:.3f} mm, fitted landmarks {row['landmark_error_px']:.2f} px from the input")
    if FLAGS.json:
        io_utils.write_json(FLAGS.json, results)
        print(f"written {FLAGS.json}")


if __name__ == "__main__":
    cli.run(main)
