"""Row shapes that travel between the index job's stages (plain dicts, cheap to pickle between Beam workers).

    pair     one (segment, label) candidate of phase A: segment keys + label + pair_score + visual_embedding
    drop     a segment or pair that will not be in segments/, with its reason (schema.dropped_schema)
    failure  an input that could not be processed (schema.failures_schema; transforms.failures)

Where these rows are committed between the phases, and how they become tables, is the contract's business
(refset.staging).
"""

from __future__ import annotations

from refset import schema

SEGMENT_KEYS = ("segment_id", "image_uri", "width", "height", "bbox", "area", "mask_rle")


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
        **{k: keys[k] for k in SEGMENT_KEYS},
        "label": label,
        "pair_score": None if pair_score is None else float(pair_score),
        "quality": None if quality is None else float(quality),
        "reason": reason,
    }
