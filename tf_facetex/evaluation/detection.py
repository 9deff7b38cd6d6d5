"""Detection + alignment success rates: how often a photo yields a face whose five alignment points are right.

A photo counts as *aligned* when a face is found and the mean distance of its five alignment points (eye
centres, nose tip, mouth corners; `tf_facetex.data.align.five_points`: exactly the points the 224 crop is
aligned with) to a reference, divided by the reference's inter-ocular distance (between the eye *centres*),
is below `ALIGNED_NME` = 0.15. Why 0.15: the eye-centre distance is ~0.7 of the outer-eye-corner distance
that 300-W-style "failure" rates normalise by, so 0.15 here is ~0.1 there, the usual failure threshold; it
is ~9 px in the 224 crop (inter-ocular 64 px), a shift the photometric fit absorbs, while a face found on
the hair, a mirrored or a lost face is > 0.3; and it leaves room for the 0-4 px a Yale B frame may move
against its reference frame. References:
- Yale B (one subject, one camera, many lights): the subject's frontal-light frame (A+000E+00), detected
  with the default detector; the frames of a subject are aligned to within 0-4 px.
- synthetic faces: the projected landmarks of the ground truth.
- CelebAMask-HQ: only the eyes can be checked against the parsing labels (the centroids of the two eye
  labels, matched to the detected eye centres); a photo whose labels miss an eye counts by detection.
Each configuration of the detector is run on every photo (`detection_config`); the report has the found
and aligned fractions, the seconds per photo, and which detector stage found the faces.
"""
import collections
import csv
import pathlib
import time

import numpy as np

ALIGNED_NME = 0.15
NME_BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, np.inf)
CONFIGS = {
    # today's default before this change: HOG with upsampling and padding
    "hog": dict(detector="hog", exposure_retry=False, landmark_net=None),
    "hog+exposure": dict(detector="hog", exposure_retry=True, landmark_net=None),
    # the default before the landmark network: HOG, then the CNN (downscaled), each also on an exposure-normalised
    # copy, dlib's points always
    "auto_dlib": dict(detector="auto", exposure_retry=True, landmark_net=None, last_resort=False),
    # the default before the made-up-crop rule (the network's points also where its crop is mostly outside the
    # photo): how the first landmark-network detector did
    "auto_ungated": dict(detector="auto", exposure_retry=True, max_made_up=1.0),
    # the default: the same stages, the cascade of tf_facetex.data.detect.landmark_source (dlib first; the
    # landmark network's points where dlib's are not to be trusted and the network sees the face), and the
    # last-resort retries
    "auto": dict(detector="auto", exposure_retry=True),
    # + the same-subject fallback (sets of photos of one subject: Yale B)
    "auto+group": dict(detector="auto", exposure_retry=True, group_fallback="landmarks"),
}


def detection_config(name: str, group_of=None):
    """A detector of `CONFIGS` (``group_of``: photo -> photos of its set, for the group fallback)."""
    from tf_facetex.data.detect import FaceDetector
    from tf_facetex.data.known_faces import GroupFallback, GuidedDetector

    config = dict(CONFIGS[name])
    group = config.pop("group_fallback", None)
    detector = FaceDetector(**config)
    if group:
        return GuidedDetector(detector, group=GroupFallback(group, group_of=group_of))
    return detector


def five_point_nme(landmarks68, reference5) -> float:
    """Mean five-point distance / the reference's inter-ocular distance: [68, 2], [5, 2] -> float."""
    from tf_facetex.data.align import five_points

    points = five_points(landmarks68)
    reference5 = np.asarray(reference5, np.float64)
    iod = np.linalg.norm(reference5[0] - reference5[1])
    return float(np.linalg.norm(points - reference5, axis=1).mean() / max(iod, 1e-6))


def eye_nme(landmarks68, eye_centres) -> float:
    """Eye-centre error against two labelled eye centroids (either order): [68, 2], [2, 2] -> float."""
    from tf_facetex.data.align import five_points

    eyes = five_points(landmarks68)[:2]
    eye_centres = np.asarray(eye_centres, np.float64)
    iod = np.linalg.norm(eye_centres[0] - eye_centres[1])
    direct = np.linalg.norm(eyes - eye_centres, axis=1).mean()
    swapped = np.linalg.norm(eyes - eye_centres[::-1], axis=1).mean()
    return float(min(direct, swapped) / max(iod, 1e-6))


def evaluate_items(detector, items, load, error_fn, log=None) -> dict:
    """Runs a detector on photos and scores them (`detect_items`, then `summarise`).

    Args:
      detector: anything with ``detect(image, name=...)``.
      items: list of photo names (paths).
      load: name -> uint8 [H, W, 3].
      error_fn: (name, Face) -> NME float, or None when the photo has no reference (counts by detection).
    Returns:
      `summarise`'s dict, with ``records`` (`detect_items`'s) added.
    """
    records = detect_items(detector, items, load, error_fn, log)
    report = summarise(records)
    report["records"] = records
    return report


def detect_items(detector, items, load, error_fn, log=None) -> list:
    """One record per photo: dict(name, stage (None when no face was found), error (NME or None), seconds)."""
    from tf_facetex.errors import NoFaceError

    records = []
    for index, name in enumerate(items):
        image = load(name)
        start = time.perf_counter()
        try:
            face = detector.detect(image, name=name)[0]
        except NoFaceError:
            face = None
        seconds = time.perf_counter() - start
        records.append({"name": name, "stage": None if face is None else face.detector,
                        "error": None if face is None else error_fn(name, face), "seconds": seconds})
        if log and (index + 1) % 100 == 0:
            done = summarise(records)
            log(f"  {index + 1}/{len(items)}: found {done['found_count']}, aligned {done['aligned_count']}")
    return records


def without_group_fallback(records) -> list:
    """The records a detector without the group fallback would have given: a photo whose face was borrowed
    from another photo of its set (stage 'group:...') counts as not found (the detections are the same)."""
    return [dict(record, stage=None, error=None) if (record["stage"] or "").startswith("group:") else record
            for record in records]


def summarise(records) -> dict:
    """Found and aligned fractions and counts, seconds per photo, detector stages, NME median and histogram,
    failures (file names of photos not aligned, at most 40) and failed_paths (all of them)."""
    found = aligned = 0
    stages = collections.Counter()
    errors, failures = [], []
    for record in records:
        if record["stage"] is None:
            failures.append(record["name"])
            continue
        found += 1
        stage = record["stage"]
        stages[stage.split(":")[0] if stage.startswith("group:") else stage] += 1
        error = record["error"]
        if error is None or error < ALIGNED_NME:
            aligned += 1
        else:
            failures.append(record["name"])
        if error is not None:
            errors.append(error)
    total = max(len(records), 1)
    counts, _ = np.histogram(errors, bins=np.asarray(NME_BINS))
    return {"photos": len(records), "found": round(found / total, 4), "aligned": round(aligned / total, 4),
            "found_count": found, "aligned_count": aligned,
            "seconds_per_photo": round(sum(r["seconds"] for r in records) / total, 4),
            "stages": dict(stages), "nme_median": round(float(np.median(errors)), 4) if errors else None,
            "nme_histogram": {"edges": [float(e) for e in NME_BINS], "counts": [int(c) for c in counts]},
            "failures": [str(pathlib.Path(f).name) for f in failures[:40]], "failed_paths": failures}


def read_yale_index(folder) -> list:
    """Rows of ``index.tsv`` (file, subject, azimuth_deg, elevation_deg, ...) with ``path`` added."""
    folder = pathlib.Path(folder)
    with open(folder / "index.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["path"] = str(folder / row["file"])
    return rows


def yale_frontal(rows) -> dict:
    """{subject: path of its frontal-light frame (azimuth 0, elevation 0)}."""
    return {row["subject"]: row["path"] for row in rows
            if row["azimuth_deg"] != "ambient" and int(row["azimuth_deg"]) == 0 and int(row["elevation_deg"]) == 0}


def yale_references(rows, load, reference_detector) -> dict:
    """{subject: five points [5, 2] of its frontal-light frame}; subjects whose frame has no face are left out."""
    from tf_facetex.data.align import five_points
    from tf_facetex.errors import NoFaceError

    references = {}
    for subject, path in yale_frontal(rows).items():
        try:
            references[subject] = five_points(reference_detector.detect(load(path), name=path)[0].landmarks)
        except NoFaceError:
            pass
    return references


def synthetic_manifest(folder) -> dict:
    """The ``manifest.json`` of a scripts/make_synthetic.py folder ({} when there is none)."""
    import json

    path = pathlib.Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def make_synthetic_command(manifest: dict) -> str:
    """The scripts/make_synthetic.py command that re-makes a folder, from its manifest: count, seed and the
    knobs that differ from `SyntheticConfig`'s defaults (None without a manifest)."""
    import dataclasses

    from tf_facetex.data.synthetic import SyntheticConfig

    if not manifest:
        return None
    defaults = dataclasses.asdict(SyntheticConfig())
    knobs = [f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}"
             for name, value in sorted((manifest.get("config") or {}).items()) if defaults.get(name) != value]
    return " ".join(["scripts/make_synthetic.py --out FOLDER", f"--n {manifest.get('count')}",
                     f"--seed {manifest.get('seed')}"] + knobs)
