"""Relights a reconstruction under a new light and optionally a new pose.

    python scripts/relight.py --reconstruction out/astronaut --light studio --out relit.png
    python scripts/relight.py --reconstruction out/astronaut --light sky.hdr --yaw 30 --out relit.png
    python scripts/relight.py --reconstruction out/astronaut --light my_sh.json --frontal --size 512 --out relit.png

--light takes a preset (front, left, right, top, studio, sunset, authors, ambient), a JSON file of SH coefficients
(27 numbers in Deng's layout [R0..R8, G0..G8, B0..B8] without the 0.8 ambient, or 9 grey ones; a coefficients.json
works too), an equirectangular environment map (.hdr/.exr linear, or an 8-bit image taken as sRGB; centre column =
behind the head, left/right edges = behind the camera, top = up), or 'estimated' / 'coarse' for the folder's own
detailed light map L' or global light L. The albedo A' (albedo.png) is shaded per texel with the mesh's normals at
the chosen pose and rendered with the reconstruction's camera.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("reconstruction", None, "A face folder written by scripts/reconstruct.py.")
flags.DEFINE_string("light", "studio", "Preset name, SH JSON file, environment map image, 'estimated' (the folder's "
                    "L') or 'coarse' (its global L). Presets: front, left, right, top, studio, sunset, authors, "
                    "ambient.")
flags.DEFINE_float("light_scale", 1.0, "Multiplies the irradiance (exposure); a finite number >= 0.")
flags.DEFINE_bool("normalize_env", True, "Scale an environment map so its brightest front-facing normal shades to 1 "
                  "(8-bit panoramas have no absolute scale); --nonormalize_env keeps the file's radiance.")
flags.DEFINE_float("yaw", None, "Yaw in degrees (turn left/right), replacing the fitted one.")
flags.DEFINE_float("pitch", None, "Pitch in degrees (nod), replacing the fitted one.")
flags.DEFINE_float("roll", None, "Roll in degrees (in-plane tilt), replacing the fitted one.")
flags.DEFINE_bool("frontal", False, "Start from a frontal, centred pose (then --yaw/--pitch/--roll apply).")
flags.DEFINE_integer("size", None, "Output size in pixels (default 224, the crop size; the framing is the same).")
flags.DEFINE_string("background", "transparent", "'transparent' (RGBA) or a grey level in [0, 1]. Formats without "
                    "alpha (.jpg, .jpeg, .bmp) composite a transparent background on white (a note says so).")
flags.DEFINE_string("face_model", None, "The face model the reconstruction was made with (default: see README).")
flags.DEFINE_string("out", None, "Output image path: .png, .webp, .tif, .tiff (with transparency) or .jpg, .jpeg, "
                    ".bmp (opaque).")


def main(argv):
    del argv
    import numpy as np

    import pathlib

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError

    if not FLAGS.reconstruction or not FLAGS.out:
        raise FaceTexError("--reconstruction and --out are required (see --help)")
    # Every number is checked before any work: NaN/Inf would otherwise render a black face and exit 0.
    cli.require_finite("light_scale", FLAGS.light_scale, low=0.0)
    for name in ("yaw", "pitch", "roll"):
        cli.require_finite(name, FLAGS[name].value)
    grey = None
    if FLAGS.background != "transparent":
        try:
            grey = float(FLAGS.background)
        except ValueError as err:
            raise FaceTexError(f"--background must be 'transparent' or a number, got {FLAGS.background!r}") from err
        cli.require_finite("background", grey, low=0.0, high=1.0)
    if FLAGS.size is not None and not 16 <= FLAGS.size <= 4096:
        raise FaceTexError("--size must be between 16 and 4096")
    ext = pathlib.Path(FLAGS.out).suffix.lower()
    if ext not in io_utils.IMAGE_WRITE_EXTENSIONS:
        raise FaceTexError(f"--out {FLAGS.out}: unsupported image type '{ext or '(none)'}'; supported: "
                           f"{', '.join(io_utils.IMAGE_WRITE_EXTENSIONS)}")
    if FLAGS.light.lower().endswith(".json") and pathlib.Path(FLAGS.light).is_file():
        from tf_facetex.lighting_presets import load_sh_json

        load_sh_json(FLAGS.light)   # a NaN or a wrong count is reported now, before TensorFlow loads
    if grey is None and ext in io_utils.IMAGE_WRITE_EXTENSIONS_OPAQUE:
        grey = 1.0
        print(f"note: {ext} has no transparency: the background is white (--background=G sets a grey level in "
              "[0, 1]; a .png keeps it transparent)")
    from tf_facetex.pipeline import relight_reconstruction

    image, mask, description = relight_reconstruction(
        FLAGS.reconstruction, FLAGS.light, yaw=FLAGS.yaw, pitch=FLAGS.pitch, roll=FLAGS.roll, frontal=FLAGS.frontal,
        image_size=FLAGS.size, light_scale=FLAGS.light_scale, normalize_env=FLAGS.normalize_env,
        face_model=FLAGS.face_model)
    image = np.clip(image, 0.0, 1.0)
    if grey is None:
        out = np.concatenate([image, mask], axis=-1)
    else:
        out = image * mask + grey * (1.0 - mask)
    path = io_utils.write_image(FLAGS.out, out)
    print(f"wrote {path}: {description}")


if __name__ == "__main__":
    cli.run(main)
