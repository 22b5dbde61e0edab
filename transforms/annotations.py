"""Labels from an annotated dataset: images/ + labels/ (label-map PNG per image, same stem) + classes.txt.

Each class present in an image's label map becomes one segment labelled with its class name; pixels equal to an
ignore value belong to no segment. This covers the common encodings:

    VOC      8-bit palette PNG (mode P); the palette index is the class id; 255 = boundary/ignore
    ADE20K   8-bit greyscale (mode L); 0 = "unlabeled" -> --ignore_index 0
    CamVid   8-bit greyscale; 11 = "Unlabelled" -> --ignore_index 11
    plain    any integer id map (8/16-bit greyscale PNG)

A label map stores class ids, never colours, so an RGB label PNG is refused with a clear reason.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image

from models.errors import BadInput
from refset import storage
from transforms.handlers import ItemDoFn
from transforms.masks import segment_fields

LABEL_EXTENSION = ".png"


class AnnotationError(BadInput):
    """The annotation of one image is missing or unusable."""


def parse_classes(text: str) -> list[str]:
    """classes.txt: one class name per line; the line index is the class id. Blank lines keep their id."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing newline is not a class
    return [line.strip() for line in lines]


def read_classes(annotations_dir: str) -> list[str]:
    path = storage.join(annotations_dir, "classes.txt")
    if not storage.exists(path):
        raise FileNotFoundError(f"annotations directory has no classes.txt: {path}")
    names = parse_classes(storage.read_bytes(path).decode("utf-8"))
    if not any(names):
        raise ValueError(f"classes.txt is empty: {path}")
    return names


def label_path_for(image_uri: str, annotations_dir: str) -> str:
    """labels/<stem>.png beside images/ in the annotations directory."""
    stem = posixpath.splitext(posixpath.basename(image_uri))[0]
    return storage.join(annotations_dir, "labels", stem + LABEL_EXTENSION)


def decode_label_map(data: bytes) -> np.ndarray:
    """Label PNG bytes -> int64 [H,W] class ids (palette index for mode P, grey value for L/I;16/I)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
                raise AnnotationError(
                    f"label map has mode {image.mode}; expected class ids (palette P, greyscale L or 16-bit), not colours"
                )
            return np.asarray(image).astype(np.int64)
    except AnnotationError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise AnnotationError(f"cannot decode label map: {type(exc).__name__}: {exc}") from exc


def resize_nearest(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an id map (ids must never be interpolated)."""
    if label_map.shape == (height, width):
        return label_map
    rows = np.minimum((np.arange(height) * label_map.shape[0]) // height, label_map.shape[0] - 1)
    cols = np.minimum((np.arange(width) * label_map.shape[1]) // width, label_map.shape[1] - 1)
    return label_map[rows[:, None], cols[None, :]]


def segments_from_label_map(
    label_map: np.ndarray, class_names: list[str], ignore_index: tuple[int, ...] | list[int] = ()
) -> tuple[list[str], np.ndarray]:
    """One segment per class present (ignore values excluded): (names, bool masks [N,H,W]) in class-id order.

    Raises AnnotationError for ids that classes.txt does not name, so a wrong classes file cannot silently
    mislabel a dataset.
    """
    label_map = np.asarray(label_map)
    ids = [int(i) for i in np.unique(label_map) if int(i) not in set(ignore_index)]
    unknown = [i for i in ids if i < 0 or i >= len(class_names) or not class_names[i]]
    if unknown:
        raise AnnotationError(
            f"label ids {unknown[:10]} are not named in classes.txt ({len(class_names)} classes); "
            "check the classes file or pass them as --ignore_index"
        )
    if not ids:
        return [], np.zeros((0,) + label_map.shape, dtype=bool)
    masks = label_map[None, :, :] == np.asarray(ids)[:, None, None]
    return [class_names[i] for i in ids], masks


def load_annotation(image_uri: str, annotations_dir: str, height: int, width: int) -> np.ndarray:
    """The label map of `image_uri`, resized (nearest) to the decoded image's size."""
    path = label_path_for(image_uri, annotations_dir)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError as exc:
        raise AnnotationError(f"no label map for this image (expected {path})") from exc
    return resize_nearest(decode_label_map(data), height, width)


# ---------------------------------------------------------------------------------------------------------
# Beam shell
# ---------------------------------------------------------------------------------------------------------
class AnnotateImage(ItemDoFn):
    """item -> item with one segment per annotated class (RLE, area, bbox, keep) and `segment_labels`."""

    stage = "label"

    def __init__(self, annotations_dir: str, class_names: list[str], ignore_index=(), min_area: int = 0):
        self.annotations_dir, self.class_names = annotations_dir, list(class_names)
        self.ignore_index, self.min_area = tuple(ignore_index), min_area

    def apply(self, item: dict) -> None:
        label_map = load_annotation(item["uri"], self.annotations_dir, item["height"], item["width"])
        names, masks = segments_from_label_map(label_map, self.class_names, self.ignore_index)
        item.update(segment_fields(masks, np.ones(len(masks), dtype=np.float32), self.min_area))
        item["segment_labels"] = names
