"""Shared fixtures. Tests that need the workplace's ../shared assets skip with a reason when it is absent."""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tf_facetex import paths


@pytest.fixture(scope="session")
def shared_dir():
    shared = paths.shared_dir()
    if shared is None:
        pytest.skip("../shared (workplace assets) not present; set TF_FACETEX_SHARED to run this test")
    return shared


@pytest.fixture(scope="session")
def faces_dir():
    faces = paths.faces_dir()
    if faces is None:
        pytest.skip("../shared/faces (real photos) not present; set TF_FACETEX_SHARED to run this test")
    return faces


@pytest.fixture(scope="session")
def ict_model():
    """The ICT-FaceKit model as converted (its uniform tone; without the shipped albedo prior), converted once into
    the cache (uses ../shared's archive when present)."""
    from tf_facetex.face_model import load_face_model
    try:
        return load_face_model(None, allow_clone=False, log=lambda *_: None, albedo_prior="none")
    except Exception as err:  # noqa: BLE001 - turned into a skip with the reason
        pytest.skip(f"ICT-FaceKit not available here ({err})")


@pytest.fixture(scope="session")
def tiny_model():
    from tf_facetex.face_model.procedural import make_procedural_model
    return make_procedural_model()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent
