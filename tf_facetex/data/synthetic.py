"""Synthetic faces with full ground truth: albedo UV, per-texel irradiance, coefficients, landmarks, masks.

The method never sees true reflectance; these faces let us measure albedo error, not only re-render error.
Each face is the morphable model with random identity, expression and pose, an albedo painted in UV space
(skin tone, regional structure from the landmarks' UV positions, and fine detail: pores, freckles, moles,
stubble, wrinkles), lit by random SH light PLUS effects the SH model cannot explain (a hard directional
light with cast shadows, specular highlights, coloured light), over a random background, with random
occluders. Every difficulty knob is a field of `SyntheticConfig` (and a flag of scripts/make_synthetic.py).

Image formation (UV space, then `FaceRenderer.render_uv_maps`):
  irradiance_uv = sh.shading(normals_uv, gamma) + k_dir * colour_dir * max(0, n.l) * lit_from_light
  colour_uv     = albedo_uv * irradiance_uv + k_spec * colour_dir * max(0, n.h)^shininess * lit_from_light
``irradiance_gt_uv`` is the diffuse irradiance (what an albedo of 1 would show); specular highlights are in
the image only, as in real photos.
"""
import dataclasses
import json
import pathlib

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_facetex import camera, sh
from tf_facetex import io_utils
from tf_facetex.conventions import CROP_SIZE
from tf_facetex.data import tfrecords
from tf_facetex.data.align import AlignedFace
from tf_facetex.errors import FaceTexError
from tf_facetex.face_model.decoder import CoefficientLayout, FaceDecoder
from tf_facetex.face_model.decoder import is_blendshape_model
from tf_facetex.rendering import FaceRenderer
from tf_facetex.rendering import rasterize as rasterize_lib
from tf_facetex.rendering import uv as uv_lib

# Linear-ish reflectances of skin across the range of human skin tones (light to dark).
SKIN_TONES = np.array([[0.78, 0.60, 0.51], [0.72, 0.53, 0.42], [0.63, 0.44, 0.33], [0.52, 0.34, 0.24],
                       [0.40, 0.25, 0.17], [0.29, 0.18, 0.12]], np.float32)


@dataclasses.dataclass
class SyntheticConfig:
    """Difficulty knobs. Angles in degrees, intensities relative to an albedo of 1."""

    image_size: int = CROP_SIZE
    uv_size: int = 256
    id_scale: float = 1.0             # std of identity coefficients
    exp_scale: float = 0.5            # blend-shape weights up to this / PCA std
    max_yaw: float = 40.0
    max_pitch: float = 15.0
    max_roll: float = 10.0
    max_shift: float = 0.08           # decimetres, in-plane translation
    max_depth_shift: float = 0.4      # decimetres, towards/away from the camera
    sh_strength: float = 0.5          # directional part of the SH light relative to its ambient part
    light_colour: float = 0.15        # spread of per-channel light colour
    directional_prob: float = 0.7     # probability of a hard directional light (cast shadows)
    directional_max: float = 0.6      # its maximal intensity
    specular_prob: float = 0.5
    specular_max: float = 0.25
    occluder_prob: float = 0.3
    detail: float = 1.0               # scales pores, freckles, moles, stubble, wrinkles (0 = none)
    noise_std: float = 0.01           # sensor noise on the final image


def _smooth_noise(rng, size, scale, channels=1):
    """Band-limited noise in [-1, 1]: [size, size, channels]."""
    coarse = max(2, int(size / scale))
    field = rng.standard_normal((coarse, coarse, channels)).astype(np.float32)
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)
    return field / (np.abs(field).max() + 1e-6)


class SyntheticFaceGenerator:
    """Generates batches of synthetic faces for one face model (and one `FaceRenderer`)."""

    def __init__(self, model, renderer, config: SyntheticConfig = SyntheticConfig()):
        if renderer.image_size != config.image_size or renderer.uv_size != config.uv_size:
            raise ValueError("renderer and config disagree on image/uv size")
        self.model = model
        self.renderer = renderer
        self.config = config
        self.decoder = FaceDecoder(model)
        self.layout = CoefficientLayout.for_model(model)
        self.blendshapes = is_blendshape_model(model)
        size = config.uv_size
        primary = uv_lib._primary_uv(model)                        # one UV per geometry vertex
        self.landmark_texels = uv_lib.uv_to_texel_np(primary[model.landmark_indices], size).astype(np.float32)
        self.uv_mask = renderer.uv_raster.mask.astype(np.float32)[..., None]
        self.texel_scale = size / 256.0

    # --------------------------------------------------------------------------------- coefficients
    def sample_coefficients(self, rng, batch):
        c = self.config
        parts = {"id": c.id_scale * rng.standard_normal((batch, self.model.num_id))}
        if self.blendshapes:
            active = rng.uniform(size=(batch, self.model.num_exp)) < 0.12
            parts["exp"] = c.exp_scale * rng.uniform(size=(batch, self.model.num_exp)) * active
        else:
            parts["exp"] = c.exp_scale * rng.standard_normal((batch, self.model.num_exp))
        if self.model.num_tex:
            parts["tex"] = rng.standard_normal((batch, self.model.num_tex))
        parts["angles"] = np.radians(np.stack([rng.uniform(-c.max_pitch, c.max_pitch, batch),
                                               rng.uniform(-c.max_yaw, c.max_yaw, batch),
                                               rng.uniform(-c.max_roll, c.max_roll, batch)], axis=1))
        parts["translation"] = np.stack([rng.uniform(-c.max_shift, c.max_shift, batch),
                                         rng.uniform(-c.max_shift, c.max_shift, batch),
                                         rng.uniform(-c.max_depth_shift, c.max_depth_shift, batch)], axis=1)
        parts["gamma"] = np.stack([self.sample_gamma(rng) for _ in range(batch)])
        return {k: v.astype(np.float32) for k, v in parts.items()}

    def sample_gamma(self, rng):
        """Deng-layout SH coefficients (ambient offset excluded) of a plausible, possibly coloured light."""
        c = self.config
        level = rng.uniform(0.55, 1.05)                             # irradiance of a front-facing point
        colour = 1.0 + c.light_colour * rng.uniform(-1, 1, 3)
        direction = rng.standard_normal(3)
        direction[2] = abs(direction[2]) + 0.3                      # mostly from the camera side
        direction /= np.linalg.norm(direction)
        strength = c.sh_strength * rng.uniform(0.2, 1.0)
        gamma = np.zeros((3, 9), np.float64)
        basis = sh.LAMBERTIAN_FACTORS
        for ch in range(3):
            dc = level * colour[ch] / basis[0]
            gamma[ch, 0] = dc
            # First band along the light direction (Deng's signs: [-y, z, -x]).
            gamma[ch, 1:4] = strength * dc * basis[0] / basis[1] * np.array([-direction[1], direction[2],
                                                                              -direction[0]])
        second_order = 0.05 * rng.standard_normal(5)               # one shape for all channels
        for ch in range(3):
            gamma[ch, 4:] = second_order * gamma[ch, 0]
        gamma[:, 0] -= sh.AMBIENT_DC
        return gamma.reshape(27)

    # --------------------------------------------------------------------------------- albedo painting
    def paint_albedo(self, rng, base_uv):
        """A detailed albedo UV map [S, S, 3] in [0, 1] on top of the model's (rasterised) albedo."""
        c = self.config
        size = c.uv_size
        k = self.texel_scale
        lm = self.landmark_texels
        tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.08, 3)
        if self.model.albedo_source == "uniform":
            albedo = np.broadcast_to(tone, (size, size, 3)).copy()
        else:  # a real albedo model: keep its structure, shift the tone a little
            albedo = base_uv * (tone / SKIN_TONES[2])
        albedo *= 1.0 + 0.06 * _smooth_noise(rng, size, 24 * k, 3)

        def region(points, closed=True, thickness=None, blur=5):
            canvas = np.zeros((size, size), np.float32)
            pts = np.round(points).astype(np.int32)
            if thickness is None:
                cv2.fillPoly(canvas, [pts], 1.0)
            else:
                cv2.polylines(canvas, [pts], closed, 1.0, max(1, int(thickness)))
            blur = int(blur * k) | 1
            return cv2.GaussianBlur(canvas, (blur, blur), 0)[..., None]

        lips = region(lm[48:60])
        lip_colour = tone * np.array([1.05, 0.62, 0.65]) * rng.uniform(0.8, 1.0)
        albedo = albedo * (1 - lips) + lip_colour * lips
        brow_colour = np.array([0.12, 0.08, 0.06]) * rng.uniform(0.6, 2.0)
        for brow in (lm[17:22], lm[22:27]):
            mask = region(brow, closed=False, thickness=5 * k, blur=7) * rng.uniform(0.5, 0.9)
            albedo = albedo * (1 - mask) + brow_colour * mask
        for cheek in (0.5 * (lm[2] + lm[31]), 0.5 * (lm[14] + lm[35])):
            canvas = np.zeros((size, size), np.float32)
            cv2.circle(canvas, tuple(int(v) for v in cheek), int(14 * k), 1.0, -1)
            flush = cv2.GaussianBlur(canvas, (int(31 * k) | 1,) * 2, 0)[..., None] * rng.uniform(0, 0.15)
            albedo = albedo * (1 - flush * np.array([0.0, 0.35, 0.3]))
        if c.detail > 0:
            albedo = self._paint_detail(rng, albedo, tone, lips)
        return np.clip(albedo, 0.02, 1.0).astype(np.float32)

    def _paint_detail(self, rng, albedo, tone, lips):
        c = self.config
        size, k, lm, d = c.uv_size, self.texel_scale, self.landmark_texels, c.detail
        pores = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (3, 3), 0.7)
        albedo = albedo * (1.0 + 0.035 * d * pores[..., None])
        dots = np.zeros((size, size), np.float32)
        if rng.uniform() < 0.5:                                     # freckles over the nose and cheeks
            centre = lm[30]
            for _ in range(int(rng.integers(20, 80) * d)):
                p = centre + rng.normal(0, 25 * k, 2) * np.array([1.6, 0.6])
                cv2.circle(dots, (int(p[0]), int(p[1])), max(1, int(rng.uniform(0.7, 1.6) * k)),
                           float(rng.uniform(0.2, 0.5)), -1)
        for _ in range(int(rng.integers(0, 4) * d)):                # moles anywhere on the face
            p = lm[rng.integers(0, 68)] + rng.normal(0, 20 * k, 2)
            cv2.circle(dots, (int(p[0]), int(p[1])), max(1, int(rng.uniform(1.5, 2.5) * k)), 0.7, -1)
        dots = cv2.GaussianBlur(dots, (3, 3), 0)[..., None]
        albedo = albedo * (1 - dots * np.array([0.45, 0.6, 0.7]))
        if rng.uniform() < 0.3 * min(1.0, d):                         # stubble: chin, upper lip, jaw
            beard = np.zeros((size, size), np.float32)
            cv2.fillPoly(beard, [np.round(np.concatenate([lm[3:14], lm[35:30:-1]])).astype(np.int32)], 1.0)
            beard = cv2.GaussianBlur(beard, (int(15 * k) | 1,) * 2, 0) * (1 - lips[..., 0])
            hairs = (rng.uniform(size=(size, size)) < 0.25).astype(np.float32)
            stubble = beard * hairs * rng.uniform(0.3, 0.6)
            albedo = albedo * (1 - stubble[..., None] * 0.7)
        wrinkles = np.zeros((size, size), np.float32)
        forehead_y = min(lm[19, 1], lm[24, 1]) - 12 * k
        for i in range(int(rng.integers(0, 4) * d)):               # forehead lines
            y = forehead_y - i * rng.uniform(6, 9) * k
            xs = np.linspace(lm[18, 0], lm[25, 0], 20)
            ys = y + 1.5 * k * np.sin(xs / (9 * k) + rng.uniform(0, 6))
            cv2.polylines(wrinkles, [np.round(np.stack([xs, ys], 1)).astype(np.int32)], False,
                          float(rng.uniform(0.3, 0.7)), 1)
        if rng.uniform() < 0.5 * min(1.0, d):                        # nasolabial folds
            for wing, corner in ((31, 48), (35, 54)):
                pts = np.stack([np.linspace(lm[wing, 0], lm[corner, 0], 10),
                                np.linspace(lm[wing, 1], lm[corner, 1], 10)], 1)
                pts[:, 0] += np.sin(np.linspace(0, np.pi, 10)) * (lm[corner, 0] - lm[wing, 0]) * 0.4
                cv2.polylines(wrinkles, [np.round(pts).astype(np.int32)], False, 0.5, max(1, int(k)))
        wrinkles = cv2.GaussianBlur(wrinkles, (3, 3), 0)[..., None]
        return albedo * (1 - 0.25 * wrinkles)

    # --------------------------------------------------------------------------------- lighting
    def shadow_map(self, posed, direction, size=256):
        """Light-view z-buffer for a directional light (orthographic): returns a lookup function.

        Args:
          posed: [N, 3] posed vertices (one face); direction: [3] unit vector towards the light.
        """
        helper = np.array([0.0, 1.0, 0.0]) if abs(direction[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(helper, direction)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(direction, e1)
        basis = np.stack([e1, e2]).astype(np.float32)
        extent = 1.25 * np.abs(posed - posed.mean(0)).max()
        centre = posed.mean(0)

        def to_light(points):
            rel = points - centre
            xy = (rel @ basis.T / extent * 0.5 + 0.5) * (size - 1)
            depth = 10.0 - rel @ direction.astype(np.float32)      # nearer to the light = smaller depth
            return xy, depth

        xy, depth = to_light(posed)
        triangle_id, zbuffer = rasterize_lib.visibility(xy[None], depth[None], self.model.triangles, size)
        zbuffer = tf.where(triangle_id >= 0, zbuffer, 1e6)

        def lit(points_uv):
            pxy, pdepth = to_light(points_uv.reshape(-1, 3))
            nearest = uv_lib.gather_pixels(zbuffer, tf.constant(pxy[None], tf.float32))[0].numpy()
            # A bias of a few shadow-map texels against self-shadowing stripes ("shadow acne").
            return (pdepth <= nearest + 0.06).reshape(points_uv.shape[:-1]).astype(np.float32)

        return lit

    # --------------------------------------------------------------------------------- one batch
    def generate(self, rng, batch):
        """Returns a dict of numpy arrays for ``batch`` faces (see scripts/make_synthetic.py for the keys)."""
        c = self.config
        parts = self.sample_coefficients(rng, batch)
        coeffs = self.layout.join({k: tf.constant(v) for k, v in parts.items()}).numpy()
        decoded = self.decoder.pose(coeffs)
        posed = decoded["posed"]
        raster = self.renderer.rasterize(posed)
        normals_uv = self.renderer.normals_uv(posed)
        positions_uv = self.renderer.rasterize_to_uv(posed).numpy()
        base_albedo_uv = self.renderer.rasterize_to_uv(decoded["albedo"]).numpy()
        sh_irradiance = self.renderer.shading_uv(parts["gamma"], normals_uv).numpy()
        normals = normals_uv.numpy()
        posed_np = posed.numpy()
        albedo, irradiance, colour = [], [], []
        for b in range(batch):
            a = self.paint_albedo(rng, base_albedo_uv[b]) * self.uv_mask + (1 - self.uv_mask) * 0.5
            e = sh_irradiance[b].copy()
            col = np.zeros_like(e)
            if rng.uniform() < c.directional_prob:
                direction = rng.standard_normal(3)
                direction[2] = abs(direction[2]) + 0.2
                direction /= np.linalg.norm(direction)
                strength = rng.uniform(0.2, 1.0) * c.directional_max
                tint = 1.0 + c.light_colour * rng.uniform(-1, 1, 3)
                lit = self.shadow_map(posed_np[b], direction)(positions_uv[b])[..., None]
                cosine = np.clip(normals[b] @ direction, 0.0, None)[..., None]
                e = e + strength * tint * cosine * lit
                if rng.uniform() < c.specular_prob:
                    view = np.array([0.0, 0.0, camera.CAMERA_DISTANCE]) - positions_uv[b]
                    view /= np.linalg.norm(view, axis=-1, keepdims=True) + 1e-9
                    half = view + direction
                    half /= np.linalg.norm(half, axis=-1, keepdims=True) + 1e-9
                    shininess = rng.uniform(15, 60)
                    spec = np.clip((normals[b] * half).sum(-1), 0, None)[..., None] ** shininess
                    col = rng.uniform(0.3, 1.0) * c.specular_max * tint * spec * lit * (cosine > 0)
            e = np.clip(e, 0.0, 4.0) * self.uv_mask
            albedo.append(a)
            irradiance.append(e)
            col = a * e + col
            colour.append(col)
        albedo, irradiance, colour = (np.stack(x).astype(np.float32) for x in (albedo, irradiance, colour))
        face, proj_mask = self.renderer.render_uv_maps(colour, raster)
        face, proj_mask = face.numpy(), proj_mask.numpy()
        pixels, _ = camera.project(tf.gather(posed, self.model.landmark_indices, axis=1), c.image_size)
        pixels_np = pixels.numpy()
        images, clean_images, occluders = [], [], []
        for b in range(batch):
            background = self._background(rng)
            image = face[b] * proj_mask[b] + background * (1 - proj_mask[b])
            clean = image = self._fill_openings(rng, image, pixels_np[b], proj_mask[b])
            occluder = np.zeros(image.shape[:2], np.float32)
            if rng.uniform() < c.occluder_prob:
                image, occluder = self._occlude(rng, image)
            # One noise draw for both renders (and the random stream of earlier versions): the unoccluded
            # render differs from the photo by the occluder alone (the ghosting reference).
            noise = rng.normal(0, c.noise_std, image.shape)
            images.append(np.clip(image + noise, 0, 1))
            clean_images.append(np.clip(clean + noise, 0, 1))
            occluders.append(occluder)
        occluders = np.stack(occluders)[..., None]
        return {"image": (np.stack(images) * 255 + 0.5).astype(np.uint8),
                "image_clean": (np.stack(clean_images) * 255 + 0.5).astype(np.uint8),
                "albedo_gt_uv": albedo, "irradiance_gt_uv": irradiance,
                "coeffs": coeffs.astype(np.float32), "landmarks": pixels_np.astype(np.float32),
                "proj_mask": proj_mask.astype(np.float32), "occluder_mask": occluders,
                "face_mask": (proj_mask * (1 - occluders)).astype(np.float32), "uv_mask": self.uv_mask}

    def _fill_openings(self, rng, image, landmarks, proj_mask):
        """Paints eyes and the mouth interior where the face mesh has holes (ICT has no eyeballs/teeth)."""
        size = self.config.image_size
        holes = np.zeros((size, size), np.float32)
        paint = np.zeros((size, size, 3), np.float32)
        iris = rng.uniform(0.05, 0.35) * np.array([1.0, 0.8, 0.6])
        for eye in (landmarks[36:42], landmarks[42:48]):
            pts = np.round(eye).astype(np.int32)
            cv2.fillPoly(holes, [pts], 1.0)
            cv2.fillPoly(paint, [pts], (0.75, 0.72, 0.70))
            centre = eye.mean(0)
            radius = max(1, int(0.28 * np.linalg.norm(eye[3] - eye[0])))
            cv2.circle(paint, (int(centre[0]), int(centre[1])), radius, tuple(float(v) for v in iris), -1)
        mouth = np.round(landmarks[60:68]).astype(np.int32)
        cv2.fillPoly(holes, [mouth], 1.0)
        cv2.fillPoly(paint, [mouth], (0.25, 0.08, 0.08))
        fill = (holes * (1.0 - proj_mask[..., 0]))[..., None]
        return image * (1 - fill) + paint * fill

    def _background(self, rng):
        size = self.config.image_size
        kind = rng.integers(3)
        base = rng.uniform(0.05, 0.95, 3)
        if kind == 0:
            return np.broadcast_to(base, (size, size, 3)).astype(np.float32)
        if kind == 1:
            ramp = np.linspace(0, 1, size)[:, None, None] * rng.uniform(-0.5, 0.5, 3)
            return np.clip(base + ramp + np.zeros((size, size, 3)), 0, 1).astype(np.float32)
        blobs = 0.5 + 0.5 * _smooth_noise(rng, size, rng.uniform(8, 40), 3)
        return (0.5 * base + 0.5 * blobs).astype(np.float32)

    def _occlude(self, rng, image):
        size = self.config.image_size
        mask = np.zeros((size, size), np.float32)
        kind = rng.integers(3)
        if kind == 0:    # a hand/object blob from an edge
            centre = (int(rng.uniform(0.2, 0.8) * size), int(rng.choice([0.85, 0.95]) * size))
            axes = (int(rng.uniform(0.15, 0.3) * size), int(rng.uniform(0.1, 0.25) * size))
            cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        elif kind == 1:  # glasses-like bar over the eyes
            y = int(size * rng.uniform(0.33, 0.40))
            cv2.rectangle(mask, (int(0.2 * size), y), (int(0.8 * size), y + int(0.05 * size)), 1.0, -1)
        else:            # a microphone/strand-like stripe
            x = int(rng.uniform(0.2, 0.8) * size)
            cv2.line(mask, (x, 0), (x + int(rng.uniform(-40, 40)), size), 1.0, int(rng.uniform(4, 12)))
        colour = rng.uniform(0.0, 1.0, 3) * (0.6 + 0.4 * _smooth_noise(rng, size, 20, 1))
        m = mask[..., None]
        return image * (1 - m) + colour * m, mask


# ------------------------------------------------------------------------------------- dataset writer
def _split_of(index: int, test_fraction: float) -> str:
    """Deterministic train/test split by index (a multiplicative hash, so splits interleave)."""
    return "test" if ((index * 2654435761) % 2 ** 32) / 2 ** 32 < test_fraction else "train"


def write_synthetic_dataset(model, config: SyntheticConfig, out_dir, count: int, seed: int = 0, batch_size: int = 8,
                            tfrecord: bool = False, num_shards: int = 4, test_fraction: float = 0.15,
                            progress: bool = True, renderer=None) -> dict:
    """Writes ``count`` synthetic faces under ``out_dir`` (layout in scripts/make_synthetic.py).

    Batch k (faces k*batch_size ...) is drawn from ``np.random.default_rng([seed, k])``, so a re-run with the
    same seed and batch size resumes where a killed run stopped and reproduces the same faces.
    """

    out = pathlib.Path(out_dir)
    for sub in ("images", "albedo", "gt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    renderer = renderer or FaceRenderer(model, config.image_size, config.uv_size)
    generator = SyntheticFaceGenerator(model, renderer, config)
    manifest = {"kind": "tf_facetex synthetic faces", "count": count, "seed": seed, "batch_size": batch_size,
                "config": dataclasses.asdict(config), "face_model": model.source, "coefficient_layout":
                generator.layout.to_dict(), "test_fraction": test_fraction}
    previous = out / "manifest.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        for key in ("seed", "batch_size", "config"):
            if old.get(key) != manifest[key]:
                raise FaceTexError(f"{out}: holds synthetic faces made with another {key}; use a new --out")
    io_utils.write_json(previous, manifest)

    def names(i):
        stem = f"{i:06d}"
        return out / "images" / f"{stem}.png", out / "albedo" / f"{stem}.png", out / "gt" / f"{stem}.npz"

    generated = 0
    batches = range((count + batch_size - 1) // batch_size)
    for k in tqdm(batches, desc="synthetic faces", unit="batch", disable=not progress):
        indices = list(range(k * batch_size, min(count, (k + 1) * batch_size)))
        if all(names(i)[2].is_file() for i in indices):
            continue
        faces = generator.generate(np.random.default_rng([seed, k]), batch_size)
        for j, i in enumerate(indices):
            image_path, albedo_path, gt_path = names(i)
            io_utils.write_image(image_path, faces["image"][j])
            albedo16 = np.round(np.clip(faces["albedo_gt_uv"][j], 0, 1) * 65535).astype(np.uint16)
            ok, png = cv2.imencode(".png", cv2.cvtColor(albedo16, cv2.COLOR_RGB2BGR))
            io_utils.write_bytes(albedo_path, png.tobytes())
            with io_utils.atomic_path(gt_path) as tmp:   # the .npz last: it marks the face as complete
                with open(tmp, "wb") as handle:
                    np.savez_compressed(handle, **{key: faces[key][j] for key in
                                                   ("albedo_gt_uv", "irradiance_gt_uv", "coeffs", "landmarks",
                                                    "proj_mask", "face_mask", "occluder_mask", "image_clean")},
                                        split=_split_of(i, test_fraction))
            generated += 1
    np.save(out / "uv_mask.npy", generator.uv_mask)
    if tfrecord:
        write_synthetic_tfrecords(out, count, num_shards, test_fraction)
    return {"count": count, "generated": generated, "out": str(out)}


def load_manifest(out_dir) -> dict:
    """The ``manifest.json`` of a scripts/make_synthetic.py folder (count, seed, config); FaceTexError if absent."""
    path = pathlib.Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise FaceTexError(f"{out_dir}: not a folder of scripts/make_synthetic.py (no manifest.json)")
    return json.loads(path.read_text())


def load_synthetic_face(out_dir, index: int) -> dict:
    """Reads face ``index`` back: {'image' uint8 [H,W,3], and the ground-truth arrays of gt/*.npz}."""

    out = pathlib.Path(out_dir)
    image = cv2.cvtColor(cv2.imread(str(out / "images" / f"{index:06d}.png")), cv2.COLOR_BGR2RGB)
    with np.load(out / "gt" / f"{index:06d}.npz") as data:
        face = {key: data[key] for key in data.files}
    face["image"] = image
    face["split"] = str(face["split"])
    return face


def true_aligned_face(face: dict, clean: bool = False) -> AlignedFace:
    """A synthetic face (`load_synthetic_face`) as the `AlignedFace` of its true landmarks and true face mask.

    The images are already 224 crops, so the alignment is the identity. ``clean``: the unoccluded render
    (``image_clean``) with the whole projected face as its mask, instead of the photo with its occluder masked out.
    """
    image = face["image_clean"] if clean else face["image"]
    size = image.shape[0]
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mask = (face["proj_mask"] if clean else face["face_mask"])[..., 0].astype(np.float32)
    return AlignedFace(image=image, landmarks=face["landmarks"].astype(np.float32), transform=identity,
                       inverse=identity, original_shape=(size, size), valid=np.ones((size, size), np.float32),
                       mask=mask, box=np.array([0, 0, size, size], np.float32), score=1.0, face_index=0)


def write_synthetic_tfrecords(out_dir, count: int, num_shards: int = 4, test_fraction: float = 0.15):
    """Packs written faces into data-pipeline TFRecords (identity alignment: they are already 224 crops)."""

    out = pathlib.Path(out_dir) / "tfrecords"
    out.mkdir(parents=True, exist_ok=True)
    buckets = {}
    for i in range(count):
        face = load_synthetic_face(out_dir, i)
        aligned = true_aligned_face(face)
        extras = {"albedo_uv": np.round(np.clip(face["albedo_gt_uv"], 0, 1) * 65535).astype(np.uint16),
                  "irradiance_uv": face["irradiance_gt_uv"].astype(np.float32),
                  "coeffs": face["coeffs"].astype(np.float32),
                  "proj_mask": face["proj_mask"][..., 0].astype(np.float32)}
        record = tfrecords.encode_example(aligned, source_path=f"synthetic/{i:06d}", sha1=f"synthetic-{i:06d}",
                                          split=face["split"], extras=extras)
        buckets.setdefault((face["split"], i % num_shards), []).append(record)
    for (split, shard), records in sorted(buckets.items()):
        tfrecords.write_records_atomic(out / f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord", records)
    return out
