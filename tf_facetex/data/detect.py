"""Face detection and 68 landmarks with dlib (weights from the ``face_recognition_models`` package).

- Detectors: ``"auto"`` (default) = dlib's HOG frontal detector (fast on CPU), and only when it finds
  nothing, dlib's MMOD CNN (``mmod_human_face_detector.dat``; finds dark, side-lit, rotated faces, ~10-40x
  slower on CPU, so it runs on a copy downscaled to ``cnn_max_side``); ``"hog"`` / ``"cnn"`` use one only.
  Each stage is tried on the photo as it is, then on an exposure-normalised copy (a gamma that brings
  the mean grey level to ``EXPOSURE_TARGET_MEAN``: harsh side or low light leaves most of the face
  almost black, and both detectors need contrast there). Every `Face` says which stage found it
  (``Face.detector``: 'hog', 'hog+exposure', 'cnn', 'cnn+exposure'; 'box' / 'box+<stage>' for a box
  the caller gave, 'group:<donor>' for a box or landmarks borrowed from another photo of the subject; a
  suffix says who gave the points when it was not dlib on the detector's box: '+net', '+dlib').
- Landmarks: dlib's 68-point shape predictor (iBUG 300-W / Multi-PIE markup, 0-based indices:
  jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67). It was trained on HOG boxes; CNN boxes
  are mapped to HOG-like boxes first (`CNN_TO_HOG_BOX`, measured on CelebAMask-HQ photos).
- Second landmark model (``landmark_net``, the shipped `tf_facetex.data.landmark_net`): a small CNN that
  regresses the 68 points from the box's grey crop and says whether the crop holds a face. It checks every
  find (+28 ms median per ordinary photo on the loaded 2-core CPU; the detectors take 70-1000 ms): a find
  it calls no face (probability below ``reject_probability``) is a false detection and is dropped (the next
  stage runs). Whose points a find keeps is `landmark_source`, a cascade with dlib first:
  1. the network's crop is mostly outside the photo (`landmark_net.made_up_fraction` above ``max_made_up``:
     a tight crop such as Yale B's, brows to chin, where most of what the network sees is the repeated edge,
     unlike anything it was trained on): dlib's points, which stay precise there (on a last-resort find,
     which has none yet, dlib's shape predictor runs in the box of the network's points: stage ``+dlib``);
  2. dlib's points from a HOG box that agree with the network's (five-point distance at most
     ``disagreement`` inter-ocular distances): dlib's (they are the more precise);
  3. otherwise the network's (stage ``+net``): dlib is known to do badly on CNN and last-resort boxes, and a
     disagreement on a HOG box means dlib has lost the face under a hard light or behind an occluder.
  Why not a cheaper check of dlib's points alone: their shape is as face-like when they are wrong as when
  they are right, and dlib's result is as stable under a new box or the mirror image when it is wrong as
  when it is right (docs/results/eval_detection.notes.md).
- Last resorts (``last_resort``), only when every stage found nothing: the CNN on the grey copy, on the
  mirror image, on a padded copy, and HOG with a lower threshold (``LAST_RESORT_HOG_THRESHOLD``), each find
  checked by the network as above and given its points (stage 'retry:<which>+net', or '+dlib' by rule 1 of
  `landmark_source`); the very last is a
  guess that the face fills the image (tight crops of one face, where neither detector sees a face cut by
  the frame or crossed by an occluder): centred boxes of `CENTRE_GUESS_SIDES` x the shorter side, kept only
  when the network calls the crop a face with probability >= ``accept_probability`` (stage
  'retry:centre+net').
- Known boxes and sets of photos (a user's ``--face_box`` / box file, the same-subject fallback):
  `tf_facetex.data.known_faces`, built on this module's `FaceDetector`.
All coordinates use the project convention: x right, y down, integer pixel centres.
"""
import dataclasses
import functools
from typing import List, Optional

import cv2
import numpy as np

from tf_facetex.data import landmark_net as lnet
from tf_facetex.data.landmarks import NUM_LANDMARKS, five_point_distance
from tf_facetex.errors import AssetError, FaceTexError, NoFaceError

DETECTORS = ("auto", "hog", "cnn")
EXPOSURE_TARGET_MEAN = 0.45     # grey-level mean the exposure-normalised copy is brought to (gamma)
EXPOSURE_MIN_CHANGE = 0.1       # skip the normalised copy when its gamma is within this of 1 (nothing to gain)
# CNN (MMOD) box -> HOG-like box, in units of the CNN box width: (centre dx, centre dy, width scale, height
# scale). Means over 60 CelebAMask-HQ photos where both detectors found the one face (at 320 px):
# dx 0.063 (sd 0.051), dy 0.090 (sd 0.076), width x1.063 (sd 0.098), height x1.057.
CNN_TO_HOG_BOX = (0.063, 0.090, 1.063, 1.057)
STAGE_RANK = {"hog": 0, "hog+exposure": 1, "hog+net": 2, "hog+exposure+net": 3, "cnn+net": 4, "cnn": 4,
              "cnn+exposure+net": 5, "cnn+exposure": 5}   # reliability of each stage's finds (lower: better)
# the landmark network's checks (see the module doc); chosen on synthetic faces of seeds 3301 / 3302 and
# CelebAMask-HQ photos 700-799, never on the evaluation sets (docs/results/eval_detection.notes.md)
DISAGREEMENT = 0.125                # five-point distance dlib <-> network (inter-ocular units) to switch
# above this share of made-up (edge-repeated) crop, the network's points are not used (`landmark_source`): its
# training crops are at most ~1/3 outside the photo (synthetic faces; CelebAMask-HQ ~0.1), Yale B's ~3/4
MAX_MADE_UP = 0.5
LAST_RESORT_HOG_THRESHOLD = -0.3
CENTRE_GUESS_SIDES = (0.75, 0.55)   # the face box of a face that fills a tight crop, x the shorter side
ACCEPT_PROBABILITY = 0.9            # the network's face probability that a centred guess needs
REJECT_PROBABILITY = 0.5            # below this, a detector's find is a false detection
PAD_MODES = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}


@dataclasses.dataclass
class Face:
    """One detected face in original-image pixel coordinates.

    box: float32 [4] (x0, y0, x1, y1), inclusive pixel-centre corners of the detector's box.
    landmarks: float32 [68, 2] (x, y).
    score: detector confidence (HOG: SVM margin; CNN: MMOD score); larger is more confident.
    detector: which stage found it (see the module doc).
    """
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    detector: str = "hog"

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def _import_dlib():
    try:
        import dlib
        import face_recognition_models
    except ImportError as err:
        raise AssetError(f"dlib / face_recognition_models not installed ({err}); "
                         "run scripts/setup_env.sh") from err
    return dlib, face_recognition_models


@functools.lru_cache(maxsize=None)
def _load_predictor():
    dlib, models = _import_dlib()
    try:
        return dlib.shape_predictor(models.pose_predictor_model_location())
    except RuntimeError as err:  # dlib raises RuntimeError for missing / corrupt .dat files
        raise AssetError(f"cannot load dlib's landmark model from face_recognition_models ({err})") from err


@functools.lru_cache(maxsize=None)
def _load_detector(name: str):
    dlib, models = _import_dlib()
    try:
        if name == "hog":
            return dlib.get_frontal_face_detector()
        if name == "cnn":
            return dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())
    except RuntimeError as err:
        raise AssetError(f"cannot load dlib's {name} face detector from face_recognition_models ({err})") from err
    raise ValueError(f"detector must be 'hog' or 'cnn', not {name!r}")


def _load_dlib_models(detector: str):
    """(detector, shape predictor), each loaded once per process; AssetError if the weights are missing."""
    return _load_detector(detector), _load_predictor()


def exposure_normalised(image: np.ndarray, target_mean: float = EXPOSURE_TARGET_MEAN) -> Optional[np.ndarray]:
    """A gamma-corrected copy whose mean grey level is ``target_mean``: uint8 [H, W, 3] -> same, or None when
    the gamma would be within `EXPOSURE_MIN_CHANGE` of 1 (the photo is already exposed like that)."""
    values = image.astype(np.float32) / 255.0
    mean = float(np.clip(values.mean(), 1e-3, 0.999))
    gamma = np.log(target_mean) / np.log(mean)
    if abs(gamma - 1.0) < EXPOSURE_MIN_CHANGE:
        return None
    return np.clip(np.round(255.0 * values ** gamma), 0, 255).astype(np.uint8)


def cnn_box_to_hog_box(box: np.ndarray) -> np.ndarray:
    """Maps an MMOD CNN box (x0, y0, x1, y1) to the HOG-like box the shape predictor was trained on."""
    dx, dy, sw, sh = CNN_TO_HOG_BOX
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    width, height = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + dx * width, (y0 + y1) / 2 + dy * width
    return np.array([cx - sw * width / 2, cy - sh * height / 2, cx + sw * width / 2, cy + sh * height / 2],
                    np.float32)


class FaceDetector:
    """Finds faces and their 68 landmarks in uint8 RGB images.

    Args:
      detector: "auto" (default: HOG, then the CNN only when HOG finds nothing), "hog" or "cnn".
      max_side: images whose longer side exceeds this are downscaled for HOG detection (px).
      max_upsample: how many times a small image may be upsampled x2 when nothing is found.
      upsample_below: only images whose longer side is below this are upsampled (keeps cost bounded).
      pad_fraction: when still nothing is found, pad each side by this fraction of the image size and
        retry; helps tight, pre-aligned crops. 0 disables.
      pad_mode: "replicate" (edge pixels repeated) or "reflect".
      cnn_max_side: the CNN runs on a copy downscaled to this longer side (its cost grows with the area:
        ~0.3 s at 256 px, ~1.1 s at 512 px on one CPU core; it finds faces down to ~80 px at that size);
        with ``all_faces`` it runs at ``max_side`` (small faces are what that mode is for).
      exposure_retry: also try each stage on an exposure-normalised copy (`exposure_normalised`).
      landmark_net: the second landmark model: "shipped" (default: `landmark_net.load_shipped`, None when
        the checkout has no weights), None (dlib's points only), or a `landmark_net.LandmarkNet`.
      disagreement, accept_probability, reject_probability, max_made_up: see the module doc
        (`DISAGREEMENT`, `ACCEPT_PROBABILITY`, `REJECT_PROBABILITY`, `MAX_MADE_UP`).
      last_resort: the last-resort retries of the module doc ("auto" only).
    With ``all_faces`` the first pass is already upsampled once (for images below
    ``upsample_below``), because small faces next to a large one are what that mode is for.
    """

    def __init__(self, detector: str = "auto", max_side: int = 1024, max_upsample: int = 2,
                 upsample_below: int = 800, pad_fraction: float = 0.25, pad_mode: str = "replicate",
                 cnn_max_side: int = 384, exposure_retry: bool = True, landmark_net="shipped",
                 disagreement: float = DISAGREEMENT, accept_probability: float = ACCEPT_PROBABILITY,
                 reject_probability: float = REJECT_PROBABILITY, last_resort: bool = True,
                 max_made_up: float = MAX_MADE_UP):
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, not {detector!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {tuple(PAD_MODES)}, not {pad_mode!r}")
        self.detector_name = detector
        self._predictor = _load_predictor()
        # the HOG detector for 'auto' / 'hog'; the CNN (also loaded lazily as the fallback of 'auto')
        self._detector = _load_detector("cnn" if detector == "cnn" else "hog")
        self.max_side = int(max_side)
        self.max_upsample = int(max_upsample)
        self.upsample_below = int(upsample_below)
        self.pad_fraction = float(pad_fraction)
        self.pad_mode = pad_mode
        self.cnn_max_side = int(cnn_max_side)
        self.exposure_retry = bool(exposure_retry)
        self.disagreement = float(disagreement)
        self.accept_probability = float(accept_probability)
        self.reject_probability = float(reject_probability)
        self.max_made_up = float(max_made_up)
        self.last_resort = bool(last_resort) and detector == "auto"
        self.landmark_net = _second_opinion(landmark_net)

    def detect(self, image: np.ndarray, all_faces: bool = False, name: str = "<image>") -> List[Face]:
        """Faces in an image, largest first.

        Args:
          image: uint8 [H, W, 3] RGB.
          all_faces: return every face (largest first) instead of only the largest.
          name: used in the error message.
        Returns:
          a non-empty list of Face (length 1 unless all_faces).
        Raises:
          NoFaceError: when no face is found after upsampling, padding, exposure normalisation (and the CNN).
        """
        faces = self._detect_all(image, all_faces)
        if not faces:
            raise NoFaceError(f"{name}: no face found ({image.shape[1]}x{image.shape[0]} px, "
                              f"{self.describe()})")
        faces.sort(key=lambda face: face.area, reverse=True)
        return faces if all_faces else faces[:1]

    def describe(self) -> str:
        stages = {"auto": "HOG then CNN detector", "hog": "hog detector", "cnn": "cnn detector"}[self.detector_name]
        return (stages + (", exposure-normalised retry" if self.exposure_retry else "")
                + (", last-resort retries" if self.last_resort else "")
                + (", landmark network" if self.landmark_net is not None else ""))

    def landmarks_in_box(self, image: np.ndarray, box) -> np.ndarray:
        """68 landmarks for a given face box (x0, y0, x1, y1) in ``image``: float32 [68, 2]."""
        import dlib
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def face_in_box(self, image: np.ndarray, box, search: bool = True) -> Face:
        """The face inside a box the caller knows (x0, y0, x1, y1 in ``image`` pixels).

        With ``search``, the detector first looks in the box grown by 50 % on each side and keeps its
        detection when it overlaps the box (IoU >= 0.3): a user's box is rarely drawn like the detector's,
        and the landmark model is sensitive to that. Otherwise the box itself is used.
        """
        box = np.asarray(box, np.float32).reshape(4)
        height, width = image.shape[:2]
        if not (box[2] > box[0] and box[3] > box[1]):
            raise FaceTexError(f"face box {box.tolist()}: needs x0 < x1 and y0 < y1")
        if box[2] < 0 or box[3] < 0 or box[0] > width - 1 or box[1] > height - 1:
            raise FaceTexError(f"face box {box.tolist()} is outside the {width}x{height} image")
        if search:
            grow = 0.5 * np.array([box[2] - box[0], box[3] - box[1]])
            x0, y0 = np.maximum(np.floor(box[:2] - grow), 0).astype(int)
            x1, y1 = np.minimum(np.ceil(box[2:] + grow), [width - 1, height - 1]).astype(int)
            region = np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1])
            offset = np.array([x0, y0], np.float32)
            candidates = [Face(f.box + np.tile(offset, 2), f.landmarks + offset, f.score, f.detector)
                          for f in self._detect_all(region, all_faces=True)] if min(region.shape[:2]) >= 16 else []
            overlaps = [box_iou(f.box, box) for f in candidates]
            if candidates and max(overlaps) >= 0.3:
                best = candidates[int(np.argmax(overlaps))]
                best.detector = f"box+{best.detector}"
                return best
        return Face(box=box, landmarks=self.landmarks_in_box(image, box), score=0.0, detector="box")

    # ------------------------------------------------------------------------------------------ stages
    def _detect_all(self, image: np.ndarray, all_faces: bool = False) -> List[Face]:
        stages = []
        if self.detector_name in ("auto", "hog"):
            stages.append(("hog", self._hog_stage))
        if self.detector_name in ("auto", "cnn"):
            stages.append(("cnn", self._cnn_stage))
        for stage_name, stage in stages:
            variants = [("", image)]
            if self.exposure_retry:
                variants.append(("+exposure", None))  # made only when needed
            for suffix, work in variants:
                if work is None:
                    work = exposure_normalised(image)
                    if work is None:
                        continue
                faces = stage(work, all_faces, bool(suffix))
                for face in faces:
                    face.detector = stage_name + suffix
                faces = self._checked(image, faces, trust_dlib=stage_name == "hog")
                if faces:
                    return faces
        if self.last_resort and self.landmark_net is not None:
            return self._last_resort(image)
        return []

    # ------------------------------------------------------------------------------- landmark checks
    def _checked(self, image: np.ndarray, faces: List[Face], trust_dlib: bool, has_dlib_points: bool = True
                 ) -> List[Face]:
        """The network's check of each find (module doc): false detections dropped, the points chosen by
        `landmark_source` (``trust_dlib``: a HOG find; ``has_dlib_points``: False for last-resort finds)."""
        if self.landmark_net is None:
            return faces
        kept = []
        for face in faces:
            points, probability = self.landmark_net.predict_with_score(image, face.box)
            if probability < self.reject_probability:
                continue
            kept.append(self._with_chosen_points(image, face, points, trust_dlib, has_dlib_points))
        return kept

    def _with_chosen_points(self, image: np.ndarray, face: Face, points: np.ndarray, trust_dlib: bool,
                            has_dlib_points: bool) -> Face:
        """``face`` with the points `landmark_source` picks between dlib's (``face.landmarks``, or dlib in the box
        of the network's ``points`` when the find has none) and the network's."""
        source = landmark_source(face.landmarks if has_dlib_points else None, points,
                                 self.landmark_net.made_up_fraction(image.shape, points), trust_dlib,
                                 self.disagreement, self.max_made_up)
        if source == "net":
            face.landmarks, face.detector = points, face.detector + "+net"
        elif not has_dlib_points:
            box = lnet.box_from_landmarks(points, self.landmark_net.inner_to_box)
            face.landmarks, face.detector = self.landmarks_in_box(image, box), face.detector + "+dlib"
        return face

    def _last_resort(self, image: np.ndarray) -> List[Face]:
        """The retries of the module doc, in order; the first find the network accepts wins."""
        width = image.shape[1]
        pad = _pad_size(image, self.pad_fraction)
        grey = np.repeat(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        mirrored = np.ascontiguousarray(image[:, ::-1])
        attempts = [("grey", grey, lambda work: self._cnn_stage(work, False)),
                    ("mirror", mirrored, lambda work: self._cnn_stage(work, False)),
                    ("pad", image, lambda work: self._cnn_stage(_pad(work, self.pad_fraction, self.pad_mode),
                                                                False)),
                    ("hog_low", image, self._low_threshold_hog)]
        for name, work, stage in attempts:
            faces = stage(work)
            if name == "pad":
                faces = [_shift(face, -pad) for face in faces]
            if name == "mirror":
                faces = [_unmirror(face, width) for face in faces]
            for face in faces:
                face.detector = f"retry:{name}"
            faces = self._checked(image, faces, trust_dlib=False, has_dlib_points=False)
            if faces:
                return faces
        return self._centre_guess(image)

    def _centre_guess(self, image: np.ndarray) -> List[Face]:
        """The face that fills the image, if the network sees one there (see the module doc)."""
        height, width = image.shape[:2]
        for fraction in CENTRE_GUESS_SIDES:
            half = 0.5 * fraction * min(height, width)
            box = np.array([(width - 1) / 2 - half, (height - 1) / 2 - half, (width - 1) / 2 + half,
                            (height - 1) / 2 + half], np.float32)
            points, probability = self.landmark_net.predict_with_score(image, box, passes=3)
            if probability >= self.accept_probability:
                face = Face(box=lnet.box_from_landmarks(points, self.landmark_net.inner_to_box), landmarks=points,
                            score=probability, detector="retry:centre")
                return [self._with_chosen_points(image, face, points, trust_dlib=False, has_dlib_points=False)]
        return []

    def _low_threshold_hog(self, image: np.ndarray) -> List[Face]:
        hog = _load_detector("hog")
        scale = min(1.0, self.max_side / float(max(image.shape[:2])))
        work = image if scale == 1.0 else _resize(image, scale)
        upsample = 1 if max(work.shape[:2]) < self.upsample_below else 0
        rects, scores, _ = hog.run(np.ascontiguousarray(work), upsample, LAST_RESORT_HOG_THRESHOLD)
        faces = [Face(box=np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32),
                      landmarks=np.zeros((NUM_LANDMARKS, 2), np.float32), score=float(score), detector="hog")
                 for r, score in sorted(zip(rects, scores), key=lambda item: -item[1])[:1]]
        return _rescale_faces(faces, work.shape, image.shape[:2]) if faces else []

    def _hog_stage(self, image: np.ndarray, all_faces: bool, retry: bool = False) -> List[Face]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / float(max(height, width)))
        work = image if scale == 1.0 else _resize(image, scale)
        # (upsample, pad) attempts, cheapest first; stop at the first that finds a face. Looking for
        # every face starts upsampled (when affordable): small faces beside a large one are the point.
        small = max(work.shape[:2]) < self.upsample_below
        first = 1 if all_faces and small and self.max_upsample >= 1 else 0
        attempts = [(first, 0.0)]
        if small:
            # the retry on the exposure-normalised copy upsamples once at most (a 4x upsample of a photo
            # with no face is the slowest attempt of all)
            most = min(self.max_upsample, 1) if retry else self.max_upsample
            attempts += [(n, 0.0) for n in range(first + 1, most + 1)]
        if self.pad_fraction > 0:
            attempts.append((0, self.pad_fraction))
        hog = self._detector if self.detector_name != "cnn" else _load_detector("hog")
        for upsample, pad_fraction in attempts:
            faces = self._detect_once(work, upsample, pad_fraction, hog, "hog")
            if faces:
                return _rescale_faces(faces, work.shape, (height, width))
        return []

    def _cnn_stage(self, image: np.ndarray, all_faces: bool, retry: bool = False) -> List[Face]:
        height, width = image.shape[:2]
        limit = self.max_side if all_faces else self.cnn_max_side
        scale = min(1.0, limit / float(max(height, width)))
        work = image if scale == 1.0 else _resize(image, scale)
        cnn = _load_detector("cnn")
        # the MMOD model's smallest face is ~80 px: small images are upsampled once first
        upsample = 1 if max(work.shape[:2]) < 160 else 0
        faces = self._detect_once(work, upsample, 0.0, cnn, "cnn")
        return _rescale_faces(faces, work.shape, (height, width)) if faces else []

    def _detect_once(self, image: np.ndarray, upsample: int, pad_fraction: float, detector, kind: str) -> List[Face]:
        pad = int(round(pad_fraction * max(image.shape[:2])))
        work = cv2.copyMakeBorder(image, pad, pad, pad, pad, PAD_MODES[self.pad_mode]) if pad else image
        work = np.ascontiguousarray(work)
        if kind == "cnn":
            detections = [(d.rect, float(d.confidence)) for d in detector(work, upsample)]
        else:
            rects, scores, _ = detector.run(work, upsample, 0.0)
            detections = list(zip(rects, scores))
        faces = []
        for rect, score in detections:
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
            if kind == "cnn":
                box = cnn_box_to_hog_box(box)
            landmarks = self.landmarks_in_box(work, box)
            faces.append(Face(box=box - pad, landmarks=landmarks - pad, score=float(score), detector=kind))
        return faces


def landmark_source(dlib_points, net_points, made_up: float, dlib_trusted: bool,
                    disagreement: float = DISAGREEMENT, max_made_up: float = MAX_MADE_UP) -> str:
    """The cascade's choice of one find's 68 points (module doc, rules 1-3): "dlib" or "net".

    Args:
      dlib_points: float [68, 2] dlib's points on the detector's box, or None when the find has none (a
        last-resort find: "dlib" then means dlib's shape predictor in the box of the network's points).
      net_points: float [68, 2] the network's points.
      made_up: the share of the network's crop outside the photo (`landmark_net.made_up_fraction`).
      dlib_trusted: whether dlib's points may be kept when the two agree (finds of the HOG detector, whose
        boxes dlib's shape predictor was trained on).
    """
    if made_up > max_made_up:
        return "dlib"
    if dlib_trusted and dlib_points is not None and five_point_distance(dlib_points, net_points) <= disagreement:
        return "dlib"
    return "net"


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Downscales by ``scale`` with area averaging (no aliasing)."""
    height, width = image.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _rescale_faces(faces: List[Face], work_shape, shape) -> List[Face]:
    # exact per-axis factors (the resized size was rounded to whole pixels)
    factor = np.array([shape[1] / work_shape[1], shape[0] / work_shape[0]], np.float32)
    return [_rescale_face(face, factor, shape) for face in faces]


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
    return Face(box=box, landmarks=((face.landmarks + 0.5) * factor - 0.5).astype(np.float32), score=face.score,
                detector=face.detector)


def _second_opinion(landmark_net):
    """The LandmarkNet (or None) for the detector's ``landmark_net`` argument."""
    if landmark_net is None:
        return None
    if isinstance(landmark_net, str) and landmark_net != "shipped":
        raise ValueError(f"landmark_net must be 'shipped', None or a LandmarkNet, not {landmark_net!r}")
    return lnet.load_shipped() if isinstance(landmark_net, str) else landmark_net


def _pad_size(image: np.ndarray, fraction: float) -> int:
    return int(round(fraction * max(image.shape[:2])))


def _pad(image: np.ndarray, fraction: float, mode: str) -> np.ndarray:
    pad = _pad_size(image, fraction)
    return np.ascontiguousarray(cv2.copyMakeBorder(image, pad, pad, pad, pad, PAD_MODES[mode]))


def _shift(face: Face, offset: float) -> Face:
    return Face(box=face.box + offset, landmarks=face.landmarks + offset, score=face.score, detector=face.detector)


def _unmirror(face: Face, width: int) -> Face:
    """A face found in the mirror image -> the same face in the photo (box only: its points are re-made)."""
    x0, y0, x1, y1 = face.box
    return Face(box=np.array([width - 1 - x1, y0, width - 1 - x0, y1], np.float32),
                landmarks=face.landmarks.copy(), score=face.score, detector=face.detector)


def detect_faces(image: np.ndarray, all_faces: bool = False, detector: str = "auto",
                 name: str = "<image>") -> List[Face]:
    """Convenience wrapper: ``FaceDetector(detector).detect(image, all_faces, name)`` (models cached)."""
    return FaceDetector(detector).detect(image, all_faces=all_faces, name=name)
