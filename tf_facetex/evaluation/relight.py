"""Relighting truth on a multi-light set: is the albedo free of the light, and does relighting predict a photo?

Photos of one subject under K lights from one camera (Yale B) are each reconstructed on their own by the
product's `Reconstructor` (per-image fit path). Per subject:

- albedo consistency: for the texels seen in every photo (visibility > 0.5 in all K and inside the chart),
  each map is divided by its mean over those texels (a global exposure / gain is not lighting the method
  could remove), then the per-texel coefficient of variation across the K photos (population std / mean,
  averaged over texels and channels) is computed for the albedo A'_k and for the lit texture
  A'_k x shading_k (the unwrapped photo: it keeps the light; `lit_texture`, negative SH shading on the light's
  dark side clipped to 0 as in a photo). ``ratio`` = CV(A') / CV(A' x shading):
  0 = every trace of the light removed, 1 = none removed.
- cross-relighting: R(A'_i, L'_j) (photo i's albedo under photo j's estimated per-texel light, at i's pose,
  rendered in i's crop) against photo j warped into i's crop with i's alignment transform, PSNR over i's
  face mask M_face (where the reconstruction explains the photo); the naive baseline is photo i itself
  (i's crop) against the same target. Pairs i != j; the mean over pairs is reported.
All images are in [0, 1]; PSNR as `tf_facetex.metrics.masked_psnr` (10 log10(1 / MSE) over the mask).

The multi-photo mode (`evaluate_subject_multi`): the lights are split into two disjoint halves; ONE albedo A'_S is
fitted to the photos of each half together (`Reconstructor.reconstruct_group`), and each photo j of the other half
gets only its light L'_j fitted with A'_S fixed (`Reconstructor.fit_light`: its light is held out of the albedo).
- cross-relighting: R(A'_S, L'_j) at the pose of each photo i of S (as fitted in the group), against photo j in
  i's crop (i's face mask), over the pairs (i in S, j not in S) of both halves; the single mode's R(A'_i, L'_j) on
  the same pairs is the comparison;
- albedo consistency, comparable across modes: the two halves' albedos see disjoint lights, so the per-texel CV of
  the pair (A'_S1, A'_S2) is set against the mean CV of the single-photo pairs (A'_i, A'_j), i in S1, j in S2, on
  the same texels; both are divided by the mean CV of the lit textures of those photo pairs (`pair_consistency`).
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


def lit_texture(albedo_uv, shading_uv) -> np.ndarray:
    """A' x shading, clipped at 0: an SH light goes negative on its dark side, which no photo shows (and which made
    the CV of a pair of lit maps, whose per-texel mean can then be ~0, explode). [..., 3] x [..., 3] -> float64."""
    return np.maximum(np.asarray(albedo_uv, np.float64) * np.asarray(shading_uv, np.float64), 0.0)


def albedo_consistency(albedo_uv, shading_uv, visibility_uv, uv_mask) -> dict:
    """CV of A' and of A' x shading across a subject's photos, and their ratio (see the module doc).

    Args: albedo_uv [K, S, S, 3], shading_uv [K, S, S, 3], visibility_uv [K, S, S, 1], uv_mask [S, S, 1].
    """
    mask = common_texels(visibility_uv, uv_mask)
    albedo_uv = np.asarray(albedo_uv, np.float64)
    lit = lit_texture(albedo_uv, shading_uv)
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


def relit_scores(reconstructor, source, lights, targets):
    """``source``'s albedo at its pose under each light, against each target photo in its crop.

    Args: source: a `FaceResult`; lights: [K, S, S, 27]; targets: K uint8 original photos.
    Returns: (relit PSNR [K], photo-i baseline PSNR [K] (the source's own crop against each target), relit
    images [K] float [H, H, 3], targets in the source's crop [K])."""
    count = len(lights)
    size = source.render_detailed.shape[0]
    images, masks = reconstructor.render(np.repeat(source.coeffs[None], count, axis=0),
                                         np.repeat(source.albedo_uv[None], count, axis=0), np.asarray(lights))
    images, masks = np.asarray(images), np.asarray(masks)
    region = source.face_mask[..., 0] * source.face.valid * masks[0][..., 0]
    own = source.face.image.astype(np.float32) / 255.0
    warped = [photo_in_crop(photo, source.face, size) for photo in targets]
    relit = [masked_psnr(image, target, region) for image, target in zip(images, warped)]
    baseline = [masked_psnr(own, target, region) for target in warped]
    return np.array(relit), np.array(baseline), [np.clip(image, 0, 1) for image in images], warped


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
    relit_psnr = np.full((count, count), np.nan)
    baseline_psnr = np.full((count, count), np.nan)
    relit_images = []
    lights = np.stack([other.light_uv for other in results])
    targets = None   # photo j in photo 0's crop
    off = ~np.eye(count, dtype=bool)
    for i, result in enumerate(results):
        relit, baseline, images, warped = relit_scores(reconstructor, result, lights, photos)
        relit_psnr[i, off[i]], baseline_psnr[i, off[i]] = relit[off[i]], baseline[off[i]]
        relit_images.append(images)
        targets = warped if targets is None else targets
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


def pair_consistency(albedos, lits, mask, first, second) -> dict:
    """Albedo consistency between two disjoint sets of photos, per pair (comparable when one side is a group).

    Args: albedos [K, S, S, 3], lits [K, S, S, 3] (A' x shading) of single photos; mask bool [S, S]; first /
    second: index lists (disjoint). Returns {'cv_albedo_pairs': mean over (i, j) of texel_cv(A'_i, A'_j),
    'cv_lit_pairs': the same for the lit textures, 'ratio_pairs': their ratio}."""
    albedo = np.mean([texel_cv(np.stack([albedos[i], albedos[j]]), mask) for i in first for j in second])
    lit = np.mean([texel_cv(np.stack([lits[i], lits[j]]), mask) for i in first for j in second])
    return {"cv_albedo_pairs": float(albedo), "cv_lit_pairs": float(lit), "ratio_pairs": float(albedo / max(lit, 1e-12))}


def evaluate_subject_multi(reconstructor, faces, photos, splits, single_results=None, single_cross=None) -> tuple:
    """The multi-photo mode on one subject (module docstring).

    Args:
      reconstructor: the product's `Reconstructor`; faces: K `AlignedFace`s; photos: the K originals.
      splits: list of index lists S (each with 1 <= |S| < K); S and its complement are both fitted as groups.
      single_results, single_cross: the single mode's K `FaceResult`s and `cross_relight` dict (the comparison on
        the same pairs and texels), or None.
    Returns:
      (report dict with plain types, details dict: per split the group albedos, held-out results, the relit
      images of the first source photo and its targets, for figures).
    """
    count = len(faces)
    splits = [sorted(split) for split in splits]
    for split in splits:
        if not split or len(split) >= count or len(set(split)) != len(split) or min(split) < 0 or max(split) >= count:
            raise ValueError(f"a split must be 1..{count - 1} distinct photo indices below {count}, got {split}")
    report = {"splits": [], "relit_psnr": [], "baseline_psnr": [], "single_relit_psnr": [], "single_baseline_psnr": []}
    visibility, details = [], []
    for split in splits:
        halves = (split, [j for j in range(count) if j not in split])
        albedos, halves_detail = [], []
        for fitted, held_out in (halves, halves[::-1]):
            group = reconstructor.reconstruct_group([faces[i] for i in fitted])
            lit_by_held_out = reconstructor.fit_light([faces[j] for j in held_out], group.person.albedo_uv)
            lights = np.stack([result.light_uv for result in lit_by_held_out])
            targets = [photos[j] for j in held_out]
            for position, i in enumerate(fitted):
                relit, baseline, images, warped = relit_scores(reconstructor, group.photos[position], lights, targets)
                report["relit_psnr"] += relit.tolist()
                report["baseline_psnr"] += baseline.tolist()
                if single_cross is not None:
                    report["single_relit_psnr"] += single_cross["relit_psnr"][i, held_out].tolist()
                    report["single_baseline_psnr"] += single_cross["baseline_psnr"][i, held_out].tolist()
                if position == 0:
                    first_images, first_targets = images, warped
            albedos.append(group.person.albedo_uv)
            visibility += [result.visibility_uv for result in group.photos]
            halves_detail.append({"fitted": fitted, "held_out": held_out, "albedo_uv": group.person.albedo_uv,
                                  "held_out_results": lit_by_held_out, "relit_first": first_images,
                                  "targets_first": first_targets, "group": group})
        report["splits"].append({"first": halves[0], "second": halves[1]})
        details.append({"albedos": albedos, "halves": halves_detail})
    # Consistency: texels seen by every photo (in its own fit: single_results when given, else the groups' views).
    seen = np.stack([r.visibility_uv for r in single_results]) if single_results is not None else np.stack(visibility)
    mask = common_texels(seen, reconstructor.uv_mask)
    report["cv_albedo_multi"] = float(np.mean([texel_cv(np.stack(d["albedos"]), mask) for d in details]))
    report["common_texels"] = int(mask.sum())
    relit, baseline = np.array(report["relit_psnr"]), np.array(report["baseline_psnr"])
    report.update({"relit_psnr_mean": float(relit.mean()), "baseline_psnr_mean": float(baseline.mean()),
                   "gain_db": float((relit - baseline).mean()), "pairs": int(relit.size)})
    if single_results is not None and single_cross is not None:
        albedos = np.stack([r.albedo_uv for r in single_results])
        lits = lit_texture(albedos, np.stack([r.shading_uv for r in single_results]))
        pairs = [pair_consistency(albedos, lits, mask, s["first"], s["second"]) for s in report["splits"]]
        single = {name: float(np.mean([p[name] for p in pairs])) for name in pairs[0]}
        report.update({"cv_albedo_single_pairs": single["cv_albedo_pairs"], "cv_lit_pairs": single["cv_lit_pairs"],
                       "ratio_single_pairs": single["ratio_pairs"],
                       "ratio_multi": report["cv_albedo_multi"] / max(single["cv_lit_pairs"], 1e-12)})
        single_relit, single_baseline = np.array(report["single_relit_psnr"]), np.array(report["single_baseline_psnr"])
        report.update({"single_relit_psnr_mean": float(single_relit.mean()),
                       "single_gain_db": float((single_relit - single_baseline).mean())})
    for name in ("relit_psnr", "baseline_psnr", "single_relit_psnr", "single_baseline_psnr"):
        report[name] = np.round(report[name], 3).tolist()
    return report, details


def subject_figure(results, cross, titles, cell=112, multi=None, codes=None) -> np.ndarray:
    """One subject: row 1 the aligned photos, row 2 the albedo of each, row 3 photo 0's albedo relit with each
    photo's light (at photo 0's pose), row 4 the real photo under that light in photo 0's crop (the target).
    With ``multi`` (one split of `evaluate_subject_multi`'s details): row 5 for each photo j the albedo fitted
    on the OTHER half, under j's held-out light, at the pose of that half's first photo; row 6 its target (photo j
    in that crop); row 7 the two halves' albedos (labelled with ``codes``, the lights' short names).
    -> uint8 [rows cell, K cell, 3] (each cell labelled)."""
    import cv2

    from tf_facetex import visualize

    def small(image):
        return cv2.resize(visualize.to_uint8(np.clip(image, 0, 1)), (cell, cell), interpolation=cv2.INTER_AREA)

    count = len(results)
    rows = [[r.face.image.astype(np.float32) / 255.0 for r in results], [r.albedo_uv for r in results],
            [cross["relit_images"][0][j] for j in range(count)], cross["targets"]]
    labels = [titles] * 4
    if multi is not None:
        relit, targets = [None] * count, [None] * count
        for half in multi["halves"]:
            for position, j in enumerate(half["held_out"]):
                relit[j], targets[j] = half["relit_first"][position], half["targets_first"][position]
        names = codes or titles
        albedos = [half["albedo_uv"] for half in multi["halves"]]
        blank = np.zeros_like(albedos[0])
        rows += [relit, targets, albedos + [blank] * (count - len(albedos))]
        labels += [[f"multi {t}" for t in titles], titles,
                   ["A' " + "+".join(names[i] for i in half["fitted"]) for half in multi["halves"]]
                   + [""] * (count - len(albedos))]
    out = []
    for cells, texts in zip(rows, labels):
        out.append(np.concatenate([visualize.label(small(image), text, 0.3) for image, text in zip(cells, texts)],
                                  axis=1))
    return np.concatenate(out, axis=0)
