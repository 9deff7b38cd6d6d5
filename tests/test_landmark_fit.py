"""Stage-1 fitting: closed-form pose initialisation and the landmark fit on synthetic projections."""
import numpy as np
import pytest

from tf_facetex import camera
from tf_facetex.face_model.decoder import is_blendshape_model
from tf_facetex.prior.landmark_fit import LandmarkFitConfig, LandmarkFitter
from tf_facetex.prior.pose_init import euler_from_rotation, initial_pose


def test_euler_round_trip(rng):
    angles = rng.uniform(-1.2, 1.2, size=(50, 3)).astype(np.float32)
    rotation = camera.rotation_matrix(angles).numpy()
    np.testing.assert_allclose(euler_from_rotation(rotation), angles, atol=1e-5)


def test_initial_pose_recovers_a_known_pose(tiny_model):
    points = tiny_model.mean_landmarks()
    angles = np.array([[0.1, -0.4, 0.05]], np.float32)
    translation = np.array([[0.05, -0.03, 0.3]], np.float32)
    pixels, _ = camera.project(camera.rigid_transform(points[None], angles, translation), 224)
    est_angles, est_translation = initial_pose(pixels.numpy(), points, 224)
    # Scaled orthography ignores perspective: a few degrees and a few centimetres are expected.
    assert np.degrees(np.abs(est_angles - angles)).max() < 4.0
    assert np.abs(est_translation[0, :2] - translation[0, :2]).max() < 0.05
    assert abs(est_translation[0, 2] - translation[0, 2]) < 0.5


def _synthetic_batch(model, fitter, rng, batch=8):
    ids = 0.8 * rng.normal(size=(batch, model.num_id)).astype(np.float32)
    if is_blendshape_model(model):
        exps = (0.6 * rng.uniform(size=(batch, model.num_exp)) * (rng.uniform(size=(batch, model.num_exp)) < 0.15))
    else:
        exps = 0.5 * rng.normal(size=(batch, model.num_exp))
    angles = np.stack([rng.uniform(-0.25, 0.25, batch), rng.uniform(-0.6, 0.6, batch),
                       rng.uniform(-0.2, 0.2, batch)], 1)
    translation = np.stack([rng.uniform(-0.1, 0.1, batch), rng.uniform(-0.1, 0.1, batch),
                            rng.uniform(-0.5, 0.5, batch)], 1)
    args = [a.astype(np.float32) for a in (ids, exps, angles, translation)]
    return fitter.project(*args).numpy(), args


@pytest.mark.parametrize("fixture", ["tiny_model", "ict_model"])
def test_landmark_fit_reaches_two_pixels(fixture, request, rng):
    model = request.getfixturevalue(fixture)
    fitter = LandmarkFitter(model, LandmarkFitConfig(steps=300))
    target, (ids, exps, angles, translation) = _synthetic_batch(model, fitter, rng)
    noisy = target + rng.normal(scale=1.0, size=target.shape)
    out = fitter(noisy)
    to_truth = np.linalg.norm(out["landmarks"] - target, axis=-1).mean()
    assert to_truth < 2.0, to_truth   # issue 6: fitted landmarks within 2 px mean at 224
    assert np.degrees(np.abs(out["angles"][:, 1] - angles[:, 1])).mean() < 4.0
    assert out["id"].shape == ids.shape and out["exp"].shape == exps.shape
    # Without the fit (mean face at the initial pose only) the error is clearly larger: the fit does work.
    init_only = LandmarkFitter(model, LandmarkFitConfig(steps=0))(noisy)
    init_to_truth = np.linalg.norm(init_only["landmarks"] - target, axis=-1).mean()
    assert init_to_truth > 1.5 * to_truth, (init_to_truth, to_truth)
