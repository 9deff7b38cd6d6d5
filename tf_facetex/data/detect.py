"""Face detection and 68 landmarks with dlib (weights from the ``face_recognition_models`` package).

- Detector: dlib's HOG frontal detector by default (fast on CPU); ``detector="cnn"`` uses dlib's MMOD
  CNN (``mmod_human_face_detector.dat``; better on rotated / small / dark faces, ~10x slower on CPU).
- Landmarks: dlib's 68-point shape predictor (iBUG 300-W / Multi-PIE markup, 0-based indices:
  jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67).
- Scale handling: images larger than ``max_side`` are downscaled for detection *and* landmarks, and the
  results mapped back to the original pixel grid; when nothing is found in a small image, it is
  upsampled (dlib's ``upsample_num_times``) and, for tight crops where the face touches the border
  (aligned datasets such as CelebA / UTKFace), padded, before giving up.
All coordinates use the project convention: x right, y down, integer pixel centres.
"""
import dataclasses
import functools
from typing import List

import cv2
import numpy as np

from tf_facetex.errors import AssetError, NoFaceError

NUM_LANDMARKS = 68


@dataclasses.dataclass
class Face:
    """One detected face in original-image pixel coordinates.

    box: float32 [4] (x0, y0, x1, y1), inclusive pixel-centre corners of the detector's box.
    landmarks: float32 [68, 2] (x, y).
    score: detector confidence (HOG: SVM margin; CNN: MMOD score); larger is more confident.
    """
    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


@functools.lru_cache(maxsize=None)
def _load_dlib_models(detector: str):
    """Loads (detector, shape predictor) once per process; AssetError if the weights are missing."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as err:
        raise AssetError(f"dlib / face_recognition_models not installed ({err}); "
                         "run scripts/setup_env.sh") from err
    try:
        predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        if detector == "hog":
            face_detector = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            face_detector = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        else:
            raise ValueError(f"detector must be 'hog' or 'cnn', not {detector!r}")
    except RuntimeError as err:  # dlib raises RuntimeError for missing / corrupt .dat files
        raise AssetError(f"cannot load dlib face models from face_recognition_models ({err})") from err
    return face_detector, predictor


class FaceDetector:
    """Finds faces and their 68 landmarks in uint8 RGB images.

    Args:
      detector: "hog" (default) or "cnn".
      max_side: images whose longer side exceeds this are downscaled for detection (px).
      max_upsample: how many times a small image may be upsampled x2 when nothing is found.
      upsample_below: only images whose longer side is below this are upsampled (keeps cost bounded).
      pad_fraction: when still nothing is found, pad each side by this fraction of the image size
        (edge replicate) and retry; helps tight, pre-aligned crops. 0 disables.
    With ``all_faces`` the first pass is already upsampled once (for images below
    ``upsample_below``), because small faces next to a large one are what that mode is for.
    """

    def __init__(self, detector: str = "hog", max_side: int = 1024, max_upsample: int = 2,
                 upsample_below: int = 800, pad_fraction: float = 0.25):
        self.detector_name = detector
        self._detector, self._predictor = _load_dlib_models(detector)
        self.max_side = int(max_side)
        self.max_upsample = int(max_upsample)
        self.upsample_below = int(upsample_below)
        self.pad_fraction = float(pad_fraction)

    def detect(self, image: np.ndarray, all_faces: bool = False, name: str = "<image>") -> List[Face]:
        """Faces in an image, largest first.

        Args:
          image: uint8 [H, W, 3] RGB.
          all_faces: return every face (largest first) instead of only the largest.
          name: used in the error message.
        Returns:
          a non-empty list of Face (length 1 unless all_faces).
        Raises:
          NoFaceError: when no face is found after upsampling and padding.
        """
        faces = self._detect_all(image, all_faces)
        if not faces:
            raise NoFaceError(f"{name}: no face found ({image.shape[1]}x{image.shape[0]} px, "
                              f"{self.detector_name} detector)")
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces if all_faces else faces[:1]

    def landmarks_in_box(self, image: np.ndarray, box) -> np.ndarray:
        """68 landmarks for a given face box (x0, y0, x1, y1) in ``image``: float32 [68, 2]."""
        import dlib
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def _detect_all(self, image: np.ndarray, all_faces: bool = False) -> List[Face]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / float(max(height, width)))
        work = image if scale == 1.0 else _resize(image, scale)
        # (upsample, pad) attempts, cheapest first; stop at the first that finds a face. Looking for
        # every face starts upsampled (when affordable): small faces beside a large one are the point.
        small = max(work.shape[:2]) < self.upsample_below
        first = 1 if all_faces and small and self.max_upsample >= 1 else 0
        attempts = [(first, 0.0)]
        if small:
            attempts += [(n, 0.0) for n in range(first + 1, self.max_upsample + 1)]
        if self.pad_fraction > 0:
            attempts.append((0, self.pad_fraction))
        for upsample, pad_fraction in attempts:
            faces = self._detect_once(work, upsample, pad_fraction)
            if faces:
                # exact per-axis factors (the resized size was rounded to whole pixels)
                factor = np.array([width / work.shape[1], height / work.shape[0]], np.float32)
                return [_rescale_face(face, factor, (height, width)) for face in faces]
        return []

    def _detect_once(self, image: np.ndarray, upsample: int, pad_fraction: float) -> List[Face]:
        pad = int(round(pad_fraction * max(image.shape[:2])))
        work = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
        work = np.ascontiguousarray(work)
        if self.detector_name == "cnn":
            detections = [(d.rect, float(d.confidence)) for d in self._detector(work, upsample)]
        else:
            rects, scores, _ = self._detector.run(work, upsample, 0.0)
            detections = list(zip(rects, scores))
        faces = []
        for rect, score in detections:
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
            landmarks = self.landmarks_in_box(work, box)
            faces.append(Face(box=box - pad, landmarks=landmarks - pad, score=float(score)))
        return faces


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Downscales by ``scale`` with area averaging (no aliasing)."""
    height, width = image.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _rescale_face(face: Face, factor: np.ndarray, shape) -> Face:
    """Maps a face found in an image resized by 1/factor back to the original grid.

    Args:
      factor: float32 [2] (original / resized) per axis (x, y).
    With integer pixel centres, a resize by s maps x to (x + 0.5) * s - 0.5, so the inverse is
    (x + 0.5) * factor - 0.5. The box is clipped to the image; landmarks are not (points just
    outside a tight crop are real).
    """
    if np.all(factor == 1.0):
        return face
    height, width = shape
    box = (face.box + 0.5) * np.tile(factor, 2) - 0.5
    box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)
    return Face(box=box, landmarks=((face.landmarks + 0.5) * factor - 0.5).astype(np.float32), score=face.score)


def detect_faces(image: np.ndarray, all_faces: bool = False, detector: str = "hog", name: str = "<image>") -> List[Face]:
    """Convenience wrapper: ``FaceDetector(detector).detect(image, all_faces, name)`` (models cached)."""
    return FaceDetector(detector).detect(image, all_faces=all_faces, name=name)
