"""Blender as a client of the outputs: imports a face folder's mesh.obj + mesh.mtl + albedo.png into Blender (the
``bpy`` module from PyPI), renders it with Cycles on the CPU from the reconstruction's camera with an emission
shader (the albedo as it is, no lighting), and compares the image with our own renderer's albedo render of the same
view. Agreement (PSNR on the face) means the axes, the pose, the UV orientation, the half-texel shift and the
texture binding are what the README says.

    bash scripts/install_tools.sh bpy      # once: Blender's Python module in ~/.cache/tf_facetex/bpy_venv (~500 MB)
    PYTHONPATH=$PWD .venv/bin/python scripts/blender_check.py --face_dir outputs/demo/astronaut \
        --out docs/results/blender_check.png

Writes the figure (ours | Blender | |difference| x 8) and a JSON report (PSNR, mask size) beside it; exits 1 when the
PSNR is below --min_psnr. The Blender side runs in the bpy venv's Python (this same file with --blender_side),
since bpy needs its own interpreter build; it imports neither TensorFlow nor tf_facetex.
"""
import json
import os
import pathlib
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("face_dir", None, "A face folder written by scripts/reconstruct.py.")
flags.DEFINE_string("out", None, "Output figure (PNG); the JSON report goes beside it (.json). Default: "
                    "<face_dir>/blender_check.png.")
flags.DEFINE_integer("size", 0, "Render size in pixels (default: the reconstruction's crop size, 224).")
flags.DEFINE_float("min_psnr", 30.0, "Exit 1 below this PSNR (dB) on the face.")
flags.DEFINE_integer("samples", 16, "Cycles samples per pixel.")
flags.DEFINE_string("bpy_python", os.path.expanduser("~/.cache/tf_facetex/bpy_venv/bin/python"),
                    "A Python with the bpy module (scripts/install_tools.sh bpy).")
flags.DEFINE_string("face_model", None, "The face model the reconstruction was made with (default: as "
                    "load_face_model).")
flags.DEFINE_integer("erode_px", 2, "Face-mask erosion before the comparison (silhouette pixels differ by "
                     "anti-aliasing and coverage rules, not by texture).")
# Blender side (internal).
flags.DEFINE_bool("blender_side", False, "Internal: run the Blender render (in the bpy interpreter).")
flags.DEFINE_string("render_out", None, "Internal: the Blender render's PNG.")
flags.DEFINE_float("focal_px", 0.0, "Internal: focal length in pixels at --size.")
flags.DEFINE_float("camera_z_m", 0.0, "Internal: camera position on +z in metres.")
FLAGS = flags.FLAGS


# ---------------------------------------------------------------------------------------------- Blender side
def blender_render(face_dir, out_png, size, focal_px, camera_z_m, samples):
    """In the bpy interpreter: the face folder's OBJ, posed as coefficients.json says, rendered with an emission
    shader from our camera. Returns a dict of what it found (for the report)."""
    import bpy
    from mathutils import Euler, Matrix, Vector

    face_dir = pathlib.Path(face_dir)
    record = json.loads((face_dir / "coefficients.json").read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # The user's import (README): File > Import > Wavefront (.obj). up_axis='Z', forward_axis='Y' keeps the file's
    # axes as they are (our y-up frame), so the pose and the camera below are ours; the default (-Z forward, Y up)
    # turns the face upright in Blender's Z-up frame instead, which is what a user wants interactively.
    bpy.ops.wm.obj_import(filepath=str(face_dir / "mesh.obj"), forward_axis="Y", up_axis="Z")
    # The face model's parts (eyes, teeth, gums, sockets) come in as flat-coloured objects of their own; the check is
    # about the textured face (axes, UVs, half-texel shift, texture binding), so they are removed.
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    textured = [o for o in meshes if any(n.type == "TEX_IMAGE" and n.image is not None
                                         for m in o.data.materials if m is not None and m.node_tree is not None
                                         for n in m.node_tree.nodes)]
    (obj,) = textured
    for other in meshes:
        if other is not obj:
            bpy.data.objects.remove(other, do_unlink=True)
    first = obj.data.vertices[0].co
    obj_text = (face_dir / "mesh.obj").read_text().splitlines()
    v0 = next([float(t) for t in line.split()[1:4]] for line in obj_text if line.startswith("v "))
    assert (Vector(v0) - first).length < 1e-5, f"the importer moved the axes: {v0} -> {tuple(first)}"

    # The material the importer built from mesh.mtl: find its image (albedo.png) and show it as emission.
    material = obj.active_material
    images = [n for n in material.node_tree.nodes if n.type == "TEX_IMAGE" and n.image is not None]
    assert images, "the importer did not bind map_Kd albedo.png"
    image_node = images[0]
    image_name = pathlib.Path(bpy.path.abspath(image_node.image.filepath)).name
    image_node.interpolation = "Linear"
    image_node.image.colorspace_settings.name = "sRGB"
    nodes, links = material.node_tree.nodes, material.node_tree.links
    for node in [n for n in nodes if n.type not in ("TEX_IMAGE", "OUTPUT_MATERIAL")]:
        nodes.remove(node)
    output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    links.new(image_node.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])

    # Pose: posed = R v + t with R = Rz(roll) Ry(yaw) Rx(pitch) (Blender's 'XYZ' Euler), t in decimetres.
    if record.get("mesh_pose", "unposed") == "unposed":
        pitch, yaw, roll = record["coefficients"]["angles"]
        translation = Vector(record["coefficients"]["translation"]) * 0.1
        obj.matrix_world = Matrix.Translation(translation) @ Euler((pitch, yaw, roll), "XYZ").to_matrix().to_4x4()

    scene = bpy.context.scene
    camera_data = bpy.data.cameras.new("camera")
    camera_data.sensor_fit = "HORIZONTAL"
    camera_data.sensor_width = 36.0
    camera_data.lens = focal_px / size * camera_data.sensor_width
    camera_data.clip_start, camera_data.clip_end = 0.01, 100.0
    camera = bpy.data.objects.new("camera", camera_data)
    camera.location = (0.0, 0.0, camera_z_m)      # looks down its -z with +y up: our camera, unrotated
    scene.collection.objects.link(camera)
    scene.camera = camera

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 0
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 0.01              # sample at pixel centres, as our rasteriser does
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.dither_intensity = 0.0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = 2
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.render.filepath = str(out_png)
    bpy.ops.render.render(write_still=True)
    return {"blender_version": bpy.app.version_string, "texture": image_name, "material": material.name,
            "vertices": len(obj.data.vertices), "polygons": len(obj.data.polygons)}


# ---------------------------------------------------------------------------------------------- our side
def our_albedo_render(face_dir, size, face_model=None):
    """Our renderer's albedo-only image of the folder's face at its fitted pose: ([H, H, 3], [H, H, 1]) floats."""
    import tensorflow as tf

    from tf_facetex import camera, pipeline
    from tf_facetex.face_model import CoefficientLayout, FaceDecoder, load_face_model
    from tf_facetex.rendering import FaceRenderer

    data = pipeline.load_reconstruction(face_dir)
    model = load_face_model(face_model, log=lambda *_: None)
    layout = CoefficientLayout.for_model(model)
    parts = layout.split(pipeline.coefficients_from_record(data["record"], layout)[None])
    vertices = FaceDecoder(model)({"id": parts["id"], "exp": parts["exp"]})["vertices"]
    posed = camera.rigid_transform(vertices, tf.constant(parts["angles"]), tf.constant(parts["translation"]))
    renderer = FaceRenderer(model, size, data["albedo_uv"].shape[0])
    image, mask = renderer.render_uv_maps(data["albedo_uv"][None], renderer.rasterize(posed))
    return image.numpy()[0], mask.numpy()[0]


def psnr_on_mask(a, b, mask):
    """PSNR (dB, peak 1) of two [H, W, 3] images over the pixels where ``mask`` [H, W] is true."""
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64)[mask] - np.asarray(b, np.float64)[mask]) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def check(face_dir, out, size, min_psnr, samples, bpy_python, face_model, erode_px):
    import cv2
    import numpy as np

    from tf_facetex import camera, io_utils
    from tf_facetex.data.images import load_image

    face_dir = pathlib.Path(face_dir)
    record = json.loads((face_dir / "coefficients.json").read_text())
    size = size or int(record.get("alignment", {}).get("crop_size", 224))
    out = pathlib.Path(out or face_dir / "blender_check.png")
    render_png = out.with_name(out.stem + "_blender_render.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not pathlib.Path(bpy_python).is_file():
        raise SystemExit(f"no bpy interpreter at {bpy_python}: run scripts/install_tools.sh bpy")
    proc = subprocess.run(
        [bpy_python, os.path.abspath(__file__), "--blender_side", f"--face_dir={face_dir}",
         f"--render_out={render_png}", f"--size={size}", f"--focal_px={camera.focal_length(size)}",
         f"--camera_z_m={camera.CAMERA_DISTANCE * 0.1}", f"--samples={samples}"],
        capture_output=True, text=True, timeout=1800, env=dict(os.environ, PYTHONPATH=""))
    if proc.returncode != 0:
        raise SystemExit(f"the Blender side failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    blender_info = json.loads(proc.stdout.strip().splitlines()[-1])
    rgba = cv2.imread(str(render_png), cv2.IMREAD_UNCHANGED)
    blender = cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 255.0
    ours, our_mask = our_albedo_render(face_dir, size, face_model)
    # Our render samples albedo.png's 8-bit values exactly as Blender reads them.
    albedo_file = load_image(face_dir / "albedo.png", min_side=2)
    assert albedo_file.shape[0] == albedo_file.shape[1]
    face = (our_mask[..., 0] > 0.5) & (blender[..., 3] > 0.99)
    face = cv2.erode(face.astype(np.uint8), np.ones((2 * erode_px + 1,) * 2, np.uint8)) > 0
    psnr = psnr_on_mask(ours, blender[..., :3], face)
    silhouette_iou = float(((our_mask[..., 0] > 0.5) & (blender[..., 3] > 0.5)).sum()
                           / max(((our_mask[..., 0] > 0.5) | (blender[..., 3] > 0.5)).sum(), 1))
    diff = np.abs(ours - blender[..., :3]) * face[..., None]
    figure = np.concatenate([np.clip(ours, 0, 1) * our_mask, blender[..., :3] * blender[..., 3:],
                             np.clip(diff * 8.0, 0, 1)], axis=1)
    io_utils.write_image(out, figure)
    report = {"face_dir": str(face_dir), "size": size, "psnr_db_on_face": round(psnr, 3),
              "face_pixels": int(face.sum()), "silhouette_iou": round(silhouette_iou, 4),
              "max_abs_diff_on_face": float(diff.max()), "min_psnr": min_psnr, "cycles_samples": samples,
              "mesh_pose": record.get("mesh_pose", "unposed"), "blender": blender_info,
              "figure": "ours | Blender Cycles (emission) | |difference| x 8 on the compared face pixels"}
    io_utils.write_json(out.with_suffix(".json"), report)
    print(json.dumps(report))
    return report


def main(argv):
    del argv
    if FLAGS.blender_side:
        info = blender_render(FLAGS.face_dir, FLAGS.render_out, FLAGS.size, FLAGS.focal_px, FLAGS.camera_z_m,
                              FLAGS.samples)
        print(json.dumps(info))
        return
    if not FLAGS.face_dir:
        raise SystemExit("--face_dir is required")
    report = check(FLAGS.face_dir, FLAGS.out, FLAGS.size, FLAGS.min_psnr, FLAGS.samples, FLAGS.bpy_python,
                   FLAGS.face_model, FLAGS.erode_px)
    if report["psnr_db_on_face"] < FLAGS.min_psnr:
        print(f"PSNR {report['psnr_db_on_face']:.2f} dB < {FLAGS.min_psnr} dB", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
