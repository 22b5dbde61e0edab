"""The Commit and Write steps of the index job: staging shards and final shards, written atomically (the rows
and schemas are refset.staging's).

Every file is written temp-then-rename (storage.atomic_open); a staged shard's commit marker is written last,
so a marker always means "all of this shard's staging files are complete". Images of committed shards that a re-run
tries again (their earlier failures) are committed as a new generation of their shard (refset.staging).
"""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np

from models.presets import resolve_models
from models.text import build_text_encoder
from refset import schema, staging, storage
from transforms.records import staging_rows

log = logging.getLogger(__name__)


class StageRows(beam.DoFn):
    """item -> ((shard, generation), (kind, row)) for every staging row of the image; counts what happened to it.
    Items of a shard committed earlier (`retried_shards`: failures tried again) go to this run's `generation`."""

    def __init__(self, annotated: bool, retried_shards=(), generation: int = 0):
        self.annotated = annotated
        self.retried, self.generation = frozenset(retried_shards), generation
        self.retried_images = beam.metrics.Metrics.counter("reme", "images_retried")
        counter = beam.metrics.Metrics.counter
        self.images_failed = counter("reme", "images_failed")
        self.images_done = counter("reme", "images_processed")
        self.masks = counter("reme", "masks")
        self.pairs = counter("reme", "pairs")
        self.dropped = {}

    def process(self, item):
        rows = staging_rows(item, self.annotated)
        key = (item["shard"], self.generation if item["shard"] in self.retried else 0)
        if key[1]:
            self.retried_images.inc()
        if rows["failures"]:
            self.images_failed.inc()
        else:
            self.images_done.inc()
            self.masks.inc(len(item.get("rles", ())))
        self.pairs.inc(len(rows["pairs"]))
        for row in rows["drops"]:
            reason = row["reason"]
            if reason not in self.dropped:
                self.dropped[reason] = beam.metrics.Metrics.counter("reme", f"dropped_{reason}")
            self.dropped[reason].inc()
        for kind, kind_rows in rows.items():
            for row in kind_rows:
                yield key, (kind, row)


class WriteStagedShard(beam.DoFn):
    """((shard, generation), [(kind, row), ...]) -> writes the staging files + markers; emits (shard, generation)."""

    def __init__(self, output: str):
        self.output = output
        self.committed = beam.metrics.Metrics.counter("reme", "shards_committed")

    def process(self, element):
        (shard, generation), tagged = element
        by_kind: dict[str, list[dict]] = {kind: [] for kind in staging.KINDS}
        for kind, row in tagged:
            by_kind[kind].append(row)
        staging.write_staged_shard(self.output, shard, by_kind, generation)
        self.committed.inc()
        yield shard, generation


class Commit(beam.PTransform):
    """Processed image items -> one committed staging shard per input shard (files, then the marker); emits the
    committed (shard, generation) pairs. The boundary of resumability: a re-run skips every image of a committed
    shard except its failures, which it tries again and commits as generation `generation` of their shard."""

    def __init__(self, output: str, annotated: bool, retried_shards=(), generation: int = 0):
        super().__init__()
        self.output, self.annotated = output, annotated
        self.retried_shards, self.generation = tuple(retried_shards), generation

    def expand(self, items):
        return (
            items
            | "StageRows" >> beam.ParDo(StageRows(self.annotated, self.retried_shards, self.generation))
            | "GroupByInputShard" >> beam.GroupByKey()
            | "WriteStagedShard" >> beam.ParDo(WriteStagedShard(self.output))
        )


class ReadStagedShard(beam.DoFn):
    """(shard id, committed generations) -> its merged staged rows (refset.staging.merge_generations), tagged by
    kind (main output: pairs; `drops`, `failures` tagged). A bare shard id reads its first generation only.

    The `images` table is not needed by the global stage; the manifest counts it after the run."""

    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        shard, generations = element if isinstance(element, tuple) else (element, (0,))
        staged = staging.read_staged_shard(self.output, shard, generations)
        for row in staged["pairs"]:
            yield row
        for kind in ("drops", "failures"):
            for row in staged[kind]:
                yield beam.pvalue.TaggedOutput(kind, row)


class WriteFinalShard(beam.DoFn):
    """(shard, rows) -> `<output>/<directory>/part-SSSSS.parquet`, rows sorted deterministically."""

    def __init__(self, output: str, directory: str, schema_fn, sort_key, counter: str = "rows_written"):
        """`schema_fn(rows)` gives the table schema (segments need the embedding dim of the rows)."""
        self.output, self.directory, self.schema_fn, self.sort_key = output, directory, schema_fn, sort_key
        self.rows_written = beam.metrics.Metrics.counter("reme", counter)

    def process(self, element):
        shard, rows = element
        rows = sorted(rows, key=self.sort_key)
        path = storage.join(self.output, self.directory, schema.shard_name(shard))
        staging.write_rows(path, rows, self.schema_fn(rows))
        self.rows_written.inc(len(rows))
        yield path


def label_ids(label_counts: list[tuple[str, int]]) -> dict[str, int]:
    """label_id is the rank of the label name in sorted order: deterministic, independent of run order."""
    return {name: i for i, name in enumerate(sorted(name for name, _ in label_counts))}


def labels_rows(label_counts: list[tuple[str, int]], text_embeddings: np.ndarray) -> list[dict]:
    ids = label_ids(label_counts)
    counts = dict(label_counts)
    names = sorted(ids, key=ids.get)
    return [
        {"label_id": ids[name], "label": name, "count": int(counts[name]), "text_embedding": text_embeddings[i]}
        for i, name in enumerate(names)
    ]


class WriteLabels(beam.DoFn):
    """[(label, count)] (one element: the whole run's kept labels) -> labels.parquet; emits {label: label_id}."""

    def __init__(self, output: str, models):
        self.output, self.models = output, models

    def setup(self):
        self.encoder = build_text_encoder(resolve_models(self.models).text)

    def process(self, label_counts):
        label_counts = sorted(label_counts)
        names = [name for name, _ in label_counts]
        embeddings = (np.asarray(self.encoder.encode(names), dtype=np.float32) if names
                      else np.zeros((0, self.encoder.dim), dtype=np.float32))
        rows = labels_rows(label_counts, embeddings)
        staging.write_rows(storage.join(self.output, schema.LABELS), rows, schema.labels_schema(self.encoder.dim))
        yield label_ids(label_counts)
