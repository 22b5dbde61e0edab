"""The resumable staging area of the index job, and rows <-> Arrow tables with the contract's schemas.

Phase A of the index job commits each input shard's rows to `<output>/_staging/<kind>/part-SSSSS.parquet` and then
the commit marker `<output>/_staging/_done/part-SSSSS` (written last); phase B and the manifest read them back, so a
resumed run and an uninterrupted one feed the global stage the very same bytes.

    pairs     one (segment, label) candidate: segment keys + label + pair_score + visual_embedding + image_digest
              (a hash of the decoded pixels: with mask_rle and label, the content key the Dedup step groups by)
    drops     a segment or pair that will not be in segments/, with its reason (schema.dropped_schema)
    failures  an input that could not be processed (schema.failures_schema)
    images    one processed input image: uri, size and how many masker segments it produced

Rows are plain dicts (cheap to pickle between Beam workers); embeddings are float32 numpy vectors.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from refset import schema, storage

STAGING_DIR = "_staging"
DONE_DIR = "_staging/_done"
RUN_FILE = "_run.json"
KINDS = ("pairs", "drops", "failures", "images")


def shard_of(uri: str, num_shards: int) -> int:
    """Stable input shard of an image URI: the same URI lands in the same shard on every run and machine."""
    return int(hashlib.sha1(uri.encode("utf-8")).hexdigest()[:8], 16) % num_shards


def staging_path(output: str, kind: str, shard: int) -> str:
    return storage.join(output, STAGING_DIR, kind, schema.shard_name(shard))


def done_marker(output: str, shard: int) -> str:
    return storage.join(output, DONE_DIR, schema.shard_name(shard).removesuffix(".parquet"))


def shard_from_name(name: str) -> int:
    """part-00012.parquet -> 12."""
    base = name.rsplit("/", 1)[-1]
    return int(base.split("-", 1)[1].split(".", 1)[0])


def pairs_staging_schema() -> pa.Schema:
    return pa.schema(
        list(schema.dropped_schema())[:7]  # the segment keys, shared with segments/ and dropped/
        + [
            pa.field("label", pa.string(), nullable=False),
            pa.field("pair_score", pa.float32(), nullable=False),
            pa.field("visual_embedding", pa.list_(pa.float32()), nullable=False),
            # Nullable: staging written before the column existed reads back without it (Dedup then keys by uri).
            pa.field("image_digest", pa.string()),
        ]
    )


def images_staging_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("segments", pa.int32(), nullable=False),  # masker/annotation segments of this image
        ]
    )


STAGING_SCHEMAS = {
    "pairs": pairs_staging_schema,
    "drops": schema.dropped_schema,
    "failures": schema.failures_schema,
    "images": images_staging_schema,
}


def pair_sort_key(row: dict) -> tuple:
    return row["segment_id"], row["label"]


def drop_sort_key(row: dict) -> tuple:
    return row["segment_id"], row["reason"], row.get("label") or ""


def failure_sort_key(row: dict) -> tuple:
    return row["uri"], row["stage"], row["error_type"], row["message"]


STAGING_SORT_KEYS = {"pairs": pair_sort_key, "drops": drop_sort_key, "failures": failure_sort_key,
                     "images": lambda row: row["uri"]}


# ---------------------------------------------------------------------------------------------------------
# Rows <-> tables
# ---------------------------------------------------------------------------------------------------------
def _is_embedding(field: pa.Field) -> bool:
    t = field.type
    return field.name.endswith("embedding") and (
        pa.types.is_fixed_size_list(t) or (pa.types.is_list(t) and pa.types.is_floating(t.value_type)))


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
        columns.append(_embedding_array(values, field.type) if _is_embedding(field) else pa.array(values, type=field.type))
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


# ---------------------------------------------------------------------------------------------------------
# Committing and reading staged shards
# ---------------------------------------------------------------------------------------------------------
def write_staged_shard(output: str, shard: int, rows_by_kind: dict[str, list[dict]]) -> None:
    """Write every staging kind of one input shard, then its commit marker (last)."""
    for kind in KINDS:
        rows = sorted(rows_by_kind.get(kind, []), key=STAGING_SORT_KEYS[kind])
        write_rows(staging_path(output, kind, shard), rows, STAGING_SCHEMAS[kind]())
    storage.write_bytes(done_marker(output, shard), b"")


def read_staged_shard(output: str, shard: int) -> dict[str, list[dict]]:
    return {kind: rows_from_table(storage.read_parquet(staging_path(output, kind, shard))) for kind in KINDS}


def done_shards(output: str) -> list[int]:
    """Input shards whose staging is committed (marker present)."""
    return sorted(
        shard_from_name(p) for p in storage.listdir(storage.join(output, DONE_DIR))
        if p.rsplit("/", 1)[-1].startswith("part-") and not p.rsplit("/", 1)[-1].startswith(storage.TMP_PREFIX)
    )
