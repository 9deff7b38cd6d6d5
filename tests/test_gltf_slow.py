"""The Khronos glTF validator (npm gltf-validator; slow: installs it) finds no errors and no warnings in the demo's
mesh.glb (ICT-FaceKit, 53 morph targets) and in a GLB with an extra named part."""
import json

import numpy as np
import pytest

import interop_tools
from tf_facetex.export import gltf

pytestmark = pytest.mark.slow


def validate(*paths):
    proc = interop_tools.run(["node", interop_tools.ROOT / "scripts" / "validate_gltf.js", *paths],
                             env={"NODE_PATH": str(interop_tools.NPM_MODULES)}, timeout=300)
    return [json.loads(line) for line in proc.stdout.strip().splitlines()]


@pytest.fixture(scope="module")
def npm_tools():
    interop_tools.install("npm")


def test_demo_glb_validates_and_loads_in_trimesh(npm_tools, tmp_path_factory):
    import trimesh

    face = interop_tools.demo_outputs(tmp_path_factory.getbasetemp()) / "astronaut"
    (report,) = validate(face / "mesh.glb")
    print(json.dumps({k: report[k] for k in ("errors", "warnings", "infos", "hints")}), report["info"])
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    assert report["info"]["hasMorphTargets"] and report["info"]["hasTextures"]
    record = json.loads((face / "coefficients.json").read_text())
    document, _ = gltf.read_glb((face / "mesh.glb").read_bytes())
    mesh = document["meshes"][0]
    assert mesh["extras"]["targetNames"] == record["expression_names"]
    assert len(mesh["primitives"][0]["targets"]) == 53
    np.testing.assert_allclose(mesh["weights"], record["coefficients"]["exp"], atol=1e-6)
    # With the face model's parts (eyes, teeth, ...) both files load as scenes: one geometry per material.
    def geometries(path):
        loaded = trimesh.load(path, process=False)
        return list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]

    glb, obj = geometries(face / "mesh.glb"), geometries(face / "mesh.obj")
    assert sum(len(g.faces) for g in glb) == sum(len(g.faces) for g in obj)
    textured = [g for g in glb if getattr(g.visual.material, "baseColorTexture", None) is not None]
    assert len(textured) == 1 and textured[0].visual.material.baseColorTexture.size == (256, 256)
    assert len(glb) == len(mesh["primitives"])


def test_glb_with_parts_validates(npm_tools, tiny_model, tmp_path):
    import cv2

    textured = np.flatnonzero(tiny_model.textured_triangles)
    parts = [gltf.MeshPart("face_albedo", textured[50:]),
             gltf.MeshPart("teeth", textured[:50], base_color=(0.95, 0.93, 0.88, 1.0), textured=False)]
    png = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    rng = np.random.default_rng(0)
    exp = rng.normal(0, 0.3, tiny_model.num_exp)
    vertices = tiny_model.mean_shape + np.einsum("e,enc->nc", exp, tiny_model.exp_basis)
    path = tmp_path / "parts.glb"
    path.write_bytes(gltf.face_glb(tiny_model, vertices, exp, png, 64, parts=parts))
    (report,) = validate(path)
    assert report["errors"] == 0 and report["warnings"] == 0, report["messages"]
    assert report["info"]["drawCallCount"] == 2 and report["info"]["materialCount"] == 2
