"""Reading images: expand input patterns, decode bytes into RGB arrays, and the Beam shell around both.

`decode_image` is the pure stage: EXIF orientation applied, any mode -> RGB, optional longest-side resize, and a
pixel-count limit checked from the header *before* decoding so a decompression bomb is refused with a reason
instead of exhausting memory.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms.failures import StageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k; larger inputs are refused as decompression bombs


class ImageDecodeError(StageError):
    """The bytes are not an image we can use (corrupt, truncated, not an image, too large)."""


def is_image_path(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def expand_input(pattern: str) -> str:
    """A directory means every file directly inside it; anything else is a glob pattern as given."""
    from apache_beam.io.filesystems import FileSystems

    stripped = pattern.rstrip("/")
    if any(ch in stripped for ch in "*?["):
        return pattern
    if pattern.endswith("/") or _is_directory(stripped):
        return FileSystems.join(stripped, "*")
    return pattern


def _is_directory(path: str) -> bool:
    if "://" in path:
        from pipeline import storage

        fs = storage.filesystem(path)
        return fs.isdir(path)
    return posixpath.isdir(path) if path else False


def list_inputs(patterns: list[str]) -> list[str]:
    """Launch-time listing of every input image (sorted, de-duplicated), with Beam's FileSystems (local or gs://).

    Directories expand to their image files; explicit globs keep only image extensions too, so a stray
    README next to the photos is not a failure.
    """
    from apache_beam.io.filesystems import FileSystems

    expanded = [expand_input(p) for p in patterns]
    results = FileSystems.match(expanded)
    uris = {m.path for r in results for m in r.metadata_list if is_image_path(m.path)}
    return sorted(uris)


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


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
import apache_beam as beam  # noqa: E402
from apache_beam.io import fileio  # noqa: E402

from transforms.failures import failure_row  # noqa: E402
from transforms.records import shard_of  # noqa: E402


class DecodeImage(beam.DoFn):
    """ReadableFile -> item {uri, shard, image, width, height}; unreadable/undecodable -> item with a failure row."""

    def __init__(self, num_shards: int, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.num_shards, self.max_side, self.max_pixels = num_shards, max_side, max_pixels
        self.images_read = beam.metrics.Metrics.counter("reme", "images_read")
        self.decode_failed = beam.metrics.Metrics.counter("reme", "images_failed_decode")

    def process(self, readable):
        uri = readable.metadata.path
        item = {"uri": uri, "shard": shard_of(uri, self.num_shards), "failure": None}
        try:
            data = readable.read()
        except Exception as exc:  # permissions, vanished file, network: the run goes on without it
            item["failure"] = failure_row(uri, "read", exc)
            self.decode_failed.inc()
            yield item
            return
        try:
            image = decode_image(data, self.max_side, self.max_pixels)
        except Exception as exc:
            item["failure"] = failure_row(uri, "decode", exc)
            self.decode_failed.inc()
            yield item
            return
        self.images_read.inc()
        item.update(image=image, height=int(image.shape[0]), width=int(image.shape[1]))
        yield item


class ReadImages(beam.PTransform):
    """Input patterns -> decoded image items, skipping shards already committed by an earlier run.

    Matching happens in the pipeline (fileio.MatchAll), so millions of inputs never sit in the job graph;
    Reshuffle after matching spreads the reads over workers instead of leaving them on the matcher.
    """

    def __init__(self, patterns: list[str], num_shards: int, done_shards=(), max_side: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__()
        self.patterns = [expand_input(p) for p in patterns]
        self.num_shards, self.done = num_shards, frozenset(done_shards)
        self.max_side, self.max_pixels = max_side, max_pixels

    def expand(self, pbegin):
        num_shards, done = self.num_shards, self.done
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "ImagesOnly" >> beam.Filter(lambda metadata: is_image_path(metadata.path))
            | "SkipDoneShards" >> beam.Filter(lambda metadata: shard_of(metadata.path, num_shards) not in done)
            # Overlapping patterns may match a file twice: keep one metadata per path (no re-match later).
            | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
            | "Distinct" >> beam.CombinePerKey(lambda many: min(many, key=lambda m: m.path))
            | "Metadata" >> beam.Values()
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadMatches" >> fileio.ReadMatches()
            | "Decode" >> beam.ParDo(DecodeImage(num_shards, self.max_side, self.max_pixels))
        )
