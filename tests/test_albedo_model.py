"""The photo-built albedo model: de-lighting masks, symmetry completion, weighted PCA, vertex sampling, and the
whole build on synthetic faces whose albedos come from a known linear model (fast), and on real photos (slow)."""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_facetex import albedo_model as am

REPO = pathlib.Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------- pure functions
def _low_rank(rng, m=200, d=300, k=3, noise=0.005):
    mean = rng.uniform(0.3, 0.7, d)
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0].T                  # [K, D] orthonormal
    stds = np.array([3.0, 2.0, 1.0])[:k]
    coefficients = rng.standard_normal((m, k)) * stds
    return mean, basis, stds, mean + coefficients @ basis + noise * rng.standard_normal((m, d))


def test_weighted_pca_recovers_a_subspace_where_filled_pca_does_not(rng):
    mean, basis, stds, data = _low_rank(rng)
    m, d = data.shape
    # Structured missing data: each sample misses a contiguous half of the features, starting anywhere.
    start = rng.integers(0, d, m)
    position = (np.arange(d)[None] - start[:, None]) % d
    weights = (position < d // 2).astype(np.float64)
    result = am.weighted_pca(data, weights, 3)
    weighted_angles = am.subspace_angles_degrees(result.components, basis)
    assert weighted_angles.max() < 3.0, weighted_angles
    assert np.abs(result.mean - data.mean(0)).max() < 0.01                  # the complete data's mean
    assert np.allclose(result.stds, stds, rtol=0.15), result.stds
    assert np.allclose(result.components @ result.components.T, np.eye(3), atol=1e-8)
    # Baseline: PCA of the data with missing entries filled by the feature means.
    feature_mean = (weights * data).sum(0) / weights.sum(0)
    filled = np.where(weights > 0, data, feature_mean) - feature_mean
    filled_components = np.linalg.svd(filled, full_matrices=False)[2][:3]
    filled_angles = am.subspace_angles_degrees(filled_components, basis)
    assert filled_angles.max() > 3 * weighted_angles.max(), (filled_angles, weighted_angles)


def test_weighted_pca_with_full_weights_is_pca(rng):
    _, _, _, data = _low_rank(rng, m=60, d=40, noise=0.05)
    result = am.weighted_pca(data, np.ones_like(data), 3)
    centred = data - data.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    assert am.subspace_angles_degrees(result.components, vt[:3]).max() < 0.5
    assert np.allclose(result.mean, data.mean(0), atol=1e-3)
    assert np.allclose(result.stds, s[:3] / np.sqrt(len(data) - 1), rtol=0.02)


def test_weighted_pca_rejects_bad_shapes(rng):
    with pytest.raises(ValueError, match="same"):
        am.weighted_pca(np.zeros((5, 4)), np.ones((5, 3)), 2)
    with pytest.raises(ValueError, match="num_components"):
        am.weighted_pca(np.zeros((5, 4)), np.ones((5, 4)), 5)


def test_fit_coefficients_recovers_known_coefficients(rng):
    mean, basis, stds, _ = _low_rank(rng, d=100)
    scaled = basis * stds[:, None]
    truth = rng.standard_normal((4, 3))
    data = mean + truth @ scaled
    weights = (rng.uniform(size=data.shape) < 0.4).astype(float)
    assert np.allclose(am.fit_coefficients(data, weights, mean, scaled, 1e-8), truth, atol=1e-5)


def _uv_maps(size=32):
    rows, cols = np.mgrid[0:size, 0:size]
    return rows, cols


def test_delight_divides_by_shading_and_drops_untrustworthy_texels():
    size = 32
    rows, cols = _uv_maps(size)
    albedo = np.stack([0.6 + 0.2 * cols / size, 0.45 + 0.0 * rows, 0.35 + 0.1 * rows / size], -1)
    shading = np.full((size, size, 3), 0.9)
    shading[:, :4] = 0.1                                                     # attached shadow
    texture = albedo * shading
    texture[10, 10] = 1.0                                                    # clipped highlight
    visibility = np.ones((size, size))
    visibility[20:, 20:] = 0.0
    cosine = np.ones((size, size))
    cosine[0, :] = 0.1                                                       # grazing
    config = am.DelightConfig(erode_fraction=0.0)
    out, valid = am.delight(texture, visibility, shading, cosine, config=config)
    assert not valid[:, :4].any() and not valid[10, 10] and not valid[20:, 20:].any() and not valid[0].any()
    assert valid.sum() > 0.6 * size * size
    assert np.allclose(out[valid], albedo[valid], atol=1e-5)
    assert np.all(out[~valid] == 0)
    # Eroding the seen area drops its border (bilinear samples there mix in whatever is beyond).
    _, eroded = am.delight(texture, visibility, shading, cosine, config=am.DelightConfig(erode_fraction=1 / 32))
    assert not eroded[19, 25] and valid[19, 25]


def test_outlier_mask_drops_shadows_and_highlights_but_keeps_dark_features(rng):
    size = 64
    rows, cols = _uv_maps(size)
    reference = np.full((size, size, 3), 0.6)
    brow = (np.abs(rows - 20) < 3) & (np.abs(cols - 32) < 12)
    reference[brow] = 0.15                                                   # dark in everyone: a feature
    albedo = reference * (1.0 + 0.03 * rng.standard_normal((size, size, 1)))
    shadow = (np.abs(rows - 40) < 3) & (np.abs(cols - 20) < 4)
    highlight = (np.abs(rows - 45) < 2) & (np.abs(cols - 45) < 2)
    albedo[shadow] *= 0.35
    albedo[highlight] *= 1.8
    valid = np.ones((size, size), bool)
    keep = am.outlier_mask(albedo, valid, reference)
    assert not keep[shadow].any() and not keep[highlight].any()
    assert keep[brow].mean() > 0.95
    assert keep.mean() > 0.9
    # Without a reference the brow itself looks like a shadow against its surroundings.
    assert am.outlier_mask(albedo, valid, None)[brow].mean() < 0.5


def test_symmetry_complete_fills_from_the_mirror_only_where_needed():
    size = 8
    mirror = (np.arange(size)[:, None] * size + (size - 1 - np.arange(size))[None]).reshape(-1)
    albedo = np.random.default_rng(1).uniform(size=(2, size, size, 3))
    weight = np.ones((2, size, size))
    weight[:, :, :3] = 0.0                                                   # left side unseen
    weight[1, 0, :] = 0.0                                                    # and a row unseen on both sides
    filled, filled_weight = am.symmetry_complete(albedo, weight, mirror, mirror_weight=0.5)
    assert np.allclose(filled[0, :, :3], albedo[0, :, ::-1][:, :3])
    assert np.allclose(filled[1, 1:, :3], albedo[1, 1:, ::-1][:, :3])
    assert np.allclose(filled[:, :, 3:], albedo[:, :, 3:])
    assert np.allclose(filled_weight[0, :, :3], 0.5) and np.allclose(filled_weight[0, :, 3:], 1.0)
    assert np.all(filled_weight[1, 0] == 0.0)


def test_reference_albedo_ignores_brightness_and_outliers(rng):
    size = 16
    region = np.ones((size, size), bool)
    truth = rng.uniform(0.3, 0.7, (size, size, 3))
    gains = rng.uniform(0.7, 1.3, 9)
    albedos = truth[None] * gains[:, None, None, None]
    albedos[0, :4] = 0.01                                                    # one photo with a shadow
    valids = np.ones((9, size, size), bool)
    valids[1:3, 8:] = False
    reference, count = am.reference_albedo(albedos, valids, region)
    level = np.median(am.luminance(truth))
    ratio = reference / truth
    assert np.allclose(ratio, np.median(ratio), rtol=0.05)
    assert abs(np.median(ratio) - 1.0) < 0.3 and level > 0
    assert count[0, 0] == 9 and count[15, 0] == 7


def test_implausible_lights_flags_lights_that_go_far_below_zero_on_the_face():
    size = 16
    rows, cols = _uv_maps(size)
    x, y = (cols - 7.5) / 10, (rows - 7.5) / 10
    normals = np.stack([x, -y, np.sqrt(np.clip(1 - x ** 2 - y ** 2, 0.05, None))], -1)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    region = np.ones((size, size), bool)
    gamma = np.zeros((3, 27))
    gamma[1, 2] = 0.3                                       # a frontal light: fine
    gamma[2, 9 + 3] = 0.6                                   # a strong side light in green: below zero on one side
    assert am.implausible_lights(gamma, normals, region).tolist() == [False, False, True]


def test_atypical_photos_flags_what_is_not_a_face_photo(rng):
    size = 8
    region = np.ones((size, size), bool)
    skin = np.array([0.7, 0.5, 0.4])
    albedos = skin * rng.uniform(0.7, 1.3, (30, 1, 1, 1)) * rng.uniform(0.95, 1.05, (30, 1, 1, 3))
    albedos = np.broadcast_to(albedos, (30, size, size, 3)).copy()
    albedos[3] = [0.8, 0.0, 0.0]                            # a label map
    albedos[7] = skin * [1.0, 1.0, 2.5]                     # a blue cast far beyond the others
    valids = np.ones((30, size, size), bool)
    assert np.flatnonzero(am.atypical_photos(albedos, valids, region)).tolist() == [3, 7]


def test_uv_maps_to_vertices_samples_at_vertex_uvs(tiny_model):
    size = 64
    rows, cols = _uv_maps(size)
    # A map linear in (u, v) is sampled exactly by bilinear interpolation.
    u, v = cols / (size - 1), 1.0 - rows / (size - 1)
    maps = np.stack([u, v, u + v], -1)[None]
    uv, textured = am.vertex_uv(tiny_model)
    assert textured.all()
    values = am.uv_maps_to_vertices(tiny_model, maps, np.ones((size, size), bool))
    assert values.shape == (1, tiny_model.num_vertices, 3)
    assert np.allclose(values[0, :, 0], uv[:, 0], atol=1e-5) and np.allclose(values[0, :, 1], uv[:, 1], atol=1e-5)


def test_extend_uv_maps_fades_from_the_nearest_known_texel_to_their_average():
    maps = np.zeros((1, 40, 40, 1))
    known = np.zeros((40, 40), bool)
    known[0, :2] = True
    maps[0, 0, 0, 0], maps[0, 0, 1, 0] = 1.0, 3.0
    out = am.extend_uv_maps(maps, known, falloff=4.0)
    assert out[0, 0, 0, 0] == 1.0 and out[0, 0, 1, 0] == 3.0                 # known texels unchanged
    assert abs(out[0, 0, 2, 0] - 3.0) < 0.2                                    # next to the 3: nearly 3
    assert abs(out[0, 39, 39, 0] - 2.0) < 1e-6                                 # far away: the average


def test_region_features_round_trip(rng):
    region = rng.uniform(size=(6, 6)) < 0.5
    maps = rng.uniform(size=(2, 6, 6, 3)) * region[..., None]
    features = am.region_features(maps, region)
    assert features.shape == (2, 3 * region.sum())
    assert np.allclose(am.region_maps(features, region), maps)


def test_sh_shading_matches_the_tensorflow_version(rng):
    from tf_facetex import sh
    normals = rng.standard_normal((5, 7, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    gamma = 0.3 * rng.standard_normal((5, 1, 27))
    assert np.allclose(am.sh_shading(normals, gamma), sh.shading(normals.astype(np.float32), gamma).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------- known linear model
def _true_vertex_components(model):
    """[3, N, 3] albedo components on the tiny model's vertices: overall tone, red cheeks, lip colour (defined per
    vertex, so that the per-vertex face model can represent them exactly)."""
    uv, _ = am.vertex_uv(model)
    s, t = (uv[:, 0] - 0.02) / 0.96 * 2 - 1, (uv[:, 1] - 0.02) / 0.96 * 2 - 1      # the model's grid coordinates
    return np.stack([
        np.ones((len(s), 1)) * [0.07, 0.06, 0.05],
        np.exp(-((np.abs(s) - 0.45) ** 2 / 0.03 + (t + 0.15) ** 2 / 0.03))[..., None] * [0.08, -0.02, -0.02],
        np.exp(-(s ** 2 / 0.12 + (t + 0.5) ** 2 / 0.02))[..., None] * [0.08, -0.03, 0.0],
    ]).astype(np.float32)


@pytest.fixture(scope="module")
def linear_faces(tiny_model):
    """48 synthetic faces of the tiny model (no albedo basis, like ICT) whose albedos are the model's mean plus
    N(0, 1) combinations of 3 known components, lit by white-shaped SH lights at the reference level, run through
    the fitting path: (model, renderer, UnwrappedPhotos, truth dict)."""
    from tf_facetex.data.synthetic import SyntheticConfig, SyntheticFaceGenerator
    from tf_facetex.prior.module import PriorConfig, PriorModule
    from tf_facetex.prior.photometric_fit import PhotometricFitConfig
    from tf_facetex.rendering import FaceRenderer

    model = tiny_model.replace(albedo_basis=np.zeros((0, tiny_model.num_vertices, 3), np.float32),
                               albedo_source="uniform")
    size = 64
    renderer = FaceRenderer(model, 128, size)
    region = am.uv_region(renderer, model)
    frontal = am.frontal_normals_uv(renderer, model)
    mean_uv = renderer.rasterize_to_uv(model.albedo_mean[None]).numpy()[0]
    components = renderer.rasterize_to_uv(_true_vertex_components(model)).numpy()
    coefficients = []

    class LinearAlbedoFaces(SyntheticFaceGenerator):
        def paint_albedo(self, rng, base_uv):
            z = rng.standard_normal(len(components))
            coefficients.append(z)
            return np.clip(mean_uv + np.tensordot(z, components, 1), 0.02, 1.0).astype(np.float32)

        def sample_gamma(self, rng):
            # The build measures albedo under lights brought to the reference level (`light_level_gains`): light
            # the truth the same way, so that its albedo is the one to recover (the level is ambiguous otherwise).
            from tf_facetex import sh
            gamma = super().sample_gamma(rng).astype(np.float32)
            gain = am.light_level_gains(gamma[None], frontal, region)[0].astype(np.float64)
            gamma = sh.with_ambient(gamma).numpy().reshape(3, 9) * gain[:, None]
            gamma[:, 0] -= sh.AMBIENT_DC
            return gamma.reshape(27)

    config = SyntheticConfig(image_size=128, uv_size=size, directional_prob=0.0, occluder_prob=0.0, noise_std=0.005,
                             detail=0.0, max_yaw=35)
    generator = LinearAlbedoFaces(model, renderer, config)
    prior = PriorModule(model, PriorConfig(image_size=128, uv_size=size,
                                           photometric=PhotometricFitConfig(num_pixels=2048)), renderer=renderer)
    rng = np.random.default_rng(3)
    parts, albedos = [], []
    for _ in range(3):
        faces = generator.generate(rng, 16)
        out = prior(faces["image"].astype(np.float32) / 255.0, faces["landmarks"], faces["face_mask"])
        parts.append(am.UnwrappedPhotos.from_prior_outputs(renderer, out))
        albedos.append(faces["albedo_gt_uv"])
    truth = {"mean_uv": mean_uv, "components": components, "albedo_uv": np.concatenate(albedos), "region": region,
             "frontal": frontal, "coefficients": np.array(coefficients),
             "last": {"image": faces["image"].astype(np.float32) / 255.0, "face_mask": faces["face_mask"],
                      "posed_vertices": out["posed_vertices"].numpy()}}
    return model, renderer, am.UnwrappedPhotos.concatenate(parts), truth


@pytest.fixture(scope="module")
def linear_build(linear_faces):
    model, renderer, photos, truth = linear_faces
    uv_model, info = am.build_from_photos(photos, truth["region"], renderer.uv_symmetry_index.numpy(),
                                          truth["frontal"], 3, light_refits=1, white_light=True)
    return uv_model, info


def test_build_recovers_the_true_subspace_and_mean(linear_faces, linear_build):
    _, _, photos, truth = linear_faces
    uv_model, info = linear_build
    region = truth["region"]
    angles = am.subspace_angles_degrees(am.region_features(uv_model.components_uv, region),
                                        am.region_features(truth["components"], region))
    mean_error = np.abs(uv_model.mean_uv - truth["mean_uv"])[region].mean()
    print(f"principal angles {np.round(angles, 2)} deg, mean albedo MAE {mean_error:.4f}, passes {info['passes']}")
    # Measured: 1.2, 10.7, 13.4 degrees and 0.0034 (the two small components are near the de-lighting noise).
    assert angles[0] < 3.0 and angles.max() < 18.0, angles
    assert mean_error < 0.01, mean_error
    assert uv_model.explained_fraction > 0.9


def test_build_fits_the_lights_better_with_the_model(linear_faces, linear_build):
    """The refit with the first model (white-shaped lights) de-lights closer to the true albedo than the fitting
    path's lights, which had to explain the photo with a uniform albedo."""
    _, _, photos, truth = linear_faces
    _, info = linear_build
    region = truth["region"]
    errors = {}
    for name, gamma in (("fit", photos.gamma), ("refit", info["gamma"])):
        albedo, valid = am.delight_photos(photos, region, gamma, truth["frontal"])
        errors[name] = np.abs(albedo - truth["albedo_uv"])[valid & region].mean()
    assert errors["refit"] < errors["fit"] < 0.02, errors


def test_built_face_model_decodes_and_fits_like_a_model_basis(linear_faces, linear_build, tmp_path):
    import tensorflow as tf

    from tf_facetex.face_model import FaceDecoder, MorphableModel
    from tf_facetex.face_model.decoder import CoefficientLayout
    from tf_facetex.prior.photometric_fit import PhotometricFitConfig, PhotometricFitter

    model, renderer, _, truth = linear_faces
    uv_model, _ = linear_build
    built = am.face_model_with_albedo(model, uv_model, "test")
    assert built.albedo_source == "photos" and built.num_tex == 3
    path = tmp_path / "model.npz"
    built.save(path)
    loaded = MorphableModel.load(path)
    assert loaded.num_tex == 3 and loaded.albedo_source == "photos"
    assert CoefficientLayout.for_model(loaded).sizes["tex"] == 3
    # The decoder's albedo at coefficients 0 and +1 is the UV mean / mean + 1 sigma sampled at the vertices:
    # rasterised back into UV, it matches the UV model on the region.
    decoder = FaceDecoder(loaded)
    albedo = decoder.albedo(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)).numpy()
    back = renderer.rasterize_to_uv(albedo).numpy()
    inner = uv_model.known()
    assert np.abs(back[0] - uv_model.mean_uv)[inner].mean() < 0.01
    first = uv_model.mean_uv + uv_model.stds[0] * uv_model.components_uv[0]
    assert np.abs(back[1] - first)[inner].mean() < 0.01
    # The vertex model explains the true albedos of the last faces far better than its mean (oracle coefficients).
    region = truth["region"]
    basis = am.region_features(renderer.rasterize_to_uv(loaded.albedo_basis).numpy(), region)
    mean = am.region_features(back[0], region)
    target = am.region_features(truth["albedo_uv"][-8:], region)
    oracle = am.fit_coefficients(target, np.ones_like(target), mean, basis, 1e-6)
    assert np.abs(target - mean - oracle @ basis).mean() < 0.25 * np.abs(target - mean).mean()
    # The fitting path's photometric stage uses the basis (num_tex > 0): its albedo coefficients point the way of
    # the oracle's for the colour components. (Their size is shrunk: with a basis the fit does not normalise the
    # light, which absorbs most of the albedo's brightness and colour; see the report.)
    last = truth["last"]
    posed = tf.constant(last["posed_vertices"][-8:])
    fit = PhotometricFitter(loaded, PhotometricFitConfig(num_pixels=2048))(
        last["image"][-8:], last["face_mask"][-8:], renderer.rasterize(posed), renderer.vertex_normals(posed))
    fitted = fit["tex"].numpy()
    assert fitted.shape == (8, 3) and np.abs(fitted).max() > 0.05
    colour = slice(1, 3)
    agreement = np.sum(fitted[:, colour] * oracle[:, colour]) / (np.linalg.norm(fitted[:, colour])
                                                                  * np.linalg.norm(oracle[:, colour]))
    assert agreement > 0.7, (fitted, oracle)


def test_held_out_albedos_are_explained_better_by_the_basis(linear_faces, linear_build):
    _, _, photos, truth = linear_faces
    uv_model, _ = linear_build
    held_out = photos.select(slice(0, 12))        # (in-sample here; the real-photo run uses a held-out split)
    albedo, valid = am.delight_photos(held_out, truth["region"], None, truth["frontal"])
    weights = am.robust_weights(albedo, valid, uv_model.mean_uv, truth["region"])
    errors = am.reconstruction_errors(uv_model, albedo, weights)
    assert errors["basis/fit=half"]["mae"] < errors["mean_gain/fit=half"]["mae"] < errors["mean/fit=half"]["mae"]
