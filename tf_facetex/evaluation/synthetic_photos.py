"""The synthetic evaluation end to end from image files: the product's detection, alignment, masking and fit.

The refinement samples of scripts/evaluate.py start from the generator's true landmarks and face mask; a user
starts from a photo. Here each image file of a scripts/make_synthetic.py folder is read and reconstructed twice
by the same `Reconstructor` (scripts/reconstruct.py's defaults):

- **true landmarks**: the crop with the generator's landmarks and face mask (`data.synthetic.true_aligned_face`),
  as the refinement samples have them;
- **detected**: the file through the product's `FaceFinder` (detection, 68 landmarks, alignment to the 224
  template, the face masker), as `scripts/reconstruct.py` reads a photo.

Two crossed paths separate what the detected path loses to its landmarks from what it loses to its mask
(``paths`` of `evaluate_from_images`):

- **true landmarks, product mask**: the true crop, masked by the finder's face masker instead of the true mask;
- **detected, true mask**: the detected crop, with the generator's face mask warped through its alignment.

Every albedo is scored against the true albedo in UV (`variants.albedo_truth_metrics`: si-RMSE, the best flat
colour and whether the albedo beats it, completion). A file without a detection counts as not reconstructed; the
detected landmarks' error (mean pixel distance to the truth in the file's pixels) says how well it was found.
The finder and reconstructor are passed in (the product's objects; this layer cannot import the pipeline).
"""
import collections
import dataclasses
import pathlib
import time

import cv2
import numpy as np

from tf_facetex.data.images import load_image
from tf_facetex.data.synthetic import load_manifest, load_synthetic_face, true_aligned_face
from tf_facetex.errors import NoFaceError
from tf_facetex.evaluation.variants import albedo_truth_metrics

PATHS = ("true_landmarks", "detected")
CROSSED_PATHS = ("true_landmarks_product_mask", "detected_true_mask")
SUMMARY_KEYS = ("albedo_si_rmse", "albedo_flat_rmse", "albedo_beats_flat", "albedo_seen_si_rmse",
                "albedo_unseen_rmse", "albedo_ssim", "detailed_psnr_db", "uv_seen_fraction", "landmark_error_px")


def landmark_error(face, true_landmarks) -> float:
    """Mean distance (pixels of the file) between a found face's 68 landmarks, mapped back through its
    alignment, and the true ones [68, 2]."""
    crop = np.asarray(face.landmarks, np.float64)
    back = crop @ np.asarray(face.inverse, np.float64)[:, :2].T + np.asarray(face.inverse, np.float64)[:, 2]
    return float(np.linalg.norm(back - np.asarray(true_landmarks, np.float64), axis=-1).mean())


def with_product_mask(aligned, masker):
    """The `AlignedFace` with its mask replaced by the masker's (``masker(image, landmarks) -> [S, S]``)."""
    return dataclasses.replace(aligned, mask=np.asarray(masker(aligned.image, aligned.landmarks), np.float32)
                               * aligned.valid)


def with_true_mask(aligned, true_mask):
    """The detected `AlignedFace` with the generator's face mask [H, W] of the file warped into its crop
    (nearest neighbour, so that it stays binary)."""
    size = aligned.image.shape[0]
    warped = cv2.warpAffine(np.asarray(true_mask, np.float32), np.asarray(aligned.transform, np.float64),
                            (size, size), flags=cv2.INTER_NEAREST, borderValue=0.0)
    return dataclasses.replace(aligned, mask=warped.astype(np.float32) * aligned.valid)


def score_results(results, truths, uv_mask) -> dict:
    """{metric: [B]} of `FaceResult`s against their true albedos [B, S, S, 3] (`albedo_truth_metrics`), plus the
    product's own-mask re-render PSNR and the seen share of the chart."""
    albedo = np.stack([r.albedo_uv for r in results]).astype(np.float32)
    visibility = np.stack([r.visibility_uv for r in results]).astype(np.float32)
    truth = np.stack(truths).astype(np.float32)
    if truth.shape[1:3] != albedo.shape[1:3]:
        raise ValueError(f"the true albedo is {truth.shape[1]}^2 texels, the reconstruction's {albedo.shape[1]}^2: "
                         "reconstruct at the synthetic set's --uv_size")
    values = {k: np.asarray(v, np.float64) for k, v in
              albedo_truth_metrics(albedo, truth, visibility, np.asarray(uv_mask, np.float32)).items()}
    values["detailed_psnr_db"] = np.array([r.metrics["detailed_psnr_db"] for r in results])
    values["uv_seen_fraction"] = np.array([r.metrics["uv_seen_fraction"] for r in results])
    return values


def evaluate_from_images(data_dir, finder, reconstructor, count=None, batch_size=4, log=print,
                         crossed=False) -> dict:
    """Both paths over the faces of a make_synthetic folder.

    Args:
      data_dir: the folder (``images/i.png``, ``gt/i.npz``, ``manifest.json``).
      finder: a `pipeline.FaceFinder` (``from_image(image, name) -> [AlignedFace]``, NoFaceError).
      reconstructor: a `pipeline.Reconstructor` at the set's UV size.
      count: the first N faces (None = all).
      crossed: also the two ``CROSSED_PATHS`` (true landmarks with the product's mask, detected landmarks with
        the true mask): twice the time.
    Returns:
      dict: 'per_image' {path: {metric: [N] list, NaN where the path has no face}}, 'found' [N] bool, 'detector'
      [N] (which stage found the face, or None), 'no_face' (stems), 'num_files', 'num_reconstructed' {path: n}.
    """
    data_dir = pathlib.Path(data_dir)
    manifest = load_manifest(data_dir)
    total = manifest["count"] if count is None else min(int(count), manifest["count"])
    uv_mask = reconstructor.uv_mask
    paths = PATHS + (CROSSED_PATHS if crossed else ())
    per_image = {path: collections.defaultdict(list) for path in paths}
    found, detectors, no_face = [], [], []
    for first in range(0, total, batch_size):
        indices = range(first, min(total, first + batch_size))
        faces = [load_synthetic_face(data_dir, i) for i in indices]
        truths = [face["albedo_gt_uv"] for face in faces]
        detected, errors = [], []
        for i, face in zip(indices, faces):
            file = data_dir / "images" / f"{i:06d}.png"
            try:
                aligned = finder.from_image(load_image(file), name=str(file))[0]   # the largest face
            except NoFaceError:
                detected.append(None)
                no_face.append(file.stem)
                continue
            detected.append(aligned)
            errors.append(landmark_error(aligned, face["landmarks"]))
        found += [d is not None for d in detected]
        detectors += [getattr(d, "detector", None) if d is not None else None for d in detected]
        true_scores = score_results(reconstructor.reconstruct([true_aligned_face(f) for f in faces]), truths, uv_mask)
        true_scores["landmark_error_px"] = np.zeros(len(faces))
        _extend(per_image["true_landmarks"], true_scores, [True] * len(faces))
        hits = [d for d in detected if d is not None]
        det_scores = (score_results(reconstructor.reconstruct(hits), [t for t, d in zip(truths, detected) if d],
                                    uv_mask) if hits else {})
        if hits:
            det_scores["landmark_error_px"] = np.asarray(errors)
        _extend(per_image["detected"], det_scores, [d is not None for d in detected])
        if crossed:
            masker = finder.face_masker()
            cross = score_results(reconstructor.reconstruct(
                [with_product_mask(true_aligned_face(f), masker) for f in faces]), truths, uv_mask)
            cross["landmark_error_px"] = np.zeros(len(faces))
            _extend(per_image["true_landmarks_product_mask"], cross, [True] * len(faces))
            if hits:
                cross = score_results(reconstructor.reconstruct(
                    [with_true_mask(d, f["face_mask"][..., 0]) for d, f in zip(detected, faces) if d is not None]),
                    [t for t, d in zip(truths, detected) if d], uv_mask)
                cross["landmark_error_px"] = np.asarray(errors)
            else:
                cross = {}
            _extend(per_image["detected_true_mask"], cross, [d is not None for d in detected])
        log(f"  {first + len(faces)}/{total} files, {sum(found)} faces found")
    return {"per_image": {path: dict(values) for path, values in per_image.items()}, "found": found,
            "detector": detectors, "no_face": no_face, "num_files": total,
            "num_reconstructed": {path: (int(sum(found)) if path.startswith("detected") else total)
                                  for path in paths}}


def _extend(lists, scores, present):
    """Appends one batch's scores [K] (of the ``present`` faces) to the per-image lists of ``SUMMARY_KEYS``,
    NaN where a face is not present."""
    for key in SUMMARY_KEYS:
        values = iter(np.asarray(scores[key], np.float64).tolist()) if key in scores else None
        for here in present:
            lists[key].append(next(values) if (here and values is not None) else float("nan"))


def summarise(per_image) -> dict:
    """{path: {metric: dict(mean, median, count)}} over each path's reconstructed faces, and the same means on
    the faces both paths reconstructed ('paired': a like-for-like comparison when detection misses some)."""
    def stats(values):
        values = np.asarray(values, np.float64)
        finite = values[np.isfinite(values)]
        return {"mean": float(finite.mean()) if finite.size else float("nan"),
                "median": float(np.median(finite)) if finite.size else float("nan"), "count": int(finite.size)}

    out = {path: {key: stats(values) for key, values in metrics.items()} for path, metrics in per_image.items()}
    both = np.isfinite(np.asarray(per_image["detected"].get("albedo_si_rmse", []), np.float64))
    if both.any():
        out["paired"] = {path: {key: stats(np.asarray(per_image[path][key])[both])
                                for key in ("albedo_si_rmse", "albedo_beats_flat") if key in per_image[path]}
                         for path in per_image}
    return out


def run_protocol(data_dir, finder, reconstructor, count=None, batch_size=4, log=print, crossed=False) -> dict:
    """`evaluate_from_images` with its summary and the set's recipe, as the JSON of scripts/evaluate.py
    --protocol=images."""
    from tf_facetex.data.parsing_net import describe_masker

    manifest = load_manifest(data_dir)
    start = time.time()
    out = evaluate_from_images(data_dir, finder, reconstructor, count, batch_size, log, crossed=crossed)
    out.update(summary=summarise(out["per_image"]), data=str(data_dir), synthetic_config=manifest["config"],
               seed=manifest["seed"], reconstructor=reconstructor.describe(),
               masker=describe_masker(finder.face_masker()) if any(out["found"]) else str(finder.masker_spec),
               face_model=getattr(reconstructor.model, "source", None), seconds=time.time() - start)
    return out
