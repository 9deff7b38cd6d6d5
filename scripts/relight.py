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
flags.DEFINE_float("light_scale", 1.0, "Multiplies the irradiance (exposure).")
flags.DEFINE_bool("normalize_env", True, "Scale an environment map so its brightest front-facing normal shades to 1 "
                  "(8-bit panoramas have no absolute scale); --nonormalize_env keeps the file's radiance.")
flags.DEFINE_float("yaw", None, "Yaw in degrees (turn left/right), replacing the fitted one.")
flags.DEFINE_float("pitch", None, "Pitch in degrees (nod), replacing the fitted one.")
flags.DEFINE_float("roll", None, "Roll in degrees (in-plane tilt), replacing the fitted one.")
flags.DEFINE_bool("frontal", False, "Start from a frontal, centred pose (then --yaw/--pitch/--roll apply).")
flags.DEFINE_integer("size", None, "Output size in pixels (default 224, the crop size; the framing is the same).")
flags.DEFINE_string("background", "transparent", "'transparent' (RGBA PNG) or a grey level in [0, 1].")
flags.DEFINE_string("face_model", None, "The face model the reconstruction was made with (default: see README).")
flags.DEFINE_string("out", None, "Output PNG path.")


def main(argv):
    del argv
    import numpy as np

    from tf_facetex import io_utils
    from tf_facetex.errors import FaceTexError

    if not FLAGS.reconstruction or not FLAGS.out:
        raise FaceTexError("--reconstruction and --out are required (see --help)")
    if FLAGS.background != "transparent":
        try:
            grey = float(FLAGS.background)
        except ValueError as err:
            raise FaceTexError(f"--background must be 'transparent' or a number, got {FLAGS.background!r}") from err
    if FLAGS.size is not None and not 16 <= FLAGS.size <= 4096:
        raise FaceTexError("--size must be between 16 and 4096")
    from tf_facetex.pipeline import relight_reconstruction

    image, mask, description = relight_reconstruction(
        FLAGS.reconstruction, FLAGS.light, yaw=FLAGS.yaw, pitch=FLAGS.pitch, roll=FLAGS.roll, frontal=FLAGS.frontal,
        image_size=FLAGS.size, light_scale=FLAGS.light_scale, normalize_env=FLAGS.normalize_env,
        face_model=FLAGS.face_model)
    image = np.clip(image, 0.0, 1.0)
    if FLAGS.background == "transparent":
        out = np.concatenate([image, mask], axis=-1)
    else:
        out = image * mask + grey * (1.0 - mask)
    path = io_utils.write_image(FLAGS.out, out)
    print(f"wrote {path}: {description}")


if __name__ == "__main__":
    cli.run(main)
