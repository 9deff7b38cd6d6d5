"""What one reconstructed face is (`FaceResult`) and what a face folder holds (`OUTPUT_FILES`); no TensorFlow."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

TURNTABLE_YAWS = tuple(float(a) for a in np.linspace(-60.0, 60.0, 8))
TURNTABLE_LIGHT = "studio"
RESULT_MARKER = "coefficients.json"   # a face folder is complete when it exists under its final name
FORMAT = "tf_facetex.reconstruction/1"

# What a face folder holds (also the legend of index.html and of the README's "Outputs" section).
OUTPUT_FILES = {
    "albedo.png": "A': the detailed albedo UV texture (lighting removed), dilated outside the UV chart",
    "illumination.npy": "L': float32 [S, S, 27] per-texel SH light (Deng layout, no 0.8 ambient; dilated)",
    "shading.png": "the shading L' gives the face's normal map, per texel (clipped to [0, 1])",
    "visibility.png": "texels the photo showed (white) vs. completed ones (black)",
    "mesh.obj": "textured mesh (metres, y up, face towards +z; `vt` half-texel exact)",
    "mesh.mtl": "material referencing albedo.png",
    "mesh.glb": "glTF 2.0: the same mesh, albedo embedded, the expressions as named morph targets",
    "viewer.html": "interactive 3D viewer of the face with a movable light (self-contained, works offline)",
    "coefficients.json": "named coefficients, tone, face model, alignment transform, camera, metrics",
    "aligned.png": "the aligned 224 x 224 input crop",
    "render_detailed.png": "R(A', L'): the re-render with the detailed light (RGBA, alpha = rendered face)",
    "render_coarse.png": "R(A', L): the same albedo under the global (coarse) SH light (RGBA)",
    "overlay.jpg": "R(A', L') pasted back onto the original photo (inside the face mask)",
    "turntable.png": "the albedo relit by a fixed preset light at 8 yaw angles",
    "thumbnail.jpg": "aligned | R(A', L') | albedo, for the contact sheet",
}


# A face folder of several photos of one person (`pipeline.outputs.write_group_outputs`) also holds, per photo,
# photos/<name>/ with these files (the albedo is the person's, in the folder itself).
PHOTOS_FOLDER = "photos"
GROUP_PHOTO_FILES = {
    "aligned.png": "the photo's aligned crop",
    "render_detailed.png": "R(A', L'): the person's albedo under this photo's light map, at its pose and expression",
    "render_coarse.png": "R(A', L): the same under this photo's global SH light",
    "overlay.jpg": "R(A', L') pasted back onto this photo",
    "illumination.npy": "L': this photo's per-texel SH light (as the folder's illumination.npy)",
    "visibility.png": "texels this photo showed",
}


@dataclasses.dataclass
class FaceResult:
    """One reconstructed face (numpy; H = image size, S = UV size, N = vertices)."""

    face: object                    # the `AlignedFace` (crop, landmarks, transform, inverse, original_shape, ...)
    coeffs: np.ndarray              # [C] in the model's `CoefficientLayout`
    tone: np.ndarray                # [3] albedo tone (models without an albedo basis; part of the albedo)
    albedo_uv: np.ndarray           # [S, S, 3] A' in [0, 1], 0 outside the chart
    light_uv: np.ndarray            # [S, S, 27] L'
    shading_uv: np.ndarray          # [S, S, 3] shading of the normal map by L'
    normals_uv: np.ndarray          # [S, S, 3] camera-frame normals
    visibility_uv: np.ndarray       # [S, S, 1]
    render_detailed: np.ndarray     # [H, H, 3] R(A', L')
    render_coarse: np.ndarray       # [H, H, 3] R(A', L), L = gamma
    render_mask: np.ndarray         # [H, H, 1] M_proj, plus the pixels of the model's parts (eyes, teeth, ...)
    face_mask: np.ndarray           # [H, H, 1] M_face = face (skin) mask x M_proj: where the photo is explained
    vertices: np.ndarray            # [N, 3] fitted identity + expression, model frame, decimetres (unposed)
    normals: np.ndarray             # [N, 3] their unit normals
    posed_vertices: np.ndarray      # [N, 3] world frame (camera at z = +10 dm)
    posed_normals: np.ndarray       # [N, 3]
    turntable: Optional[np.ndarray]  # [H, H * views, 3] in [0, 1], or None
    metrics: dict
    part_albedo: Optional[np.ndarray] = None  # [P, 3] reflectance of the model's parts (eyes, teeth, ...), or None


@dataclasses.dataclass
class GroupResult:
    """Several photos of one person reconstructed together (`Reconstructor.reconstruct_group`).

    person: what the face folder shows: the shared albedo on the expression-free shape, at the first photo's pose
      under its light (visibility: the union of the photos'); photos: one `FaceResult` per photo (its pose,
      expression and light; the shared albedo), in the input order."""

    person: FaceResult
    photos: list
