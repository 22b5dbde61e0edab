"""Turning rows into Parquet tables with the contract's schemas, and the DoFns that write shards atomically.

Every file is written temp-then-rename (storage.atomic_open); a staged shard's commit marker is written last,
so a marker always means "all of this shard's staging files are complete".
"""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline import schema, storage
from transforms import records

log = logging.getLogger(__name__)


def _embedding_array(values: list, field_type: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(field_type):
        dim = field_type.list_size
        flat = np.asarray(values, dtype=np.float32).reshape(len(values), dim) if values else np.zeros((0, dim))
        value_type = field_type.value_type
        numpy_type = np.float16 if value_type == pa.float16() else np.float32
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1).astype(numpy_type), type=value_type), dim)
    return pa.array([np.asarray(v, dtype=np.float32) for v in values], type=field_type)


def table_from_rows(rows: list[dict], table_schema: pa.Schema) -> pa.Table:
    """Rows (dicts) -> a table with exactly `table_schema` (embedding columns from numpy vectors)."""
    columns = []
    for field in table_schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_fixed_size_list(field.type) and field.name.endswith("embedding") or (
            pa.types.is_list(field.type) and pa.types.is_floating(field.type.value_type) and field.name.endswith("embedding")
        ):
            columns.append(_embedding_array(values, field.type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=table_schema)


def rows_from_table(table: pa.Table) -> list[dict]:
    """Inverse of table_from_rows: embedding columns come back as float32 numpy vectors."""
    rows = table.to_pylist()
    for name in table.column_names:
        if name.endswith("embedding"):
            for row in rows:
                row[name] = np.asarray(row[name], dtype=np.float32)
    return rows


def write_rows(path: str, rows: list[dict], table_schema: pa.Schema) -> None:
    storage.write_parquet(path, table_from_rows(rows, table_schema))


def write_staged_shard(output: str, shard: int, rows_by_kind: dict[str, list[dict]]) -> None:
    """Write every staging kind of one input shard, then its commit marker (last)."""
    sort_keys = {"pairs": records.pair_sort_key, "drops": records.drop_sort_key,
                 "failures": records.failure_sort_key, "images": lambda r: r["uri"]}
    for kind in records.KINDS:
        rows = sorted(rows_by_kind.get(kind, []), key=sort_keys[kind])
        write_rows(records.staging_path(output, kind, shard), rows, records.STAGING_SCHEMAS[kind]())
    storage.write_bytes(records.done_marker(output, shard), b"")


def read_staged_shard(output: str, shard: int) -> dict[str, list[dict]]:
    return {
        kind: rows_from_table(storage.read_parquet(records.staging_path(output, kind, shard)))
        for kind in records.KINDS
    }


def done_shards(output: str) -> list[int]:
    """Input shards whose staging is committed (marker present)."""
    return sorted(
        records.shard_from_name(p) for p in storage.listdir(storage.join(output, records.DONE_DIR))
        if p.rsplit("/", 1)[-1].startswith("part-") and not p.rsplit("/", 1)[-1].startswith(storage.TMP_PREFIX)
    )


class WriteStagedShard(beam.DoFn):
    """(shard, [(kind, row), ...]) -> writes the shard's staging files + marker; emits the shard id."""

    def __init__(self, output: str):
        self.output = output
        self.committed = beam.metrics.Metrics.counter("reme", "shards_committed")

    def process(self, element):
        shard, tagged = element
        by_kind: dict[str, list[dict]] = {kind: [] for kind in records.KINDS}
        for kind, row in tagged:
            by_kind[kind].append(row)
        write_staged_shard(self.output, shard, by_kind)
        self.committed.inc()
        yield shard


class ReadStagedShard(beam.DoFn):
    """shard id -> its staged rows, tagged by kind (main output: pairs; `drops`, `failures` tagged).

    The `images` table is not needed by the global stage; the manifest counts it after the run."""

    def __init__(self, output: str):
        self.output = output

    def process(self, shard):
        staged = read_staged_shard(self.output, shard)
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
        write_rows(path, rows, self.schema_fn(rows))
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
        from models.presets import resolve_models
        from models.text import build_text_encoder

        self.encoder = build_text_encoder(resolve_models(self.models).text)

    def process(self, label_counts):
        label_counts = sorted(label_counts)
        names = [name for name, _ in label_counts]
        embeddings = (np.asarray(self.encoder.encode(names), dtype=np.float32) if names
                      else np.zeros((0, self.encoder.dim), dtype=np.float32))
        rows = labels_rows(label_counts, embeddings)
        write_rows(storage.join(self.output, schema.LABELS), rows, schema.labels_schema(self.encoder.dim))
        yield label_ids(label_counts)
