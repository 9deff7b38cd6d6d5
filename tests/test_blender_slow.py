"""Blender as a client (slow: installs PyPI bpy, ~500 MB, into its own venv): the demo's mesh.obj + mesh.mtl +
albedo.png imported into Blender and rendered with Cycles (CPU, emission shader) from the reconstruction's camera
match our albedo render of the same view; a copy with the UVs flipped does not (the check can fail)."""
import json
import re
import shutil
import sys

import pytest

import interop_tools

from tf_facetex.export import gltf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_face(tmp_path_factory):
    interop_tools.install("bpy")
    return interop_tools.demo_outputs(tmp_path_factory.getbasetemp()) / "astronaut"


def blender_check(face_dir, out, expect_pass=True):
    args = [sys.executable, interop_tools.ROOT / "scripts" / "blender_check.py", f"--face_dir={face_dir}",
            f"--out={out}", f"--bpy_python={interop_tools.BPY_PYTHON}"]
    if expect_pass:
        interop_tools.run(args, timeout=1800)
    else:
        import subprocess
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1800,
                              env=dict(__import__("os").environ, PYTHONPATH=str(interop_tools.ROOT)))
        assert proc.returncode == 1, proc.stderr[-3000:]
    return json.loads(out.with_suffix(".json").read_text())


def test_blender_render_matches_ours(demo_face, tmp_path):
    report = blender_check(demo_face, tmp_path / "blender_check.png")
    print(json.dumps(report))
    assert report["psnr_db_on_face"] >= 30.0, report
    assert report["face_pixels"] > 10000 and report["silhouette_iou"] > 0.98, report
    assert report["blender"]["texture"] == "albedo.png" and report["blender"]["polygons"] > 10000
    assert (tmp_path / "blender_check.png").is_file()


def test_flipped_uvs_fail_the_check(demo_face, tmp_path):
    broken = tmp_path / "flipped"
    shutil.copytree(demo_face, broken)
    obj = (broken / "mesh.obj").read_text()
    obj = re.sub(r"^vt (\S+) (\S+)$", lambda m: f"vt {m.group(1)} {1.0 - float(m.group(2)):.6f}", obj, flags=re.M)
    (broken / "mesh.obj").write_text(obj)
    report = blender_check(broken, tmp_path / "flipped.png", expect_pass=False)
    print(json.dumps(report))
    assert report["psnr_db_on_face"] < 25.0, report


def test_blender_imports_the_glb_with_named_shape_keys(demo_face):
    script = f"""
import json, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath={str(demo_face / 'mesh.glb')!r})
(obj,) = [o for o in bpy.context.scene.objects if o.type == 'MESH']
keys = obj.data.shape_keys.key_blocks
image = [n.image.size[:] for m in obj.data.materials if m is not None for n in m.node_tree.nodes
         if n.type == 'TEX_IMAGE']
print(json.dumps({{"names": [k.name for k in keys], "values": [k.value for k in keys], "images": image,
                   "polygons": len(obj.data.polygons)}}))
"""
    proc = interop_tools.run([interop_tools.BPY_PYTHON, "-c", script], timeout=600, env={"PYTHONPATH": ""})
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    record = json.loads((demo_face / "coefficients.json").read_text())
    assert report["names"][0] == "Basis" and report["names"][1:] == record["expression_names"]
    expected = [min(max(w, 0.0), 1.0) for w in record["coefficients"]["exp"]]   # Blender clamps to the key range
    assert max(abs(a - b) for a, b in zip(report["values"][1:], expected)) < 1e-4, (report["values"], expected)
    document, _ = gltf.read_glb((demo_face / "mesh.glb").read_bytes())
    triangles = sum(document["accessors"][primitive["indices"]]["count"] // 3
                    for primitive in document["meshes"][0]["primitives"])   # the face and its parts
    assert report["images"] == [[256, 256]] and report["polygons"] == triangles
