"""Checks of the numbers a reconstruction folder hands back to scripts/relight.py (coefficients.json,
illumination.npy): a NaN/Inf or a wrong shape is one clear FaceTexError naming the file and the entry, instead of a
black render or a shape error deep in the renderer."""
import pathlib

import numpy as np

from tf_facetex.errors import FaceTexError

NUM_SH = 27


def check_record_numbers(record: dict, path) -> dict:
    """Every coefficient list of a coefficients.json record is finite numbers; returns the record."""
    parts = record.get("coefficients", {})
    if not isinstance(parts, dict):
        raise FaceTexError(f"{path}: 'coefficients' must be an object of number lists")
    for name, values in parts.items():
        try:
            array = np.asarray(values, np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise FaceTexError(f"{path}: coefficients '{name}' must be numbers ({err})") from err
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise FaceTexError(f"{path}: coefficients '{name}' hold {bad.size} non-finite value(s) (entry {bad[0]} "
                               f"= {array[bad[0]]}); the file is damaged, reconstruct the photo again")
    return record


def load_light_map(path, uv_size=None):
    """illumination.npy -> float32 [S, S, 27], or None when the file is absent.

    Raises:
      FaceTexError: unreadable, not [S, S, 27] (S = ``uv_size`` when given), or holding NaN/Inf.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        light = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise FaceTexError(f"{path}: unreadable ({' '.join(str(err).split())})") from err
    expected = f"[{uv_size or 'S'}, {uv_size or 'S'}, {NUM_SH}]"
    if (light.ndim != 3 or light.shape[2] != NUM_SH or light.shape[0] != light.shape[1]
            or (uv_size is not None and light.shape[0] != uv_size)):
        raise FaceTexError(f"{path}: shape {list(light.shape)}, expected {expected} (the albedo's UV size)")
    if not np.issubdtype(light.dtype, np.floating):
        raise FaceTexError(f"{path}: dtype {light.dtype}, expected floating point")
    finite = np.isfinite(light)
    if not finite.all():
        count = int((~finite).sum())
        raise FaceTexError(f"{path}: {count} non-finite value(s) (NaN/Inf) in the light map; the file is damaged "
                           "(relight with a preset, or reconstruct the photo again)")
    return light.astype(np.float32)
