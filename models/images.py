"""Decoding image bytes into the RGB arrays every model takes: the pure first stage of both jobs.

`decode_image`: EXIF orientation applied, any mode -> RGB, optional longest-side resize (the *working size*), and a
pixel-count limit checked from the header *before* decoding, so a decompression bomb is refused with a reason
instead of exhausting memory. `decode_image_sized` also says how large the input itself is (upright), so the
labelling job can paint its label map at the input's own size from work done at the working size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from models.errors import BadInput

DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k; larger inputs are refused as decompression bombs
DEFAULT_MAX_SIDE = 1024  # the working size of both jobs and the Python API (longest side after decoding)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")  # what the jobs list as images
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the stored image by 90 degrees


class ImageDecodeError(BadInput):
    """The bytes are not an image we can use (corrupt, truncated, not an image, too large)."""


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the longest side at most `max_side` (0 = keep), aspect kept, at least 1 pixel."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_max_side(image: Image.Image, max_side: int) -> Image.Image:
    size = working_size(image.width, image.height, max_side)
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


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


@dataclass(frozen=True)
class DecodedImage:
    """An image at its working size, and the size of the input itself (upright, after EXIF orientation)."""

    pixels: np.ndarray  # uint8 RGB [h, w, 3], longest side <= max_side
    source_height: int
    source_width: int


def decode_image(data: bytes, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> uint8 RGB [H,W,3], EXIF-rotated, longest side <= max_side (0 = keep size).

    Raises ImageDecodeError with the reason for empty, corrupt, truncated, non-image and oversized inputs.
    Animated images (GIF, APNG) use their first frame.
    """
    return decode_image_sized(data, max_side, max_pixels).pixels


def decode_image_sized(data: bytes, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """decode_image, also giving the input's own upright size (what `reme label` paints its label map at).

    Memory is bounded by the working size where the format allows it: a JPEG is decoded by libjpeg at the smallest
    DCT scale (1/2, 1/4, 1/8) that still holds twice the working size (PIL's draft, as Image.thumbnail does); every
    image is resized *before* EXIF rotation, so no full-size rotated copy is ever made.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _decode_opened(image, max_side, max_pixels)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def decode_pil_image(image: Image.Image | np.ndarray, max_side: int = 0,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """An image already in memory (a PIL image, or a uint8 array [H,W], [H,W,3] or [H,W,4]) -> the same
    DecodedImage as decoding its file: the same pixel limit, EXIF orientation (PIL images), RGB conversion and
    working-size resize (the Python API's entry point; inference.api)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ImageDecodeError(f"an image array must be uint8 [H,W], [H,W,3] or [H,W,4], got {array.dtype} "
                                   f"{list(array.shape)}")
        image = Image.fromarray(np.ascontiguousarray(array))
    if not isinstance(image, Image.Image):
        raise ImageDecodeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    try:
        return _decode_opened(image, max_side, max_pixels)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def _decode_opened(image: Image.Image, max_side: int, max_pixels: int) -> DecodedImage:
    """The decode proper of an opened image (decode_image_sized, decode_pil_image)."""
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, above the {max_pixels}-pixel limit "
            "(decompression bomb guard; raise --max_pixels to accept it)"
        )
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    image.seek(0)  # animated images: the first frame
    target = working_size(width, height, max_side)
    if image.format == "JPEG" and target != (width, height):
        image.draft("RGB", (2 * target[0], 2 * target[1]))
    image.load()
    exif = image.getexif()
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    rgb = to_rgb(image)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    if orientation != 1:
        # exif_transpose reads the orientation from the image it is given: hand it to the resized copy.
        rgb.info["exif"] = exif.tobytes()
        rgb = ImageOps.exif_transpose(rgb)
    upright = (height, width) if orientation in _SWAPS_SIDES else (width, height)
    return DecodedImage(np.asarray(rgb, dtype=np.uint8).copy(), source_height=upright[1], source_width=upright[0])
