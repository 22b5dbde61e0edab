"""Report thumbnails: a segment outlined on a small copy of its own image, so a reader sees where it sat.

Each image is read once through refset.storage (local or gs://), decoded near thumbnail size (JPEG draft mode, so
a 48 MP photo costs a fraction of a full decode), EXIF-rotated like the index job does, and resized to the size
the masks were made at, scaled to the thumbnail. The mask is scaled with "any coverage" so a tiny segment never
vanishes; outside it the image is dimmed, its contour (scikit-image find_boundaries) is drawn in a bright colour,
and a segment too small to spot also gets a ring around it. An unreadable image gives the mask alone on grey with
the reason, never an error: a report always renders.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps, features
from skimage.segmentation import find_boundaries

from models.images import to_rgb
from models.rle import decode_rle
from refset import storage

THUMB_SIDE = 192  # longest side of a thumbnail, pixels
# Photos as WebP (every current browser shows it; about 2.3x smaller than JPEG at the same look, so thumbnails can
# be larger for the same bytes), JPEG where this Pillow was built without WebP. Masks alone are flat: PNG.
PHOTO_FORMAT = "WEBP" if features.check("webp") else "JPEG"
PHOTO_QUALITY = 78
OUTLINE = (255, 214, 10)  # contour colour: bright yellow reads on dimmed photos
MASK_EDGE = (51, 65, 85)  # contour colour of a mask shown alone, on grey
DIM = 0.5  # brightness kept outside the segment
SMALL_FRACTION = 0.004  # a segment under this share of the thumbnail also gets a ring, so it can be found
READ_THREADS = 8  # image reads overlap (object-store latency, PIL decodes release the GIL)


@dataclass(frozen=True)
class Thumbnail:
    src: str  # data: URI
    note: str  # "" or, short, why the image is missing (then the thumbnail is the mask alone)
    detail: str  # the full reason (a tooltip)


def thumb_size(width: int, height: int, side: int = THUMB_SIDE) -> tuple[int, int]:
    """(w, h) of a thumbnail of a width x height image: longest side `side`, aspect kept (small images grow)."""
    scale = side / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_thumb_image(uri: str, width: int, height: int, side: int = THUMB_SIDE) -> np.ndarray:
    """The image at `uri` as uint8 RGB at thumb_size(width, height): what the masker saw, made small."""
    size = thumb_size(width, height, side)
    with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size[0] * 2, size[1] * 2))  # decode at a reduced scale; exact size below
        image.load()
        upright = to_rgb(ImageOps.exif_transpose(image))
        resample = Image.Resampling.LANCZOS if upright.width >= size[0] else Image.Resampling.NEAREST
        return np.asarray(upright.resize(size, resample), dtype=np.uint8)


def scale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W] -> bool at size (w, h); when shrinking, a thumbnail pixel is on if any source pixel is."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    if size[0] < mask.shape[1] or size[1] < mask.shape[0]:
        return np.asarray(image.resize(size, Image.Resampling.BOX)) > 0
    return np.asarray(image.resize(size, Image.Resampling.NEAREST)) > 127


def _ring(canvas: Image.Image, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    r = max(xs.max() - xs.min(), ys.max() - ys.min()) / 2 + 7
    ImageDraw.Draw(canvas).ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=2)


def outline_on_image(image: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The image with everything outside `mask` dimmed and the mask's contour drawn (both [h, w] at one size)."""
    out = image.copy()
    out[~mask] = (out[~mask] * DIM).astype(np.uint8)
    out[find_boundaries(mask, mode="thick")] = OUTLINE
    canvas = Image.fromarray(out)
    if mask.mean() < SMALL_FRACTION:
        _ring(canvas, mask, OUTLINE)
    return canvas


def mask_alone(mask: np.ndarray) -> Image.Image:
    """The mask on grey, contour drawn: the stand-in when the image cannot be read."""
    out = np.full(mask.shape + (3,), 226, np.uint8)
    out[mask] = (148, 163, 184)
    out[find_boundaries(mask, mode="thick")] = MASK_EDGE
    canvas = Image.fromarray(out)
    if mask.mean() < SMALL_FRACTION:
        _ring(canvas, mask, MASK_EDGE)
    return canvas


def _data_uri(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    if fmt == "WEBP":
        image.save(buffer, format="WEBP", quality=PHOTO_QUALITY, method=4)  # libwebp default effort
    elif fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=PHOTO_QUALITY, optimize=True, subsampling=0)  # 4:4:4: crisp contour
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _reasons(exc: BaseException) -> tuple[str, str]:
    """(short note, full reason) for an image that could not be read."""
    text = " ".join(str(exc).split())[:300]
    return f"image unreadable ({type(exc).__name__})", f"{type(exc).__name__}: {text}"


def render_thumbnail(image: np.ndarray | None, reasons: tuple[str, str], mask_rle: bytes, width: int, height: int,
                     side: int = THUMB_SIDE) -> Thumbnail:
    """One segment's thumbnail: outlined on its image, or the mask alone with `reasons` when image is None."""
    size = thumb_size(width, height, side)
    try:
        mask = scale_mask(decode_rle(mask_rle, height, width), size)
    except Exception as exc:  # noqa: BLE001 - a broken mask costs one thumbnail, not the report
        blank = Image.new("RGB", size, (226, 226, 226))
        return Thumbnail(_data_uri(blank, "PNG"), f"mask unreadable ({type(exc).__name__})", str(exc)[:300])
    if image is not None and image.shape[:2] == mask.shape:
        return Thumbnail(_data_uri(outline_on_image(image, mask), PHOTO_FORMAT), "", "")
    return Thumbnail(_data_uri(mask_alone(mask), "PNG"), *(reasons if reasons[0] else ("image unreadable", "")))


class ImageReader:
    """Thumbnail-size copies of source images, each read once; failures remembered with their reason."""

    def __init__(self, side: int = THUMB_SIDE, threads: int = READ_THREADS):
        self.side, self.threads = side, threads
        self.images: dict[tuple[str, int, int], tuple[np.ndarray | None, tuple[str, str]]] = {}

    def _load(self, key: tuple[str, int, int]) -> tuple[np.ndarray | None, tuple[str, str]]:
        try:
            return load_thumb_image(*key, side=self.side), ("", "")
        except Exception as exc:  # noqa: BLE001 - any unreadable source is shown as its mask alone
            return None, _reasons(exc)

    def prefetch(self, keys: list[tuple[str, int, int]]) -> None:
        todo = [k for k in dict.fromkeys(keys) if k not in self.images]
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.threads, len(todo)))) as pool:
            for key, result in zip(todo, pool.map(self._load, todo), strict=True):
                self.images[key] = result

    def get(self, uri: str, width: int, height: int) -> tuple[np.ndarray | None, tuple[str, str]]:
        key = (uri, int(width), int(height))
        if key not in self.images:
            self.images[key] = self._load(key)
        return self.images[key]
