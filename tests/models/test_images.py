"""decode_image_sized: the image at its working size plus the input's own upright size, for every EXIF orientation."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from models.images import decode_image, decode_image_sized, working_size


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _scene(height: int, width: int) -> np.ndarray:
    """Smooth and asymmetric: every rotation or flip changes it."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    return (np.stack([x, y, (x * y) ** 0.5], axis=-1) * 255).astype(np.uint8)


def test_working_size_keeps_aspect_and_bounds_the_longest_side():
    assert working_size(6000, 4000, 1024) == (1024, 683)
    assert working_size(4000, 6000, 1024) == (683, 1024)
    assert working_size(12000, 1000, 1024) == (1024, 85)
    assert working_size(300, 200, 1024) == (300, 200)  # never enlarged
    assert working_size(300, 200, 0) == (300, 200)  # 0 = keep
    assert working_size(5000, 1, 100) == (100, 1)  # at least a pixel


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_exif_orientation_gives_the_upright_image_and_size(orientation, fmt):
    stored = Image.fromarray(_scene(90, 160))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    # Reference: the full image made upright by Pillow, then resized (the order the decoder avoids for memory).
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im.convert("RGB"))
    expected = np.asarray(upright.resize(working_size(*upright.size, 64), Image.Resampling.BILINEAR))
    decoded = decode_image_sized(data, max_side=64)
    assert (decoded.source_width, decoded.source_height) == upright.size
    assert decoded.pixels.shape == expected.shape
    assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).mean() < (1.5 if fmt == "PNG" else 4)


def test_large_jpeg_decodes_straight_to_the_working_size():
    """A 6000x4000 JPEG: pixels at 1024 x 683, close to a full decode resized; the input's size is reported."""
    rng = np.random.default_rng(0)
    small = _scene(400, 600).astype(np.int16) + rng.integers(-8, 9, (400, 600, 3))
    big = Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize((6000, 4000), Image.Resampling.BILINEAR)
    data = _encode(big, "JPEG", quality=90)
    decoded = decode_image_sized(data, max_side=1024)
    assert decoded.pixels.shape == (683, 1024, 3)
    assert (decoded.source_height, decoded.source_width) == (4000, 6000)
    reference = np.asarray(big.resize((1024, 683), Image.Resampling.BILINEAR))
    assert np.abs(decoded.pixels.astype(int) - reference.astype(int)).mean() < 4
    np.testing.assert_array_equal(decode_image(data, max_side=1024), decoded.pixels)
