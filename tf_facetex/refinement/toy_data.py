"""A self-consistent "toy world" of refinement samples, made without a rasteriser (tests, smoke runs, benchmarks).

Each sample is a head seen by a camera, simple enough to write in closed form and built with exactly the image
model the trainer renders with (`trainer.render_from_lookup`):

- UV chart: texel (row i, col j) has chart coordinates u = 2j/(S-1) - 1 (left to right) and v = 1 - 2i/(S-1)
  (v up, row 0 at the top, as the face models' UV images). The face occupies an egg-shaped region of the square
  (`toy_uv_mask`), symmetric about u = 0, so mirroring is a flip along W (the trainer's default symmetry).
- Geometry: the head is a vertical cylinder; chart u is the angle theta = u * THETA_MAX around it, chart v the
  height. Under a yaw the point (theta, v) projects to image column cx + R sin(theta + yaw) and row cy - Hv; its
  camera-frame normal is (sin(theta + yaw) cos b, sin b, cos(theta + yaw) cos b) with b = v * DOME_TILT (a dome-
  like vertical curvature). Texels whose normal faces the camera at a grazing angle (cos(theta + yaw) <
  MIN_FACING) count as unseen, which gives non-frontal samples a hidden side, as real unwrapping does.
- Ground truth: an albedo with smooth regions (skin tone, cheeks), mid-scale features (brows, eyes, lips) and fine
  detail (freckles, a faint pore texture); a random SH light (Deng's layout) whose shading, times a soft cast-shadow
  blob that SH cannot express, is the irradiance.
- The image: background, and on the projected face bilinear(albedo * irradiance, pixel_uv) (plus a little sensor
  noise). pixel_uv is the inverse of the projection above, so the trainer's lookup renderer reproduces the image
  from the ground truth (to 8-bit quantisation and the noise).
- The unwrapped texture T: the image bilinearly sampled where each visible texel projects, exact 0 elsewhere.
  Texels next to the face's silhouette pick up background, a mild form of the "stripe" artifacts the paper's
  Fig. 6 shows.
- The prior albedo A: what a 3DMM fit gives: this face's skin tone with the population's average features (no
  freckles or pores, average brow/eye/lip contrast), blurred, with a per-channel tint error, on the chart only
  (`toy_prior_albedo`). The coarse gamma is the true one plus a small error; the face mask drops a "hair" band.

Samples are dicts of numpy arrays in `tf_facetex.prior.samples`' layout, with albedo_gt_uv and irradiance_gt_uv.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import tensorflow as tf

from tf_facetex import io_utils
from tf_facetex import sh
from tf_facetex.prior.samples import encode_sample

THETA_MAX = 1.2          # rad: chart u in [-1, 1] spans +-69 degrees around the head
DOME_TILT = 0.6          # rad: the normal's vertical tilt at v = +-1
MIN_FACING = 0.2         # texels seen at a grazing angle (normal z below this) are "unseen"
HAIR_LINE = 0.8          # chart v above which the face mask (the "parsing") excludes pixels
TOY_NUM_COEFFS = 8       # coeffs stored per sample: [yaw, scale, cx, cy, 0, 0, 0, 0] (the toy's "pose")
PRIOR_BLUR = 1.0 / 24.0  # Gaussian sigma of the prior's blur, as a fraction of the UV size


def chart_coordinates(uv_size):
    """(u, v) [S, S] chart coordinates of the texel centres: u left to right, v bottom to top, both in [-1, 1]."""
    axis = np.linspace(-1.0, 1.0, uv_size)
    u, v = np.meshgrid(axis, -axis)  # row 0 is v = +1 (top)
    return u, v


def _inside_chart(u, v):
    """The egg-shaped face region of the chart: wider at the forehead than at the chin. Symmetric in u."""
    half_width = 0.86 + 0.1 * v
    return (u / half_width) ** 2 + v ** 2 <= 1.0


def toy_uv_mask(uv_size) -> np.ndarray:
    """[S, S, 1] float32: 1 on the toy face's UV chart (the toy world's `uv_mask`)."""
    u, v = chart_coordinates(uv_size)
    return _inside_chart(u, v).astype(np.float32)[..., None]


def _blur(image, sigma):
    """Separable Gaussian blur of [H, W, C] with edge replication."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, [(radius, radius), (radius, radius), (0, 0)], mode="edge")
    rows = sum(w * padded[k:k + image.shape[0]] for k, w in enumerate(taps))
    return sum(w * rows[:, k:k + image.shape[1]] for k, w in enumerate(taps))


def bilinear_lookup(maps, coords):
    """numpy twin of the trainer's lookup: maps [S, S, C], coords [..., 2] (col, row) clamped -> [..., C]."""
    size_y, size_x = maps.shape[:2]
    x = np.clip(coords[..., 0], 0, size_x - 1)
    y = np.clip(coords[..., 1], 0, size_y - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, size_x - 1), np.minimum(y0 + 1, size_y - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = maps[y0, x0] * (1 - fx) + maps[y0, x1] * fx
    bottom = maps[y1, x0] * (1 - fx) + maps[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _blob(u, v, centre, radius):
    return np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2.0 * radius ** 2))


def _ellipse(u, v, centre, half_axes, softness):
    """A soft-edged filled ellipse in [0, 1]: 1 inside, 0 outside, edge width ~softness (chart units)."""
    r = np.sqrt(((u - centre[0]) / half_axes[0]) ** 2 + ((v - centre[1]) / half_axes[1]) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(half_axes) / softness))


# The population's average face: what a 3DMM prior knows about the features of any one face.
MEAN_FACE = {"cheeks": 0.055, "brows": 0.475, "eyes": 0.85, "irises": (0.22, 0.22, 0.22), "freckles": ()}


def toy_face_parameters(rng, uv_size) -> dict:
    """The random draws of one toy face: skin tone, feature contrasts, freckles (centre, radius, depth), pores."""
    texel = 2.0 / (uv_size - 1)
    freckles = tuple((rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.6), rng.uniform(1.0, 2.2) * texel,
                      rng.uniform(0.1, 0.3)) for _ in range(int(rng.integers(20, 60))))
    return {"skin": np.array([0.72, 0.53, 0.43]) * rng.uniform(0.8, 1.15, size=3),
            "cheeks": rng.uniform(0.03, 0.08), "brows": rng.uniform(0.35, 0.6), "eyes": rng.uniform(0.7, 1.0),
            "irises": tuple(rng.uniform(0.1, 0.35, size=3)), "freckles": freckles,
            "pores": rng.normal(0.0, 1.0, size=(uv_size, uv_size, 1))}


def toy_albedo(face: dict, uv_size) -> np.ndarray:
    """[S, S, 3] in [0.02, 1]: skin tone, symmetric cheeks/brows/eyes/lips, asymmetric freckles and mottling.

    Args:
      face: `toy_face_parameters` (entries left out, e.g. 'pores', are not drawn).
    """
    u, v = chart_coordinates(uv_size)
    texel = 2.0 / (uv_size - 1)
    albedo = np.broadcast_to(face["skin"], (uv_size, uv_size, 3)).copy()
    # Smooth, symmetric variation: redder cheeks, a lighter forehead, darker sides.
    cheeks = _blob(np.abs(u), v, (0.45, -0.15), 0.22)[..., None]
    albedo += cheeks * face["cheeks"] * np.array([1.0, -0.4, -0.4])
    albedo *= (1.0 + 0.06 * v[..., None] - 0.08 * (u ** 2)[..., None])
    soft = 1.2 * texel
    # Mid-scale features (symmetric): brows, eyes, lips; edges a texel or two wide.
    brows = _ellipse(np.abs(u), v, (0.4, 0.42), (0.2, 0.045), soft)[..., None]
    albedo = albedo * (1 - brows) + brows * albedo * face["brows"]
    eyes = _ellipse(np.abs(u), v, (0.4, 0.22), (0.12, 0.05), soft)[..., None]
    albedo = albedo * (1 - eyes) + eyes * np.array([0.9, 0.88, 0.86]) * face["eyes"]
    irises = _ellipse(np.abs(u), v, (0.4, 0.22), (0.04, 0.04), soft)[..., None]
    albedo = albedo * (1 - irises) + irises * np.asarray(face["irises"])
    lips = _ellipse(u, v, (0.0, -0.5), (0.3, 0.09), soft)[..., None]
    albedo = albedo * (1 - lips) + lips * albedo * np.array([1.05, 0.7, 0.72])
    # Fine, asymmetric detail: freckles (2-4 texels across) and a faint mottling (pores) ~3 texels in size; both
    # coarser than the image's sampling of the UV map (about 0.75 pixel per texel), so a photo can show them.
    for centre_u, centre_v, radius, depth in face["freckles"]:
        albedo *= 1.0 - depth * _blob(u, v, (centre_u, centre_v), radius)[..., None]
    if face.get("pores") is not None:
        pores = _blur(face["pores"], 1.5)
        albedo *= 1.0 + 0.03 * pores / (pores.std() + 1e-6)
    return np.clip(albedo, 0.02, 1.0).astype(np.float32)


def toy_prior_albedo(face: dict, uv_size, rng) -> np.ndarray:
    """What a 3DMM fit would give for this face: its skin tone with the population's average features (no
    freckles, no pores, average brow/eye/iris/cheek contrast), blurred, with a per-channel tint error, on the chart.
    It misses the face's detail and its own feature contrasts; the refinement must take those from the photo."""
    fitted = {**face, **MEAN_FACE, "pores": None}
    tint = rng.uniform(0.85, 1.05, size=3)
    prior = np.clip(_blur(toy_albedo(fitted, uv_size), PRIOR_BLUR * uv_size) * tint, 0.0, 1.0)
    return (prior * toy_uv_mask(uv_size)).astype(np.float32)


def toy_gamma(rng) -> np.ndarray:
    """[27] Deng-layout SH coefficients (no ambient): a frontal-ish directional light on an ambient, slightly
    coloured, with small second-band terms."""
    direction = rng.normal(size=3) * np.array([0.6, 0.5, 0.0])
    direction[2] = rng.uniform(0.5, 1.0)
    direction /= np.linalg.norm(direction)
    strength = rng.uniform(0.08, 0.25)
    grey = np.zeros(9)
    grey[0] = rng.uniform(-0.1, 0.25)
    # Deng's band-1 basis is [-y, z, -x] (sh.py), so these coefficients make the shading rise along `direction`.
    grey[1:4] = strength * np.array([-direction[1], direction[2], -direction[0]])
    grey[4:] = rng.normal(0.0, 0.03, size=5)
    tint = rng.uniform(0.85, 1.1, size=3)
    return np.concatenate([grey * t for t in tint]).astype(np.float32)


def _shading(normals, gamma):
    """numpy twin of `tf_facetex.sh.shading` for one gamma: [..., 3], [27] -> [..., 3]."""

    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    basis = np.stack([np.ones_like(x), -y, z, -x, x * y, -y * z, 3 * z * z - 1, -x * z, x * x - y * y], -1)
    basis = basis * sh.LAMBERTIAN_FACTORS
    coeffs = gamma.reshape(3, 9).astype(np.float64).copy()
    coeffs[:, 0] += sh.AMBIENT_DC
    return basis @ coeffs.T


def _landmark_chart_points():
    """[68, 2] (u, v) chart positions of the 68 iBUG landmarks on the toy face (jaw, brows, nose, eyes, mouth)."""
    jaw_t = np.linspace(np.pi, 2 * np.pi, 17)
    jaw = np.stack([0.82 * np.cos(jaw_t), 0.1 + 0.8 * np.sin(jaw_t)], -1)
    brow_u = np.linspace(0.15, 0.65, 5)
    brows = np.concatenate([np.stack([-brow_u[::-1], 0.42 + 0.03 * np.sin(np.linspace(0, np.pi, 5))], -1),
                            np.stack([brow_u, 0.42 + 0.03 * np.sin(np.linspace(0, np.pi, 5))], -1)])
    bridge = np.stack([np.zeros(4), np.linspace(0.3, -0.05, 4)], -1)
    nostrils = np.stack([np.linspace(-0.14, 0.14, 5), np.full(5, -0.2)], -1)
    eye_t = np.linspace(np.pi, -np.pi, 7)[:-1]
    eye = np.stack([0.12 * np.cos(eye_t), 0.04 * np.sin(eye_t)], -1)
    eyes = np.concatenate([eye + (-0.4, 0.22), eye[[3, 2, 1, 0, 5, 4]] * (-1, 1) + (0.4, 0.22)])
    outer_t = np.linspace(np.pi, -np.pi, 13)[:-1]
    inner_t = np.linspace(np.pi, -np.pi, 9)[:-1]
    mouth = np.concatenate([np.stack([0.3 * np.cos(outer_t), -0.5 + 0.09 * np.sin(outer_t)], -1),
                            np.stack([0.22 * np.cos(inner_t), -0.5 + 0.03 * np.sin(inner_t)], -1)])
    return np.concatenate([jaw, brows, bridge, nostrils, eyes, mouth]).astype(np.float64)


def make_toy_sample(rng, image_size=64, uv_size=64, max_yaw=0.6, noise=0.004) -> dict:
    """One toy-world refinement sample (see the module docstring).

    Args:
      rng: numpy Generator.
      image_size: H of the square image.
      uv_size: S of the square UV maps.
      max_yaw: |yaw| bound in radians; beyond ~0.17 part of the chart is hidden (cos(1.2 + yaw) < MIN_FACING).
      noise: std of the sensor noise added to the image.
    Returns:
      dict of float32 numpy arrays with the keys of `tf_facetex.prior.samples` (image, face_mask, proj_mask,
      pixel_uv, texture_uv, visibility_uv, prior_albedo_uv, normals_uv, gamma, coeffs, landmarks) and
      albedo_gt_uv, irradiance_gt_uv.
    """
    u, v = chart_coordinates(uv_size)
    chart = _inside_chart(u, v)
    yaw = rng.uniform(-max_yaw, max_yaw)
    scale = rng.uniform(0.9, 1.05)
    radius_px, height_px = 0.4 * image_size * scale, 0.42 * image_size * scale
    cx = (image_size - 1) / 2 + rng.uniform(-0.04, 0.04) * image_size
    cy = (image_size - 1) / 2 + rng.uniform(-0.04, 0.04) * image_size

    # Texel geometry: camera-frame normals and visibility.
    phi = u * THETA_MAX + yaw
    tilt = v * DOME_TILT
    normals = np.stack([np.sin(phi) * np.cos(tilt), np.sin(tilt), np.cos(phi) * np.cos(tilt)], -1)
    visible = chart & (np.cos(phi) > MIN_FACING)

    # Ground truth: albedo, SH light, a soft cast shadow outside the SH model.
    face_parameters = toy_face_parameters(rng, uv_size)
    albedo = toy_albedo(face_parameters, uv_size)
    gamma = toy_gamma(rng)
    shading = _shading(normals, gamma)
    shadow_centre = (rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6))
    shadow = 1.0 - rng.uniform(0.0, 0.45) * _blob(u, v, shadow_centre, rng.uniform(0.15, 0.35))
    irradiance = np.clip(shading * shadow[..., None], 0.05, 4.0)
    colour_uv = albedo * irradiance

    # Pixels -> texels (the inverse projection) and the projected-face mask.
    rows, cols = np.meshgrid(np.arange(image_size, dtype=np.float64), np.arange(image_size, dtype=np.float64),
                             indexing="ij")
    s = (cols - cx) / radius_px
    on_cylinder = np.abs(s) < 1.0
    pixel_phi = np.arcsin(np.clip(s, -1.0, 1.0))
    pixel_u = (pixel_phi - yaw) / THETA_MAX
    pixel_v = (cy - rows) / height_px
    proj = (on_cylinder & (np.abs(pixel_u) <= 1.0) & (np.abs(pixel_v) <= 1.0) & _inside_chart(pixel_u, pixel_v)
            & (np.cos(pixel_phi) > MIN_FACING))
    pixel_uv = np.stack([(pixel_u + 1.0) / 2.0 * (uv_size - 1), (1.0 - pixel_v) / 2.0 * (uv_size - 1)], -1)
    pixel_uv = np.where(proj[..., None], np.clip(pixel_uv, 0.0, uv_size - 1), 0.0)

    # The photo: a smooth background with the face composited in.
    background = (rng.uniform(0.1, 0.7, size=3) + 0.15 * (rows / image_size)[..., None] * rng.uniform(-1, 1, size=3))
    face = bilinear_lookup(colour_uv, pixel_uv)
    image = np.where(proj[..., None], face, background) + rng.normal(0.0, noise, size=(image_size, image_size, 3))
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0  # what the 8-bit PNG will hold
    face_mask = proj & (pixel_v < HAIR_LINE)

    # The unwrapped texture: sample the photo where each visible texel lands.
    texel_px = np.stack([cx + radius_px * np.sin(phi), cy - height_px * v], -1)
    texture = np.where(visible[..., None], bilinear_lookup(image, texel_px), 0.0)

    prior = toy_prior_albedo(face_parameters, uv_size, rng)

    landmarks_uv = _landmark_chart_points()
    lm_phi = landmarks_uv[:, 0] * THETA_MAX + yaw
    landmarks = np.stack([cx + radius_px * np.sin(lm_phi), cy - height_px * landmarks_uv[:, 1]], -1)
    coeffs = np.zeros(TOY_NUM_COEFFS)
    coeffs[:4] = [yaw, scale, cx, cy]

    f32 = np.float32
    return {
        "image": image.astype(f32), "face_mask": face_mask[..., None].astype(f32),
        "proj_mask": proj[..., None].astype(f32), "pixel_uv": pixel_uv.astype(f32),
        "texture_uv": texture.astype(f32), "visibility_uv": visible[..., None].astype(f32),
        "prior_albedo_uv": prior.astype(f32), "normals_uv": normals.astype(f32),
        "gamma": (gamma + rng.normal(0.0, 0.01, size=27)).astype(f32), "coeffs": coeffs.astype(f32),
        "landmarks": landmarks.astype(f32), "albedo_gt_uv": albedo, "irradiance_gt_uv": irradiance.astype(f32),
    }


def write_toy_shards(out_dir, num_samples, image_size=64, uv_size=64, num_shards=4, seed=0, prefix="train",
                     max_yaw=0.6) -> list:
    """Writes `num_samples` toy samples as `{prefix}-{k:05d}-of-{n:05d}.tfrecord` shards (round-robin).

    Also writes `{prefix}-meta.json` ({image_size, uv_size, num_coeffs, num_samples, seed}) for reference.
    Several shards let multi-worker runs give each worker its own files.

    Returns:
      the shard paths.
    """

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, num_samples))
    paths = [out_dir / f"{prefix}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]
    rng = np.random.default_rng(seed)
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    try:
        for index in range(num_samples):
            sample = make_toy_sample(rng, image_size, uv_size, max_yaw=max_yaw)
            sample["source"] = f"toy:{seed}:{index}"
            writers[index % num_shards].write(encode_sample(sample))
    finally:
        for writer in writers:
            writer.close()
    io_utils.write_text(out_dir / f"{prefix}-meta.json", json.dumps(
        {"image_size": image_size, "uv_size": uv_size, "num_coeffs": TOY_NUM_COEFFS, "num_samples": num_samples,
         "seed": seed, "kind": "toy"}, indent=2) + "\n")
    return [str(p) for p in paths]


def write_toy_dataset(out_dir, num_samples, eval_fraction=0.15, image_size=64, uv_size=64, num_shards=4, seed=0,
                      max_yaw=0.6) -> dict:
    """Train and eval shards (the paper's 85/15 split by default) under out_dir.

    Returns:
      {'train': glob pattern, 'eval': glob pattern (None when no eval samples), 'num_train', 'num_eval'}.
    """
    num_eval = int(round(num_samples * eval_fraction))
    num_train = num_samples - num_eval
    write_toy_shards(out_dir, num_train, image_size, uv_size, num_shards, seed, "train", max_yaw)
    if num_eval:
        # A different seed: eval faces are not copies of training faces.
        write_toy_shards(out_dir, num_eval, image_size, uv_size, max(1, num_shards // 4), seed + 1_000_003, "eval",
                         max_yaw)
    out_dir = pathlib.Path(out_dir)
    return {"train": str(out_dir / "train-*.tfrecord"), "eval": str(out_dir / "eval-*.tfrecord") if num_eval else None,
            "num_train": num_train, "num_eval": num_eval}


def toy_identity_embedding(images, landmarks=None, detail_sigma=2.0, pool=2):
    """A stand-in for the identity network (ArcFace) on toy faces: the image's lighting-robust fine detail.

    ArcFace answers "same person?" from features that survive changes of lighting. On toy faces identity lives in
    the albedo's detail (freckles, brow and lip contrast), and smooth SH shading is what the lighting changes, so
    the embedding is the high-pass of the log-luminance (log turns albedo x shading into a sum; subtracting a
    Gaussian blur removes the smooth shading), average-pooled by `pool`. The cross-perceptual loss compares
    R(A'_b, L'_a) with I_b in the same geometry, so no alignment is needed and `landmarks` is ignored. No weights;
    differentiable. For toy-data experiments and tests only.

    Args:
      images: [B, H, W, 3] in [0, 1].
      landmarks: ignored ([B, 68, 2]; part of the embed_fn interface).
    Returns:
      [B, (H / pool) * (W / pool)] unnormalised embeddings.
    """

    del landmarks
    images = tf.convert_to_tensor(images, tf.float32)
    # Renders with an untrained light map can go negative: clamp before the log.
    log_luminance = tf.math.log(tf.maximum(tf.reduce_mean(images, axis=-1, keepdims=True), 0.0) + 0.05)
    radius = int(math.ceil(3 * detail_sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / detail_sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    padded = tf.pad(log_luminance, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    blurred = tf.nn.conv2d(padded, taps.reshape(-1, 1, 1, 1), 1, "VALID")
    blurred = tf.nn.conv2d(blurred, taps.reshape(1, -1, 1, 1), 1, "VALID")
    detail = tf.nn.avg_pool2d(log_luminance - blurred, pool, pool, "VALID")
    return tf.reshape(detail, [tf.shape(images)[0], -1])
