"""decode_image and input listing: every image mode we meet in the wild, and the inputs we must refuse."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.images import ImageDecodeError, decode_image
from transforms.images import expand_input, list_inputs


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(h=30, w=40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


def test_rgb_png_round_trips_exactly():
    array = gradient()
    out = decode_image(encode(Image.fromarray(array)))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, array)


def test_exif_orientation_is_applied():
    array = gradient(20, 50)
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the camera was rotated; display needs a 90° clockwise turn
    out = decode_image(encode(image, "JPEG", exif=exif, quality=95))
    assert out.shape == (50, 20, 3)
    # the top-left displayed pixel is the stored bottom-left pixel after a clockwise turn
    expected = np.rot90(array, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


@pytest.mark.parametrize(
    "make",
    [
        lambda a: Image.fromarray(a[..., 0]),  # L
        lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])),  # RGBA
        lambda a: Image.fromarray(a).convert("P"),  # palette
        lambda a: Image.fromarray(a).convert("CMYK"),  # CMYK (saved as JPEG below)
        lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257),  # 16-bit greyscale
    ],
    ids=["L", "RGBA", "P", "CMYK", "I16"],
)
def test_any_mode_becomes_rgb(make):
    image = make(gradient())
    data = encode(image, "JPEG") if image.mode == "CMYK" else encode(image)
    out = decode_image(data)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped():
    values = (np.arange(40, dtype=np.uint16) * 1000).reshape(1, 40).repeat(5, 0)
    out = decode_image(encode(Image.fromarray(values)))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    assert len(np.unique(out[..., 0])) > 30  # a ramp, not a wall of white


def test_transparent_palette_composites_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    out = decode_image(encode(image, transparency=0))
    assert (out == 255).all()


def test_max_side_resizes_keeping_aspect():
    out = decode_image(encode(Image.fromarray(gradient(30, 120))), max_side=60)
    assert out.shape == (15, 60, 3)
    assert decode_image(encode(Image.fromarray(gradient(30, 40))), max_side=60).shape == (30, 40, 3)


def test_first_frame_of_animated_gif():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buffer.getvalue())
    assert out.shape == (8, 8, 3) and out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a decompression bomb looks like to open()."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not a jpeg\n", "cannot decode"),
        (encode(Image.fromarray(gradient()), "JPEG")[:200], "cannot decode"),
        (png_header_only(60_000, 60_000), "decompression bomb"),
    ],
    ids=["zero-bytes", "text", "truncated-jpeg", "bomb"],
)
def test_bad_inputs_raise_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_pixel_limit_is_configurable():
    data = encode(Image.fromarray(gradient()))
    with pytest.raises(ImageDecodeError, match="1200 pixels, above the 100-pixel limit"):
        decode_image(data, max_pixels=100)


def test_listing_expands_directories_and_keeps_images_only(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(b"x")
    assert expand_input(str(tmp_path)).endswith("/*")
    listed = list_inputs([str(tmp_path)])
    assert [p.rsplit("/", 1)[-1] for p in listed] == ["a.jpg", "b.PNG"]
    both = list_inputs([str(tmp_path / "*.jpg"), str(tmp_path / "sub"), str(tmp_path)])
    assert [p.rsplit("/", 1)[-1] for p in both] == ["a.jpg", "b.PNG", "c.png"]  # de-duplicated, sorted
    assert list_inputs([str(tmp_path / "*.gif")]) == []
