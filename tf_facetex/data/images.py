"""Reading and validating photos: any common file in, uint8 RGB [H, W, 3] out, or one clear ImageError.

What is accepted and how it is normalised (the rest of the project can then assume 8-bit RGB):
- formats: whatever Pillow decodes (JPEG, PNG, WebP, BMP, ...; the folder readers look for
  ``IMAGE_EXTENSIONS``);
- EXIF orientation is applied (phone photos are stored sideways with a rotation tag);
- grayscale / palette / CMYK / YCbCr -> RGB; an alpha channel is composited on white (or dropped);
- 16-bit (and 32-bit integer / float) images are reduced to 8 bits by their nominal range.
What is refused (``ImageError``, one line naming the file and the reason):
- an empty file, a file that is not an image (e.g. text named .jpg), a truncated file;
- an image smaller than ``MIN_SIDE`` px on a side (too small for a face);
- an image whose *header* claims more than ``MAX_PIXELS`` pixels: checked before any pixel is
  decoded, so a hostile 20000 x 20000 header costs nothing.
``decode_image`` raises nothing but ``ImageError`` for any bytes (tests/test_fuzz_images.py fuzzes it with random,
truncated and mutated files of every format, under a time and an address-space limit). GIF: the first frame;
multi-page TIFF: the first page.
"""
import hashlib
import io
import pathlib
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tf_facetex.errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")   # GIF: the first frame
MIN_SIDE = 32            # px; smaller images cannot hold a face worth reconstructing
MAX_PIXELS = 50_000_000  # 50 MP; refuse larger headers before decoding (memory safety)


def content_hash(data: bytes) -> str:
    """sha1 hex digest of a file's bytes: the identity used for deduplication and splits."""
    return hashlib.sha1(data).hexdigest()


def read_bytes(path) -> bytes:
    """The raw bytes of a file; ImageError if it cannot be read or is empty."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror or err})") from err
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return data


def decode_image(data: bytes, name: str = "<bytes>", min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
                 alpha: str = "white") -> np.ndarray:
    """Decodes encoded image bytes into 8-bit RGB.

    Args:
      data: the encoded file contents.
      name: used in error messages (usually the path).
      min_side: refuse images whose shorter side is below this (px).
      max_pixels: refuse images whose header claims more pixels than this; None disables the check.
      alpha: "white" composites a transparent image on white; "drop" discards the alpha channel.
    Returns:
      uint8 [H, W, 3] RGB, EXIF orientation applied.
    Raises:
      ImageError: empty, not an image, truncated/corrupt, too small or too large.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', not {alpha!r}")
    _allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as err:
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(claimed.group(1)) / 1e6:.0f} MP" if claimed else "above Pillow's bomb limit"
        limit = f"{max_pixels / 1e6:.0f} MP limit" if max_pixels else "no limit set"
        raise ImageError(f"{name}: image too large (header claims {size}; {limit}); refusing to decode") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image (unrecognised format, {len(data)} bytes)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: corrupt image header ({err})") from err
    except MemoryError as err:
        raise ImageError(f"{name}: not enough memory to open this image") from err
    except Exception as err:  # noqa: BLE001 - hostile bytes can trip any Pillow plug-in; never more than ImageError
        raise ImageError(f"{name}: corrupt image header ({type(err).__name__}: {err})") from err
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{name}: image too large ({width}x{height} = {width * height / 1e6:.0f} MP > "
                         f"{max_pixels / 1e6:.0f} MP limit); refusing to decode")
    try:
        image.load()  # decodes the pixels; Pillow raises OSError on truncated data
        image = _apply_exif_orientation(image)
        rgb = _to_rgb_uint8(image, alpha)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated file" if "truncated" in str(err).lower() else f"cannot decode ({err})"
        raise ImageError(f"{name}: {reason}") from err
    except MemoryError as err:
        raise ImageError(f"{name}: not enough memory to decode this image ({width}x{height})") from err
    except Exception as err:  # noqa: BLE001 - see above: a decoder's internal error on corrupt data
        raise ImageError(f"{name}: cannot decode ({type(err).__name__}: {err})") from err
    if min(rgb.shape[:2]) < min_side:
        raise ImageError(f"{name}: image too small ({rgb.shape[1]}x{rgb.shape[0]} px; "
                         f"need at least {min_side} px on each side)")
    return rgb


def load_image(path, **kwargs) -> np.ndarray:
    """Reads and decodes a file: ``decode_image(read_bytes(path), name=path, **kwargs)`` -> uint8 [H, W, 3]."""
    return decode_image(read_bytes(path), name=str(path), **kwargs)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotates/flips as the EXIF orientation tag says; a malformed EXIF block is ignored rather
    than costing the photo (cameras and editors write broken tags surprisingly often)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any EXIF parsing failure: keep the pixels as stored
        return image


def _allow_pixels(max_pixels):
    """Pillow refuses images above its own bomb limit at open(); raise it to ours so ours decides."""
    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def _to_rgb_uint8(image: Image.Image, alpha: str) -> np.ndarray:
    """Any Pillow mode -> uint8 [H, W, 3]."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grayscale: scale its nominal range to 8 bits.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        if alpha == "drop":
            return np.asarray(rgba.convert("RGB"), dtype=np.uint8)
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK (Pillow handles Adobe-inverted CMYK), YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W] or [H, W, C] -> PNG bytes (lossless; used for crops and masks in TFRecords)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (4:4:4 chroma, so colour edges survive)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
