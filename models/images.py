"""Decoding image bytes into the RGB arrays every model takes: the pure first stage of both jobs.

`decode_image`: EXIF orientation applied, any mode -> RGB, optional longest-side resize, and a pixel-count limit
checked from the header *before* decoding, so a decompression bomb is refused with a reason instead of exhausting
memory.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import BadInput

DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k; larger inputs are refused as decompression bombs


class ImageDecodeError(BadInput):
    """The bytes are not an image we can use (corrupt, truncated, not an image, too large)."""


def resize_max_side(image: Image.Image, max_side: int) -> Image.Image:
    if not max_side or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white (palette and RGBA alike)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the used range to 8 bits instead of clipping everything to white.
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size and array.max() > 255 else 255.0
        return Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> uint8 RGB [H,W,3], EXIF-rotated, longest side <= max_side (0 = keep size).

    Raises ImageDecodeError with the reason for empty, corrupt, truncated, non-image and oversized inputs.
    Animated images (GIF, APNG) use their first frame.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, above the {max_pixels}-pixel limit "
                    "(decompression bomb guard; raise --max_pixels to accept it)"
                )
            if width < 1 or height < 1:
                raise ImageDecodeError(f"image has no pixels ({width}x{height})")
            image.seek(0)
            # draft() lets JPEG decode at a reduced scale directly when we will downsize anyway.
            if max_side and image.format == "JPEG" and max(width, height) > 2 * max_side:
                image.draft("RGB", (max_side, max_side))
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = to_rgb(upright)
            rgb = resize_max_side(rgb, max_side)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
