"""What `reme label` writes, and where (local or gs://, through refset.storage):

    OUTPUT/<name>.png                 label map: palette PNG of class ids (16-bit greyscale when ids exceed 8 bits)
    OUTPUT/overlays/<name>.png        optional colour overlay with a legend of the classes present
    OUTPUT/segments/<name>.parquet    one row per segment: image, segment index, class, score, area, RLE
                                      (the folder reads as one table: pyarrow.parquet.read_table(OUTPUT/segments))
    OUTPUT/classes.json               {"0": "cat", ...}: id -> class name
    OUTPUT/run.json                   the request (index, strategy, k, tau, threshold, ignore value)
    OUTPUT/failures.parquet           inputs that could not be labelled: uri, stage, error type, message

The label map is written last, so its presence means the image is done (a re-run skips it).
`<name>` is derived from the input path relative to the input root, made safe: it can never leave OUTPUT.
"""

from __future__ import annotations

import io
import posixpath
import re
import unicodedata

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from refset import storage

OVERLAYS_DIR = "overlays"
SEGMENTS_DIR = "segments"
CLASSES_JSON = "classes.json"
RUN_JSON = "run.json"
FAILURES = "failures.parquet"

_UNSAFE = re.compile(r"[^\w.\-]+", flags=re.UNICODE)


def segment_table_schema() -> pa.Schema:
    return pa.schema([
        pa.field("image", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("class_name", pa.string()),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask_rle", pa.binary(), nullable=False),
    ])


def input_root(pattern: str) -> str:
    """The directory part of an input directory or glob, against which output names are made relative."""
    text = pattern.rstrip("/")
    for i, ch in enumerate(text):
        if ch in "*?[":
            return posixpath.dirname(text[:i])
    return text


def output_name(uri: str, root: str = "") -> str:
    """A safe, flat output stem for an input: its path relative to `root` without extension, each part cleaned of
    anything but letters, digits, '.', '_' and '-', leading dots removed, parts joined with '__'.

    '..' parts, absolute paths and separators cannot survive, so OUTPUT/<name>.png is always inside OUTPUT.
    """
    path = uri.split("://", 1)[-1]
    base = root.split("://", 1)[-1].rstrip("/") if root else ""
    if base and path.startswith(base + "/"):
        path = path[len(base) + 1:]
    else:
        path = posixpath.basename(path)
    stem, _ = posixpath.splitext(path)
    parts = []
    for part in stem.replace("\\", "/").split("/"):
        part = unicodedata.normalize("NFC", part)
        part = _UNSAFE.sub("_", part).lstrip(".")
        if part and part not in (".", ".."):
            parts.append(part)
    # File names are limited to 255 bytes: keep the name within 200 bytes of UTF-8 (extensions follow).
    name = "__".join(parts).encode("utf-8")[:200].decode("utf-8", errors="ignore")
    return name or "image"


def label_map_path(output: str, name: str) -> str:
    return storage.join(output, f"{name}.png")


def overlay_path(output: str, name: str) -> str:
    return storage.join(output, OVERLAYS_DIR, f"{name}.png")


def segments_path(output: str, name: str) -> str:
    return storage.join(output, SEGMENTS_DIR, f"{name}.parquet")


def is_done(output: str, name: str, overlay: bool) -> bool:
    return storage.exists(label_map_path(output, name)) and (not overlay or storage.exists(overlay_path(output, name)))


def palette(num_colours: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), uint8 [num_colours, 3]; the usual palette for label PNGs."""
    ids = np.arange(num_colours)
    colours = np.zeros((num_colours, 3), dtype=np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((c >> channel) & 1) << shift
        c = c >> 3
    return colours.astype(np.uint8)


def encode_label_png(label_map: np.ndarray) -> bytes:
    """Palette PNG (8-bit ids) or 16-bit greyscale PNG (ids above 255)."""
    buffer = io.BytesIO()
    if label_map.dtype == np.uint8:
        image = Image.fromarray(label_map, mode="P")
        image.putpalette(palette().reshape(-1).tolist())
    else:
        image = Image.fromarray(label_map.astype(np.uint16))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_overlay(image: np.ndarray, label_map: np.ndarray, class_names: list[str], ignore_value: int,
                   alpha: float = 0.5) -> np.ndarray:
    """RGB overlay of the label colours on the image, with a legend column of the classes present."""
    # Shifted by one: the palette's colour 0 is black (VOC "background"), which hides class 0 in an overlay.
    colours = palette(max(256, int(label_map.max(initial=0)) + 2))[1:]
    colour = colours[label_map.astype(np.int64)]
    labelled = (label_map != ignore_value)[..., None]
    blended = np.where(labelled, (1 - alpha) * image + alpha * colour, image).astype(np.uint8)
    present = [int(c) for c in np.unique(label_map) if c != ignore_value and c < len(class_names)]
    row, pad = 16, 4
    legend_w = 10 + max([len(class_names[c]) for c in present] + [8]) * 7 + pad * 2
    height = max(image.shape[0], row * len(present) + pad * 2)
    canvas = Image.new("RGB", (image.shape[1] + legend_w, height), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.shape[1] + pad
    for i, c in enumerate(present):
        y = pad + i * row
        draw.rectangle([x0, y + 2, x0 + 10, y + 12], fill=tuple(int(v) for v in colours[c]), outline=(0, 0, 0))
        draw.text((x0 + 14, y + 1), class_names[c], fill=(0, 0, 0))
    return np.asarray(canvas)


def encode_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def segments_table(image: str, class_ids: np.ndarray, scores: np.ndarray, areas: np.ndarray, rles: list[bytes],
                   height: int, width: int, class_names: list[str]) -> pa.Table:
    n = len(class_ids)
    names = [class_names[int(c)] if 0 <= int(c) < len(class_names) else None for c in class_ids]
    return pa.table({
        "image": pa.array([image] * n, pa.string()),
        "segment": pa.array(np.arange(n, dtype=np.int32)),
        "class_id": pa.array(np.asarray(class_ids, dtype=np.int32)),
        "class_name": pa.array(names, pa.string()),
        "score": pa.array(np.asarray(scores, dtype=np.float32)),
        "area": pa.array(np.asarray(areas, dtype=np.int64)),
        "height": pa.array(np.full(n, height, dtype=np.int32)),
        "width": pa.array(np.full(n, width, dtype=np.int32)),
        "mask_rle": pa.array(list(rles), pa.binary()),
    }, schema=segment_table_schema())


def write_image_outputs(output: str, name: str, uri: str, image: np.ndarray | None, labels, rles: list[bytes],
                        class_names: list[str], ignore_value: int, overlay: bool) -> None:
    """Segments table, overlay, then the label map last (its presence marks the image done)."""
    height, width = labels.label_map.shape
    storage.write_parquet(segments_path(output, name), segments_table(
        uri, labels.class_ids, labels.scores, labels.areas, rles, height, width, class_names))
    if overlay and image is not None:
        storage.write_bytes(overlay_path(output, name),
                            encode_png(render_overlay(image, labels.label_map, class_names, ignore_value)))
    storage.write_bytes(label_map_path(output, name), encode_label_png(labels.label_map))


def classes_mapping(class_names: list[str]) -> dict[str, str]:
    return {str(i): n for i, n in enumerate(class_names)}
