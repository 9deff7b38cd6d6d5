"""Reading photos: every supported kind decodes to uint8 RGB; every bad file gives one clear ImageError.
Also the folder / CelebA readers and the deterministic splits. Bad-input fixtures are written into tmp_path."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from tf_facetex.data import datasets
from tf_facetex.data.images import content_hash, decode_image, encode_jpeg, encode_png, load_image, read_bytes
from tf_facetex.errors import FaceTexError, ImageError


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()  # uint8 [512, 512, 3], public-domain NASA portrait


def _save(image, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width=20000, height=20000) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB pixels (the IDAT holds almost nothing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def huge_jpeg_header(small_jpeg: bytes, width=20000, height=20000) -> bytes:
    """A real JPEG whose SOF0 frame header is patched to claim width x height."""
    data = bytearray(small_jpeg)
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "baseline JPEG expected"
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def forbid_pixel_decoding(monkeypatch):
    """Fails the test if Pillow starts decoding pixels (proves huge headers are refused first)."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"pixels of a {self.size} image were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# ------------------------------------------------------------------------------------------ good files

@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "JPEG"])
def test_decodes_common_formats_to_rgb(astronaut, fmt):
    options = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    decoded = decode_image(_save(astronaut, fmt, **options), name=f"a.{fmt.lower()}")
    assert decoded.dtype == np.uint8 and decoded.shape == astronaut.shape
    tolerance = 6.0 if fmt == "JPEG" else 0.0
    assert np.abs(decoded.astype(float) - astronaut).mean() <= tolerance


def test_load_image_reads_files_recursively_found(tmp_path, astronaut):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.PNG").write_bytes(encode_png(astronaut))
    (tmp_path / "top.jpeg").write_bytes(encode_jpeg(astronaut))
    (tmp_path / "notes.txt").write_text("not an image")
    files = datasets.list_image_files(tmp_path)
    assert [f.name for f in files] == ["deep.PNG", "top.jpeg"]
    assert load_image(files[0]).shape == (512, 512, 3)
    assert datasets.list_image_files(tmp_path, recursive=False) == [tmp_path / "top.jpeg"]


def test_exif_orientation_is_applied(astronaut):
    image = Image.fromarray(astronaut[:, :300])  # 512 high, 300 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue())
    assert decoded.shape == (300, 512, 3)
    expected = np.rot90(astronaut[:, :300], k=-1)  # clockwise
    assert np.abs(decoded.astype(float) - expected).mean() < 6.0


def test_grayscale_palette_and_alpha(astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    decoded = decode_image(_save(gray, "PNG"))
    assert decoded.shape == (512, 512, 3) and np.array_equal(decoded[..., 0], gray) and np.array_equal(decoded[..., 2], gray)

    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], axis=-1)
    rgba[:100, :, 3] = 0      # fully transparent band
    rgba[100:200, :, 3] = 128  # half transparent
    data = _save(rgba, "PNG")
    on_white = decode_image(data)
    assert np.all(on_white[:100] == 255)
    expected_half = (astronaut[100:200].astype(float) * 128 + 255 * 127) / 255
    assert np.abs(on_white[100:200].astype(float) - expected_half).max() <= 1.5
    assert np.array_equal(on_white[200:], astronaut[200:])
    assert np.array_equal(decode_image(data, alpha="drop"), astronaut)

    palette = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert np.abs(decode_image(buffer.getvalue()).astype(float) - astronaut).mean() < 12


def test_cmyk_jpeg_is_converted_to_rgb(astronaut):
    cmyk = Image.fromarray(astronaut).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG", quality=95)
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "CMYK"
    decoded = decode_image(buffer.getvalue(), name="cmyk.jpg")
    assert decoded.shape == (512, 512, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(float) - astronaut).mean() < 8.0
    pure_red = Image.new("CMYK", (64, 64), (0, 255, 255, 0))
    buffer = io.BytesIO()
    pure_red.save(buffer, format="JPEG", quality=100)
    assert np.abs(decode_image(buffer.getvalue())[32, 32].astype(int) - [255, 0, 0]).max() <= 3


def test_16bit_png_is_reduced_to_8bit(astronaut):
    wide = astronaut.astype(np.uint16) * 257  # 0..65535, same picture
    ok, png_rgb16 = cv2.imencode(".png", cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    assert ok
    assert np.array_equal(decode_image(png_rgb16.tobytes(), name="rgb16.png"), astronaut)

    gray16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray16).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I;16")
    decoded = decode_image(buffer.getvalue(), name="gray16.png")
    assert decoded.dtype == np.uint8 and decoded.shape == (64, 64, 3)
    assert np.abs(decoded[..., 0].astype(float) - gray16 / 257.0).max() <= 0.5 + 1e-9


def test_content_hash_is_sha1_of_bytes():
    assert content_hash(b"abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"


# ------------------------------------------------------------------------------------------- bad files

def _error(data: bytes, name="bad", **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, name=name, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(name)
    return message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_bytes(path)
    assert "empty" in _error(b"")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my holiday notes, not a photo\n" * 5)
    with pytest.raises(ImageError, match="not an image") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(astronaut):
    data = encode_jpeg(astronaut)
    assert "truncated" in _error(data[: len(data) // 2], "half.jpg")


def test_truncated_png(astronaut):
    data = encode_png(astronaut)
    message = _error(data[: len(data) // 3], "third.png")
    assert "truncated" in message or "cannot decode" in message


@pytest.mark.parametrize("size", [(1, 1), (31, 200), (200, 20)])
def test_too_small(size):
    image = np.zeros(size + (3,), np.uint8)
    assert "too small" in _error(_save(image, "PNG"), "tiny.png")


def test_huge_png_header_rejected_before_decoding(forbid_pixel_decoding):
    assert "too large" in _error(huge_png_header(20000, 20000), "huge.png")
    # 64 MP: below Pillow's own bomb limit, above ours
    assert "too large" in _error(huge_png_header(8000, 8000), "big.png")
    assert "64 MP" in _error(huge_png_header(8000, 8000), "big.png")


def test_huge_jpeg_header_rejected_before_decoding(astronaut, forbid_pixel_decoding, monkeypatch):
    small = _save(astronaut[:64, :64], "JPEG", quality=90)
    assert "too large" in _error(huge_jpeg_header(small), "huge.jpg")  # Pillow's bomb check fires first
    with monkeypatch.context() as patch:  # without Pillow's limit, our own header check must catch it
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(io.BytesIO(huge_jpeg_header(small))).size == (20000, 20000)
        assert "20000x20000 = 400 MP" in _error(huge_jpeg_header(small), "huge.jpg")


def test_pixel_limit_is_configurable(astronaut):
    data = encode_png(astronaut)
    assert "too large" in _error(data, "a.png", max_pixels=512 * 511)
    assert decode_image(data, max_pixels=512 * 512).shape == (512, 512, 3)


# ------------------------------------------------------------------------------------ dedupe and splits

def _fake_files(count, start=0):
    return [datasets.SourceFile(f"img{i}.jpg", content_hash(str(i).encode()), 1) for i in range(start, start + count)]


def test_dedupe_by_content(tmp_path, astronaut):
    data = encode_png(astronaut[:100, :100])
    for name in ("a.png", "copy_of_a.png", "sub/a_again.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "b.png").write_bytes(encode_png(astronaut[100:200, :100]))
    files = datasets.hash_files(datasets.list_image_files(tmp_path))
    unique, duplicates = datasets.dedupe_by_content(files)
    assert sorted(f.path.name for f in unique) == ["a.png", "b.png"]
    assert sorted(d.path.name for d, _ in duplicates) == ["a_again.png", "copy_of_a.png"]
    assert all(kept.path.name == "a.png" for _, kept in duplicates)


def test_split_by_hash_is_deterministic_stable_and_85_15():
    files = _fake_files(4000)
    split = datasets.split_by_hash(files, 0.15, seed=0)
    assert len(split["train"]) + len(split["test"]) == 4000
    assert abs(len(split["test"]) / 4000 - 0.15) < 0.02
    assert split == datasets.split_by_hash(list(files), 0.15, seed=0)
    other_seed = datasets.split_by_hash(files, 0.15, seed=1)
    assert {f.sha1 for f in other_seed["test"]} != {f.sha1 for f in split["test"]}
    # adding photos does not move the old ones
    grown = datasets.split_by_hash(files + _fake_files(500, start=4000), 0.15, seed=0)
    old = {f.sha1 for f in files}
    assert {f.sha1 for f in grown["test"] if f.sha1 in old} == {f.sha1 for f in split["test"]}
    # duplicates count once
    doubled = datasets.split_by_hash(files + files[:10], 0.15, seed=0)
    assert len(doubled["train"]) + len(doubled["test"]) == 4000


# ------------------------------------------------------------------------------------------ CelebA layout

def _write_celeba(root, count=40, with_lists=True):
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, count + 1)]
    for name in names:
        (images / name).write_bytes(encode_jpeg(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)))
    if with_lists:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{n} {0 if i < count * 0.8 else 1 if i < count * 0.9 else 2}\n" for i, n in enumerate(names)))
        lines = [str(count), "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                 "rightmouth_x rightmouth_y"]
        lines += [f"{n} 69 109 106 113 77 142 73 152 {100 + i % 5} 154" for i, n in enumerate(names)]
        (root / "list_landmarks_align_celeba.txt").write_text("\n".join(lines) + "\n")
    return names


def test_read_celeba_layout(tmp_path):
    names = _write_celeba(tmp_path, 40)
    items = datasets.read_celeba(tmp_path)
    assert [it.name for it in items] == names
    assert items[0].landmarks5.shape == (5, 2)
    np.testing.assert_allclose(items[3].landmarks5, [[69, 109], [106, 113], [77, 142], [73, 152], [103, 154]])
    assert [it.partition for it in items].count(0) == 32


def test_celeba_paper_split_is_85_15_and_deterministic(tmp_path):
    _write_celeba(tmp_path, 40)
    items = datasets.read_celeba(tmp_path)
    split = datasets.celeba_split(items, "paper", seed=0)
    assert len(split["test"]) == 6 and len(split["train"]) == 34  # round(0.15 * 40)
    assert not {i.name for i in split["test"]} & {i.name for i in split["train"]}
    again = datasets.celeba_split(list(reversed(items)), "paper", seed=0)
    assert [i.name for i in again["test"]] == [i.name for i in split["test"]]
    other = datasets.celeba_split(items, "paper", seed=7)
    assert [i.name for i in other["test"]] != [i.name for i in split["test"]]
    official = datasets.celeba_split(items, "official")
    assert (len(official["train"]), len(official["val"]), len(official["test"])) == (32, 4, 4)


def test_celeba_errors(tmp_path):
    with pytest.raises(FaceTexError, match="not a CelebA folder"):
        datasets.read_celeba(tmp_path)
    _write_celeba(tmp_path / "nolists", 5, with_lists=False)
    items = datasets.read_celeba(tmp_path / "nolists")
    assert len(items) == 5 and items[0].landmarks5 is None
    with pytest.raises(FaceTexError, match="partition"):
        datasets.celeba_split(items, "official")
    _write_celeba(tmp_path / "broken", 3)
    (tmp_path / "broken" / "list_eval_partition.txt").write_text("000001.jpg zero\n")
    with pytest.raises(FaceTexError, match=r"list_eval_partition.txt:1"):
        datasets.read_celeba(tmp_path / "broken")
