"""Relighting truth on a multi-light set: is the albedo free of the light, and does relighting predict a photo?

Photos of one subject under K lights from one camera (Yale B) are each reconstructed on their own by the
product's `Reconstructor` (per-image fit path). Per subject:

- albedo consistency: for the texels seen in every photo (visibility > 0.5 in all K and inside the chart),
  each map is divided by its mean over those texels (a global exposure / gain is not lighting the method
  could remove), then the per-texel coefficient of variation across the K photos (population std / mean,
  averaged over texels and channels) is computed for the albedo A'_k and for the lit texture
  A'_k x shading_k (the unwrapped photo: it keeps the light). ``ratio`` = CV(A') / CV(A' x shading):
  0 = every trace of the light removed, 1 = none removed.
- cross-relighting: R(A'_i, L'_j) (photo i's albedo under photo j's estimated per-texel light, at i's pose,
  rendered in i's crop) against photo j warped into i's crop with i's alignment transform, PSNR over i's
  face mask M_face (where the reconstruction explains the photo); the naive baseline is photo i itself
  (i's crop) against the same target. Pairs i != j; the mean over pairs is reported.
All images are in [0, 1]; PSNR as `tf_facetex.metrics.masked_psnr` (10 log10(1 / MSE) over the mask).
"""
import numpy as np

VISIBLE = 0.5


def common_texels(visibility_uv, uv_mask) -> np.ndarray:
    """Texels seen in every photo: visibility [K, S, S, 1], uv_mask [S, S, 1] -> bool [S, S]."""
    visibility_uv = np.asarray(visibility_uv, np.float32)
    inside = np.asarray(uv_mask).reshape(visibility_uv.shape[1:3]) > 0.5
    return np.all(visibility_uv[..., 0] > VISIBLE, axis=0) & inside


def texel_cv(maps, mask) -> float:
    """Mean per-texel coefficient of variation across K maps, each normalised by its mean over ``mask``.

    Args:
      maps: [K, S, S, C] (K >= 2); mask: bool [S, S] (at least one texel).
    Returns:
      mean over the masked texels and channels of std_k(m_k / mean(m_k)) / mean_k(m_k / mean(m_k)).
    """
    maps = np.asarray(maps, np.float64)
    mask = np.asarray(mask, bool)
    if maps.shape[0] < 2 or not mask.any():
        raise ValueError("texel_cv needs K >= 2 maps and at least one common texel")
    values = maps[:, mask]                                           # [K, T, C]
    means = values.mean(axis=(1, 2), keepdims=True)
    values = values / np.maximum(means, 1e-8)
    mean_k = values.mean(axis=0)
    cv = values.std(axis=0) / np.maximum(mean_k, 1e-8)
    return float(cv.mean())


def albedo_consistency(albedo_uv, shading_uv, visibility_uv, uv_mask) -> dict:
    """CV of A' and of A' x shading across a subject's photos, and their ratio (see the module doc).

    Args: albedo_uv [K, S, S, 3], shading_uv [K, S, S, 3], visibility_uv [K, S, S, 1], uv_mask [S, S, 1].
    """
    mask = common_texels(visibility_uv, uv_mask)
    albedo_uv = np.asarray(albedo_uv, np.float64)
    lit = albedo_uv * np.asarray(shading_uv, np.float64)
    cv_albedo, cv_lit = texel_cv(albedo_uv, mask), texel_cv(lit, mask)
    return {"cv_albedo": cv_albedo, "cv_lit": cv_lit, "ratio": cv_albedo / max(cv_lit, 1e-12),
            "common_texels": int(mask.sum()), "common_fraction": float(mask.sum() / max(np.asarray(uv_mask).sum(), 1))}


def masked_psnr(prediction, target, mask) -> float:
    """PSNR (dB) over a mask: [H, W, C], [H, W, C], [H, W] or [H, W, 1] in [0, 1] -> float (capped at 100)."""
    mask = np.asarray(mask, np.float64).reshape(np.asarray(prediction).shape[:2])
    diff = (np.clip(prediction, 0, 1).astype(np.float64) - np.asarray(target, np.float64)) ** 2
    weight = mask.sum() * diff.shape[-1]
    if weight <= 0:
        raise ValueError("empty mask")
    mse = float((diff * mask[..., None]).sum() / weight)
    return float(min(10.0 * np.log10(1.0 / max(mse, 1e-30)), 100.0))


def photo_in_crop(photo, face, crop_size) -> np.ndarray:
    """A photo warped into ``face``'s aligned crop (``face.transform``): uint8 [H0, W0, 3] -> float [S, S, 3]."""
    from tf_facetex.data.align import warp_image

    return warp_image(photo, face.transform, (crop_size, crop_size)).astype(np.float32) / 255.0


def cross_relight(reconstructor, results, photos) -> dict:
    """Cross-relighting PSNR matrices of one subject.

    Args:
      reconstructor: the `Reconstructor` that made ``results`` (its renderer renders the relit faces).
      results: K `FaceResult`s (one per photo / light).
      photos: K uint8 [H0, W0, 3] original photos (same order).
    Returns:
      dict: relit_psnr [K][K] and baseline_psnr [K][K] (NaN on the diagonal), their off-diagonal means and
      the mean gain; relit images [K][K] float [S, S, 3] (i's albedo under j's light) and targets [K] (photo j in
      photo 0's crop) for figures.
    """
    count = len(results)
    size = results[0].render_detailed.shape[0]
    relit_psnr = np.full((count, count), np.nan)
    baseline_psnr = np.full((count, count), np.nan)
    relit_images = [[None] * count for _ in range(count)]
    targets = []   # photo j in photo 0's crop
    for i, result in enumerate(results):
        coeffs = np.repeat(result.coeffs[None], count, axis=0)
        albedo = np.repeat(result.albedo_uv[None], count, axis=0)
        lights = np.stack([other.light_uv for other in results])
        images, masks = reconstructor.render(coeffs, albedo, lights)
        images, masks = np.asarray(images), np.asarray(masks)
        region = result.face_mask[..., 0] * result.face.valid * masks[0][..., 0]
        own = result.face.image.astype(np.float32) / 255.0
        for j in range(count):
            relit_images[i][j] = np.clip(images[j], 0, 1)
            target = photo_in_crop(photos[j], result.face, size)
            if i == 0:
                targets.append(target)
            if i == j:
                continue
            relit_psnr[i, j] = masked_psnr(images[j], target, region)
            baseline_psnr[i, j] = masked_psnr(own, target, region)
    off = ~np.eye(count, dtype=bool)
    return {"relit_psnr": relit_psnr, "baseline_psnr": baseline_psnr,
            "relit_psnr_mean": float(relit_psnr[off].mean()), "baseline_psnr_mean": float(baseline_psnr[off].mean()),
            "gain_db": float((relit_psnr - baseline_psnr)[off].mean()), "relit_images": relit_images,
            "targets": targets}


def evaluate_subject(reconstructor, faces, photos) -> dict:
    """Reconstructs one subject's photos (``faces``: AlignedFace list; ``photos``: the originals) and scores
    them. Returns (report dict with plain types, results, cross dict)."""
    results = reconstructor.reconstruct(faces)
    stack = lambda name: np.stack([getattr(r, name) for r in results])  # noqa: E731
    consistency = albedo_consistency(stack("albedo_uv"), stack("shading_uv"),
                                     stack("visibility_uv"), reconstructor.uv_mask)
    cross = cross_relight(reconstructor, results, photos)
    report = {**consistency,
              "relit_psnr_mean": cross["relit_psnr_mean"], "baseline_psnr_mean": cross["baseline_psnr_mean"],
              "gain_db": cross["gain_db"],
              "relit_psnr": np.round(cross["relit_psnr"], 3).tolist(),
              "baseline_psnr": np.round(cross["baseline_psnr"], 3).tolist(),
              "fit_psnr": [float(r.metrics["detailed_psnr_db"]) for r in results]}
    return report, results, cross


def subject_figure(results, cross, titles, cell=112) -> np.ndarray:
    """One subject: row 1 the aligned photos, row 2 the albedo of each, row 3 photo 0's albedo relit with each
    photo's light (at photo 0's pose), row 4 the real photo under that light in photo 0's crop (the target).
    -> uint8 [4 cell, K cell, 3] (each cell labelled with its title)."""
    import cv2

    from tf_facetex import visualize

    def small(image):
        return cv2.resize(visualize.to_uint8(np.clip(image, 0, 1)), (cell, cell), interpolation=cv2.INTER_AREA)

    rows = []
    for cells in ([r.face.image.astype(np.float32) / 255.0 for r in results], [r.albedo_uv for r in results],
                  [cross["relit_images"][0][j] for j in range(len(results))], cross["targets"]):
        rows.append(np.concatenate([visualize.label(small(image), title, 0.3) for image, title in zip(cells, titles)],
                                   axis=1))
    return np.concatenate(rows, axis=0)
