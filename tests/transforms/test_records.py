"""The per-image accounting of segments: every segment the masker made becomes a staged pair or a drop."""

from __future__ import annotations

import numpy as np

from models.rle import encode_masks
from transforms.pairing import pair_segments, paired_with_segments
from transforms.records import staging_rows


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_item(n_masks: int, keep, labels=None, annotated_labels=None):
    masks = np.zeros((n_masks, 4, 6), dtype=bool)
    for i in range(n_masks):
        masks[i, i % 4, : i + 1] = True
    item = {
        "uri": "/data/x.png", "shard": 0, "failure": None, "width": 6, "height": 4,
        "rles": encode_masks(masks), "areas": masks.reshape(n_masks, -1).sum(1), "bboxes": np.zeros((n_masks, 4)),
        "keep": np.asarray(keep, dtype=bool),
    }
    kept = np.flatnonzero(item["keep"])
    item["to_embed"] = kept
    if labels is not None:  # what the Pair step leaves: a pairing in image segment indices, to_embed narrowed
        item["labels"] = labels
        if labels:
            clip = unit(np.eye(len(kept), 2) + 0.01)
            item["pairing"] = paired_with_segments(pair_segments(clip, unit(np.eye(len(labels), 2) + 0.01)), kept)
            item["to_embed"] = np.unique(item["pairing"].segment)
    if annotated_labels is not None:
        item["segment_labels"] = annotated_labels
    item["visual"] = unit(np.eye(len(item["to_embed"]), 3) + 0.01)  # the Embed step: one row per to_embed
    return item


def test_every_segment_is_a_pair_or_a_drop():
    item = make_item(4, keep=[True, True, True, False], labels=["dog"])
    out = staging_rows(item, annotated=False)
    assert out["images"] == [{"uri": "/data/x.png", "width": 6, "height": 4, "segments": 4}]
    assert [(r["label"], r["segment_id"][-5:]) for r in out["pairs"]] == [("dog", "00000")]
    reasons = sorted((r["segment_id"][-5:], r["reason"]) for r in out["drops"])
    assert reasons == [("00001", "unpaired"), ("00002", "unpaired"), ("00003", "too_small")]
    np.testing.assert_array_equal(out["pairs"][0]["visual_embedding"], item["visual"][0])


def test_uncaptioned_image_drops_as_unlabelled():
    out = staging_rows(make_item(2, keep=[True, True], labels=[]), annotated=False)
    assert out["pairs"] == [] and [r["reason"] for r in out["drops"]] == ["unlabelled", "unlabelled"]


def test_annotated_segments_pair_with_their_class():
    item = make_item(3, keep=[True, False, True], annotated_labels=["sky", "cat", "road"])
    out = staging_rows(item, annotated=True)
    assert [(r["label"], r["pair_score"]) for r in out["pairs"]] == [("sky", 1.0), ("road", 1.0)]
    np.testing.assert_array_equal(out["pairs"][1]["visual_embedding"], item["visual"][1])  # row of segment 2
    assert [(r["label"], r["reason"]) for r in out["drops"]] == [("cat", "too_small")]


def test_failed_image_is_one_failure_row():
    failure = {"uri": "/data/x.png", "stage": "decode", "error_type": "ImageDecodeError", "message": "empty"}
    out = staging_rows({"uri": "/data/x.png", "shard": 0, "failure": failure}, annotated=False)
    assert out["failures"] == [failure] and not out["pairs"] and not out["drops"] and not out["images"]
