"""The resumable staging area of the index job, and rows <-> Arrow tables with the contract's schemas.

Phase A of the index job commits each input shard's rows to `<output>/_staging/<kind>/part-SSSSS.parquet` and then
the commit marker `<output>/_staging/_done/part-SSSSS` (written last); phase B and the manifest read them back, so a
resumed run and an uninterrupted one feed the global stage the very same bytes.

Failed images are tried again by a re-run: a committed shard whose latest generation has failures (marker
`_staging/_failed/part-SSSSS[.rGGGG]`, written before the commit marker) sends just those images through phase A
again, and their rows are committed as a new *generation* of the shard (`part-SSSSS.rGGGG`, G >= 1, one G per run).
Reading a shard merges its committed generations in order: a later generation's rows of an image replace every
earlier row of that image, so the merged shard is what a run that never failed would have committed.

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
FAILED_DIR = "_staging/_failed"
RUN_FILE = "_run.json"
KINDS = ("pairs", "drops", "failures", "images")


def shard_of(uri: str, num_shards: int) -> int:
    """Stable input shard of an image URI: the same URI lands in the same shard on every run and machine."""
    return int(hashlib.sha1(uri.encode("utf-8")).hexdigest()[:8], 16) % num_shards


def staged_name(shard: int, generation: int = 0) -> str:
    """part-00012 (generation 0: the shard's first commit), part-00012.r0003 (generation 3: a re-run's retries)."""
    base = schema.shard_name(shard).removesuffix(".parquet")
    return base if generation == 0 else f"{base}.r{generation:04d}"


def parse_staged_name(name: str) -> tuple[int, int]:
    """part-00012[.parquet] -> (12, 0); part-00012.r0003[.parquet] -> (12, 3)."""
    base = name.rsplit("/", 1)[-1].removesuffix(".parquet")
    shard, _, generation = base.partition(".r")
    return int(shard.split("-", 1)[1]), int(generation or 0)


def staging_path(output: str, kind: str, shard: int, generation: int = 0) -> str:
    return storage.join(output, STAGING_DIR, kind, staged_name(shard, generation) + ".parquet")


def done_marker(output: str, shard: int, generation: int = 0) -> str:
    return storage.join(output, DONE_DIR, staged_name(shard, generation))


def failed_marker(output: str, shard: int, generation: int = 0) -> str:
    return storage.join(output, FAILED_DIR, staged_name(shard, generation))


def shard_from_name(name: str) -> int:
    """part-00012.parquet -> 12."""
    return parse_staged_name(name)[0]


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
def write_staged_shard(output: str, shard: int, rows_by_kind: dict[str, list[dict]], generation: int = 0) -> None:
    """Write every staging kind of one input shard (or of one generation of retries), then its failure marker when
    it has failures, then its commit marker (last)."""
    for kind in KINDS:
        rows = sorted(rows_by_kind.get(kind, []), key=STAGING_SORT_KEYS[kind])
        write_rows(staging_path(output, kind, shard, generation), rows, STAGING_SCHEMAS[kind]())
    failed = failed_marker(output, shard, generation)
    if rows_by_kind.get("failures"):
        storage.write_bytes(failed, b"")
    elif storage.exists(failed):  # left by an earlier, uncommitted attempt at this shard
        storage.filesystem(failed).rm(failed)
    storage.write_bytes(done_marker(output, shard, generation), b"")


def _image_field(kind: str) -> str:
    return "image_uri" if kind in ("pairs", "drops") else "uri"


def merge_generations(parts: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """A shard's committed generations, oldest first -> its rows: each image's rows come from the latest generation
    that processed it (every image of a generation has an `images` or a `failures` row)."""
    merged = {kind: list(parts[0].get(kind, [])) for kind in KINDS}
    for later in parts[1:]:
        redone = {row["uri"] for kind in ("images", "failures") for row in later.get(kind, [])}
        for kind in KINDS:
            field = _image_field(kind)
            merged[kind] = [row for row in merged[kind] if row[field] not in redone] + list(later.get(kind, []))
    for kind in KINDS:
        merged[kind].sort(key=STAGING_SORT_KEYS[kind])
    return merged


def read_generation(output: str, shard: int, generation: int = 0, kinds=KINDS) -> dict[str, list[dict]]:
    return {kind: rows_from_table(storage.read_parquet(staging_path(output, kind, shard, generation)))
            for kind in kinds}


def read_staged_shard(output: str, shard: int, generations=(0,)) -> dict[str, list[dict]]:
    """The merged rows of a shard's committed generations (merge_generations)."""
    return merge_generations([read_generation(output, shard, g) for g in sorted(generations)])


def _markers(output: str, directory: str) -> list[tuple[int, int]]:
    names = [p.rsplit("/", 1)[-1] for p in storage.listdir(storage.join(output, directory))]
    return [parse_staged_name(n) for n in names if n.startswith("part-") and not n.startswith(storage.TMP_PREFIX)]


def committed_generations(output: str) -> dict[int, tuple[int, ...]]:
    """{shard: its committed generations, ascending} for every shard whose first commit is done (one listing)."""
    found: dict[int, list[int]] = {}
    for shard, generation in _markers(output, DONE_DIR):
        found.setdefault(shard, []).append(generation)
    return {shard: tuple(sorted(gens)) for shard, gens in sorted(found.items()) if 0 in gens}


def failing_shards(output: str, committed: dict[int, tuple[int, ...]] | None = None) -> dict[int, int]:
    """{shard: its latest committed generation} for the committed shards whose latest generation has failures: the
    images a re-run tries again are exactly that generation's failures (each generation retried all of the
    shard's failures before it)."""
    committed = committed_generations(output) if committed is None else committed
    failed = set(_markers(output, FAILED_DIR))
    latest = {shard: gens[-1] for shard, gens in committed.items()}
    return {shard: g for shard, g in latest.items() if (shard, g) in failed}


def failed_uris(output: str, shard: int, generation: int) -> set[str]:
    """The images that failed in one committed generation of a shard."""
    return {row["uri"] for row in read_generation(output, shard, generation, ("failures",))["failures"]}


def next_generation(committed: dict[int, tuple[int, ...]]) -> int:
    """The generation a run commits its retries as: above every committed one (so merges keep run order)."""
    return 1 + max((g for gens in committed.values() for g in gens), default=0)


def committed_paths(output: str, kind: str, committed: dict[int, tuple[int, ...]] | None = None) -> list[str]:
    """The staging files of `kind` of every committed generation (uncommitted leftovers excluded)."""
    committed = committed_generations(output) if committed is None else committed
    return [staging_path(output, kind, shard, g) for shard, gens in committed.items() for g in gens]


def done_shards(output: str) -> list[int]:
    """Input shards whose staging is committed (marker present)."""
    return sorted(committed_generations(output))
