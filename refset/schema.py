"""The on-disk contract of a reference set (SPEC §3): one place for every path, schema and version.

Both the index job (writer) and the labeller (reader) import from here, so the two can never drift.

    manifest.json            run description, models, counts, drops, index info
    labels.parquet           label_id, label, count, text_embedding
    segments/part-*.parquet  kept segments with their visual embedding (retrieval rows)
    dropped/part-*.parquet   segments that did not make it, with the reason
    failures/part-*.parquet  inputs that could not be processed, with stage and error
    index/                   FAISS index over segments' visual embeddings + id map
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

SCHEMA_VERSION = 1

MANIFEST = "manifest.json"
LABELS = "labels.parquet"
SEGMENTS_DIR = "segments"
DROPPED_DIR = "dropped"
FAILURES_DIR = "failures"
INDEX_DIR = "index"
INDEX_FILE = "index/segments.faiss"
INDEX_IDS = "index/ids.parquet"
INDEX_INFO = "index/index_info.json"
INDEX_REFINE = "index/refine_fp16.faiss"  # float16 copies of the vectors when the index has a refine stage

# Why a segment or pair is not in segments/ (the quality report counts these).
DROP_REASONS = ("too_small", "unpaired", "outlier", "rare_label", "duplicate", "unlabelled")

# Where a failure happened.
FAILURE_STAGES = ("read", "decode", "mask", "label", "embed", "pair", "write")

# What kind of failure (transforms.failures.classify): retries exhausted on a transient error, an unusable input,
# or anything else (a bug).
FAILURE_KINDS = ("transient", "bad_input", "bug")


def shard_name(shard: int) -> str:
    """File name of one output shard; the shard id is part of the name so a writer cannot collide."""
    return f"part-{shard:05d}.parquet"


def segment_id(image_uri: str, mask_index: int) -> str:
    """Stable id from the image URI and the mask's index in the masker's deterministic order."""
    digest = hashlib.sha1(image_uri.encode("utf-8")).hexdigest()[:16]
    return f"{digest}-{mask_index:05d}"


def embedding_type(dim: int, dtype: str = "float32") -> pa.DataType:
    if dtype not in ("float16", "float32"):
        raise ValueError(f"embedding dtype must be float16 or float32, got {dtype!r}")
    return pa.list_(pa.float16() if dtype == "float16" else pa.float32(), dim)


_SEGMENT_KEYS = [
    pa.field("segment_id", pa.string(), nullable=False),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("bbox", pa.list_(pa.float32(), 4), nullable=False),  # x, y, w, h in pixels (COCO order)
    pa.field("area", pa.int64(), nullable=False),
    pa.field("mask_rle", pa.binary(), nullable=False),  # pycocotools compressed RLE counts; size = (height, width)
]


def segments_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    return pa.schema(
        _SEGMENT_KEYS
        + [
            pa.field("label_id", pa.int32(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("pair_score", pa.float32(), nullable=False),
            pa.field("quality", pa.float32(), nullable=False),
            pa.field("visual_embedding", embedding_type(dim, dtype), nullable=False),
        ]
    )


def dropped_schema() -> pa.Schema:
    """Dropped segments keep their keys and whatever scores they reached before the drop (nulls otherwise)."""
    return pa.schema(
        _SEGMENT_KEYS
        + [
            pa.field("label", pa.string()),
            pa.field("pair_score", pa.float32()),
            pa.field("quality", pa.float32()),
            pa.field("reason", pa.string(), nullable=False),
        ]
    )


def failures_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("error_type", pa.string(), nullable=False),
            pa.field("message", pa.string(), nullable=False),
            pa.field("kind", pa.string()),  # FAILURE_KINDS; null in outputs written before kinds existed
        ]
    )


def labels_schema(text_dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("label_id", pa.int32(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
            pa.field("text_embedding", embedding_type(text_dim, "float32"), nullable=False),
        ]
    )


def index_ids_schema() -> pa.Schema:
    """Row i of the FAISS index is row `row` of `shard` in the global segment order (shards sorted by name)."""
    return pa.schema(
        [
            pa.field("position", pa.int64(), nullable=False),
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("shard", pa.string(), nullable=False),
            pa.field("row", pa.int64(), nullable=False),
        ]
    )
