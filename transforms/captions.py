"""Labels from captions at any size: COCO captions JSON or JSONL `{"image": ..., "caption": ...}`, joined to the
input images inside the Beam graph by file name (the base name of the image URI and of the caption's image).

    Captions  COCO JSON: one worker streams the file once (ijson; memory does not grow with the file, any key
              order) into image records (id, file name) and caption records (image id, caption), joined by id in
              the graph. JSONL: ReadFromText, a splittable source, so each worker reads byte ranges of the file.
              Either way -> (file name, caption); no worker ever holds the whole file.
    Join      the matched image files (FileMetadata: path, size) keyed by file name, CoGroupByKey with the captions
              *before* decoding: the shuffle carries file metadata and caption strings, never pixels.
    Decode    each image with its captions (transforms.images.DecodeImage).
    Label     captions -> noun phrases -> candidate labels (models.nlp.labels_from_captions), one call per batch of
              images; an image's labels are the union over its captions, in first-seen order, its captions sorted.

Counted, never an error (Beam counters; the manifest's run_metrics; the run summary): images without a caption
(their segments are dropped as `unlabelled`), captions whose image is not among the inputs, COCO captions whose
image id is not in the images list, malformed caption records (skipped).

At launch only the first 64 KiB are read (`sniff_captions`): enough to tell the format and refuse an empty or
unrecognisable file in one line. The resume fingerprint (`captions_identity`) reads at most 2 MiB.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import apache_beam as beam
import ijson
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from models.captioner import Captioner
from models.config import ModelsConfig
from models.images import DEFAULT_MAX_PIXELS
from models.nlp import labels_from_captions
from refset import storage
from transforms.failures import ONE_TRY, RetryPolicy
from transforms.handlers import ItemModelHandler, ModelBundle
from transforms.images import DecodeImage, MatchImages, Todo

log = logging.getLogger(__name__)

COCO, JSONL = "coco", "jsonl"
HEAD_BYTES = 64 * 1024  # what the launcher reads to recognise the format
IDENTITY_BLOCK = 1 << 20  # the first and last MiB are hashed into the resume fingerprint
CAPTION_LABEL_BATCH = 16  # images per noun-phrase call (their captions are parsed as one stream)
_COCO_FIELDS = {"images.item.id": "id", "images.item.file_name": "file_name",
                "annotations.item.image_id": "image_id", "annotations.item.caption": "caption"}


def caption_key(uri_or_name: str) -> str:
    """Captions are matched by file name: the base name of the image URI or of the caption's image field."""
    return posixpath.basename(str(uri_or_name).replace("\\", "/"))


# ---------------------------------------------------------------------------------------------------------
# Pure parsing: the format from the first bytes, COCO records from a stream, a JSONL line
# ---------------------------------------------------------------------------------------------------------
def _top_level_keys(head: bytes) -> tuple[set[str], bool]:
    """Keys of the top-level JSON object that the first bytes reach, and whether those bytes are valid JSON."""
    keys: set[str] = set()
    try:
        for prefix, event, value in ijson.parse(io.BytesIO(head)):
            if prefix == "" and event == "map_key":
                keys.add(value)
    except ijson.JSONError:
        return keys, False
    return keys, True


def captions_format(head: bytes, whole: bool) -> str:
    """COCO or JSONL from the first bytes of a captions file (`whole`: they are the entire file).

    Raises ValueError with a one-line reason, phrased to follow the file's name.
    """
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff").lstrip()
    if not text:
        raise ValueError("holds no captions (empty)" if whole else
                         f"holds no captions in its first {HEAD_BYTES // 1024} KiB (blank)")
    if not text.startswith("{"):
        raise ValueError(f"is neither COCO captions JSON nor JSONL: it starts with {text[:40]!r}")
    line, newline, _ = text.partition("\n")
    if newline or whole:  # a complete first line: a JSONL row, or a one-line COCO file that fits in the head
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            if "image" in row and "caption" in row:
                return JSONL
            if "images" in row or "annotations" in row:
                return COCO
            raise ValueError(f"line 1 has neither 'image' and 'caption' (JSONL) nor 'images' and 'annotations' "
                             f"(COCO captions JSON); its keys: {', '.join(sorted(map(str, row))[:6])}")
    keys, valid = _top_level_keys(head)
    if "images" in keys or "annotations" in keys:
        return COCO
    if not valid and (whole or newline):
        raise ValueError("is neither COCO captions JSON nor JSONL: line 1 is not valid JSON")
    raise ValueError(f"is JSON without an 'images' or 'annotations' key in its first {HEAD_BYTES // 1024} KiB: "
                     "not COCO captions JSON")


def coco_records(stream: BinaryIO) -> Iterator[tuple[str, object, object]]:
    """Stream COCO captions JSON, whatever the order of its keys, in constant memory:
    ("image", id, file name), ("caption", image id, caption), or ("malformed", where, None) per record.

    Raises ValueError at the end when the document has no "images" or no "annotations" key.
    """
    top: set[str] = set()
    record: dict | None = None
    for prefix, event, value in ijson.parse(stream):
        if prefix == "":
            if event == "map_key":
                top.add(value)
        elif prefix in ("images.item", "annotations.item"):
            if event == "start_map":
                record = {}
            elif event == "end_map" and record is not None:
                yield _coco_record(prefix, record)
                record = None
        elif record is not None and prefix in _COCO_FIELDS:
            record[_COCO_FIELDS[prefix]] = value
    missing = [key for key in ("images", "annotations") if key not in top]
    if missing:
        raise ValueError(f"COCO captions JSON has no {' and no '.join(repr(k) for k in missing)} key")


def _coco_record(prefix: str, record: dict) -> tuple[str, object, object]:
    if prefix == "images.item":
        name = record.get("file_name")
        if record.get("id") is None or not isinstance(name, str) or not name:
            return "malformed", "images", None
        return "image", record["id"], caption_key(name)
    caption = record.get("caption")
    if record.get("image_id") is None or not isinstance(caption, str):
        return "malformed", "annotations", None
    return "caption", record["image_id"], caption


def jsonl_record(line: str) -> tuple[str, str] | None:
    """One JSONL line -> (file name, caption), or None when it is not {"image": str, "caption": str}."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not isinstance(row.get("caption"), str):
        return None
    return caption_key(row["image"]), row["caption"]


def union_labels(per_caption: Iterable[list[str]]) -> list[str]:
    """Labels of several captions of one image: their union, first-seen order, no repeats."""
    seen: dict[str, None] = {}
    for labels in per_caption:
        for label in labels:
            if label:
                seen.setdefault(label, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------------------
# Launch: bounded reads only
# ---------------------------------------------------------------------------------------------------------
def sniff_captions(path: str) -> str:
    """COCO or JSONL, from the first HEAD_BYTES of the file (never the whole file); ValueError with one line."""
    with storage.filesystem(path).open(path, "rb", compression="infer") as f:
        head = f.read(HEAD_BYTES + 1)
    return captions_format(head[:HEAD_BYTES], whole=len(head) <= HEAD_BYTES)


def captions_identity(path: str) -> dict:
    """What tells one captions file from another for the resume fingerprint, from at most 2 MiB of reading:
    its size, a SHA-1 of its first and last MiB, and the store's content checksum (GCS md5/crc32c, S3 ETag),
    or, where the store has none (local disks), its modification time."""
    fs = storage.filesystem(path)
    info = fs.info(path)
    size = int(info.get("size") or 0)
    digest = hashlib.sha1()
    with fs.open(path, "rb") as f:
        digest.update(f.read(IDENTITY_BLOCK))
        if size > IDENTITY_BLOCK:
            f.seek(max(IDENTITY_BLOCK, size - IDENTITY_BLOCK))
            digest.update(f.read(IDENTITY_BLOCK))
    identity: dict = {"size": size, "head_tail_sha1": digest.hexdigest()}
    checksum = next((info[k] for k in ("md5Hash", "crc32c", "ETag", "etag") if info.get(k)), None)
    if checksum is not None:
        identity["checksum"] = str(checksum)
    else:
        identity["mtime"] = str(info.get("mtime") or info.get("updated") or info.get("LastModified") or "")
    return identity


def read_captions(path: str) -> dict[str, list[str]]:
    """{file name: [captions]} of a whole file, in this process: for tools and small files, never the job (which
    joins in the graph). The same record parsers as the job; malformed records are skipped as there."""
    fmt = sniff_captions(path)
    out: dict[str, list[str]] = {}
    with storage.filesystem(path).open(path, "rb", compression="infer") as f:
        if fmt == JSONL:
            pairs = (jsonl_record(line.decode("utf-8")) for line in f if line.strip())
            for name, caption in filter(None, pairs):
                out.setdefault(name, []).append(caption)
            return out
        names: dict[object, str] = {}
        by_id: dict[object, list[str]] = {}
        for kind, key, value in coco_records(f):
            if kind == "image":
                names[key] = value
            elif kind == "caption":
                by_id.setdefault(key, []).append(value)
    for image_id, captions in by_id.items():
        if image_id in names:
            out.setdefault(names[image_id], []).extend(captions)
    return out


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
class StreamCocoCaptions(beam.DoFn):
    """COCO captions path -> (image id, caption), and (image id, file name) on the `images` output.

    One worker streams the file once; what it emits goes straight into the shuffle, so its memory stays flat."""

    IMAGES = "images"

    def __init__(self):
        self.malformed = beam.metrics.Metrics.counter("reme", "caption_records_malformed")

    def process(self, path: str):
        with FileSystems.open(path) as stream:
            for kind, key, value in coco_records(stream):
                if kind == "caption":
                    yield key, value
                elif kind == "image":
                    yield beam.pvalue.TaggedOutput(self.IMAGES, (key, value))
                else:
                    self.malformed.inc()


class CaptionsOfImageId(beam.DoFn):
    """(image id, {names, captions}) -> (file name, caption) for each caption; captions of an id the images list
    does not have are counted."""

    def __init__(self):
        self.unknown_id = beam.metrics.Metrics.counter("reme", "captions_unknown_image_id")

    def process(self, element):
        _, grouped = element
        names, captions = sorted(set(grouped["names"])), list(grouped["captions"])
        if not names:
            self.unknown_id.inc(len(captions))
            return
        for name in names:
            for caption in captions:
                yield name, caption


class ParseCaptionLine(beam.DoFn):
    """JSONL line -> (file name, caption); blank lines are skipped, malformed ones counted and skipped."""

    def __init__(self):
        self.malformed = beam.metrics.Metrics.counter("reme", "caption_records_malformed")
        self.logged = 0

    def process(self, line: str):
        if not line.strip():
            return
        record = jsonl_record(line)
        if record is None:
            self.malformed.inc()
            if self.logged < 5:  # a few examples per worker, so a user can see what is wrong
                self.logged += 1
                log.warning("skipping a captions line that is not {\"image\": ..., \"caption\": ...}: %.200s", line)
            return
        yield record


class ReadCaptions(beam.PTransform):
    """A captions file -> (file name, caption) elements, without any worker loading the whole file."""

    def __init__(self, path: str, fmt: str):
        super().__init__()
        if fmt not in (COCO, JSONL):
            raise ValueError(f"captions format must be {COCO!r} or {JSONL!r}, not {fmt!r}")
        self.path, self.fmt = path, fmt

    def expand(self, pbegin):
        if self.fmt == JSONL:
            return (pbegin
                    | "ReadLines" >> beam.io.ReadFromText(self.path)
                    | "ParseLines" >> beam.ParDo(ParseCaptionLine()))
        records = (pbegin
                   | "Path" >> beam.Create([self.path])
                   | "StreamCoco" >> beam.ParDo(StreamCocoCaptions()).with_outputs(StreamCocoCaptions.IMAGES,
                                                                                    main="captions"))
        return ({"names": records[StreamCocoCaptions.IMAGES], "captions": records.captions}
                | "JoinById" >> beam.CoGroupByKey()
                | "ByFileName" >> beam.ParDo(CaptionsOfImageId()))


class CaptionsOfImage(beam.DoFn):
    """(file name, {images, captions}) -> (FileMetadata, sorted captions) for each image file of that name the run
    processes (`todo`: outside committed shards, or failed there; transforms.images.Todo); captions of a name no
    input image has are counted."""

    def __init__(self, num_shards: int, done_shards=(), todo: Todo | None = None):
        self.todo = todo or Todo("", num_shards, done_shards)
        self.without_image = beam.metrics.Metrics.counter("reme", "captions_without_image")
        self.names_without_image = beam.metrics.Metrics.counter("reme", "captioned_names_without_image")

    def process(self, element):
        _, grouped = element
        images, captions = list(grouped["images"]), sorted(grouped["captions"])
        if not images:
            self.without_image.inc(len(captions))
            self.names_without_image.inc()
            return
        for metadata in images:
            if self.todo(metadata.path):
                yield metadata, captions


class DecodeCaptioned(DecodeImage):
    """(FileMetadata, captions) -> decoded image item (DecodeImage) carrying its `captions`."""

    def process(self, element):
        metadata, captions = element
        for item in super().process(fileio.ReadableFile(metadata)):
            item["captions"] = list(captions)
            yield item


class ReadCaptionedImages(beam.PTransform):
    """Input patterns + captions file -> decoded image items with their `captions` (an empty list for an image no
    caption names), skipping committed shards. The join by file name happens before any image is read."""

    def __init__(self, patterns: list[str], captions_path: str, captions_fmt: str, num_shards: int, done_shards=(),
                 max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS, *, todo: Todo | None = None,
                 retry: RetryPolicy = ONE_TRY):
        super().__init__()
        self.patterns, self.captions = list(patterns), ReadCaptions(captions_path, captions_fmt)
        self.num_shards, self.todo = num_shards, todo or Todo("", num_shards, done_shards)
        self.max_side, self.max_pixels, self.retry = max_side, max_pixels, retry

    def expand(self, pbegin):
        captions = pbegin | "Captions" >> self.captions
        images = (pbegin
                  | "MatchImages" >> MatchImages(self.patterns)
                  | "KeyByFileName" >> beam.Map(lambda metadata: (caption_key(metadata.path), metadata)))
        return ({"images": images, "captions": captions}
                | "JoinByFileName" >> beam.CoGroupByKey()
                | "CaptionsOfImage" >> beam.ParDo(CaptionsOfImage(self.num_shards, todo=self.todo))
                | "Reshuffle" >> beam.Reshuffle()
                | "Decode" >> beam.ParDo(DecodeCaptioned(self.num_shards, self.max_side, self.max_pixels,
                                                         self.retry)))


class CaptionLabelsHandler(ItemModelHandler):
    """Items with `captions` -> candidate `labels`: the captions of a whole batch of images go through noun-phrase
    extraction as one stream (spaCy's nlp.pipe when installed, else the rule chunker)."""

    stage = "label"
    metrics_name = "caption_labels"

    def __init__(self, models: ModelsConfig, **kwargs):
        super().__init__(models, **kwargs)
        self.uncaptioned = beam.metrics.Metrics.counter("reme", "images_without_caption")

    def build(self, models: ModelsConfig):
        return ModelBundle(extract=labels_from_captions)

    def apply(self, items: list[dict], model) -> None:
        captions = [caption for item in items for caption in item.get("captions", ())]
        per_caption = model.extract(captions)
        start = 0
        for item in items:
            count = len(item.get("captions", ()))
            item["labels"] = union_labels(per_caption[start:start + count])
            start += count
        self.uncaptioned.inc(sum(1 for item in items if not item.get("captions")))


class CaptionerModelHandler(ItemModelHandler):
    """Generated captions (models.captioner) -> candidate labels, batched across images."""

    stage = "label"
    metrics_name = "captioner"

    def build(self, models: ModelsConfig):
        return ModelBundle(captioner=Captioner(models.captioner), extract=labels_from_captions)

    def apply(self, items: list[dict], model) -> None:
        captions = model.captioner.caption([it["image"] for it in items])
        for item, caption, labels in zip(items, captions, model.extract(captions), strict=True):
            item["captions"] = [caption]
            item["labels"] = union_labels([labels])

