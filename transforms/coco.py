"""Labels from COCO ground truth (panoptic PNG + JSON, or instances/stuff JSON): every annotated region is one
segment, labelled with its category's name (inference.coco.readable_name).

Regions stay as annotated: two people in one image are two segments, as a masker would make them (the label-map
source, transforms.annotations, has one region per class because a label map has no instances). Crowd regions
(iscrowd) are groups of objects, not one object: skipped by default (`crowd="keep"` keeps them); COCO-Stuff's
placeholder category "other" is skipped. Both are counted (Beam metrics), never silently lost.

A COCO JSON can be gigabytes, so no worker ever loads it whole. The graph streams it once (ijson), one element at
a time, joins each image's annotations to it by image id (CoGroupByKey), and keys the result by file name. The
Label step reads its image's record from that as a multimap side input: on Dataflow a side input is fetched per
key, so a worker holds only the records of the images it labels.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
import numpy as np

from inference.coco import (
    PANOPTIC,
    CocoError,
    decode_panoptic_png,
    instance_regions,
    is_placeholder,
    panoptic_regions,
    readable_name,
    stream_array,
)
from refset import storage
from transforms.annotations import AnnotationError, resize_nearest
from transforms.failures import ONE_TRY, RetryPolicy
from transforms.handlers import apply_isolated
from transforms.masks import segment_fields

CROWD_CHOICES = ("skip", "keep")


def image_key(uri_or_name: str) -> str:
    """Images and annotation records meet by file name (COCO's file_name is a bare name, e.g. 000000000139.jpg)."""
    return posixpath.basename(str(uri_or_name).replace("\\", "/"))


def default_panoptic_dir(annotations_json: str) -> str:
    """COCO's layout: annotations/panoptic_val2017.json beside annotations/panoptic_val2017/ (the PNGs)."""
    return annotations_json[: -len(".json")] if annotations_json.endswith(".json") else annotations_json


def image_record(image: dict, annotations: list[dict], source: int = 0) -> tuple[str, dict]:
    """(file-name key, the image's record: file name, size, its annotations, which file they came from)."""
    record = {"file_name": str(image["file_name"]), "height": int(image["height"]), "width": int(image["width"]),
              "annotations": annotations, "source": source}
    return image_key(record["file_name"]), record


def merge_categories(categories: list[dict]) -> dict[int, dict]:
    """{id: category} of several files (COCO's instances and stuff files use disjoint ids); an id named two ways
    would label one region two ways, so it is refused."""
    merged: dict[int, dict] = {}
    for category in categories:
        cid = int(category["id"])
        if cid in merged and merged[cid].get("name") != category.get("name"):
            raise ValueError(f"category id {cid} is {merged[cid].get('name')!r} in one annotations file and "
                             f"{category.get('name')!r} in another")
        merged[cid] = category
    return merged


def one_record(found: list[dict], name: str) -> dict:
    """The record of one image from the records of every file that lists it: their annotations together."""
    if not found:
        raise AnnotationError(f"the annotations file lists no image named {name}")
    found = sorted(found, key=lambda r: r.get("source", 0))
    sources = [r.get("source", 0) for r in found]
    if len(set(sources)) < len(sources):
        raise AnnotationError(f"an annotations file lists {len(sources) - len(set(sources)) + 1} images named {name}")
    first = found[0]
    for other in found[1:]:
        if (other["height"], other["width"]) != (first["height"], first["width"]):
            raise AnnotationError(f"the annotations files disagree on the size of {name}")
    return {**first, "annotations": [a for r in found for a in r["annotations"]]}


def check_size(record: dict, height: int, width: int) -> None:
    """The annotation's image size must be the decoded image's, up to the job's resize (same aspect ratio)."""
    ann_h, ann_w = record["height"], record["width"]
    if abs(ann_h * width - height * ann_w) > max(ann_w, width):  # more than a pixel of rounding apart
        raise AnnotationError(f"the annotation is for a {ann_w}x{ann_h} image, this image is {width}x{height} "
                              "(another image with the same file name, or an EXIF rotation)")


def regions_of(record: dict, annotation_format: str, panoptic_dir: str | None):
    """The annotated regions of one image record, at the annotation's size."""
    height, width = record["height"], record["width"]
    if annotation_format != PANOPTIC:
        return instance_regions(record["annotations"], height, width)
    if len(record["annotations"]) != 1:
        raise AnnotationError(f"{len(record['annotations'])} panoptic annotations for this image; expected one")
    annotation = record["annotations"][0]
    path = storage.join(panoptic_dir, str(annotation["file_name"]))
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError as exc:
        raise AnnotationError(f"no panoptic PNG for this image (expected {path})") from exc
    id_map = decode_panoptic_png(data)
    if id_map.shape != (height, width):
        raise AnnotationError(f"panoptic PNG is {id_map.shape[1]}x{id_map.shape[0]}, its image {width}x{height}")
    return panoptic_regions(id_map, annotation.get("segments_info") or [])


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
class StreamArray(beam.DoFn):
    """(file number, COCO JSON path) -> (file number, element) for the elements of one of its top-level arrays,
    streamed (constant memory)."""

    def __init__(self, key: str):
        self.key = key

    def process(self, sourced_path: tuple[int, str]):
        source, path = sourced_path
        with storage.filesystem(path).open(path, "rb") as f:
            for element in stream_array(f, self.key):
                yield source, element


class ReadCocoAnnotations(beam.PTransform):
    """COCO JSON files -> (file name, image record) for every image each file lists, with its annotations in that
    file (an image listed by two files has two records; the Label step joins them)."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = list(paths)

    def expand(self, pbegin):
        paths = pbegin | "Paths" >> beam.Create(list(enumerate(self.paths)))
        images = (paths | "StreamImages" >> beam.ParDo(StreamArray("images"))
                  | "ImageById" >> beam.Map(lambda sourced: ((sourced[0], int(sourced[1]["id"])), sourced[1])))
        annotations = (paths | "StreamAnnotations" >> beam.ParDo(StreamArray("annotations"))
                       | "AnnotationByImage" >> beam.Map(
                           lambda sourced: ((sourced[0], int(sourced[1]["image_id"])), sourced[1])))
        return (
            {"image": images, "annotations": annotations}
            | "JoinByImage" >> beam.CoGroupByKey()
            | "Records" >> beam.ParDo(_JoinedRecords())
        )


class _JoinedRecords(beam.DoFn):
    def __init__(self):
        self.orphans = beam.metrics.Metrics.counter("reme", "annotations_without_image")

    def process(self, joined):
        (source, _), grouped = joined
        images, annotations = list(grouped["image"]), list(grouped["annotations"])
        if not images:  # annotations of an image id the file does not list
            self.orphans.inc(len(annotations))
            return
        for image in images:
            yield image_record(image, annotations, source)


class ReadCategories(beam.PTransform):
    """The categories of COCO JSON files, as one {id: category} (merge_categories), for a singleton side input."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = list(paths)

    def expand(self, pbegin):
        return (pbegin | "Paths" >> beam.Create(list(enumerate(self.paths)))
                | "StreamCategories" >> beam.ParDo(StreamArray("categories"))
                | "Categories" >> beam.Values()
                | "AllCategories" >> beam.combiners.ToList()
                | "ById" >> beam.Map(merge_categories))


class AnnotateCocoImage(beam.DoFn):
    """item -> item with one segment per annotated region (RLE, area, bbox, keep) and `segment_labels`.

    Side inputs: `records` (file name -> image records, a multimap) and `categories` ({id: category})."""

    stage = "label"

    def __init__(self, annotation_format: str, panoptic_dir: str | None = None, crowd: str = "skip",
                 min_area: int = 0, retry: RetryPolicy = ONE_TRY):
        if crowd not in CROWD_CHOICES:
            raise ValueError(f"crowd must be one of {CROWD_CHOICES}, got {crowd!r}")
        self.annotation_format, self.panoptic_dir = annotation_format, panoptic_dir
        self.crowd, self.min_area, self.retry = crowd, min_area, retry
        self.regions_counter = beam.metrics.Metrics.counter("reme", "annotation_regions")
        self.crowd_skipped = beam.metrics.Metrics.counter("reme", "annotation_crowd_regions_skipped")
        self.placeholders_skipped = beam.metrics.Metrics.counter("reme", "annotation_placeholder_regions_skipped")

    def process(self, item, records, categories):
        if item.get("failure") is None:
            item = dict(item)
            apply_isolated([item], self.stage, lambda some: self.apply(some[0], records, categories), self.retry)
        yield item

    def apply(self, item: dict, records, categories: dict) -> None:
        name = image_key(item["uri"])
        record = one_record(list(records[name]), name)
        height, width = item["height"], item["width"]
        check_size(record, height, width)
        try:
            regions = regions_of(record, self.annotation_format, self.panoptic_dir)
        except CocoError as exc:
            raise AnnotationError(str(exc)) from exc
        names, masks = [], []
        for region in regions:
            category = categories.get(region.category_id)
            if category is None:
                raise AnnotationError(f"category id {region.category_id} is not among the file's categories")
            if is_placeholder(category):
                self.placeholders_skipped.inc()
                continue
            if region.iscrowd and self.crowd == "skip":
                self.crowd_skipped.inc()
                continue
            names.append(readable_name(str(category["name"])))
            masks.append(resize_nearest(region.mask, height, width))
        stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
        self.regions_counter.inc(len(names))
        item.update(segment_fields(stacked, np.ones(len(names), dtype=np.float32), self.min_area))
        item["segment_labels"] = names
