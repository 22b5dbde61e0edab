"""Reading images: expand input patterns, list them in the graph, decode them (models.images) per worker.

Failures are data: an unreadable or undecodable file becomes an item carrying a failure row, and the run goes on.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from models.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, decode_image_sized
from refset import staging, storage
from refset.staging import shard_of
from transforms.failures import ONE_TRY, RetryPolicy, call_with_retries, failure_row


def is_image_path(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def expand_input(pattern: str) -> str:
    """A directory means every file directly inside it; anything else is a glob pattern as given."""
    stripped = pattern.rstrip("/")
    if any(ch in stripped for ch in "*?["):
        return pattern
    if pattern.endswith("/") or _is_directory(stripped):
        return FileSystems.join(stripped, "*")
    return pattern


def _is_directory(path: str) -> bool:
    if "://" in path:
        fs = storage.filesystem(path)
        return fs.isdir(path)
    return posixpath.isdir(path) if path else False


def list_inputs(patterns: list[str]) -> list[str]:
    """Launch-time listing of every input image (sorted, de-duplicated), with Beam's FileSystems (local or gs://).

    Directories expand to their image files; explicit globs keep only image extensions too, so a stray
    README next to the photos is not a failure.
    """
    expanded = [expand_input(p) for p in patterns]
    results = FileSystems.match(expanded)
    uris = {m.path for r in results for m in r.metadata_list if is_image_path(m.path)}
    return sorted(uris)


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
class DecodeImage(beam.DoFn):
    """ReadableFile -> item {uri, shard, image, width, height, source_width, source_height}: the image at the working
    size, and the input's own upright size; unreadable/undecodable -> item with a failure row. A transient read
    error (network, storage) is tried again with `retry` before the image is given up."""

    def __init__(self, num_shards: int, max_side: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
                 retry: RetryPolicy = ONE_TRY):
        self.num_shards, self.max_side, self.max_pixels = num_shards, max_side, max_pixels
        self.retry = retry
        self.images_read = beam.metrics.Metrics.counter("reme", "images_read")
        self.decode_failed = beam.metrics.Metrics.counter("reme", "images_failed_decode")

    def process(self, readable):
        uri = readable.metadata.path
        item = {"uri": uri, "shard": shard_of(uri, self.num_shards), "failure": None}
        try:
            data = call_with_retries(readable.read, "read", self.retry)
        except Exception as exc:  # permissions, vanished file, network down: the run goes on without it
            item["failure"] = failure_row(uri, "read", exc)
            self.decode_failed.inc()
            yield item
            return
        try:
            decoded = decode_image_sized(data, self.max_side, self.max_pixels)
        except Exception as exc:
            item["failure"] = failure_row(uri, "decode", exc)
            self.decode_failed.inc()
            yield item
            return
        self.images_read.inc()
        image = decoded.pixels
        item.update(image=image, height=int(image.shape[0]), width=int(image.shape[1]),
                    source_height=decoded.source_height, source_width=decoded.source_width)
        yield item


class MatchImages(beam.PTransform):
    """Input patterns -> the FileMetadata of every matching image file, once each (no file is opened).

    Matching happens in the pipeline (fileio.MatchAll), so millions of inputs never sit in the job graph.
    """

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = [expand_input(p) for p in patterns]

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll(empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "ImagesOnly" >> beam.Filter(lambda metadata: is_image_path(metadata.path))
            # Overlapping patterns may match a file twice: keep one metadata per path (no re-match later).
            | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
            | "Distinct" >> beam.CombinePerKey(lambda many: min(many, key=lambda m: m.path))
            | "Metadata" >> beam.Values()
        )


class Todo:
    """Which listed images a run of the index job processes: every image of an uncommitted shard, and the images
    that failed in a committed shard's latest generation (a re-run tries its failures again; refset.staging).

    `failing` ({shard: latest generation}, from staging.failing_shards at launch) is all that travels in the job
    graph; a worker reads a failing shard's failed URIs when it first meets that shard, once."""

    def __init__(self, output: str, num_shards: int, done_shards=(), failing: dict[int, int] | None = None):
        self.output, self.num_shards = output, num_shards
        self.done, self.failing = frozenset(done_shards), dict(failing or {})
        self._failed: dict[int, set[str]] = {}

    def __getstate__(self):
        return {**self.__dict__, "_failed": {}}

    def __call__(self, path: str) -> bool:
        shard = shard_of(path, self.num_shards)
        if shard not in self.done:
            return True
        generation = self.failing.get(shard)
        if generation is None:
            return False
        if shard not in self._failed:
            self._failed[shard] = staging.failed_uris(self.output, shard, generation)
        return path in self._failed[shard]


class ReadImages(beam.PTransform):
    """Input patterns -> decoded image items, skipping shards already committed by an earlier run except their
    failed images (`todo`, see Todo; default: every image outside `done_shards`).

    Reshuffle after matching spreads the reads over workers instead of leaving them on the matcher.
    """

    def __init__(self, patterns: list[str], num_shards: int, done_shards=(), max_side: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, *, todo: Todo | None = None, retry: RetryPolicy = ONE_TRY):
        super().__init__()
        self.patterns = list(patterns)
        self.num_shards = num_shards
        self.todo = todo or Todo("", num_shards, done_shards)
        self.max_side, self.max_pixels, self.retry = max_side, max_pixels, retry

    def expand(self, pbegin):
        todo = self.todo
        return (
            pbegin
            | "MatchImages" >> MatchImages(self.patterns)
            | "SkipDoneShards" >> beam.Filter(lambda metadata: todo(metadata.path))
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadMatches" >> fileio.ReadMatches()
            | "Decode" >> beam.ParDo(DecodeImage(self.num_shards, self.max_side, self.max_pixels, self.retry))
        )
