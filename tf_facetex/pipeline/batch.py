"""The batch runner of scripts/reconstruct.py: inputs -> face folders, errors recorded per input; with groups of
photos of one person (`groups_by_folder`, `read_group_manifest`), one face folder per group (`reconstruct_groups`).

A face folder is written under a temporary name and renamed when complete; ``errors.json`` and the ``index.html``
contact sheet are rewritten at the end. TensorFlow loads only when the `Reconstructor` is built (at the first
detected face), so bad inputs are reported in about a second: the reconstructor is passed in as a factory.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
import traceback
from typing import Callable, List, Sequence

from tqdm import tqdm

from tf_facetex import io_utils
from tf_facetex.data.align import FacePreprocessor
from tf_facetex.data.images import load_image
from tf_facetex.errors import FaceTexError
from tf_facetex.inputs import list_inputs
from tf_facetex.pipeline.contact_sheet import write_index_html
from tf_facetex.pipeline.outputs import OutputOptions, write_face_outputs, write_group_outputs


class FaceFinder:
    """Photo -> aligned faces with masks, like `FacePreprocessor`, but the face masker is built at the first face
    found: the parsing network (the default masker when its weights exist) loads TensorFlow, and inputs without a
    face should be rejected in a second, not after that.

    Args:
      detector: 'auto', 'hog', 'cnn' or a detector object (`tf_facetex.data.known_faces.build_detector`);
      masker: 'parsing' (the shipped network; 'skin' with a WARNING when the default file is missing), 'skin',
      'hull' or a `FaceMasker`; all_faces: every face instead of the largest; parsing_weights: the parsing net's
      file (default: `paths.parsing_net_weights()`, the shipped saved_models/parsing_net/parsing_net.keras).
    """

    def __init__(self, detector="auto", masker="parsing", all_faces=False, log=print, parsing_weights=None):
        self.aligner = FacePreprocessor(detector=detector, masker=None, all_faces=all_faces)
        self.masker_spec = masker
        self.masker = None if isinstance(masker, str) else masker
        self.parsing_weights = parsing_weights
        self.log = log

    def face_masker(self):
        """The face masker, built on first use (the parsing network loads TensorFlow)."""
        if self.masker is None:
            # Lazy: the parsing network's loader imports TensorFlow / Keras (seconds); an input without a face is
            # rejected before that.
            from tf_facetex.data.parsing_net import masker_from_name

            self.masker = masker_from_name(self.masker_spec, self.parsing_weights, log=self.log)
        return self.masker

    def from_image(self, image, name="<image>"):
        """uint8 [H, W, 3] -> list of `AlignedFace` with masks (largest first). Raises NoFaceError."""
        faces = self.aligner.from_image(image, name=name)
        masker = self.face_masker()
        for face in faces:
            face.mask = masker(face.image, face.landmarks) * face.valid
        return faces


def resolve_inputs(path, recursive=True, output_dir=None) -> List[pathlib.Path]:
    """An image file or a folder of them -> sorted image paths (`tf_facetex.inputs.list_inputs`, which also says
    what it skipped and why). FaceTexError when there is nothing to do."""
    return list_inputs(path, recursive=recursive, output_dir=output_dir).files


def check_output_dir(path) -> pathlib.Path:
    """Creates the output folder if needed and proves it is writable, before any work is done
    (`io_utils.ensure_output_dir`)."""
    return io_utils.ensure_output_dir(path)


def folder_names(paths: Sequence[pathlib.Path]) -> dict:
    """{path: folder base name}: the image stem, disambiguated by extension and a counter on collisions."""
    stems = {}
    for path in paths:
        stems.setdefault(path.stem, []).append(path)
    names, used = {}, set()
    for path in paths:
        name = path.stem if len(stems[path.stem]) == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[path] = name
    return names


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_folder(staging: pathlib.Path, final: pathlib.Path):
    """Renames a completed staging folder to its final name (replacing an older result of the same name).

    The staging folder and its files were created private (mkdtemp / mkstemp: 0700 / 0600); they get the usual
    permissions (umask) first, so that a web server or a colleague can read the results.
    """
    umask = _umask()
    os.chmod(staging, 0o777 & ~umask)
    for path in staging.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass
class RunSummary:
    out_dir: pathlib.Path
    inputs: int = 0
    outputs: list = dataclasses.field(default_factory=list)     # {'input', 'folder', 'face_index', 'metrics'}
    errors: list = dataclasses.field(default_factory=list)      # {'input', 'error'}
    seconds: float = 0.0

    @property
    def failed_inputs(self) -> int:
        return len({error["input"] for error in self.errors if not error.get("skipped")})

    @property
    def skipped(self) -> int:
        """Entries of the input folder that were not photos (`tf_facetex.inputs`), listed in errors.json."""
        return sum(1 for error in self.errors if error.get("skipped"))

    @property
    def all_failed(self) -> bool:
        return self.inputs > 0 and not self.outputs


def _error_text(err, verbose=False):
    if isinstance(err, (FaceTexError, OSError)):
        return " ".join(str(err).split())
    text = f"internal error: {type(err).__name__}: {' '.join(str(err).split())}"
    return text + ("\n" + traceback.format_exc() if verbose else "")


def reconstruct_inputs(inputs, out_dir, make_reconstructor: Callable[[], object], preprocessor,
                       batch_size=1, options: OutputOptions = OutputOptions(), all_faces=False, progress=True,
                       log=print, verbose=False, run_info=None, skipped=()) -> RunSummary:
    """Reconstructs every face of every input image into ``out_dir/<stem>[_face<k>]/``.

    Args:
      inputs: list of image paths (`resolve_inputs`).
      out_dir: the output folder (`check_output_dir` first).
      make_reconstructor: builds the `Reconstructor`; called once, at the first detected face (its errors stop the
        run: they are not about one input).
      preprocessor: a `FaceFinder` or `FacePreprocessor` (detect, 68 landmarks, align, mask).
      batch_size: faces per reconstruction batch.
      all_faces: every face of a photo (folders get ``_face<k>``), else the largest.
      skipped: records of input entries that were not photos (`tf_facetex.inputs.InputListing.skipped`); they go
        into errors.json, not into the input count.
    A failing input (unreadable, no face, ...) is recorded and the run goes on; a face folder appears only when it
    is complete (written as ``.<name>.*.partial`` and renamed). ``errors.json`` and ``index.html`` are rewritten
    at the end. Returns a `RunSummary`.
    """
    start = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    summary = RunSummary(out_dir=out_dir, inputs=len(inputs))
    summary.errors.extend(dict(record) for record in skipped)
    io_utils.remove_stale_staging(out_dir, log=log)   # what a killed run left (only its staging folders)
    names = folder_names(inputs)
    reconstructor = None
    pending = []   # (path, photo, face)

    def flush():
        nonlocal reconstructor, pending
        batch, pending = pending, []
        if not batch:
            return
        failed_paths = {error["input"] for error in summary.errors}
        if reconstructor is None:
            reconstructor = make_reconstructor()   # a setup error (model, weights) stops the run: not per input
        try:
            results = reconstructor.reconstruct([face for _, _, face in batch])
        except Exception as err:  # noqa: BLE001 - recorded per input; the run goes on
            for path, _, _ in batch:
                if str(path) not in failed_paths:
                    summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})
                    failed_paths.add(str(path))
            return
        for (path, photo, face), result in zip(batch, results):
            name = names[path] + (f"_face{face.face_index}" if all_faces else "")
            staging = None
            try:
                staging = io_utils.make_staging_dir(out_dir, name)
                write_face_outputs(result, staging, reconstructor.model, reconstructor.layout, photo, path,
                                   reconstructor.uv_mask, options,
                                   info={"pipeline": reconstructor.describe(), **(run_info or {})})
                publish_folder(staging, out_dir / name)
                summary.outputs.append({"input": str(path), "folder": name, "face_index": face.face_index,
                                        "detector": getattr(face, "detector", "hog"), "metrics": result.metrics})
            except Exception as err:  # noqa: BLE001
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})

    bar = tqdm(inputs, desc="reconstruct", unit="img", disable=not progress, dynamic_ncols=True)
    for path in bar:
        try:
            photo = load_image(path)
            faces = preprocessor.from_image(photo, name=str(path))
        except Exception as err:  # noqa: BLE001 - ImageError / NoFaceError expected; anything else recorded too
            summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})
            continue
        pending.extend((path, photo, face) for face in faces)
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    summary.seconds = time.perf_counter() - start
    io_utils.write_json(out_dir / "errors.json", summary.errors)
    write_index_html(out_dir, summary.errors)
    return summary


# ------------------------------------------------------------------------------------------- photos of one person
def groups_by_folder(files: Sequence[pathlib.Path], root) -> dict:
    """--same_person: the photos of each folder are one person. {group name: [paths]} in path order; the name is
    the folder's path relative to ``root`` with '/' as '_' (the photos directly in ``root``: root's own name)."""
    root = pathlib.Path(root)
    base = root if root.is_dir() else root.parent
    groups = {}
    for path in sorted(files):
        relative = pathlib.Path(path).parent.relative_to(base) if pathlib.Path(path).parent != base else None
        name = (base.resolve().name or "photos") if relative is None else "_".join(relative.parts)
        groups.setdefault(name, []).append(pathlib.Path(path))
    return groups


def read_group_manifest(path) -> dict:
    """--groups: {group name: [photo paths]} from a JSON object {name: [paths]} or a TSV of 'name<TAB>path' lines
    ('#' comments and blank lines ignored); relative paths are relative to the manifest's folder. FaceTexError on
    a malformed manifest, a path listed twice or a missing photo."""
    path = pathlib.Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise FaceTexError(f"--groups {path}: unreadable ({err.strerror or err})") from err
    pairs = []
    if text.lstrip().startswith("{"):
        import json

        try:
            data = json.loads(text)
        except ValueError as err:
            raise FaceTexError(f"--groups {path}: not valid JSON ({err})") from err
        for name, photos in data.items():
            if not isinstance(photos, list) or not all(isinstance(p, str) for p in photos):
                raise FaceTexError(f"--groups {path}: group {name!r} must be a list of photo paths")
            pairs += [(str(name), p) for p in photos]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not all(f.strip() for f in fields):
                raise FaceTexError(f"--groups {path}:{number}: expected 'group<TAB>photo path', got {line!r}")
            pairs.append((fields[0].strip(), fields[1].strip()))
    groups, seen = {}, set()
    for name, photo in pairs:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise FaceTexError(f"--groups {path}: group name {name!r} is not a folder name")
        photo = pathlib.Path(photo).expanduser()
        photo = photo if photo.is_absolute() else path.parent / photo
        if not photo.is_file():
            raise FaceTexError(f"--groups {path}: {photo} (group {name}) is not a file")
        if photo.resolve() in seen:
            raise FaceTexError(f"--groups {path}: {photo} is listed twice")
        seen.add(photo.resolve())
        groups.setdefault(name, []).append(photo)
    if not groups:
        raise FaceTexError(f"--groups {path}: no groups")
    return groups


def reconstruct_groups(groups: dict, out_dir, make_reconstructor: Callable[[], object], preprocessor,
                       options: OutputOptions = OutputOptions(), progress=True, log=print, verbose=False,
                       run_info=None, skipped=()) -> RunSummary:
    """Reconstructs each group of photos of one person into ONE face folder ``out_dir/<group name>/``
    (`Reconstructor.reconstruct_group`, `write_group_outputs`: the person's albedo and shape, and photos/<name>/
    per photo). A photo that fails (unreadable, no face) is recorded and left out of its group; a group whose
    every photo failed, or whose fit failed, is recorded per photo. Folders appear only when complete.
    groups: {name: [paths]} (`groups_by_folder`, `read_group_manifest`); the rest as `reconstruct_inputs`
    (the largest face of each photo is used). Returns a `RunSummary` (outputs: one per group)."""
    start = time.perf_counter()
    out_dir = pathlib.Path(out_dir)
    summary = RunSummary(out_dir=out_dir, inputs=sum(len(paths) for paths in groups.values()))
    summary.errors.extend(dict(record) for record in skipped)
    io_utils.remove_stale_staging(out_dir, log=log)
    reconstructor = None
    bar = tqdm(total=summary.inputs, desc="reconstruct", unit="img", disable=not progress, dynamic_ncols=True)
    for group_name, paths in groups.items():
        found = []   # (path, photo, face)
        for path in paths:
            try:
                photo = load_image(path)
                found.append((path, photo, preprocessor.from_image(photo, name=str(path))[0]))
            except Exception as err:  # noqa: BLE001 - ImageError / NoFaceError expected; recorded per photo
                summary.errors.append({"input": str(path), "error": _error_text(err, verbose)})
            bar.update(1)
        if not found:
            continue
        if reconstructor is None:
            reconstructor = make_reconstructor()   # a setup error stops the run: it is not about one input
        staging = None
        try:
            group = reconstructor.reconstruct_group([face for _, _, face in found])
            staging = io_utils.make_staging_dir(out_dir, group_name)
            names = folder_names([path for path, _, _ in found])
            write_group_outputs(group, staging, reconstructor.model, reconstructor.layout,
                                [photo for _, photo, _ in found], [path for path, _, _ in found],
                                [names[path] for path, _, _ in found], reconstructor.uv_mask, options,
                                info={"pipeline": reconstructor.describe(), **(run_info or {})})
            publish_folder(staging, out_dir / group_name)
            summary.outputs.append({"input": str(found[0][0]), "folder": group_name, "face_index": 0,
                                    "photos": [str(path) for path, _, _ in found],
                                    "detector": getattr(found[0][2], "detector", "hog"),
                                    "metrics": group.person.metrics,
                                    "photo_metrics": [result.metrics for result in group.photos]})
        except Exception as err:  # noqa: BLE001 - recorded per photo; the run goes on
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            summary.errors.extend({"input": str(path), "error": _error_text(err, verbose)} for path, _, _ in found)
    bar.close()
    summary.seconds = time.perf_counter() - start
    io_utils.write_json(out_dir / "errors.json", summary.errors)
    write_index_html(out_dir, summary.errors)
    return summary
