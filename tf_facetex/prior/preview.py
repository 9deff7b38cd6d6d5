"""Inspection grids for the prior module: input | coarse render | overlay with landmarks | unwrapped | prior albedo."""
import cv2
import numpy as np

from tf_facetex import visualize


def draw_landmarks(image, landmarks, colour=(0, 255, 0), radius=1):
    """uint8 copy of ``image`` with points drawn: [H, W, 3], [68, 2] -> [H, W, 3]."""
    image = visualize.to_uint8(image).copy()
    for x, y in np.asarray(landmarks):
        cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
    return image


def prior_preview(result, max_rows=8):
    """A uint8 grid from a `PriorModule` output dict (tensors or arrays)."""
    values = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in result.items()}
    size = values["image"].shape[1]
    rows = []
    for b in range(min(max_rows, values["image"].shape[0])):
        image = values["image"][b]
        coarse = np.clip(values["coarse_render"][b], 0, 1)
        mask = values["proj_mask"][b]
        overlay = draw_landmarks(0.5 * image + 0.5 * (coarse * mask + image * (1 - mask)), values["landmarks"][b])
        texture = cv2.resize(values["texture_uv"][b], (size, size))
        albedo = cv2.resize(np.clip(values["prior_albedo_uv"][b], 0, 1), (size, size))
        psnr = values.get("coarse_psnr")
        rows.append([visualize.label(image, "input"),
                     visualize.label(coarse, "coarse" + (f" {psnr[b]:.1f} dB" if psnr is not None else "")),
                     visualize.label(overlay, "overlay"), visualize.label(texture, "unwrapped T"),
                     visualize.label(albedo, "prior albedo A")])
    return visualize.grid(rows)
