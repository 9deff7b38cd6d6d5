"""Metrics for what a user sees: is the albedo clean (no hair or occluders baked in) and is the render complete?

Re-render PSNR on the method's own face mask cannot see either failure: an albedo with the photo's hair in it
re-renders the photo very well, and a mask that leaves the eyes out scores well by not looking at them. These
metrics use human labels (CelebAMask-HQ parsing maps, warped into the aligned crop) instead:

- **occluder leak**: of the albedo texels the reconstruction marks as seen (``visibility_uv``; the texels
  whose colour comes from the photo), the share whose source pixel (the image-from-UV lookup of the unwrap)
  is labelled hair, hat, glasses, earring, cloth or background (``OCCLUDER_CLASSES``). Three readings:
  ``leak_nearest`` (the nearest source pixel's label), ``leak_any_tap`` (any of the four bilinear taps the
  unwrap samples, with a non-zero weight, is an occluder), ``leak_weighted`` (the share of the seen texels'
  colour that comes from occluder pixels, bilinear weights). ``nonface_nearest`` counts every label that is
  not face (also ears, neck, necklace).
- **holes**: the share of the labelled face (skin, nose, eyes, brows, lips, inner mouth) that the render
  covers (``render_mask``), and the same for the eyes and the mouth (lips + inner mouth) alone;
- **re-render** L1 / PSNR / SSIM of R(A', L') against the photo on three regions: the labelled face, the
  convex hull of the 68 detected landmarks (neither depends on the method's mask; pixels the render leaves
  empty count as black, as the user sees them) and the method's own ``face_mask``; plus PSNR inside the
  labelled eyes and the labelled mouth separately.

Everything is measured on the outputs of the product's ``Reconstructor`` (and its renderer's unwrap for the
texel -> pixel lookup), never on a copy of the pipeline.
"""
import cv2
import numpy as np

from tf_facetex.data.masks import CELEBAMASK_FACE_CLASSES, polygon_mask
from tf_facetex.evaluation.clean_report import comparison_table  # noqa: F401 (re-exported)

# CelebAMask-HQ-mini label ids (0 background, 1 skin, 2 nose, 3 glasses, 4/5 eyes, 6/7 brows, 8/9 ears,
# 10 inner mouth, 11/12 lips, 13 hair, 14 hat, 15 earring, 16 necklace, 17 neck, 18 cloth)
OCCLUDER_CLASSES = (0, 3, 13, 14, 15, 18)
EYE_CLASSES = (4, 5)
MOUTH_CLASSES = (10, 11, 12)
OUTSIDE_PHOTO = 255     # label of crop pixels the photo does not cover (black padding)


def labels_in_crop(labels: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """A label map warped into the aligned crop: uint8 [H, W] ids, [2, 3] photo -> crop -> uint8 [S, S].

    Nearest-neighbour (ids are not averaged); crop pixels outside the photo get ``OUTSIDE_PHOTO``.
    """
    return cv2.warpAffine(np.ascontiguousarray(labels, np.uint8), np.asarray(transform, np.float64),
                          (crop_size, crop_size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=OUTSIDE_PHOTO)


def class_mask(labels: np.ndarray, classes) -> np.ndarray:
    """bool [H, W]: pixels whose label is one of ``classes``."""
    return np.isin(labels, np.asarray(classes, labels.dtype))


def landmark_hull(shape, landmarks68: np.ndarray) -> np.ndarray:
    """bool [H, W]: the convex hull of the 68 landmarks (jaw, brows: the face below the forehead)."""
    return polygon_mask(shape, landmarks68).astype(bool)


def _bilinear_taps(pixels_uv: np.ndarray, height: int, width: int):
    """The unwrap's four bilinear taps of each texel (as `interpolate.bilinear_sample`: clamped to the image).

    pixels_uv [..., 2] (x, y) -> (rows [4, ...], cols [4, ...], weights [4, ...]).
    """
    x = np.clip(pixels_uv[..., 0], 0.0, width - 1.0)
    y = np.clip(pixels_uv[..., 1], 0.0, height - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    rows = np.stack([y0, y0, y1, y1])
    cols = np.stack([x0, x1, x0, x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return rows, cols, weights


def occluder_leak(visibility_uv: np.ndarray, pixels_uv: np.ndarray, labels: np.ndarray) -> dict:
    """Share of the seen texels whose source pixel is an occluder.

    Args:
      visibility_uv: [S, S] or [S, S, 1] in {0, 1}: the texels the albedo takes from the photo.
      pixels_uv: [S, S, 2] (x, y) crop-pixel coordinates of every texel (the unwrap's lookup).
      labels: uint8 [H, W] label ids in the crop (``labels_in_crop``).
    Returns:
      dict(seen_texels, leak_nearest, leak_any_tap, leak_weighted, nonface_nearest); shares in [0, 1]
      (0 when no texel is seen).
    """
    seen = np.asarray(visibility_uv).reshape(pixels_uv.shape[:2]) > 0.5
    height, width = labels.shape
    pixels = np.asarray(pixels_uv, np.float64)[seen]                        # [K, 2]
    occluder = class_mask(labels, OCCLUDER_CLASSES) | (labels == OUTSIDE_PHOTO)
    nonface = ~class_mask(labels, CELEBAMASK_FACE_CLASSES)
    count = int(seen.sum())
    if count == 0:
        return {"seen_texels": 0, "leak_nearest": 0.0, "leak_any_tap": 0.0, "leak_weighted": 0.0,
                "nonface_nearest": 0.0}
    col = np.clip(np.round(pixels[:, 0]).astype(np.int64), 0, width - 1)
    row = np.clip(np.round(pixels[:, 1]).astype(np.int64), 0, height - 1)
    rows, cols, weights = _bilinear_taps(pixels, height, width)
    tap_occluder = occluder[rows, cols]                                     # [4, K]
    return {"seen_texels": count,
            "leak_nearest": float(occluder[row, col].mean()),
            "leak_any_tap": float(np.any(tap_occluder & (weights > 0), axis=0).mean()),
            "leak_weighted": float((tap_occluder * weights).sum(axis=0).mean()),
            "nonface_nearest": float(nonface[row, col].mean())}


def coverage(render_mask: np.ndarray, labels: np.ndarray, valid: np.ndarray = None) -> dict:
    """Share of the labelled face / eyes / mouth the render covers: [H, W(, 1)] masks, uint8 [H, W] labels.

    A region with no labelled pixel gives NaN (counted apart by ``summarise``).
    """
    covered = np.asarray(render_mask).reshape(labels.shape) > 0.5
    inside = np.ones(labels.shape, bool) if valid is None else np.asarray(valid).reshape(labels.shape) > 0.5
    out = {}
    for name, classes in (("face", CELEBAMASK_FACE_CLASSES), ("eyes", EYE_CLASSES), ("mouth", MOUTH_CLASSES)):
        region = class_mask(labels, classes) & inside
        out[f"coverage_{name}"] = float(covered[region].mean()) if region.any() else float("nan")
    return out


def region_image_metrics(render: np.ndarray, image: np.ndarray, regions: dict) -> dict:
    """L1 / PSNR / SSIM of a render against the photo on named regions.

    Args:
      render, image: [H, W, 3] float in [0, 1] (the render's empty pixels stay black: what a user sees).
      regions: {name: bool [H, W]}; SSIM only for regions named without an ``_psnr_only`` suffix.
    Returns:
      {f"{name}_l1", f"{name}_psnr_db", f"{name}_ssim", f"{name}_pixels"}.
    """
    import tensorflow as tf

    from tf_facetex import metrics

    render = tf.constant(np.clip(render, 0.0, 1.0)[None], tf.float32)
    image = tf.constant(np.asarray(image, np.float32)[None])
    out = {}
    for name, region in regions.items():
        psnr_only = name.endswith("_psnr_only")
        key = name[:-len("_psnr_only")] if psnr_only else name
        mask = tf.constant(np.asarray(region, np.float32)[None, ..., None])
        out[f"{key}_pixels"] = int(np.asarray(region).sum())
        if out[f"{key}_pixels"] == 0:
            out[f"{key}_psnr_db"] = float("nan")
            continue
        out[f"{key}_psnr_db"] = float(metrics.masked_psnr(render, image, mask)[0])
        if not psnr_only:
            out[f"{key}_l1"] = float(metrics.masked_l1(render, image, mask)[0])
            out[f"{key}_ssim"] = float(metrics.masked_ssim(render, image, mask)[0])
    return out


def texel_lookup(renderer, result) -> np.ndarray:
    """The unwrap's texel -> crop-pixel lookup [S, S, 2] of a `FaceResult` (the product renderer's ``unwrap``)."""
    import tensorflow as tf

    posed = tf.constant(result.posed_vertices[None], tf.float32)
    image = tf.constant(result.face.image[None], tf.float32)
    return renderer.unwrap(image, posed).pixels.numpy()[0]


def evaluate_result(renderer, result, labels: np.ndarray) -> dict:
    """All clean-albedo metrics of one reconstructed face (`FaceResult`) against its crop labels."""
    face = result.face
    valid = np.asarray(face.valid).reshape(labels.shape) > 0.5
    image = face.image.astype(np.float32) / 255.0
    out = occluder_leak(result.visibility_uv, texel_lookup(renderer, result), labels)
    out.update(coverage(result.render_mask, labels, valid))
    regions = {"labelled_face": class_mask(labels, CELEBAMASK_FACE_CLASSES) & valid,
               "landmark_hull": landmark_hull(labels.shape, face.landmarks) & valid,
               "own_mask": (np.asarray(result.face_mask).reshape(labels.shape) > 0.5) & valid,
               "eyes_psnr_only": class_mask(labels, EYE_CLASSES) & valid,
               "mouth_psnr_only": class_mask(labels, MOUTH_CLASSES) & valid}
    out.update(region_image_metrics(result.render_detailed, image, regions))
    return out


def summarise(per_image: dict) -> dict:
    """{stem: metrics} -> {metric: dict(mean, median, count)} over the finite values (NaN: region absent)."""
    keys = sorted({key for values in per_image.values() for key in values})
    out = {}
    for key in keys:
        values = np.array([v[key] for v in per_image.values() if key in v], np.float64)
        finite = values[np.isfinite(values)]
        out[key] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                    "median": float(np.median(finite)) if finite.size else float("nan"),
                    "count": int(finite.size)}
    return out


# ------------------------------------------------------------------------------------------ the protocol
LEAK_KEYS = ("leak_nearest", "leak_any_tap", "leak_weighted", "nonface_nearest")


def pooled_leak(per_image: dict) -> dict:
    """The leak shares over all seen texels of all faces together (a face with many seen texels weighs more)."""
    seen_total = sum(v["seen_texels"] for v in per_image.values())
    return {key: (sum(v[key] * v["seen_texels"] for v in per_image.values()) / seen_total if seen_total
                  else float("nan")) for key in LEAK_KEYS}


def find_labelled_faces(files, finder, log=print):
    """Each CelebAMask-HQ photo through the product's `FaceFinder`: (faces, stems, {stem: crop labels}, no_face)."""
    from tf_facetex.data.images import load_image
    from tf_facetex.errors import NoFaceError
    from tf_facetex.evaluation.real_photos import load_celebamask_labels

    faces, stems, labels, no_face = [], [], {}, []
    for path in files:
        image = load_image(path)
        try:
            face = finder.from_image(image, name=str(path))[0]
        except NoFaceError:
            no_face.append(path.stem)
            continue
        faces.append(face)
        stems.append(path.stem)
        labels[path.stem] = labels_in_crop(load_celebamask_labels(path, image.shape), face.transform,
                                           face.image.shape[0])
    log(f"  {len(faces)}/{len(files)} photos with a face")
    return faces, stems, labels, no_face


def baseline_summaries(entries) -> dict:
    """``name=result.json`` entries -> {name: {label, file, summary, leak_pooled_over_texels, num_faces}}: earlier
    runs' summaries, copied into a new result so that its table shows them beside it. ValueError on a bad entry."""
    import json
    import pathlib

    out = {}
    for entry in entries:
        if "=" not in entry:
            raise ValueError(f"baseline '{entry}' should be name=result.json")
        name, path = entry.split("=", 1)
        data = json.loads(pathlib.Path(path).read_text())
        out[name] = {"label": data.get("label", ""), "file": path, "summary": data["summary"],
                     "leak_pooled_over_texels": data.get("leak_pooled_over_texels"), "num_faces": data.get("num_faces")}
    return out


def heldout_files(folder=None, count=None):
    """(the first ``count`` of the held-out CelebAMask-HQ-mini photos, how many are held out): the last 200 by
    sorted name, which the parsing network never saw. folder: with images/ and masks/ (default: the shared one)."""
    from tf_facetex import paths
    from tf_facetex.evaluation import real_photos

    if folder is None:
        root = paths.faces_dir()
        if root is None:
            raise FileNotFoundError("no CelebAMask-HQ folder given and no shared faces folder found")
        folder = root / "celebamask_hq_mini" / "train"
    _train, held_out = real_photos.heldout_split(real_photos.celebamask_files(folder))
    return (held_out if count is None else held_out[:count]), len(held_out)


def run_protocol(files, finder, reconstructor, batch_size=4, num_held_out=None, log=print) -> dict:
    """The clean-albedo metrics of CelebAMask-HQ photos reconstructed end to end by the product (`FaceFinder`,
    `Reconstructor`; scripts/eval_clean_albedo.py, scripts/evaluate.py --protocol=celebamask): the JSON's body."""
    from tf_facetex.data.parsing_net import describe_masker

    faces, stems, labels, no_face = find_labelled_faces(files, finder, log)
    per_image = {}
    for first in range(0, len(faces), batch_size):
        batch = faces[first:first + batch_size]
        for stem, result in zip(stems[first:first + batch_size], reconstructor.reconstruct(batch)):
            per_image[stem] = evaluate_result(reconstructor.renderer, result, labels[stem])
        log(f"  {min(first + batch_size, len(faces))}/{len(faces)} faces")
    return {"protocol": f"CelebAMask-HQ-mini held-out (last {num_held_out or '?'} by sorted name), first "
                        f"{len(files)}; product FaceFinder + Reconstructor; labels warped into the 224 crop",
            "masker": describe_masker(finder.face_masker()) if faces else {"name": str(finder.masker_spec)},
            "face_model": getattr(reconstructor.model, "source", None), "reconstructor": reconstructor.describe(),
            "num_files": len(files), "num_faces": len(per_image), "no_face": no_face,
            "occluder_classes": list(OCCLUDER_CLASSES), "summary": summarise(per_image),
            "leak_pooled_over_texels": pooled_leak(per_image), "per_image": per_image}


# ------------------------------------------------------------------------------------------ the before/after figure
HAIR_CLASSES = (13, 14)    # hair, hat


def forehead_region(shape, landmarks68: np.ndarray, height: float = 0.45) -> np.ndarray:
    """bool [H, W]: the forehead of an upright aligned face, the band above the brows (landmarks 17-26) up to
    ``height`` x the brow-to-chin distance (a forehead is about half of it)."""
    lm = np.asarray(landmarks68, np.float64)
    brows = lm[17:27]
    rise = height * (lm[8, 1] - brows[:, 1].mean())
    band = np.concatenate([brows, brows[::-1] - np.array([0.0, rise])])
    return polygon_mask(shape, band).astype(bool)


def forehead_hair_share(labels: np.ndarray, landmarks68: np.ndarray) -> float:
    """Share of the forehead (`forehead_region`) labelled hair or hat: uint8 [H, W] crop labels -> [0, 1]."""
    region = forehead_region(labels.shape, landmarks68)
    return float(class_mask(labels, HAIR_CLASSES)[region].mean()) if region.any() else 0.0


def pick_forehead_examples(shares: dict, count: int, hair_min: float = 0.3, clear_max: float = 0.02):
    """(with_hair, without): the first ``count`` stems (in the dict's order) whose forehead hair share is at
    least ``hair_min``, and the first ``count`` at most ``clear_max``."""
    with_hair = [stem for stem, share in shares.items() if share >= hair_min][:count]
    without = [stem for stem, share in shares.items() if share <= clear_max][:count]
    return with_hair, without


def before_after_figure(rows, cell=96) -> np.ndarray:
    """uint8 grid of albedo thumbnails: rows of (label, before [S, S, 3], after [S, S, 3]) pairs side by side.

    ``rows``: list of lists of (caption, before, after); each pair becomes two ``cell``-pixel cells."""
    from tf_facetex import visualize

    def thumb(albedo, text):
        array = np.clip(np.asarray(albedo, np.float32), 0.0, 1.0)
        small = (cv2.resize(array, (cell, cell), interpolation=cv2.INTER_AREA) * 255 + 0.5).astype(np.uint8)
        return visualize.label(small, text, scale=0.3)

    return visualize.grid([[cell_image for caption, before, after in row
                            for cell_image in (thumb(before, f"{caption} before"), thumb(after, "after"))]
                           for row in rows])
