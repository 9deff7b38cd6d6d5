"""Synthetic faces with full ground truth (albedo UV, per-texel irradiance, coefficients, landmarks, masks).

    python scripts/make_synthetic.py --out data/synthetic --n 2000 --seed 0 [--tfrecord] [--max_yaw 60 ...]

Writes, per face i (zero-padded): ``images/i.png`` (the aligned 224 crop), ``albedo/i.png`` (true albedo UV,
16 bit), ``gt/i.npz`` (albedo_gt_uv, irradiance_gt_uv, coeffs, landmarks, proj/face/occluder masks, and
``image_clean``: the same render before the occluder was drawn, with the same noise, the reference of the
ghosting metric), and ``manifest.json``. With ``--tfrecord`` also ``tfrecords/{train,test}-k.tfrecord`` in the data pipeline's
format (aligned crop + landmarks + face mask, ground truth as optional fields), split 85/15 by index.
Face i depends only on (--seed, i): re-running resumes, skipping faces already written.
"""
from absl import flags

from tf_facetex import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_integer("n", 100, "Number of faces.")
flags.DEFINE_integer("seed", 0, "Random seed; face i is reproducible from (seed, i).")
flags.DEFINE_string("face_model", None, "Face model (.npz, ICT-FaceKit folder, BFM .mat); default: see README.")
flags.DEFINE_bool("tfrecord", False, "Also write TFRecord shards for the data pipeline.")
flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.")
flags.DEFINE_float("test_fraction", 0.15, "Share of faces in the test split.")
flags.DEFINE_integer("batch_size", 8, "Faces rendered together.")
# Difficulty knobs (see tf_facetex.data.synthetic.SyntheticConfig).
flags.DEFINE_integer("uv_size", 256, "UV map size of the ground truth.")
flags.DEFINE_float("id_scale", 1.0, "Std of identity coefficients.")
flags.DEFINE_float("exp_scale", 0.5, "Expression strength (blend-shape weight cap / PCA std).")
flags.DEFINE_float("max_yaw", 40.0, "Max |yaw| in degrees.")
flags.DEFINE_float("max_pitch", 15.0, "Max |pitch| in degrees.")
flags.DEFINE_float("max_roll", 10.0, "Max |roll| in degrees.")
flags.DEFINE_float("sh_strength", 0.5, "Directional part of the SH light relative to its ambient part.")
flags.DEFINE_float("light_colour", 0.15, "Spread of per-channel light colour (0 = white light).")
flags.DEFINE_float("directional_prob", 0.7, "Probability of a hard directional light with cast shadows.")
flags.DEFINE_float("directional_max", 0.6, "Max intensity of the directional light.")
flags.DEFINE_float("specular_prob", 0.5, "Probability of specular highlights (given a directional light).")
flags.DEFINE_float("specular_max", 0.25, "Max specular intensity.")
flags.DEFINE_float("occluder_prob", 0.3, "Probability of an occluder in front of the face.")
flags.DEFINE_float("detail", 1.0, "Scale of fine albedo detail (pores, freckles, moles, stubble, wrinkles).")
flags.DEFINE_float("noise_std", 0.01, "Sensor noise std on the image.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")

KNOBS = ("uv_size", "id_scale", "exp_scale", "max_yaw", "max_pitch", "max_roll", "sh_strength", "light_colour",
         "directional_prob", "directional_max", "specular_prob", "specular_max", "occluder_prob", "detail",
         "noise_std")


def main(argv):
    del argv
    from tf_facetex.data.synthetic import SyntheticConfig, write_synthetic_dataset
    from tf_facetex.errors import FaceTexError
    from tf_facetex.face_model import load_face_model

    if not FLAGS.out:
        raise FaceTexError("--out is required (see --help)")
    if FLAGS.n <= 0:
        raise FaceTexError("--n must be positive")
    config = SyntheticConfig(**{name: FLAGS[name].value for name in KNOBS})
    # The ground truth must not depend on the method's albedo prior (a face painted from the prior's own basis
    # would favour it): the model's own albedo, never the attached photo-built prior.
    model = load_face_model(FLAGS.face_model, albedo_prior="none")
    summary = write_synthetic_dataset(model, config, FLAGS.out, FLAGS.n, seed=FLAGS.seed,
                                      batch_size=FLAGS.batch_size, tfrecord=FLAGS.tfrecord,
                                      num_shards=FLAGS.num_shards, test_fraction=FLAGS.test_fraction,
                                      progress=FLAGS.progress)
    print(f"wrote {summary['count']} faces ({summary['generated']} new) to {FLAGS.out}")


if __name__ == "__main__":
    cli.run(main)
