"""One face folder: `write_face_outputs` writes every file of `OUTPUT_FILES` for a `FaceResult`, and
`write_group_outputs` the folder of several photos of one person (`GroupResult`); no TensorFlow."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import List

import cv2
import numpy as np

from tf_facetex import io_utils, viewer
from tf_facetex.data.align import apply_affine, paste_back
from tf_facetex.errors import FaceTexError
from tf_facetex.export import gltf as gltf_export
from tf_facetex.export import mesh as mesh_export
from tf_facetex.pipeline.result import (FORMAT, GROUP_PHOTO_FILES, OUTPUT_FILES, PHOTOS_FOLDER, RESULT_MARKER,
                                        FaceResult, GroupResult)
from tf_facetex.visualize import to_uint8


@dataclasses.dataclass
class OutputOptions:
    mesh_pose: str = "unposed"        # 'unposed' (identity + expression, model frame) or 'posed' (as in the photo)
    mesh_normals: bool = True         # write `vn`
    thumbnail_size: int = 128


def coefficients_record(result: FaceResult, model, layout, source, info=None) -> dict:
    """The content of coefficients.json (plain JSON types)."""
    parts = {name: result.coeffs[part].tolist() for name, part in layout.slices.items()}
    face = result.face
    pitch, yaw, roll = np.degrees(result.coeffs[layout.slices["angles"]]).tolist()
    record = {
        "format": FORMAT,
        "source_image": str(source),
        "face_index": int(getattr(face, "face_index", 0)),
        "face_model": {"name": model.name, "source": model.source, "albedo_source": model.albedo_source,
                       "num_vertices": model.num_vertices, "coefficient_sizes": layout.to_dict()},
        "coefficients": parts,
        "coefficient_order": list(layout.sizes),
        "expression_names": list(model.exp_names),
        "angles_degrees": {"pitch": pitch, "yaw": yaw, "roll": roll},
        "tone": result.tone.tolist(),
        "part_albedo": ({} if result.part_albedo is None else  # eyes, teeth, ... (tf_facetex.rendering.parts)
                        {name: np.asarray(result.part_albedo[k]).round(5).tolist()
                         for k, name in enumerate(model.part_names) if k > 0}),
        "alignment": {
            "crop_size": int(face.image.shape[0]),
            "transform": np.asarray(face.transform).tolist(),
            "inverse": np.asarray(face.inverse).tolist(),
            "original_shape": [int(v) for v in face.original_shape[:2]],
            "landmarks_crop": np.asarray(face.landmarks).tolist(),
            "landmarks_photo": apply_affine(face.inverse, face.landmarks).tolist(),
            "box": None if face.box is None else np.asarray(face.box).tolist(),
            "detector_score": float(face.score),
            "detector": getattr(face, "detector", "hog"),
        },
        "grayscale_input": bool(getattr(face, "grayscale", False)),
        "conventions": {
            "coefficients": "[id, exp, tex, angles(3, radians: pitch, yaw, roll), gamma(27), translation(3, dm)]",
            "pose": "R = Rz(roll) Ry(yaw) Rx(pitch), posed = R v + t; model units decimetres, y up, face towards +z",
            "camera": "at z = +10 dm looking down -z, focal 1015 px at 224 px, principal point (size - 1) / 2",
            "gamma": "Deng layout [R0..R8, G0..G8, B0..B8]; 0.8 is added to each DC term at shading time",
            "albedo": "albedo.png = A' in the photo's colour values (the method does not linearise); the prior's "
                      "tone is already in it",
            "alignment": "transform maps photo pixels -> crop pixels (x right, y down, integer pixel centres)",
            "mesh": "mesh.obj in metres (x 0.1 of the model's decimetres), same frame",
        },
        "metrics": result.metrics,
    }
    if info:
        record.update(info)
    return record


def _rgba(colour, alpha):
    """[H, W, 3] float + [H, W, 1] -> uint8 [H, W, 4]."""
    return np.concatenate([to_uint8(np.clip(colour, 0, 1)), to_uint8(np.clip(alpha, 0, 1))], axis=-1)


def composite(image, render, mask):
    """The render over the image inside the mask: [H, W, 3] floats in [0, 1], [H, W, 1] -> [H, W, 3]."""
    return np.clip(render, 0, 1) * mask + np.asarray(image, np.float32) * (1.0 - mask)


def photo_overlay(result: FaceResult, photo, feather_px=1.5):
    """R(A', L') pasted back onto the original photo inside the face mask M_face (the region the reconstruction
    explains; hair, neck and background stay the photo's): uint8 [H0, W0, 3], edges feathered a little."""
    mask = result.face_mask[..., 0] * result.face.valid
    if feather_px > 0:
        mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather_px) * (mask > 0)
    return paste_back(np.clip(result.render_detailed, 0, 1).astype(np.float32), result.face.transform,
                      result.face.original_shape, mask=mask, background=photo)


def thumbnail(result: FaceResult, size=128):
    """aligned | R(A', L') over the crop | albedo, each ``size`` px: uint8 [size, 3 size, 3]."""
    crop = result.face.image.astype(np.float32) / 255.0
    cells = [crop, composite(crop, result.render_detailed, result.render_mask), np.clip(result.albedo_uv, 0, 1)]
    return np.concatenate([cv2.resize(to_uint8(cell), (size, size), interpolation=cv2.INTER_AREA) for cell in cells],
                          axis=1)


def write_face_outputs(result: FaceResult, folder, model, layout, photo, source, uv_mask,
                       options: OutputOptions = OutputOptions(), info=None) -> List[pathlib.Path]:
    """Writes every file of `OUTPUT_FILES` for one face into ``folder`` (which should be a temporary folder that
    the caller renames when this returns; see `reconstruct_inputs`). Returns the paths written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uv_mask = np.asarray(uv_mask, np.float32).reshape(result.albedo_uv.shape[:2])
    fill = lambda values: mesh_export.fill_outside_mask(values, uv_mask)  # noqa: E731
    written = []
    if options.mesh_pose == "posed":
        vertices, normals = result.posed_vertices, result.posed_normals
    elif options.mesh_pose == "unposed":
        vertices, normals = result.vertices, result.normals
    else:
        raise FaceTexError(f"mesh pose must be 'unposed' or 'posed', got {options.mesh_pose!r}")
    mesh = mesh_export.textured_mesh(model, vertices, normals if options.mesh_normals else None,
                                     uv_size=result.albedo_uv.shape[0])
    header = [f"tf_facetex reconstruction of {source} (face {getattr(result.face, 'face_index', 0)})",
              f"face model {model.name}; {options.mesh_pose}; metres, y up, face towards +z"]
    parts = mesh_export.part_meshes(model, vertices, normals if options.mesh_normals else None, result.part_albedo)
    paths = mesh_export.write_textured_obj(folder, mesh, np.clip(result.albedo_uv, 0, 1), texture_name="albedo.png",
                                           uv_mask=uv_mask, header=header, parts=parts)
    written += [paths["texture"], paths["mtl"], paths["obj"]]
    posed_vertices = result.posed_vertices if options.mesh_pose == "posed" else None
    written.append(gltf_export.write_face_glb(
        folder / "mesh.glb", model, result.vertices, result.coeffs[layout.slices["exp"]], paths["texture"],
        posed_vertices=posed_vertices, part_albedo=result.part_albedo))
    written.append(viewer.write_face_viewer(folder, model, result.vertices, paths["texture"], posed_vertices,
                                            part_albedo=result.part_albedo))
    written.append(io_utils.write_npy(folder / "illumination.npy", fill(result.light_uv).astype(np.float32)))
    written.append(io_utils.write_image(folder / "shading.png", fill(np.clip(result.shading_uv, 0, 1))))
    written.append(io_utils.write_image(folder / "visibility.png", result.visibility_uv[..., 0] * uv_mask))
    written.append(io_utils.write_image(folder / "aligned.png", result.face.image))
    written.append(io_utils.write_image(folder / "render_detailed.png",
                                        _rgba(result.render_detailed, result.render_mask)))
    written.append(io_utils.write_image(folder / "render_coarse.png", _rgba(result.render_coarse, result.render_mask)))
    written.append(io_utils.write_image(folder / "overlay.jpg", photo_overlay(result, photo)))
    if result.turntable is not None:
        written.append(io_utils.write_image(folder / "turntable.png", result.turntable))
    written.append(io_utils.write_image(folder / "thumbnail.jpg", thumbnail(result, options.thumbnail_size)))
    record = coefficients_record(result, model, layout, source, info)
    record["mesh_pose"] = options.mesh_pose
    record["files"] = {path.name: OUTPUT_FILES.get(path.name, "") for path in written}
    written.append(io_utils.write_json(folder / RESULT_MARKER, record))   # last: marks the folder complete
    return written


def photo_record(result: FaceResult, layout, source, folder) -> dict:
    """One photo of a group in the person's coefficients.json: where it is, its own coefficients (pose,
    expression, light; identity and albedo coefficients are the person's), alignment and metrics."""
    face = result.face
    pitch, yaw, roll = np.degrees(result.coeffs[layout.slices["angles"]]).tolist()
    return {"source_image": str(source), "folder": str(folder),
            "coefficients": {name: result.coeffs[layout.slices[name]].tolist()
                             for name in ("exp", "angles", "gamma", "translation")},
            "angles_degrees": {"pitch": pitch, "yaw": yaw, "roll": roll},
            "alignment": {"transform": np.asarray(face.transform).tolist(),
                          "detector": getattr(face, "detector", "hog"),
                          "landmarks_crop": np.asarray(face.landmarks).tolist()},
            "grayscale_input": bool(getattr(face, "grayscale", False)),
            "metrics": result.metrics}


def write_group_photo(result: FaceResult, folder, photo, uv_mask) -> List[pathlib.Path]:
    """The per-photo files of a group (`GROUP_PHOTO_FILES`): the crop, R(A', L'_k) and R(A', L_k) with the
    person's albedo, the overlay on the photo and the photo's light. Returns the paths written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uv_mask = np.asarray(uv_mask, np.float32).reshape(result.albedo_uv.shape[:2])
    fill = lambda values: mesh_export.fill_outside_mask(values, uv_mask)  # noqa: E731
    return [io_utils.write_image(folder / "aligned.png", result.face.image),
            io_utils.write_image(folder / "render_detailed.png", _rgba(result.render_detailed, result.render_mask)),
            io_utils.write_image(folder / "render_coarse.png", _rgba(result.render_coarse, result.render_mask)),
            io_utils.write_image(folder / "overlay.jpg", photo_overlay(result, photo)),
            io_utils.write_npy(folder / "illumination.npy", fill(result.light_uv).astype(np.float32)),
            io_utils.write_image(folder / "visibility.png", result.visibility_uv[..., 0] * uv_mask)]


def write_group_outputs(group: GroupResult, folder, model, layout, photos, sources, names, uv_mask,
                        options: OutputOptions = OutputOptions(), info=None) -> List[pathlib.Path]:
    """The face folder of several photos of one person: every file of `write_face_outputs` for
    ``group.person`` (the shared albedo on the expression-free shape, the first photo's pose and light), plus
    ``photos/<name>/`` per photo (`write_group_photo`); coefficients.json lists the photos (`photo_record`).

    Args: photos: the original uint8 photos, sources: their paths, names: their sub-folder names (unique), all in
    ``group.photos``' order; the rest as `write_face_outputs`. Returns the paths written."""
    if not (len(group.photos) == len(photos) == len(sources) == len(names)) or len(set(names)) != len(names):
        raise FaceTexError("a group's photos, sources and (unique) names must match its results")
    folder = pathlib.Path(folder)
    written, records = [], []
    for result, photo, source, name in zip(group.photos, photos, sources, names):
        written += write_group_photo(result, folder / PHOTOS_FOLDER / name, photo, uv_mask)
        records.append(photo_record(result, layout, source, f"{PHOTOS_FOLDER}/{name}"))
    same_person = {"photos": records, "reference_photo": 0,
                   "what": "one identity, one expression-free shape and one albedo fitted to all the photos; a pose, "
                           "expression and light per photo. The folder's renders, light and coefficients are the "
                           "expression-free face at the first photo's pose under its light; visibility.png is the "
                           "union of the photos'",
                   "photo_files": dict(GROUP_PHOTO_FILES)}
    written += write_face_outputs(group.person, folder, model, layout, photos[0], sources[0], uv_mask, options,
                                  info={**(info or {}), "same_person": same_person})
    return written
