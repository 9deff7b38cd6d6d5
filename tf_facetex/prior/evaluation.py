"""The trained prior regressor against the mean-face and landmark-fit baselines on held-out faces, with a paired
bootstrap comparison (`evaluate_prior`, docs/RESULTS.md "Prior regressor")."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_facetex.face_model.decoder import CoefficientLayout
from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter
from tf_facetex.prior.pose_init import initial_pose
from tf_facetex.prior.trainer import PriorTrainer, prediction_metrics


class LandmarkPseudoLabels:
    """Pseudo-labels from the landmark fit (`LandmarkFitter`: id, exp, pose from the batch's 68 landmarks)."""

    def __init__(self, model, image_size, steps):
        self.fitter = LandmarkFitter(model, LandmarkFitConfig(image_size=image_size, steps=steps))
        self.layout = CoefficientLayout.for_model(model)

    def __call__(self, landmarks):
        fit = self.fitter(np.asarray(landmarks))
        return self.layout.join({k: tf.constant(fit[k]) for k in ("id", "exp", "angles", "translation")})


def baseline_coefficients(trainer: PriorTrainer, batch, landmark_fitter=None) -> dict:
    """{method: [B, C]} the mean-face baselines for a batch.

    - mean_face: all zeros (what the untrained regressor predicts: mean shape, frontal, centred, ambient light);
    - mean_face_pos_pose: mean shape, ambient light, the closed-form (scaled-orthographic "POS") pose from the
      batch's 68 landmarks -- no ground truth used, what any landmark detector gives;
    - mean_face_gt_pose_light (needs gt_coeffs): mean shape with the TRUE pose and SH light (an oracle: only the
      shape and albedo are the mean's);
    - landmark_fit (with ``landmark_fitter``, a `LandmarkPseudoLabels`): identity, expression and pose fitted to the
      batch's 68 landmarks -- the fitting prior's first stage and the teacher of ``--pseudo_labels=fit``; no light
      (ambient), so its skin_psnr is not comparable.
    """
    layout = trainer.layout
    landmarks = np.asarray(batch["landmarks"])
    batch_size = landmarks.shape[0]
    zeros = np.zeros((batch_size, layout.size), np.float32)
    angles, translation = initial_pose(landmarks, trainer.face_model.mean_landmarks(), trainer.image_size)
    pos = zeros.copy()
    pos[:, layout.slices["angles"]] = angles
    pos[:, layout.slices["translation"]] = translation
    out = {"mean_face": zeros, "mean_face_pos_pose": pos}
    if "gt_coeffs" in batch:
        gt = np.asarray(batch["gt_coeffs"], np.float32)
        oracle = zeros.copy()
        for name in ("angles", "translation", "gamma"):
            oracle[:, layout.slices[name]] = gt[:, layout.slices[name]]
        out["mean_face_gt_pose_light"] = oracle
    if landmark_fitter is not None:
        out["landmark_fit"] = landmark_fitter(landmarks)
    return out


def evaluate_prior(trainer: PriorTrainer, dataset, max_batches=None, with_baselines=True,
                   landmark_fit_steps=300) -> dict:
    """The trained regressor vs the mean-face baselines (`baseline_coefficients`) and the true coefficients (an
    upper reference for the render: true shape, pose and light with the model's mean albedo) on a held-out set.

    Returns:
      {'num_images': n, 'methods': {method: {metric: mean}}} with metrics landmark_px (mean px at 224), skin_psnr
      (dB on the data's face mask, the render over black so that a misplaced face is penalised) and, with ground
      truth, shape_rmse_mm, id_rmse, exp_rmse, angle_error_deg; and 'regressor_vs_mean_face'
      (`paired_comparison`). ``landmark_fit_steps`` > 0 adds the landmark fit.
    """
    fitter = (LandmarkPseudoLabels(trainer.face_model, trainer.image_size, landmark_fit_steps)
              if with_baselines and landmark_fit_steps > 0 else None)
    metric_fn = tf.function(lambda batch, coeffs: prediction_metrics(trainer, batch, coeffs), reduce_retracing=True)
    per_sample, count = {}, 0                                         # method -> metric -> list of [B] arrays
    for index, batch in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        batch = {k: v for k, v in batch.items() if k in ("image", "mask", "landmarks", "gt_coeffs")}
        methods = {"regressor": trainer.regressor(batch["image"], training=False)}
        if with_baselines:
            methods.update(baseline_coefficients(trainer, batch, fitter))
            if "gt_coeffs" in batch:
                methods["true_coefficients"] = batch["gt_coeffs"]
        for method, coeffs in methods.items():
            values = metric_fn(batch, tf.convert_to_tensor(coeffs, tf.float32))
            bucket = per_sample.setdefault(method, {})
            for name, value in values.items():
                bucket.setdefault(name, []).append(np.asarray(value, np.float64))
        count += int(batch["image"].shape[0])
    per_sample = {m: {k: np.concatenate(v) for k, v in values.items()} for m, values in per_sample.items()}
    results = {"num_images": count,
               "methods": {m: {k: float(v.mean()) for k, v in values.items()} for m, values in per_sample.items()}}
    if "mean_face" in per_sample:
        results["regressor_vs_mean_face"] = paired_comparison(per_sample["regressor"], per_sample["mean_face"])
    return results


# Metrics where lower is better (the others, skin_psnr, higher).


LOWER_IS_BETTER = ("landmark_px", "shape_rmse_mm", "id_rmse", "exp_rmse", "angle_error_deg")


def paired_comparison(values: dict, baseline: dict, resamples=2000, seed=0, lower_is_better=LOWER_IS_BETTER) -> dict:
    """Per metric, a paired comparison of two methods on the same faces ({metric: [N]} each): the mean difference
    (method - baseline), its 95% bootstrap interval (faces resampled with replacement) and the share of faces on
    which the method is better -- so that "beats the mean face" is a statement with an error bar."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(set(values) & set(baseline)):
        diff = np.asarray(values[name], np.float64) - np.asarray(baseline[name], np.float64)
        if not diff.size:
            continue
        means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
        better = diff < 0 if name in lower_is_better else diff > 0
        out[name] = {"mean_difference": float(diff.mean()), "ci95": [float(np.percentile(means, 2.5)),
                                                                     float(np.percentile(means, 97.5))],
                     "share_better": float(better.mean()), "lower_is_better": name in lower_is_better}
    return out


def format_results(results: dict) -> str:
    """A small text table of `evaluate_prior` results."""
    methods = results["methods"]
    metric_names = sorted({k for values in methods.values() for k in values})
    lines = [f"{'method':28s} " + " ".join(f"{m:>15s}" for m in metric_names)]
    for method, values in methods.items():
        lines.append(f"{method:28s} " + " ".join(f"{values.get(m, float('nan')):15.4f}" for m in metric_names))
    for name, paired in results.get("regressor_vs_mean_face", {}).items():
        low, high = paired["ci95"]
        lines.append(f"regressor - mean_face {name}: {paired['mean_difference']:+.4f} (95% CI {low:+.4f} .. "
                     f"{high:+.4f}), better on {100 * paired['share_better']:.1f}% of the faces")
    return "\n".join(lines)
