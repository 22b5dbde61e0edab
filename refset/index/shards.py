"""Reading the segment shards' embeddings in the global order (index row i = row i of `segments/part-*.parquet`
sorted by name, rows in file order)."""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refset import schema, storage

EMBEDDING_COLUMN = "visual_embedding"


@dataclass(frozen=True)
class Shard:
    path: str
    name: str
    rows: int
    start: int  # global position of its first row


def list_shards(reference_dir: str) -> tuple[list[Shard], int]:
    paths = [p for p in storage.glob(storage.join(reference_dir, schema.SEGMENTS_DIR, "part-*.parquet"))]
    paths.sort(key=lambda p: p.rsplit("/", 1)[-1])
    if not paths:
        raise FileNotFoundError(f"no segment shards under {storage.join(reference_dir, schema.SEGMENTS_DIR)}")
    shards, start, dim = [], 0, None
    for path in paths:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            rows = pf.metadata.num_rows
            arrow_schema = pf.schema_arrow
        if EMBEDDING_COLUMN not in arrow_schema.names:
            raise ValueError(f"{path} has no {EMBEDDING_COLUMN!r} column")
        t = arrow_schema.field(EMBEDDING_COLUMN).type
        if not pa.types.is_fixed_size_list(t) or t.value_type not in (pa.float16(), pa.float32()):
            raise ValueError(f"{path}: {EMBEDDING_COLUMN} must be fixed_size_list<float16|float32>, got {t}")
        if dim is not None and t.list_size != dim:
            raise ValueError(f"{path}: embedding dim {t.list_size} differs from earlier shards' {dim}")
        dim = t.list_size
        shards.append(Shard(path=path, name=path.rsplit("/", 1)[-1], rows=rows, start=start))
        start += rows
    return shards, int(dim)


def embeddings(table: pa.Table) -> np.ndarray:
    col = table.column(EMBEDDING_COLUMN).combine_chunks()
    dim = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slicing offsets
    return np.ascontiguousarray(values.reshape(-1, dim), dtype=np.float32)


def read_shard(shard: Shard, with_ids: bool = False) -> pa.Table:
    columns = [EMBEDDING_COLUMN, "segment_id"] if with_ids else [EMBEDDING_COLUMN]
    table = storage.read_parquet(shard.path, columns=columns)
    if table.num_rows != shard.rows:
        raise ValueError(f"{shard.path}: read {table.num_rows} rows, metadata says {shard.rows}")
    return table


def gather(shards: list[Shard], positions: np.ndarray, dim: int) -> np.ndarray:
    """Vectors at sorted global `positions`, reading only the shards that hold them."""
    out = np.empty((len(positions), dim), dtype=np.float32)
    for shard in shards:
        lo, hi = np.searchsorted(positions, [shard.start, shard.start + shard.rows])
        if hi > lo:
            out[lo:hi] = embeddings(read_shard(shard))[positions[lo:hi] - shard.start]
    return out
