"""COCO ground truth: panoptic (PNG + JSON) and instances/stuff JSON (polygons or RLE, decoded by pycocotools).

Two readers use it: the index job's annotations label source (transforms.coco: each annotated region becomes one
segment with its category's name) and `reme evaluate` (inference.datasets: a per-pixel map of benchmark ids).

    panoptic    JSON {"images": [{"id", "file_name", "height", "width"}],
                      "annotations": [{"image_id", "file_name" (the PNG), "segments_info": [{"id", "category_id",
                                       "iscrowd", "area", "bbox"}]}],
                      "categories": [{"id", "name", "isthing"}]}
                plus one RGB PNG per image in a directory named like the JSON (panoptic_val2017.json ->
                panoptic_val2017/): segment id = R + 256 G + 256² B, 0 = unlabelled
    instances   JSON {"images": [...], "annotations": [{"image_id", "category_id", "iscrowd", "segmentation",
                      "area", "bbox"}], "categories": [{"id", "name"}]}; "segmentation" is a list of polygons
                [x1, y1, x2, y2, ...], an RLE {"size": [h, w], "counts": str} or an uncompressed RLE
                {"size", "counts": [int, ...]} (crowd regions). COCO-Stuff's stuff_*.json has the same shape;
                its category 183 "other" marks the pixels of things, so it is no class.

Crowd regions (iscrowd = 1) outline a group of objects too dense to separate, not one object.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import ijson
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

PANOPTIC = "coco_panoptic"
INSTANCES = "coco"
PLACEHOLDER_NAMES = ("other",)  # COCO-Stuff's category 183: "a thing is here", not a class

_BOOKKEEPING = re.compile(r"-(merged|other|stuff)\b")


class CocoError(ValueError):
    """A COCO annotation that cannot be decoded; the message is one line."""


def readable_name(name: str) -> str:
    """A category name as a label: COCO's bookkeeping suffixes go, dashes become spaces.

    "sky-other-merged" -> "sky", "wall-brick" -> "wall brick", "door-stuff" -> "door", "traffic light" stays.
    """
    cleaned = _BOOKKEEPING.sub("", name.strip())
    return " ".join(cleaned.replace("-", " ").split()) or name.strip()


def is_placeholder(category: dict) -> bool:
    return str(category.get("name", "")).strip().lower() in PLACEHOLDER_NAMES


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG colours -> segment ids (id = R + 256 G + 256² B), int64 [H,W]."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def decode_panoptic_png(data: bytes) -> np.ndarray:
    """Panoptic PNG bytes -> segment ids [H,W]; anything but an RGB(A) image is refused."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                raise CocoError(f"panoptic PNG has mode {image.mode}; expected RGB-encoded segment ids")
            return rgb_to_id(np.asarray(image.convert("RGB")))
    except CocoError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise CocoError(f"cannot decode panoptic PNG: {type(exc).__name__}: {exc}") from exc


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """An instances annotation's "segmentation" -> bool [H,W] at the annotation's image size.

    Polygons are rasterised by pycocotools (several polygons of one object are merged; a polygon of fewer than
    three points has no area and is skipped); compressed and uncompressed RLE are decoded as they are.
    """
    height, width = int(height), int(width)
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in p] for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        # (pycocotools would read a first polygon of exactly 4 numbers as a box; polygons here have >= 6)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise CocoError(f"RLE size {size} differs from the image's {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE (COCO crowd regions)
            rle = mask_utils.frPyObjects({"size": size, "counts": [int(c) for c in counts]}, height, width)
        else:
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise CocoError(f"segmentation is neither polygons nor RLE: {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


@dataclass(frozen=True)
class Region:
    """One annotated region of an image: its category, whether it is a crowd, its pixels."""

    category_id: int
    iscrowd: bool
    mask: np.ndarray  # bool [H,W]


def panoptic_regions(id_map: np.ndarray, segments_info: list[dict]) -> list[Region]:
    """The regions of one panoptic image, in segments_info order; a listed segment with no pixel is an error (the
    PNG and the JSON disagree)."""
    regions = []
    for info in segments_info:
        mask = id_map == int(info["id"])
        if not mask.any():
            raise CocoError(f"panoptic segment {info['id']} (category {info.get('category_id')}) has no pixel in "
                            "the PNG; the PNG and the JSON disagree")
        regions.append(Region(int(info["category_id"]), bool(info.get("iscrowd", 0)), mask))
    return regions


def instance_regions(annotations: list[dict], height: int, width: int) -> list[Region]:
    """The regions of one image of an instances/stuff JSON, in annotation order (they may overlap)."""
    return [Region(int(a["category_id"]), bool(a.get("iscrowd", 0)),
                   segmentation_mask(a["segmentation"], height, width)) for a in annotations]


# ---------------------------------------------------------------------------------------------------------
# Reading a large JSON: stream its arrays one element at a time (ijson), never the whole document
# ---------------------------------------------------------------------------------------------------------
def stream_array(fileobj: IO[bytes], key: str) -> Iterator[dict]:
    """The elements of the top-level array `key` ("images", "annotations" or "categories"), one at a time."""
    yield from ijson.items(fileobj, f"{key}.item", use_float=True)


def sniff_format(fileobj: IO[bytes]) -> str:
    """PANOPTIC when the file's annotations carry segments_info, INSTANCES otherwise (also with no annotation).

    Reads up to the first image and the first annotation only. Raises CocoError for a file that is no COCO JSON
    (not JSON, or no "images" list)."""
    try:
        if next(stream_array(fileobj, "images"), None) is None:
            raise CocoError('it lists no images (no "images" array)')
        fileobj.seek(0)
        first = next(stream_array(fileobj, "annotations"), None)
    except ijson.JSONError as exc:
        raise CocoError(f"not a JSON document: {exc}") from exc
    if first is None:
        return INSTANCES
    if not isinstance(first, dict):
        raise CocoError("its annotations are not objects")
    return PANOPTIC if "segments_info" in first else INSTANCES
