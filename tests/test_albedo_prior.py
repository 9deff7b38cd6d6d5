"""The shipped albedo prior: file round trip, refusal on another mesh, and load_face_model's default."""
import numpy as np
import pytest

from tf_facetex import paths
from tf_facetex.errors import AssetError
from tf_facetex.face_model import albedo_prior, load_face_model, with_albedo_prior
from tf_facetex.face_model.procedural import make_procedural_model


@pytest.fixture
def uniform_and_prior(tiny_model, tmp_path):
    """A model without albedo modes (like ICT-FaceKit) and a prior file made from the procedural model's albedo."""
    uniform = tiny_model.replace(albedo_basis=np.zeros((0, tiny_model.num_vertices, 3), np.float32),
                                 albedo_mean=np.full_like(tiny_model.albedo_mean, 0.6), albedo_source="uniform")
    prior = albedo_prior.from_model(tiny_model, note="test")
    path = tmp_path / "prior.npz"
    prior.save(path)
    return uniform, path


def test_round_trip_and_attach(uniform_and_prior, tiny_model):
    uniform, path = uniform_and_prior
    loaded = albedo_prior.AlbedoPrior.load(path)
    np.testing.assert_array_equal(loaded.albedo_mean, tiny_model.albedo_mean)
    np.testing.assert_array_equal(loaded.albedo_basis, tiny_model.albedo_basis)
    attached = albedo_prior.attach(uniform, loaded)
    assert attached.albedo_source == "photos" and attached.num_tex == tiny_model.num_tex
    np.testing.assert_array_equal(attached.albedo_mean, tiny_model.albedo_mean)
    np.testing.assert_array_equal(attached.mean_shape, uniform.mean_shape)     # only the albedo changes


def test_refuses_another_mesh(uniform_and_prior):
    _, path = uniform_and_prior
    other = make_procedural_model(grid=21)
    with pytest.raises(AssetError, match="another mesh"):
        albedo_prior.attach(other, albedo_prior.AlbedoPrior.load(path))
    # Same vertex count, other triangle order: the fingerprint still tells them apart.
    prior = albedo_prior.AlbedoPrior.load(path)
    same_count = make_procedural_model().replace()
    same_count.triangles = same_count.triangles[:, [0, 2, 1]].copy()
    with pytest.raises(AssetError, match="another mesh"):
        albedo_prior.attach(same_count, prior)


def test_bad_files_are_refused_clearly(tmp_path, uniform_and_prior):
    _, path = uniform_and_prior
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AssetError, match="truncated or corrupt"):
        albedo_prior.AlbedoPrior.load(truncated)
    with pytest.raises(AssetError, match="not found"):
        albedo_prior.AlbedoPrior.load(tmp_path / "missing.npz")
    data = dict(np.load(path))
    data["albedo_mean"] = data["albedo_mean"].copy()
    data["albedo_mean"][0, 0] = np.nan
    nan_path = tmp_path / "nan.npz"
    np.savez(nan_path, **data)
    with pytest.raises(AssetError, match="non-finite"):
        albedo_prior.AlbedoPrior.load(nan_path)


def test_default_attaches_only_to_a_uniform_model(uniform_and_prior, tiny_model, monkeypatch):
    uniform, path = uniform_and_prior
    logs = []
    monkeypatch.setenv("TF_FACETEX_ALBEDO_PRIOR", str(path))
    attached = with_albedo_prior(uniform, "default", log=logs.append)
    assert attached.albedo_source == "photos" and "albedo prior: photo-built model" in logs[-1]
    # A model with its own albedo (BFM, procedural) keeps it.
    assert with_albedo_prior(tiny_model, "default", log=logs.append) is tiny_model
    assert with_albedo_prior(uniform, "none", log=logs.append) is uniform
    monkeypatch.setenv("TF_FACETEX_ALBEDO_PRIOR", "none")
    assert with_albedo_prior(uniform, "default", log=logs.append) is uniform
    # A missing default file: the uniform tone, with a warning that says so.
    monkeypatch.setenv("TF_FACETEX_ALBEDO_PRIOR", str(path.with_name("absent.npz")))
    logs.clear()
    assert with_albedo_prior(uniform, "default", log=logs.append) is uniform
    assert "WARNING" in logs[0] and "uniform tone" in logs[0]


def test_explicit_path_must_fit(uniform_and_prior, tmp_path):
    _, path = uniform_and_prior
    with pytest.raises(AssetError, match="another mesh"):
        with_albedo_prior(make_procedural_model(grid=21).replace(albedo_source="uniform"), str(path), log=print)


def test_shipped_prior_fits_ict(ict_model):
    """The committed file attaches to the converted ICT-FaceKit and gives a plausible skin albedo."""
    path = paths.albedo_prior_file()
    if path is None or not path.is_file():
        pytest.fail(f"the shipped albedo prior {path} is missing")
    model = load_face_model(None, allow_clone=False, log=lambda *_: None)
    assert model.albedo_source == "photos" and model.num_tex >= 5
    region = model.face_region_mask
    mean = model.albedo_mean[region]
    assert np.all((mean >= 0) & (mean <= 1)) and 0.3 < mean.mean() < 0.8
    assert mean[:, 0].mean() > mean[:, 2].mean()       # skin: more red than blue
    np.testing.assert_array_equal(model.mean_shape, ict_model.mean_shape)
