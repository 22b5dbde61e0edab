"""The bad-input matrix: files users really have in uncurated folders and buckets, each with its expected fate.

`write_bad_inputs(directory)` writes every case and returns one `BadInput` per file. A case either decodes (to
RGB uint8 [H, W, 3], EXIF orientation applied, first frame of an animation) or is a failure at a named stage with
a reason matching `reason`. Where a case decodes, `check(array)` asserts what the pixels must be — computed from
how the file was made, never from the code under test.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED = (220, 30, 30)
BLUE = (30, 30, 220)
GREEN = (30, 200, 30)


@dataclass(frozen=True)
class BadInput:
    name: str  # file name inside the directory
    outcome: str  # "processed" | "failure"
    stage: str | None = None  # failure stage (refset.schema.FAILURE_STAGES) for failures
    reason: str | None = None  # regex the failure message must match (case-insensitive)
    shape: tuple[int, int] | None = None  # decoded (H, W) for processed cases, at full size
    check: Callable[[np.ndarray], None] | None = field(default=None, compare=False)
    why: str = ""

    @property
    def processed(self) -> bool:
        return self.outcome == "processed"


def _scene(width: int, height: int, seed: int) -> np.ndarray:
    """Three vertical colour bands with mild noise: segmentable, distinct, deterministic."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.float64)
    bands = np.array_split(np.arange(width), 3)
    for cols, colour in zip(bands, (RED, GREEN, BLUE), strict=True):
        image[:, cols] = colour
    image += rng.normal(0, 6, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def _png(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bilevel_png(width: int, height: int, complete: bool) -> bytes:
    """A 1-bit greyscale PNG of the given size, all black. Complete: a valid image whose zero rows compress to
    almost nothing (a decompression bomb: tiny on disk, width*height*3 bytes once decoded to RGB).
    Not complete: the header and a stub of data only."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    if complete:
        compressor = zlib.compressobj(9)
        chunks = [compressor.compress(row) for _ in range(height)]
        data = b"".join(chunks) + compressor.flush()
    else:
        data = zlib.compress(row * 4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def _mean(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]).mean(axis=0)


def _near(colour: tuple[int, int, int], tol: float = 40) -> Callable[[np.ndarray], bool]:
    return lambda pixels: bool(np.abs(_mean(pixels) - np.array(colour)).max() < tol)


def _check_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8, array.dtype
    assert array.ndim == 3 and array.shape[2] == 3, array.shape
    assert array.shape[:2] == shape, (array.shape, shape)


def write_bad_inputs(directory: str | Path) -> list[BadInput]:
    """Write the matrix into `directory` (created); return the cases in a fixed order."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[BadInput, bytes]] = []

    def add(case: BadInput, data: bytes) -> None:
        cases.append((case, data))

    base = _scene(64, 48, seed=1)
    good_jpeg = _jpeg(Image.fromarray(base))

    # --- failures -------------------------------------------------------------------------------------------
    add(BadInput("zero-bytes.jpg", "failure", "decode", r"empty|0 bytes|zero", why="zero-byte file"), b"")
    add(BadInput("truncated.jpg", "failure", "decode", r"truncat|corrupt|broken|cannot|decode",
                 why="JPEG cut off after 40% of its bytes"), good_jpeg[: len(good_jpeg) * 2 // 5])
    add(BadInput("not-an-image.jpg", "failure", "decode", r"not an image|identif|unsupported|cannot|decode",
                 why="a text file named .jpg"), b"this is a README, not a photo\n" * 20)
    add(BadInput("bomb.png", "failure", "decode", r"bomb|pixel|too large|limit",
                 why="valid 1-bit 12000x12000 PNG, ~20 kB on disk, 432 MB as RGB: refused before decoding"),
        _bilevel_png(12_000, 12_000, complete=True))
    add(BadInput("bomb-header.png", "failure", "decode", r"bomb|pixel|too large|limit",
                 why="header declares 60000x60000 (3.6 Gpx) over a stub of data"),
        _bilevel_png(60_000, 60_000, complete=False))

    # --- processed: colour modes ----------------------------------------------------------------------------
    def is_red_green_blue(a: np.ndarray) -> None:
        w = a.shape[1]
        assert _near(RED)(a[:, : w // 4]), _mean(a[:, : w // 4])
        assert _near(GREEN)(a[:, w // 2 - 4 : w // 2 + 4]), _mean(a[:, w // 2 - 4 : w // 2 + 4])
        assert _near(BLUE)(a[:, -w // 4 :]), _mean(a[:, -w // 4 :])

    add(BadInput("cmyk.jpg", "processed", shape=(48, 64), check=is_red_green_blue,
                 why="CMYK JPEG: colours must survive the conversion"),
        _jpeg(Image.fromarray(base).convert("CMYK")))

    ramp16 = (np.tile(np.linspace(0, 65535, 64), (48, 1))).astype(np.uint16)

    def is_increasing_ramp(a: np.ndarray) -> None:
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all(), "grey must stay grey"
        columns = a[..., 0].astype(int).mean(axis=0)
        assert columns[0] < 10 and columns[-1] > 245, (columns[0], columns[-1])
        assert (np.diff(columns) >= 0).all(), "16-bit ramp must stay monotonic (not clipped to white)"

    add(BadInput("gray16.png", "processed", shape=(48, 64), check=is_increasing_ramp,
                 why="16-bit greyscale PNG"), _png(Image.fromarray(ramp16)))

    grey = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)

    def is_grey(a: np.ndarray) -> None:
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
        assert abs(int(a[..., 0].mean()) - int(grey.mean())) <= 2

    add(BadInput("grayscale.png", "processed", shape=(48, 64), check=is_grey, why="mode L"),
        _png(Image.fromarray(grey, mode="L")))

    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[..., :3] = base
    rgba[..., 3] = 255
    rgba[:, 32:, 3] = 0  # right half fully transparent (its RGB is arbitrary)

    def is_rgba_composited(a: np.ndarray) -> None:
        # Opaque half keeps its colour; the transparent half is a uniform fill, not the hidden RGB noise.
        assert _near(RED)(a[:, :16])
        right = a[:, 40:].reshape(-1, 3)
        assert (right == right[0]).all(), "transparent pixels must become one uniform background colour"

    add(BadInput("rgba.png", "processed", shape=(48, 64), check=is_rgba_composited, why="RGBA, half transparent"),
        _png(Image.fromarray(rgba, mode="RGBA")))

    palette = Image.fromarray(base).quantize(colors=8)
    palette_array = np.array(palette)
    transparent_index = int(palette_array[0, -1])  # the blue band's palette entry
    palette_bytes = _png(palette, transparency=transparent_index)

    def is_palette_composited(a: np.ndarray) -> None:
        assert a.shape[:2] == (48, 64)
        assert _near(RED)(a[:, :16])
        hidden = palette_array == transparent_index
        assert hidden.any()
        values = a[hidden].reshape(-1, 3)
        assert (values == values[0]).all(), "transparent palette entry must become one uniform background"

    add(BadInput("palette-transparent.png", "processed", shape=(48, 64), check=is_palette_composited,
                 why="palette PNG with a transparent entry"), palette_bytes)

    # --- processed: geometry --------------------------------------------------------------------------------
    # Stored 64 wide x 32 high: left half red, right half blue. EXIF orientation 6 means "rotate 90 degrees
    # clockwise to display", so the upright image is 32 wide x 64 high with red on TOP and blue at the bottom.
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:, :32] = RED
    stored[:, 32:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6

    def is_upright(a: np.ndarray) -> None:
        assert _near(RED)(a[:28]), _mean(a[:28])
        assert _near(BLUE)(a[36:]), _mean(a[36:])

    add(BadInput("exif-rotated.jpg", "processed", shape=(64, 32), check=is_upright,
                 why="EXIF orientation 6: pixels stored sideways"), _jpeg(Image.fromarray(stored), exif=exif))

    add(BadInput("one-pixel.png", "processed", shape=(1, 1), check=lambda a: None, why="1x1 image"),
        _png(Image.new("RGB", (1, 1), GREEN)))

    frames = [Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    def is_first_frame(a: np.ndarray) -> None:
        assert _near(RED)(a), _mean(a)

    add(BadInput("animated.gif", "processed", shape=(30, 40), check=is_first_frame,
                 why="two-frame GIF: the first frame is used"), gif.getvalue())

    # --- processed: names -----------------------------------------------------------------------------------
    for name, seed in (("with space.jpg", 2), ("x ü 猫.png", 3), ("a..b.jpg", 4), ("UPPER.JPG", 5)):
        image = Image.fromarray(_scene(64, 48, seed))
        data = _png(image) if name.endswith(".png") else _jpeg(image)
        add(BadInput(name, "processed", shape=(48, 64), check=is_red_green_blue,
                     why="awkward file name (spaces, unicode, '..', upper-case extension)"), data)
    # Names that a "make it safe" rewrite maps to the same output name: none may overwrite another.
    add(BadInput("with_space.jpg", "processed", shape=(48, 64), check=is_red_green_blue,
                 why="differs from 'with space.jpg' only by '_' vs ' '"), _jpeg(Image.fromarray(_scene(64, 48, 8))))
    # Same stem, two formats: outputs named after the stem alone would overwrite each other.
    add(BadInput("twin.jpg", "processed", shape=(48, 64), check=is_red_green_blue, why="same stem as twin.png"),
        _jpeg(Image.fromarray(_scene(64, 48, 6))))
    add(BadInput("twin.png", "processed", shape=(48, 64), check=is_red_green_blue, why="same stem as twin.jpg"),
        _png(Image.fromarray(_scene(64, 48, 7))))

    for case, data in cases:
        (root / case.name).write_bytes(data)
    return [case for case, _ in cases]


def check_decoded(case: BadInput, array: np.ndarray) -> None:
    """Assert a decoded array is what `case` promises (RGB uint8 of the expected shape and content)."""
    assert case.processed, f"{case.name} should not have decoded"
    _check_rgb(array, case.shape)
    if case.check is not None:
        case.check(array)
