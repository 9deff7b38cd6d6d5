"""Writes a PNG grid of a face model: the mean face and +/-3 sigma of the first identity and expression modes.

    python scripts/show_face_model.py --out face_model.png [--face_model PATH] [--modes 3]

Each cell is the posed mesh shaded with a fixed SH light (a point-splat render: every vertex is drawn as a
small disc, back to front, so no rasteriser is needed).
"""
from absl import flags

from tf_facetex import cli

flags.DEFINE_string("face_model", None, "Face model: .npz, ICT-FaceKit folder/archive or BFM_model_front.mat. "
                    "Default: $TF_FACETEX_FACE_MODEL, then the cached/shared ICT-FaceKit.")
flags.DEFINE_string("out", "face_model.png", "Output PNG path.")
flags.DEFINE_integer("modes", 3, "How many identity and expression modes to show.")
flags.DEFINE_integer("size", 224, "Size of each cell in pixels.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tf_facetex.face_model import load_face_model
    from tf_facetex.visualize import face_model_grid

    model = load_face_model(FLAGS.face_model)
    path = face_model_grid(model, FLAGS.out, num_modes=FLAGS.modes, size=FLAGS.size)
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
