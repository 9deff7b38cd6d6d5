"""The 68-point landmark markup (iBUG 300-W, dlib's model; 0-based: jaw 0-16, brows 17-26, nose 27-35, eyes
36-47, mouth 48-67) and what the rest of the project takes from it: the five alignment points, their distance
between two landmark sets, and the mirror image's point order."""
import numpy as np

NUM_LANDMARKS = 68
# the mirror image's point i is the original's FLIP_ORDER[i]
FLIP_ORDER = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
                      + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
                      + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """[68, 2] -> [5, 2]: eye centres (mean of 36-41 and of 42-47), nose tip 30, mouth corners 48, 54."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]]).astype(np.float32)


def five_point_distance(landmarks68, reference68) -> float:
    """Mean distance of the five alignment points of two 68-point sets, in units of ``reference68``'s eye-centre
    distance: [68, 2], [68, 2] -> float."""
    a = five_points(landmarks68).astype(np.float64)
    b = five_points(reference68).astype(np.float64)
    return float(np.linalg.norm(a - b, axis=1).mean() / max(np.linalg.norm(b[0] - b[1]), 1e-6))
