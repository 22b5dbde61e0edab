"""Row shapes that travel between the index job's stages (plain dicts, cheap to pickle between Beam workers).

    pair     one (segment, label) candidate of phase A: segment keys + label + pair_score + visual_embedding
    drop     a segment or pair that will not be in segments/, with its reason (schema.dropped_schema)
    failure  an input that could not be processed (schema.failures_schema; transforms.failures)

Where these rows are committed between the phases, and how they become tables, is the contract's business
(refset.staging).

The per-image *item* that flows through phase A (and through the labelling job) is a dict filled step by step:

    Read    uri, shard, failure (None or a failure row), image (uint8 RGB), height, width
    Mask    rles, areas, bboxes (per segment, in the masker's order), keep (passes min_area), to_embed
            (annotations: the same fields from the label map, plus segment_labels)
    Label   captions, labels (candidate labels of the image)
    Pair    pairing (transforms.pairing.Pairing, in segment indices), to_embed narrowed to the paired segments
    Embed   visual: float32 [len(to_embed), D], row r for segment to_embed[r]

A staged pair also carries `image_digest` (records.image_digest of the decoded pixels) for the Dedup step.
"""

from __future__ import annotations

import hashlib

import numpy as np

from refset import schema
from refset.staging import KINDS

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


def image_digest(image) -> str:
    """Content hash of a decoded image (uint8 pixels and shape): the same picture under two names or re-encoded
    losslessly has one digest; batch composition and hardware cannot change it (no float involved)."""
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    digest = hashlib.sha1(repr(pixels.shape).encode("ascii"))
    digest.update(pixels.tobytes())
    return digest.hexdigest()


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


def staging_rows(item: dict, annotated: bool) -> dict[str, list[dict]]:
    """One processed image item -> its staging rows by kind: pairs, drops, failures, images (refset.staging).

    Accounting: every segment the masker (or the annotation) produced ends up as a pair or a drop (too_small,
    unlabelled, unpaired); a failed image is one failure row and nothing else.
    """
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    if item.get("failure") is not None:
        out["failures"].append(item["failure"])
        return out
    uri, width, height = item["uri"], item["width"], item["height"]
    rles = item.get("rles", [])
    out["images"].append({"uri": uri, "width": width, "height": height, "segments": len(rles)})
    keys = [segment_keys(uri, i, width, height, item["bboxes"][i], item["areas"][i], rles[i]) for i in range(len(rles))]
    keep = np.asarray(item.get("keep", ()), dtype=bool)
    for i in np.flatnonzero(~keep):
        out["drops"].append(drop_row(keys[i], "too_small", label=item["segment_labels"][i] if annotated else None))
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return out
    digest = {"image_digest": image_digest(item["image"]) if item.get("image") is not None else None}
    # Row r of `visual` is the embedding of segment to_embed[r].
    visual_row = {int(i): r for r, i in enumerate(item.get("to_embed", ()))}
    if annotated:
        for i in kept:
            out["pairs"].append({**keys[i], "label": item["segment_labels"][i], "pair_score": 1.0,
                                 "visual_embedding": item["visual"][visual_row[int(i)]], **digest})
        return out
    labels = item.get("labels") or []
    if not labels:
        out["drops"].extend(drop_row(keys[i], "unlabelled") for i in kept)
        return out
    pairing = item["pairing"]
    for i, lab, score in zip(pairing.segment, pairing.label, pairing.score, strict=True):
        out["pairs"].append({**keys[i], "label": labels[lab], "pair_score": float(score),
                             "visual_embedding": item["visual"][visual_row[int(i)]], **digest})
    out["drops"].extend(drop_row(keys[i], "unpaired") for i in pairing.unpaired)
    return out
