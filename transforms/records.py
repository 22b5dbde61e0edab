"""Row shapes that travel between stages and the schemas of the resumable staging area.

Rows are plain dicts (cheap to pickle between Beam workers); embeddings are float32 numpy vectors.

    pair     one (segment, label) candidate of phase A: segment keys + label + pair_score + visual_embedding
    drop     a segment or pair that will not be in segments/, with its reason (schema.dropped_schema)
    failure  an input that could not be processed (schema.failures_schema)
    image    one processed input image: uri, size and how many masker segments it produced

Phase A writes each input shard's rows to `<output>/_staging/<kind>/part-SSSSS.parquet` and then the commit
marker `<output>/_staging/_done/part-SSSSS`; phase B reads them back, so a resumed run and an uninterrupted one
feed the global stage the very same bytes.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from pipeline import schema

STAGING_DIR = "_staging"
DONE_DIR = "_staging/_done"
RUN_FILE = "_run.json"
KINDS = ("pairs", "drops", "failures", "images")


def shard_of(uri: str, num_shards: int) -> int:
    """Stable input shard of an image URI: the same URI lands in the same shard on every run and machine."""
    return int(hashlib.sha1(uri.encode("utf-8")).hexdigest()[:8], 16) % num_shards


def staging_path(output: str, kind: str, shard: int) -> str:
    from pipeline import storage

    return storage.join(output, STAGING_DIR, kind, schema.shard_name(shard))


def done_marker(output: str, shard: int) -> str:
    from pipeline import storage

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


def segment_keys(uri: str, index: int, width: int, height: int, bbox, area: int, rle: bytes) -> dict:
    return {
        "segment_id": schema.segment_id(uri, index),
        "image_uri": uri,
        "width": int(width),
        "height": int(height),
        "bbox": [float(v) for v in bbox],
        "area": int(area),
        "mask_rle": bytes(rle),
    }


def drop_row(keys: dict, reason: str, label=None, pair_score=None, quality=None) -> dict:
    if reason not in schema.DROP_REASONS:
        raise ValueError(f"unknown drop reason {reason!r}; one of {schema.DROP_REASONS}")
    return {
        **{k: keys[k] for k in ("segment_id", "image_uri", "width", "height", "bbox", "area", "mask_rle")},
        "label": label,
        "pair_score": None if pair_score is None else float(pair_score),
        "quality": None if quality is None else float(quality),
        "reason": reason,
    }


def pair_sort_key(row: dict) -> tuple:
    return row["segment_id"], row["label"]


def drop_sort_key(row: dict) -> tuple:
    return row["segment_id"], row["reason"], row.get("label") or ""


def failure_sort_key(row: dict) -> tuple:
    return row["uri"], row["stage"], row["error_type"], row["message"]
