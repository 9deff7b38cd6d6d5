"""Property-based fuzzing of the photo reader (`tf_facetex.data.images.decode_image`), run as its own process.

Inputs: random bytes, truncations and byte mutations (header and body) of real files written here by Pillow and
OpenCV: JPEG (baseline, progressive, CMYK, EXIF-rotated), PNG (RGB, RGBA, 16-bit grey, palette), WebP, TIFF (raw,
LZW, multi-page), GIF (animated), BMP. The property: ``decode_image`` returns uint8 [H, W, 3] (both sides >=
MIN_SIDE) or raises ``ImageError``, nothing else, within ``--max_seconds`` per input. The memory bound is the
process's address-space limit, set by the calling test (tests/test_fuzz_images.py): an allocation beyond it is a
MemoryError, which the property counts as a failure.

    python tests/fuzz_image_readers.py --examples 300 --seed 0
prints ``fuzz: <n> inputs tried ...`` and exits 0, or prints the falsifying input and exits 1.
"""
import argparse
import warnings
import io
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings, strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from tf_facetex.data.images import MIN_SIDE, decode_image  # noqa: E402
from tf_facetex.errors import ImageError  # noqa: E402


def seed_files() -> dict:
    """{name: bytes} of small real image files in every accepted format."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:40]
    rgb = np.stack([x * 6, y * 5, (x + y) * 3], -1).astype(np.uint8) + rng.integers(0, 20, (48, 40, 3), np.uint8)
    image = Image.fromarray(rgb)

    def save(img, fmt, **kwargs):
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, **kwargs)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6   # orientation: rotate 90
    frames = [image, Image.fromarray(255 - rgb)]
    seeds = {
        "baseline.jpg": save(image, "JPEG", quality=90),
        "progressive.jpg": save(image, "JPEG", progressive=True),
        "cmyk.jpg": save(image.convert("CMYK"), "JPEG"),
        "exif.jpg": save(image, "JPEG", exif=exif),
        "rgb.png": save(image, "PNG"),
        "rgba.png": save(image.convert("RGBA"), "PNG"),
        "grey16.png": save(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG"),
        "palette.png": save(image.convert("P"), "PNG"),
        "lossy.webp": save(image, "WEBP", quality=80),
        "lossless.webp": save(image, "WEBP", lossless=True),
        "raw.tiff": save(image, "TIFF"),
        "lzw.tiff": save(image, "TIFF", compression="tiff_lzw"),
        "pages.tiff": save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "animated.gif": save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "image.bmp": save(image, "BMP"),
    }
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    seeds["opencv.jpg"] = cv2.imencode(".jpg", bgr)[1].tobytes()
    seeds["opencv.png"] = cv2.imencode(".png", bgr)[1].tobytes()
    return seeds


SEEDS = seed_files()
NAMES = sorted(SEEDS)


@st.composite
def mutated(draw):
    """A seed file cut short, with bytes overwritten (mostly in its header), inserted or deleted."""
    data = bytearray(SEEDS[draw(st.sampled_from(NAMES))])
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["set", "set_header", "insert", "delete", "int32"]))
        limit = min(len(data), 64) if kind == "set_header" else len(data)
        if not data:
            break
        at = draw(st.integers(0, max(0, limit - 1)))
        if kind in ("set", "set_header"):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:   # a size/offset field made huge or zero
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\x00\x01"]))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


INPUTS = st.one_of(st.binary(max_size=2048), mutated(),
                   st.sampled_from(NAMES).map(lambda name: SEEDS[name]))


def run(examples: int, seed: int, max_seconds: float) -> int:
    warnings.simplefilter("ignore")   # Pillow warns about every corrupt EXIF block it skips
    stats = {"tried": 0, "decoded": 0, "refused": 0, "slowest": 0.0}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    @given(INPUTS)
    def check(data):
        stats["tried"] += 1
        start = time.perf_counter()
        try:
            rgb = decode_image(data, name="fuzz")
        except ImageError:
            stats["refused"] += 1
        else:
            stats["decoded"] += 1
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
            assert min(rgb.shape[:2]) >= MIN_SIDE, rgb.shape
        seconds = time.perf_counter() - start
        stats["slowest"] = max(stats["slowest"], seconds)
        assert seconds < max_seconds, f"{seconds:.2f} s for one input of {len(data)} bytes"

    for name, data in SEEDS.items():   # every seed is a valid photo
        assert decode_image(data, name=name).shape[:2] in ((48, 40), (40, 48)), name
    start = time.perf_counter()
    # A fixed seed: the same inputs every run (hypothesis' own random source is seeded from it).
    check = __import__("hypothesis").seed(seed)(check)
    check()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fuzz: {stats['tried']} inputs tried ({stats['decoded']} decoded, {stats['refused']} refused as "
          f"ImageError) in {time.perf_counter() - start:.1f} s; slowest {stats['slowest'] * 1000:.0f} ms; "
          f"peak RSS {peak_mb:.0f} MB; seeds: {', '.join(NAMES)}")
    return stats["tried"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_seconds", type=float, default=5.0)
    args = parser.parse_args()
    run(args.examples, args.seed, args.max_seconds)
