"""Lighting for relighting: named SH presets, SH coefficients from JSON, and environment maps projected to SH.

Every light here is 27 coefficients in Deng's layout ``[R0..R8, G0..G8, B0..B8]`` *without* the 0.8 ambient
(`tf_facetex.sh` adds it at shading time), i.e. exactly what `coefficients.json` stores as ``gamma``.

Frame (the project's world/camera frame, `tf_facetex.camera`): y up, the camera at +z looking down -z, image
right = +x. A light *from* direction d lights the normals near d, so 'left' (d = -x) lights the side of the face
that appears on the image's left (the subject's right cheek).

Presets are built physically, not typed in: an environment (a constant ambient radiance plus soft disc lights)
is sampled on an equirectangular grid and projected with `sh.project_irradiance_to_sh` using per-sample solid
angles, then scaled so that the brightest front-facing normal shades to `PEAK_SHADING` (so presets are
comparable with each other and with fitted lights). 'authors' is the 9-vector of the authors' Relight.ipynb
(docs/METHOD.md, "Lighting presets"), divided by 3 and replicated over RGB as they did; 'ambient' is all zeros (Deng's default).

Environment maps (equirectangular / lat-long) follow this orientation: the image centre is the direction the
camera looks (-z, behind the head), the left and right edges the direction behind the camera (+z, what lights the
face from the front), the top row straight up (+y), image-right = +x. 8-bit images are sRGB-decoded to linear;
.hdr/.exr are read as linear radiance.
"""
import json
import math
import pathlib

import numpy as np

from tf_facetex.errors import FaceTexError, ImageError

NUM_COEFFS = 27
PEAK_SHADING = 1.0          # brightest front-facing normal shades to this (mean over RGB) after normalisation
ENV_SAMPLE_HEIGHT = 64      # SH bands 0-2 need little resolution; area-averaging to 64 x 128 keeps integrals
AUTHORS_RELIGHT_9 = (1.084, -0.464, 0.268, -0.622, 0.303, -0.199, -0.0616, -0.318, 0.192)  # Relight.ipynb

# name -> (ambient RGB radiance, [(direction (x, y, z), RGB radiance, angular radius in degrees), ...], description)
_PRESET_ENVIRONMENTS = {
    "front": ((0.25, 0.25, 0.25), [((0.0, 0.35, 1.0), (1.0, 1.0, 1.0), 35.0)],
              "soft key light from the camera, slightly above"),
    "left": ((0.2, 0.2, 0.2), [((-1.0, 0.25, 0.45), (1.0, 1.0, 1.0), 30.0)],
             "key light from the image's left"),
    "right": ((0.2, 0.2, 0.2), [((1.0, 0.25, 0.45), (1.0, 1.0, 1.0), 30.0)],
              "key light from the image's right"),
    "top": ((0.2, 0.2, 0.2), [((0.0, 1.0, 0.35), (1.0, 1.0, 1.0), 35.0)],
            "overhead light, slightly in front"),
    "studio": ((0.15, 0.15, 0.15), [((-0.7, 0.55, 0.8), (1.0, 0.97, 0.92), 30.0),   # key, warm, upper left
                                    ((0.8, 0.1, 0.6), (0.35, 0.37, 0.4), 40.0),     # fill, cool, right
                                    ((0.0, 0.6, -1.0), (0.6, 0.6, 0.6), 30.0)],     # rim from behind
               "three-point studio lighting: warm key upper left, cool fill right, rim light"),
    "sunset": ((0.1, 0.1, 0.14), [((1.0, 0.08, 0.35), (2.5, 1.35, 0.6), 20.0),     # low orange sun, right
                                  ((0.0, 1.0, 0.0), (0.12, 0.17, 0.3), 60.0)],     # blue sky above
               "low orange sun from the image's right, blue sky above"),
}
PRESET_NAMES = tuple(_PRESET_ENVIRONMENTS) + ("authors", "ambient")
_PRESET_CACHE = {}


# ----------------------------------------------------------------------------------------------- sphere sampling
def equirect_directions(height, width=None):
    """Directions and solid angles of the pixel centres of an equirectangular map (orientation: module doc).

    Args:
      height: rows H (latitude from +90 to -90 degrees); width: columns W (default 2 H).
    Returns:
      directions: float64 [H, W, 3] unit vectors (x, y, z); solid_angles: float64 [H, W], summing to ~4 pi
      (cos(latitude) d_lat d_lon: rows near the poles cover less of the sphere).
    """
    width = width or 2 * height
    latitude = math.pi * (0.5 - (np.arange(height) + 0.5) / height)            # +pi/2 (top) .. -pi/2
    longitude = 2.0 * math.pi * ((np.arange(width) + 0.5) / width - 0.5)       # 0 at the centre column
    lat, lon = np.meshgrid(latitude, longitude, indexing="ij")
    directions = np.stack([np.sin(lon) * np.cos(lat), np.sin(lat), -np.cos(lon) * np.cos(lat)], axis=-1)
    solid_angles = np.cos(lat) * (math.pi / height) * (2.0 * math.pi / width)
    return directions, solid_angles


def disc_lights_environment(ambient, lights, height=ENV_SAMPLE_HEIGHT):
    """An equirectangular radiance map: constant ambient plus soft-edged disc lights.

    Args:
      ambient: RGB radiance everywhere; lights: [(direction, RGB radiance, angular radius in degrees), ...].
    Returns:
      float64 [H, 2H, 3] radiance.
    """
    directions, _ = equirect_directions(height)
    radiance = np.broadcast_to(np.asarray(ambient, np.float64), directions.shape).copy()
    for direction, colour, radius in lights:
        axis = np.asarray(direction, np.float64)
        axis /= np.linalg.norm(axis)
        angle = np.degrees(np.arccos(np.clip(directions @ axis, -1.0, 1.0)))
        weight = np.clip((radius - angle) / (0.25 * radius) + 0.5, 0.0, 1.0)   # soft edge over radius / 4
        radiance += weight[..., None] * np.asarray(colour, np.float64)
    return radiance


# ----------------------------------------------------------------------------------------------- SH helpers
def shading_of(gamma, normals):
    """Shading (no albedo) of unit normals under a light: [27], [..., 3] -> [..., 3] (numpy, ambient included)."""
    # Lazy here and below: `sh` imports TensorFlow, and scripts read the preset names before it should load.
    from tf_facetex import sh

    normals = np.asarray(normals, np.float32)
    coeffs = np.broadcast_to(np.asarray(gamma, np.float32), normals.shape[:-1] + (NUM_COEFFS,))
    return sh.shading(normals, coeffs).numpy()


def front_hemisphere_normals(count=1000):
    """[count, 3] roughly uniform unit normals with z >= 0 (the normals a camera at +z can see)."""
    index = np.arange(count) + 0.5
    z = index / count                                           # uniform in z = uniform area on the hemisphere
    phi = math.pi * (1.0 + 5.0 ** 0.5) * index                 # golden-angle spiral
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1).astype(np.float32)


def normalize_peak(gamma, peak=PEAK_SHADING):
    """Scales a light so its brightest front-facing normal shades to ``peak`` (mean over RGB): [27] -> [27].

    The scale applies to the light *with* its ambient offset (the actual irradiance), so the shape of the
    lighting is kept.
    """
    from tf_facetex import sh

    gamma = np.asarray(gamma, np.float64)
    brightest = shading_of(gamma, front_hemisphere_normals()).mean(axis=-1).max()
    if not np.isfinite(brightest) or brightest <= 1e-6:
        raise FaceTexError("the light is black on every front-facing normal; cannot normalise it")
    ambient = np.asarray(sh.with_ambient(np.zeros(NUM_COEFFS, np.float32)), np.float64)
    return ((gamma + ambient) * (peak / brightest) - ambient).astype(np.float32)


def environment_to_sh(radiance, normalize=True, scale=1.0):
    """Projects an equirectangular linear-radiance map onto the 27 SH coefficients.

    Args:
      radiance: [H, W, 3] linear radiance (orientation: module docstring), any size (area-averaged to 64 rows).
      normalize: scale the result with `normalize_peak` (LDR photos of environments have no absolute scale);
        False keeps the physical scale (a constant radiance R then shades every normal to R).
      scale: multiplies the irradiance afterwards (an exposure).
    Returns:
      float32 [27], Deng layout, ambient offset removed.
    """
    import cv2

    from tf_facetex import sh

    radiance = np.asarray(radiance, np.float32)
    if radiance.ndim != 3 or radiance.shape[2] != 3:
        raise ImageError(f"environment map must be [H, W, 3], got shape {radiance.shape}")
    if radiance.shape[0] > ENV_SAMPLE_HEIGHT:
        radiance = cv2.resize(radiance, (2 * ENV_SAMPLE_HEIGHT, ENV_SAMPLE_HEIGHT), interpolation=cv2.INTER_AREA)
    directions, solid_angles = equirect_directions(*radiance.shape[:2])
    gamma = sh.project_irradiance_to_sh(directions.reshape(-1, 3).astype(np.float32), radiance.reshape(-1, 3),
                                        solid_angles.reshape(-1).astype(np.float32)).numpy()
    if normalize:
        gamma = normalize_peak(gamma)
    if scale != 1.0:
        gamma = scale_light(gamma, scale)
    return gamma.astype(np.float32)


def scale_light(gamma, scale):
    """Multiplies a light's irradiance (ambient included) by ``scale``: [27] -> [27]."""
    from tf_facetex import sh

    ambient = np.asarray(sh.with_ambient(np.zeros(NUM_COEFFS, np.float32)), np.float64)
    return ((np.asarray(gamma, np.float64) + ambient) * float(scale) - ambient).astype(np.float32)


# ----------------------------------------------------------------------------------------------- sources
def preset(name):
    """The named preset light: float32 [27] (see `PRESET_NAMES` and `describe_presets`)."""
    if name not in PRESET_NAMES:
        raise FaceTexError(f"unknown light preset '{name}'; presets: {', '.join(PRESET_NAMES)}")
    if name not in _PRESET_CACHE:
        if name == "ambient":
            gamma = np.zeros(NUM_COEFFS, np.float32)
        elif name == "authors":
            gamma = np.tile(np.asarray(AUTHORS_RELIGHT_9, np.float32) / 3.0, 3)
        else:
            ambient, lights, _ = _PRESET_ENVIRONMENTS[name]
            gamma = environment_to_sh(disc_lights_environment(ambient, lights), normalize=True)
        _PRESET_CACHE[name] = gamma
    return _PRESET_CACHE[name].copy()


def describe_presets():
    """{name: one-line description} of every preset."""
    out = {name: description for name, (_, _, description) in _PRESET_ENVIRONMENTS.items()}
    out["authors"] = "the authors' Relight.ipynb light (9 coefficients / 3, same for R, G, B)"
    out["ambient"] = "uniform ambient only (all coefficients 0: Deng's default light)"
    return out


def load_sh_json(path):
    """SH coefficients from a JSON file: a list of 27 numbers, a list of 9 (grey, replicated to RGB), 3 x 9 nested
    lists, or an object with a 'gamma' entry (e.g. a reconstruction's coefficients.json, whose ``coefficients``
    entry holds it). Returns float32 [27]."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FaceTexError(f"{path}: cannot read SH coefficients JSON ({err})") from err
    if isinstance(data, dict):
        data = data.get("gamma", data.get("coefficients", {}).get("gamma") if isinstance(
            data.get("coefficients"), dict) else None)
    try:
        values = np.asarray(data, np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise FaceTexError(f"{path}: SH coefficients must be numbers ({err})") from err
    if values.size not in (9, NUM_COEFFS):
        raise FaceTexError(f"{path}: expected 27 (or 9 grey) finite SH coefficients in Deng's layout "
                           f"[R0..R8, G0..G8, B0..B8], got {values.size} values")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        names = [f"{'RGB'[i // 9]}{i % 9}" if values.size == NUM_COEFFS else f"{i}" for i in bad]
        shown = ", ".join(f"{name} = {values[i]}" for name, i in zip(names[:5], bad[:5]))
        raise FaceTexError(f"{path}: SH coefficients must be finite numbers; {bad.size} are not "
                           f"(entry {shown}{', ...' if bad.size > 5 else ''})")
    if values.size == 9:
        values = np.tile(values, 3)
    return values.astype(np.float32)


def srgb_to_linear(values):
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1)."""
    values = np.asarray(values, np.float64)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def load_environment_map(path):
    """An equirectangular environment map as linear RGB radiance: float32 [H, W, 3].

    .hdr / .exr (Radiance / OpenEXR, through OpenCV) are linear already; other images go through the project's
    robust reader and are sRGB-decoded.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() in (".hdr", ".exr"):
        import os

        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if image is None:
            raise ImageError(f"{path}: cannot read the HDR environment map")
        radiance = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32)
    else:
        from tf_facetex.data.images import load_image

        radiance = srgb_to_linear(load_image(path, min_side=2) / 255.0).astype(np.float32)
    if not np.all(np.isfinite(radiance)) or radiance.min() < 0:
        raise ImageError(f"{path}: environment map has negative or non-finite values")
    return radiance


ENVIRONMENT_EXTENSIONS = (".hdr", ".exr", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def resolve_light(spec, normalize_env=True, scale=1.0):
    """A light from a user's spec: a preset name, an SH JSON file, or an equirectangular environment map.

    Returns:
      (gamma float32 [27], description str).
    """
    spec = str(spec)
    path = pathlib.Path(spec)
    if spec in PRESET_NAMES:
        gamma, description = preset(spec), f"preset '{spec}'"
    elif not path.is_file():
        raise FaceTexError(f"--light {spec}: neither a preset ({', '.join(PRESET_NAMES)}) nor an existing file")
    elif path.suffix.lower() == ".json":
        gamma, description = load_sh_json(path), f"SH coefficients from {path}"
    elif path.suffix.lower() in ENVIRONMENT_EXTENSIONS:
        gamma = environment_to_sh(load_environment_map(path), normalize=normalize_env)
        description = f"environment map {path} projected to SH" + (" (peak-normalised)" if normalize_env else "")
    else:
        raise FaceTexError(f"--light {spec}: unknown file type (want .json SH coefficients or an environment map: "
                           f"{', '.join(ENVIRONMENT_EXTENSIONS)})")
    if scale != 1.0:
        gamma = scale_light(gamma, scale)
        description += f" x {scale:g}"
    return gamma, description
