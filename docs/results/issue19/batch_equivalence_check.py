"""Issue 19: batched == one-at-a-time on the real face model? (the measurement behind docs/METHOD.md's "Batches"
paragraph; writes batch_equivalence_check.json next to this file)

    .venv/bin/python docs/results/issue19/batch_equivalence_check.py

The astronaut (skimage.data.astronaut; detected and masked once) through the product's default reconstruction
(`pipeline.build_reconstructor` defaults: ICT-FaceKit, landmark + photometric fit, the compiled UV fit) alone and
replicated 4 times in one batch; then the float sensitivity of the two iterative fits at batch 1: the landmark
fit with the landmarks moved by 1e-5 px, and the UV fit with its inputs (prior albedo, normal map) moved by 1e-7
relative. If the batch differences are of the size of these sensitivities, they are float rounding (batched
kernels sum in another order) amplified by the fits, not a batch effect.
"""
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_facetex import io_utils, pipeline  # noqa: E402


def main():
    face = pipeline.FaceFinder(log=lambda *_: None).from_image(skimage.data.astronaut(), name="astronaut")[0]
    reconstructor = pipeline.build_reconstructor(None, log=lambda *_: None)
    chart = reconstructor.uv_mask[..., 0] > 0
    load_before = [round(x, 2) for x in os.getloadavg()]
    one = reconstructor.reconstruct([face])[0]
    four = reconstructor.reconstruct([face] * 4)

    def albedo_difference(a, b):
        d = np.abs(a - b)[chart]
        return {"mean": float(d.mean()), "max": float(d.max())}

    result = {
        "detailed_psnr_db": {"batch_1": one.metrics["detailed_psnr_db"],
                             "batch_4": [r.metrics["detailed_psnr_db"] for r in four]},
        "batch_4_rows_equal_batch_1": [bool(np.array_equal(r.albedo_uv, one.albedo_uv)) for r in four],
        "coefficients_batch_4_minus_batch_1_max": [float(np.abs(r.coeffs - one.coeffs).max()) for r in four],
        "albedo_batch_4_minus_batch_1": [albedo_difference(r.albedo_uv, one.albedo_uv) for r in four],
    }
    # The landmark fit's float sensitivity: the same landmarks moved by 1e-5 px.
    fitter = reconstructor.prior.landmark_fitter
    landmarks = face.landmarks[None].astype(np.float32)
    base, moved = fitter(landmarks), fitter(landmarks + np.float32(1e-5))
    result["landmark_fit_moved_1e-5_px"] = {key: float(np.abs(np.asarray(moved[key]) - np.asarray(base[key])).max())
                                            for key in ("id", "exp", "angles", "translation")}
    # The UV fit's float sensitivity: its inputs moved by 1e-7 relative.
    prior_out = reconstructor.prior(face.image[None].astype(np.float32) / 255.0, landmarks,
                                    face.mask[None, ..., None].astype(np.float32))
    rng = np.random.default_rng(0)
    perturbed = dict(prior_out)
    for key in ("prior_albedo_uv", "normals_uv"):
        value = np.asarray(prior_out[key])
        perturbed[key] = tf.constant((value * (1.0 + 1e-7 * rng.standard_normal(value.shape))).astype(np.float32))
    result["uv_fit_inputs_moved_1e-7"] = albedo_difference(reconstructor.refiner(perturbed)["albedo_uv"].numpy()[0],
                                                           reconstructor.refiner(prior_out)["albedo_uv"].numpy()[0])
    result.update({"command": "python docs/results/issue19/batch_equivalence_check.py",
                   "refiner": reconstructor.refiner.describe(), "load_average_before": load_before,
                   "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    print(json.dumps(result, indent=1))
    io_utils.write_json(pathlib.Path(__file__).with_suffix(".json"), result, indent=1)


if __name__ == "__main__":
    main()
