"""Faces the caller already knows about: per-photo boxes (a user's ``--face_box`` or a box file) and sets of photos
of one subject, where a photo with no detection borrows the landmarks (or box) of the set's best-lit photo that has
one (`GroupFallback`; e.g. a light stage's frames). `GuidedDetector` wraps a `tf_facetex.data.detect.FaceDetector`
with both; `build_detector` builds what scripts/reconstruct.py's flags ask for. Coordinates: x right, y down,
integer pixel centres.
"""
import dataclasses
import json
import pathlib
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tf_facetex.data.detect import STAGE_RANK, Face, FaceDetector
from tf_facetex.errors import FaceTexError, NoFaceError


def parse_box(text) -> np.ndarray:
    """'x0,y0,x1,y1' (or a sequence of 4 numbers) -> float32 [4]; FaceTexError when malformed."""
    values = text.replace(";", ",").split(",") if isinstance(text, str) else list(text)
    try:
        box = np.array([float(v) for v in values], np.float32)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (4,) or not np.all(np.isfinite(box)) or not (box[2] > box[0] and box[3] > box[1]):
        raise FaceTexError(f"face box {text!r}: expected x0,y0,x1,y1 in pixels with x0 < x1 and y0 < y1")
    return box


def load_box_file(path) -> Dict[str, np.ndarray]:
    """Face boxes the user knows, by photo: {photo path as written: float32 [4]}.

    Formats: JSON ``{"photos/a.jpg": [x0, y0, x1, y1], ...}``, or text with one photo a line,
    ``path<TAB or comma>x0<sep>y0<sep>x1<sep>y1`` (a header line and ``#`` comments are skipped).
    Paths are matched by `BoxLookup` (as given, relative to the box file's folder, or by file name).
    """
    path = pathlib.Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise FaceTexError(f"{path}: cannot read the box file ({err.strerror or err})") from err
    boxes = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FaceTexError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise FaceTexError(f"{path}: expected a JSON object {{photo path: [x0, y0, x1, y1]}}")
        for key, value in data.items():
            try:
                boxes[str(key)] = parse_box(value)
            except FaceTexError as err:
                raise FaceTexError(f"{path}: {key}: {err}") from None
        return boxes
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.rsplit(",", 4))]
        if len(fields) != 5:
            raise FaceTexError(f"{path}:{number}: expected path and 4 numbers, got {line!r}")
        try:
            boxes[fields[0]] = parse_box(fields[1:])
        except FaceTexError as err:
            if number == 1 and not boxes:
                continue  # a header line
            raise FaceTexError(f"{path}:{number}: {err}") from None
    if not boxes:
        raise FaceTexError(f"{path}: no boxes in the box file")
    return boxes


class BoxLookup:
    """Finds a photo's box in a box file: by the path as given, resolved against the box file's folder or the
    working folder, then by file name when that is unique in the file."""

    def __init__(self, boxes: Dict[str, np.ndarray], base_dir=None):
        self.boxes = dict(boxes)
        base = pathlib.Path(base_dir) if base_dir else pathlib.Path.cwd()
        self._resolved = {}
        self._by_name: Dict[str, list] = {}
        for key, box in self.boxes.items():
            key_path = pathlib.Path(key).expanduser()
            for candidate in {key_path if key_path.is_absolute() else base / key_path, key_path}:
                self._resolved[str(candidate.resolve())] = box
            self._by_name.setdefault(key_path.name, []).append(box)

    @classmethod
    def from_file(cls, path):
        return cls(load_box_file(path), base_dir=pathlib.Path(path).expanduser().parent)

    def get(self, name) -> Optional[np.ndarray]:
        if name in self.boxes:
            return self.boxes[name]
        resolved = str(pathlib.Path(name).expanduser().resolve())
        if resolved in self._resolved:
            return self._resolved[resolved]
        same_name = self._by_name.get(pathlib.Path(name).name, [])
        return same_name[0] if len(same_name) == 1 else None


def lighting_quality(image: np.ndarray, box) -> float:
    """How well lit a face is, in [0, 1]: its mean grey level x its left/right balance (a frontal, bright
    light scores high; a harsh side light, which leaves one half dark, or a dim photo scores low)."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = np.clip(np.round(np.asarray(box, np.float64)), 0, [width - 1, height - 1] * 2).astype(int)
    grey = image[y0:y1 + 1, x0:x1 + 1].astype(np.float32).mean(axis=-1) / 255.0
    if grey.size == 0 or grey.shape[1] < 2:
        return 0.0
    half = grey.shape[1] // 2
    left, right = float(grey[:, :half].mean()), float(grey[:, -half:].mean())
    balance = 1.0 - abs(left - right) / max(left + right, 1e-6)
    return float(grey.mean() * balance)


def folder_group(name) -> List[str]:
    """The photos of a set, for a photo: the images in its folder (sorted; not recursive)."""
    from tf_facetex.data.images import IMAGE_EXTENSIONS

    folder = pathlib.Path(name).parent
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class GroupFallback:
    """Same-subject fallback: a photo with no detection gets the face of the best-lit photo of its set.

    The donor is the photo found by the most reliable stage (`STAGE_RANK`: plain HOG first), the best lit
    (`lighting_quality`) among those.

    Args:
      mode: "landmarks" copies the donor's landmarks (for frames of one fixed camera, e.g. a light stage
        or Yale B: the face is where it was; needs the same image size) or "box" runs the landmark model
        in the donor's box on this photo (the face moved a little between photos).
      group_of: photo name -> names of the photos of its set (default: the images of its folder).
      load: photo name -> uint8 [H, W, 3] (default `tf_facetex.data.images.load_image`).
    Detections are cached by photo name, so a set is scanned at most once.
    """

    def __init__(self, mode: str = "landmarks", group_of: Callable[[str], Sequence[str]] = folder_group,
                 load: Callable = None):
        if mode not in ("landmarks", "box"):
            raise ValueError(f"group fallback mode must be 'landmarks' or 'box', not {mode!r}")
        self.mode = mode
        self.group_of = group_of
        self.load = load
        self._faces: Dict[str, Optional[tuple]] = {}   # name -> (Face, quality, image shape) or None

    def cached(self, name: str) -> Optional[Face]:
        """The face found earlier in the photo called ``name`` (a copy), or None."""
        entry = self._faces.get(str(name))
        return None if entry is None else dataclasses.replace(entry[0], box=entry[0].box.copy(),
                                                              landmarks=entry[0].landmarks.copy())

    def remember(self, name: str, image: np.ndarray, face: Optional[Face]):
        self._faces[str(name)] = None if face is None else (face, lighting_quality(image, face.box), image.shape[:2])

    def donor(self, name: str, detector: "FaceDetector"):
        """(donor name, Face, image shape) of the best-lit detected photo of ``name``'s set, or None."""
        if self.load is None:
            from tf_facetex.data.images import load_image
            self.load = load_image
        members = [str(other) for other in self.group_of(str(name))]
        for other in members:
            if other == str(name) or other in self._faces:
                continue
            try:
                image = self.load(other)
                self.remember(other, image, detector.detect(image, name=other)[0])
            except (NoFaceError, FaceTexError, OSError):
                self._faces[other] = None
        # the first stage's finds first (a plain HOG detection of a well-exposed photo is the most reliable),
        # then the best lit
        found = [((STAGE_RANK.get(self._faces[other][0].detector, len(STAGE_RANK)), -self._faces[other][1]), other,
                  self._faces[other]) for other in members if other != str(name) and self._faces.get(other) is not None]
        if not found:
            return None
        _, other, (face, _, shape) = min(found, key=lambda item: item[0])
        return other, face, shape

    def fallback(self, name: str, image: np.ndarray, detector: "FaceDetector") -> Optional[Face]:
        """The borrowed face for ``image`` (named ``name``), or None when no photo of the set has one."""
        found = self.donor(name, detector)
        if found is None:
            return None
        other, face, shape = found
        tag = f"group:{pathlib.Path(other).name}"
        if self.mode == "landmarks" and tuple(shape) == tuple(image.shape[:2]):
            return Face(box=face.box.copy(), landmarks=face.landmarks.copy(), score=0.0, detector=f"{tag}:landmarks")
        scale = np.array([image.shape[1] / shape[1], image.shape[0] / shape[0]] * 2, np.float32)
        box = (face.box + 0.5) * scale - 0.5
        borrowed = detector.face_in_box(image, box, search=False)
        borrowed.detector = f"{tag}:box"
        return borrowed


class GuidedDetector:
    """A `FaceDetector` that first uses boxes the caller knows and, when detection fails, a `GroupFallback`.

    Args:
      detector: the `FaceDetector`.
      face_box: one box (x0, y0, x1, y1) for every photo, or None.
      boxes: a `BoxLookup` (per-photo boxes from a box file), or None.
      group: a `GroupFallback`, or None.
    Same ``detect(image, all_faces, name)`` interface as `FaceDetector`; a given box yields that one face.
    """

    def __init__(self, detector: FaceDetector, face_box=None, boxes: BoxLookup = None, group: GroupFallback = None):
        self.detector = detector
        self.face_box = None if face_box is None else parse_box(face_box)
        self.boxes = boxes
        self.group = group
        self.detector_name = detector.detector_name

    def describe(self) -> str:
        mode = getattr(self.group, "mode", "")
        extra = [text for flag, text in ((self.face_box is not None, "given box"), (self.boxes is not None, "box file"),
                                         (self.group is not None, f"group fallback ({mode})")) if flag]
        return self.detector.describe() + "".join(f", {text}" for text in extra)

    def landmarks_in_box(self, image, box):
        return self.detector.landmarks_in_box(image, box)

    def detect(self, image: np.ndarray, all_faces: bool = False, name: str = "<image>") -> List[Face]:
        box = self.face_box if self.face_box is not None else (self.boxes.get(name) if self.boxes else None)
        if box is not None:
            try:
                return [self.detector.face_in_box(image, box)]
            except FaceTexError as err:
                raise NoFaceError(f"{name}: {err}") from None
        if self.group is not None and not all_faces and self.group.cached(name) is not None:
            return [self.group.cached(name)]   # detected already while looking for a donor
        try:
            faces = self.detector.detect(image, all_faces=all_faces, name=name)
        except NoFaceError:
            if self.group is None:
                raise
            self.group.remember(name, image, None)
            face = self.group.fallback(name, image, self.detector)
            if face is None:
                raise NoFaceError(f"{name}: no face found ({image.shape[1]}x{image.shape[0]} px, {self.describe()}; "
                                  "no other photo of its set has one)") from None
            return [face]
        if self.group is not None:
            self.group.remember(name, image, faces[0])
        return faces


def build_detector(detector: str = "auto", face_box=None, box_file=None, group_fallback: str = "none",
                   max_side: int = 1024, **kwargs):
    """The detector the scripts' flags describe: a `FaceDetector`, wrapped in a `GuidedDetector` when a box,
    a box file or a group fallback ('landmarks' / 'box'; 'none' = off) is asked for."""
    base = FaceDetector(detector, max_side=max_side, **kwargs)
    if face_box is None and not box_file and group_fallback in (None, "none"):
        return base
    boxes = BoxLookup.from_file(box_file) if box_file else None
    group = None if group_fallback in (None, "none") else GroupFallback(group_fallback)
    return GuidedDetector(base, face_box=face_box, boxes=boxes, group=group)
