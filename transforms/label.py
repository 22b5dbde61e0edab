"""The labelling job's own steps: listing and naming its inputs in the graph, then Label (retrieval + class
scoring, inference.labeller) and Write (painting and writing each image's outputs, inference.outputs).

    Read    ReadTodo = ListInputs: match the input patterns (fileio.MatchAll), name each image in the graph
            (inputs that could share a name meet in one GroupByKey group: inference.outputs.name_group);
            ListFinished: ONE listing of OUTPUT gives the names already done; SelectTodo joins the two
            (CoGroupByKey), so neither list ever sits in the job graph; Reshuffle; ReadNamed decodes at the
            working size (transforms.images.DecodeImage).
    Label   RunInference(LabelModelHandler): the "model" is a Labeller (the reference set's FAISS index and the
            labels x classes table), loaded once per worker; one retrieval covers every segment of a batch.
    Write   WriteImageOutputs: paint the label map at the working size from the image's compact segments, upsample
            it to the input's own size and write its outputs; the label map is written last, so its presence marks
            the image done.

Both have the per-item failure rule of every stage (transforms.handlers): an image that fails here carries a
failure row (stage `label` or `write`) and costs no other image its outputs.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio

from inference import outputs
from inference.labeller import Labeller, LabelRequest, paint_segments
from inference.scoring import Decision
from models.config import ModelsConfig
from models.images import DEFAULT_MAX_PIXELS
from refset import storage
from refset.reader import ReferenceSet
from transforms.failures import ONE_TRY, RetryPolicy, failure_row
from transforms.handlers import ItemDoFn, ItemModelHandler
from transforms.images import DecodeImage, is_image_path

COUNTERS = "reme"


def _under(path: str, directory: str) -> bool:
    def plain(p: str) -> str:
        return posixpath.normpath(p.split("://", 1)[-1])

    return bool(directory) and plain(path).startswith(plain(directory).rstrip("/") + "/")


class ListInputs(beam.PTransform):
    """Input patterns -> {"named": (name, FileMetadata) per image, "refused": failure items of inputs whose path
    cannot name an output}. `only` (optional): keep just these paths (a benchmark's split). Files under `output`
    are never inputs (an output folder inside the input folder must not be labelled on the next run)."""

    def __init__(self, patterns: list[str], roots: list[str], only: frozenset[str] | None = None, output: str = ""):
        super().__init__()
        self.patterns, self.roots, self.only, self.output = list(patterns), tuple(roots), only, output

    def expand(self, pbegin):
        roots, only, output = self.roots, self.only, self.output
        listed = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "ImagesOnly" >> beam.Filter(lambda m: is_image_path(m.path) and (only is None or m.path in only)
                                          and not _under(m.path, output))
            # Overlapping patterns may match a file twice: keep one metadata per path.
            | "KeyByPath" >> beam.Map(lambda m: (m.path, m))
            | "Distinct" >> beam.CombinePerKey(lambda many: min(many, key=lambda m: m.path))
            | "Metadata" >> beam.Values()
        )
        keyed = listed | "KeyForNaming" >> beam.ParDo(_KeyForNaming(roots)).with_outputs("refused", main="keyed")
        named = (
            keyed.keyed
            | "GroupCollisions" >> beam.GroupByKey()
            | "Name" >> beam.FlatMap(_name_members, roots)
        )
        return {"named": named, "refused": keyed.refused}


class _KeyForNaming(beam.DoFn):
    def __init__(self, roots):
        self.roots = roots
        self.listed = beam.metrics.Metrics.counter(COUNTERS, "label_inputs")

    def process(self, metadata):
        self.listed.inc()
        try:
            yield outputs.collision_key(metadata.path, self.roots), metadata
        except outputs.UnsafeName as exc:
            yield beam.pvalue.TaggedOutput("refused", {"uri": metadata.path, "failure": failure_row(
                metadata.path, "read", exc)})


def _name_members(element, roots):
    _, members = element
    members = sorted(members, key=lambda m: m.path)
    for metadata, name in zip(members, outputs.name_group([m.path for m in members], roots), strict=True):
        yield name, metadata


class ListFinished(beam.DoFn):
    """OUTPUT -> (name, True) for every image whose outputs are complete, from one recursive listing; the temp files
    of writes an earlier run left unfinished are removed on the way (nothing writes before this step is done: the
    join waits for it)."""

    def __init__(self, overlay: bool, coco: bool = False):
        self.overlay, self.coco = overlay, coco

    def process(self, output: str):
        listing = outputs.scan_output(output)
        for path in listing.temp_files:
            storage.filesystem(path).rm(path)
        for name in sorted(listing.finished(self.overlay, self.coco)):
            yield name, True


class SelectTodo(beam.DoFn):
    """(name, {"inputs": [metadata], "done": [...]}) -> (name, metadata) of the inputs still to label."""

    def __init__(self):
        self.skipped = beam.metrics.Metrics.counter(COUNTERS, "label_skipped_done")

    def process(self, element):
        name, joined = element
        inputs = list(joined["inputs"])
        if list(joined["done"]):
            self.skipped.inc(len(inputs))
            return
        for metadata in inputs:
            yield name, metadata


class ReadNamed(beam.DoFn):
    """(name, FileMetadata) -> decoded item (working size + the input's own size) carrying its output name."""

    def __init__(self, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS, retry: RetryPolicy = ONE_TRY):
        self.decode = DecodeImage(1, max_side, max_pixels, retry)

    def process(self, element):
        name, metadata = element
        for item in self.decode.process(fileio.ReadableFile(metadata)):
            item["name"] = name
            yield item


class ReadTodo(beam.PTransform):
    """The labelling job's Read step: {"items": decoded items still to label, "refused": failure items of inputs
    that cannot be named}. Inputs and finished outputs are both listed in the pipeline and joined by name."""

    def __init__(self, patterns, roots, output: str, overlay: bool, max_side: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS, only: frozenset[str] | None = None,
                 count_todo: beam.DoFn | None = None, coco: bool = False, retry: RetryPolicy = ONE_TRY):
        super().__init__()
        self.retry = retry  # transient read errors are tried again
        self.patterns, self.roots, self.only = list(patterns), tuple(roots), only
        self.output, self.overlay, self.max_side, self.max_pixels = output, overlay, max_side, max_pixels
        self.count_todo = count_todo  # passes the images still to do through, counting them (a progress total)
        self.coco = coco  # an image is done only once its COCO fragment exists too

    def expand(self, pbegin):
        listed = pbegin | "List" >> ListInputs(self.patterns, self.roots, self.only, self.output)
        finished = (
            pbegin
            | "Output" >> beam.Create([self.output])
            | "ListFinished" >> beam.ParDo(ListFinished(self.overlay, self.coco))
        )
        todo = (
            {"inputs": listed["named"], "done": finished}
            | "JoinByName" >> beam.CoGroupByKey()
            | "SelectTodo" >> beam.ParDo(SelectTodo())
        )
        if self.count_todo is not None:
            todo = todo | "CountTodo" >> beam.ParDo(self.count_todo)
        items = (
            todo
            | "Reshuffle" >> beam.Reshuffle()
            | "Decode" >> beam.ParDo(ReadNamed(self.max_side, self.max_pixels, self.retry))
        )
        return {"items": items, "refused": listed["refused"]}


class LabelModelHandler(ItemModelHandler):
    """item with `to_embed` segments and their `visual` embeddings -> `decision`: class id and confidence per
    embedded segment."""

    stage = "label"
    metrics_name = "labeller"

    def __init__(self, index: str, request: LabelRequest, models: ModelsConfig, **kwargs):
        super().__init__(models, **kwargs)
        self.index, self.request = index, request

    def build(self, models: ModelsConfig) -> Labeller:
        return Labeller.build(ReferenceSet.open(self.index), models, self.request)

    def apply(self, items: list[dict], labeller: Labeller) -> None:
        for item, decision in zip(items, labeller.decide_images([item.get("visual") for item in items]), strict=True):
            item["decision"] = decision


class WriteImageOutputs(ItemDoFn):
    """item with `decision` -> its label map (at the input's own size), segments table (and overlay, and COCO
    fragment) under the output directory; the item leaves without its pixels and segments.

    `coco_roots` (with --format coco): the input roots the COCO file names are relative to."""

    stage = "write"
    HEAVY = ("image", "segment_map", "rles", "visual", "areas", "bboxes", "keep", "to_embed", "decision")

    def __init__(self, output: str, request: LabelRequest, overlay: bool, coco_roots: tuple[str, ...] | None = None):
        self.output, self.request, self.overlay = output, request, overlay
        self.coco_roots = coco_roots
        self.written = beam.metrics.Metrics.counter(COUNTERS, "label_written")

    def apply(self, item: dict) -> None:
        segments = item.get("to_embed", np.zeros(0, np.int64))
        decision = item.get("decision") or Decision(np.zeros(0, np.int64), np.zeros(0, np.float32))
        labels = paint_segments(item, decision, self.request)
        outputs.write_image_outputs(
            self.output, item["name"], item["uri"], item["image"], labels,
            [item["rles"][i] for i in segments], list(self.request.class_names), self.request.ignore_value,
            self.overlay, None if self.coco_roots is None else outputs.relative_path(item["uri"], self.coco_roots))
        self.written.inc()
        for key in self.HEAVY:
            item.pop(key, None)
