"""The paper's pairing rule on hand-made embeddings, and the per-image accounting of segments."""

from __future__ import annotations

import numpy as np

from models.rle import encode_masks
from transforms.pairing import image_results, pair_segments


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_each_label_takes_its_most_similar_segment():
    segments = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    labels = unit([[0, 1, 0.1], [0.9, 0.1, 0]])
    pairing = pair_segments(segments, labels)
    np.testing.assert_array_equal(pairing.segment, [1, 0])
    np.testing.assert_array_equal(pairing.label, [0, 1])
    np.testing.assert_allclose(pairing.score, [segments[1] @ labels[0], segments[0] @ labels[1]], rtol=1e-6)
    np.testing.assert_array_equal(pairing.unpaired, [2, 3])


def test_a_segment_picked_by_two_labels_makes_two_pairs():
    segments = unit([[1, 0], [0, 1]])
    labels = unit([[1, 0.1], [1, -0.1]])
    pairing = pair_segments(segments, labels)
    np.testing.assert_array_equal(pairing.segment, [0, 0])
    np.testing.assert_array_equal(pairing.unpaired, [1])


def test_no_labels_means_everything_unpaired():
    pairing = pair_segments(unit([[1, 0], [0, 1]]), np.zeros((0, 2)))
    assert len(pairing.segment) == 0 and list(pairing.unpaired) == [0, 1]


def make_item(n_masks: int, keep, labels=None, annotated_labels=None):
    masks = np.zeros((n_masks, 4, 6), dtype=bool)
    for i in range(n_masks):
        masks[i, i % 4, : i + 1] = True
    item = {
        "uri": "/data/x.png", "shard": 0, "failure": None, "width": 6, "height": 4,
        "rles": encode_masks(masks), "areas": masks.reshape(n_masks, -1).sum(1), "bboxes": np.zeros((n_masks, 4)),
        "keep": np.asarray(keep, dtype=bool),
    }
    n_kept = int(np.sum(keep))
    item["visual"] = unit(np.eye(n_kept, 3) + 0.01)
    if labels is not None:
        item["labels"] = labels
        item["clip"] = unit(np.eye(n_kept, 2) + 0.01)
        item["label_embeddings"] = unit(np.eye(len(labels), 2) + 0.01) if labels else np.zeros((0, 2))
    if annotated_labels is not None:
        item["segment_labels"] = annotated_labels
    return item


def test_every_segment_is_a_pair_or_a_drop():
    item = make_item(4, keep=[True, True, True, False], labels=["dog"])
    out = image_results(item, annotated=False)
    assert out["images"] == [{"uri": "/data/x.png", "width": 6, "height": 4, "segments": 4}]
    assert [(r["label"], r["segment_id"][-5:]) for r in out["pairs"]] == [("dog", "00000")]
    reasons = sorted((r["segment_id"][-5:], r["reason"]) for r in out["drops"])
    assert reasons == [("00001", "unpaired"), ("00002", "unpaired"), ("00003", "too_small")]
    np.testing.assert_array_equal(out["pairs"][0]["visual_embedding"], item["visual"][0])


def test_uncaptioned_image_drops_as_unlabelled():
    out = image_results(make_item(2, keep=[True, True], labels=[]), annotated=False)
    assert out["pairs"] == [] and [r["reason"] for r in out["drops"]] == ["unlabelled", "unlabelled"]


def test_annotated_segments_pair_with_their_class():
    item = make_item(3, keep=[True, False, True], annotated_labels=["sky", "cat", "road"])
    out = image_results(item, annotated=True)
    assert [(r["label"], r["pair_score"]) for r in out["pairs"]] == [("sky", 1.0), ("road", 1.0)]
    assert [(r["label"], r["reason"]) for r in out["drops"]] == [("cat", "too_small")]


def test_failed_image_is_one_failure_row():
    failure = {"uri": "/data/x.png", "stage": "decode", "error_type": "ImageDecodeError", "message": "empty"}
    out = image_results({"uri": "/data/x.png", "shard": 0, "failure": failure}, annotated=False)
    assert out["failures"] == [failure] and not out["pairs"] and not out["drops"] and not out["images"]
