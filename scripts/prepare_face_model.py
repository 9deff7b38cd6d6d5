"""Converts face models into tf_facetex's .npz format (run once; later runs load the .npz).

  # the default ICT-FaceKit model (shared archive, cache or git clone) -> the cache
  python scripts/prepare_face_model.py
  # ICT-FaceKit from a folder or .tar.xz archive
  python scripts/prepare_face_model.py --ict_dir path/to/ICT-FaceKit --out models/ict.npz
  # BFM 2009 via Deng et al.'s front-face layout (files you downloaded under the BFM licence)
  python scripts/prepare_face_model.py --bfm_mat BFM/01_MorphableModel.mat --exp_pca BFM/Exp_Pca.bin \\
      --bfm_aux_dir BFM --bfm_uv BFM/BFM_UV.mat --bfm_select_id BFM/select_vertex_id.mat --out models/

Errors print as one line; --verbose shows the traceback.
"""
import pathlib

from absl import app, flags

from tf_facetex import cli
from tf_facetex.errors import FaceTexError

# Library imports live inside the functions: tf_facetex.face_model loads TensorFlow (seconds), and --help
# or a flag mistake should answer at once.
ICT_NPZ_NAME = "ict_facekit_light_v2.npz"  # = tf_facetex.face_model.ICT_CACHE_NAME (carries the converter version)
BFM_NPZ_NAME = "bfm09_front.npz"

FLAGS = flags.FLAGS
flags.DEFINE_string("ict_dir", None, "ICT-FaceKit folder (holding FaceXModel/) or its .tar.xz archive. With no "
                    "model flag at all, the default ICT-FaceKit (TF_FACETEX_SHARED archive, cache, or a git clone) "
                    "is converted.")
flags.DEFINE_string("bfm_mat", None, "BFM 2009 '01_MorphableModel.mat' (shapeMU/PC/EV, texMU/PC/EV); converts the "
                    "BFM through Deng et al.'s BFM_model_front.mat, written next to the output .npz.")
flags.DEFINE_string("exp_pca", None, "Guo et al.'s expression basis 'Exp_Pca.bin' (default: next to --bfm_mat).")
flags.DEFINE_string("bfm_aux_dir", None, "Folder with Deng et al.'s BFM_front_idx.mat, BFM_exp_idx.mat, "
                    "facemodel_info.mat and std_exp.txt (default: the folder of --bfm_mat).")
flags.DEFINE_string("bfm_uv", None, "3DMMasSTN 'BFM_UV.mat' (key UV) for the BFM's UV layout (default: "
                    "--bfm_aux_dir/BFM_UV.mat, else next to --bfm_mat).")
flags.DEFINE_string("bfm_select_id", None, "Deng et al.'s 'select_vertex_id.mat' (key select_id) mapping the front "
                    "vertices to BFM_UV rows (default: --bfm_aux_dir/select_vertex_id.mat, else next to --bfm_mat).")
flags.DEFINE_bool("allow_missing_uv", False, "Without BFM_UV.mat/select_vertex_id.mat, use a frontal projection "
                  "as UVs instead of failing (experiments only: the texture method needs the real UV layout).")
flags.DEFINE_string("out", None, "Output: a .npz file (one model) or a folder, where models get their standard "
                    f"names ({ICT_NPZ_NAME}, {BFM_NPZ_NAME}). Default: the tf_facetex cache folder "
                    "($TF_FACETEX_CACHE or ~/.cache/tf_facetex).")


def output_path(out, standard_name, num_models) -> pathlib.Path:
    """Where one model goes: ``out`` itself when it names a .npz, else ``out/standard_name``."""
    from tf_facetex import paths

    if out is None:
        return paths.cache_dir() / standard_name
    out = pathlib.Path(out).expanduser()
    if out.suffix == ".npz":
        if num_models > 1:
            raise FaceTexError(f"--out {out} names one file but {num_models} models are being converted; "
                               f"pass a folder")
        return out
    return out / standard_name


def find_companion(explicit, name, folders):
    """``explicit`` if given, else the first ``folder/name`` that exists, else the first candidate."""
    if explicit:
        return pathlib.Path(explicit).expanduser()
    candidates = [pathlib.Path(folder) / name for folder in folders]
    return next((path for path in candidates if path.is_file()), candidates[0])


def prepare_ict(out: pathlib.Path):
    """ICT-FaceKit (--ict_dir, else the default one) -> ``out``; returns the model."""
    from tqdm import tqdm

    from tf_facetex import paths

    ict_dir = paths.find_ict_dir(FLAGS.ict_dir)  # before the TensorFlow-loading import: bad paths fail fast
    from tf_facetex.face_model.ict import convert_ict

    print(f"converting ICT-FaceKit from {ict_dir}")
    model = convert_ict(ict_dir, progress=lambda items: tqdm(items, desc="ICT-FaceKit meshes", unit="mesh"))
    model.save(out)
    return model


def prepare_bfm(out: pathlib.Path):
    """BFM 2009 -> Deng's BFM_model_front.mat (next to ``out``) -> ``out``; returns the model."""
    from tf_facetex.face_model import bfm

    bfm_mat = pathlib.Path(FLAGS.bfm_mat).expanduser()
    aux_dir = pathlib.Path(FLAGS.bfm_aux_dir).expanduser() if FLAGS.bfm_aux_dir else bfm_mat.parent
    exp_pca = pathlib.Path(FLAGS.exp_pca).expanduser() if FLAGS.exp_pca else bfm_mat.parent / "Exp_Pca.bin"
    front_mat = out.parent / bfm.FRONT_MAT_NAME
    print(f"converting BFM 2009 from {bfm_mat} -> {front_mat}")
    bfm.convert_bfm09(bfm_mat, exp_pca, aux_dir, front_mat)
    folders = [aux_dir, bfm_mat.parent]
    model = bfm.load_bfm_front(front_mat,
                               uv_path=find_companion(FLAGS.bfm_uv, bfm.UV_MAT_NAME, folders),
                               select_id_path=find_companion(FLAGS.bfm_select_id, bfm.SELECT_ID_MAT_NAME, folders),
                               allow_missing_uv=FLAGS.allow_missing_uv)
    model.save(out)
    return model


def run():
    """Converts the models the flags ask for (ICT-FaceKit when none is named) and reports each."""
    bfm_only = [name for name in ("exp_pca", "bfm_aux_dir", "bfm_uv", "bfm_select_id", "allow_missing_uv")
                if FLAGS[name].present]
    if bfm_only and not FLAGS.bfm_mat:
        raise FaceTexError(f"--{bfm_only[0]} needs --bfm_mat (BFM 2009's 01_MorphableModel.mat)")
    jobs = []
    if FLAGS.bfm_mat:
        jobs.append((prepare_bfm, BFM_NPZ_NAME))
    if FLAGS.ict_dir or not jobs:
        jobs.insert(0, (prepare_ict, ICT_NPZ_NAME))
    outs = [output_path(FLAGS.out, name, len(jobs)) for _, name in jobs]
    for (job, _), out in zip(jobs, outs):
        model = job(out)
        from tf_facetex.face_model.model import MorphableModel  # already imported by the job

        MorphableModel.load(out)  # read back what later runs will load, so a bad write fails here
        print(model.summary())
        print(f"wrote {out}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run()


if __name__ == "__main__":
    cli.run(main)
