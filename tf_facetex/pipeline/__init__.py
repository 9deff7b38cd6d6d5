"""The product pipeline: photo -> aligned faces -> prior -> detail refinement -> renders and files a user keeps.

End to end (data flow and layers: docs/ARCHITECTURE.md), by module:
- `result`: `FaceResult` (one reconstructed face) and `OUTPUT_FILES` (what a face folder holds);
- `reconstructor`: `Reconstructor` (aligned faces -> `FaceResult`s: coefficients, A', L', shading, renders
  R(A', L') and R(A', L), meshes, a relit turntable) and `render_posed` (any albedo under any light and pose);
  the detail stage is a `tf_facetex.refinement` refiner (`FitRefiner`, the embedded default, or
  `NetworkRefiner` with a `scripts/train.py` checkpoint);
- `outputs`: `write_face_outputs`, one face folder; `write_group_outputs`, the folder of several photos of one person;
- `batch`: `reconstruct_inputs`, the batch runner of scripts/reconstruct.py (progress bar, per-file errors, a face
  folder is written under a temporary name and renamed when complete, `errors.json`); `reconstruct_groups` (one
  folder per person: `--same_person`, `--groups`);
- `contact_sheet`: the `index.html` contact sheet;
- `relight`: reading a face folder back and re-rendering it (scripts/relight.py);
- `setup`: `build_reconstructor`, the reconstructor for a user's choices (scripts/reconstruct.py, the Beam pipeline).

Importing this package does not import TensorFlow: the names of `reconstructor` and `tf_facetex.refinement` below
load on first use (PEP 562 ``__getattr__``), so scripts report bad inputs in about a second.
"""
import importlib

from tf_facetex.pipeline.batch import (FaceFinder, RunSummary, check_output_dir, folder_names, groups_by_folder,
                                       publish_folder, read_group_manifest, reconstruct_groups, reconstruct_inputs,
                                       resolve_inputs)
from tf_facetex.pipeline.contact_sheet import completed_folders, index_html, write_index_html
from tf_facetex.pipeline.outputs import (OutputOptions, coefficients_record, composite, photo_overlay, thumbnail,
                                         write_face_outputs, write_group_outputs)
from tf_facetex.pipeline.relight import coefficients_from_record, load_reconstruction, relight_reconstruction
from tf_facetex.pipeline.setup import build_reconstructor
from tf_facetex.pipeline.result import (FORMAT, GROUP_PHOTO_FILES, OUTPUT_FILES, RESULT_MARKER, TURNTABLE_LIGHT,
                                        TURNTABLE_YAWS, FaceResult, GroupResult)

# Names whose modules import TensorFlow: loaded when first used.
_LAZY = {
    "ReconstructionConfig": "tf_facetex.pipeline.reconstructor",
    "Reconstructor": "tf_facetex.pipeline.reconstructor",
    "render_posed": "tf_facetex.pipeline.reconstructor",
    "turntable_poses": "tf_facetex.pipeline.reconstructor",
    "DEFAULT_UV_SIZE": "tf_facetex.rendering.renderer",
    "Refiner": "tf_facetex.refinement.base",
    "FitRefiner": "tf_facetex.refinement.fit",
    "NetworkRefiner": "tf_facetex.refinement.network",
    "UNSEEN_NOISE_SEED": "tf_facetex.refinement.network",
    "unseen_noise": "tf_facetex.refinement.network",
    "refine_with_network": "tf_facetex.refinement.network",
    "find_training_checkpoint": "tf_facetex.refinement.checkpoint",
    "load_refinement_net": "tf_facetex.refinement.checkpoint",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tf_facetex.pipeline' has no attribute {name!r}")


__all__ = ["FORMAT", "GROUP_PHOTO_FILES", "OUTPUT_FILES", "RESULT_MARKER", "TURNTABLE_LIGHT", "TURNTABLE_YAWS", "FaceFinder",
           "FaceResult", "GroupResult", "build_reconstructor", "groups_by_folder", "read_group_manifest",
           "reconstruct_groups", "write_group_outputs",
           "OutputOptions", "RunSummary", "check_output_dir", "coefficients_from_record", "coefficients_record",
           "completed_folders", "composite", "folder_names", "index_html", "load_reconstruction", "photo_overlay",
           "publish_folder", "reconstruct_inputs", "relight_reconstruction", "resolve_inputs", "thumbnail",
           "write_face_outputs", "write_index_html", *_LAZY]
