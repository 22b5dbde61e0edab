import math

import faiss
import numpy as np
import pytest

from inference import retrieval, scoring


def test_text_table_is_cosine():
    labels = np.array([[1.0, 0.0], [1.0, 1.0]])
    classes = np.array([[2.0, 0.0], [0.0, 3.0]])
    t = scoring.text_table(labels, classes)
    s = 1 / math.sqrt(2)
    assert np.allclose(t, [[1.0, 0.0], [s, s]], atol=1e-6)


def test_neighbour_weighted_scores_by_hand():
    # Two neighbours with sims 0.9 and 0.5, labels 0 and 1; tau = 0.2.
    table = np.array([[1.0, 0.2], [0.3, 0.8]], dtype=np.float32)
    w0 = math.exp(0.9 / 0.2) / (math.exp(0.9 / 0.2) + math.exp(0.5 / 0.2))
    w1 = 1 - w0
    got = scoring.neighbour_scores(np.array([[0.9, 0.5]]), np.array([[0, 1]]), table, tau=0.2)
    assert np.allclose(got, [[w0 * 1.0 + w1 * 0.3, w0 * 0.2 + w1 * 0.8]], atol=1e-6)


def test_missing_neighbours_get_no_weight():
    table = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    got = scoring.neighbour_scores(np.array([[0.1, 0.99], [0.0, 0.0]]), np.array([[1, -1], [-1, -1]]), table, tau=0.1)
    assert np.allclose(got, [[0.0, 1.0], [0.0, 0.0]])


def test_decide_threshold_background_and_unlabelled():
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.05, 0.01]], dtype=np.float32)
    # Classes: 0 background (no column), 1 cat, 2 dog.
    d = scoring.decide(scores, class_columns=np.array([1, 2]), threshold=0.25, background_id=0)
    assert d.class_ids.tolist() == [1, 2, 0]
    assert np.allclose(d.confidence, [0.9, 0.3, 0.05])
    d = scoring.decide(scores, threshold=0.25, background_id=None, ignore_value=255)
    assert d.class_ids.tolist() == [0, 1, 255]
    d = scoring.decide(scores)
    assert d.class_ids.tolist() == [0, 1, 0]


def test_prototypes_average_the_best_matching_labels():
    # Labels: 0 "car" (2 segments, mean e0), 1 "sky" (mean e1), 2 "auto" (1 segment, mean e2).
    means = np.eye(3, dtype=np.float32)
    counts = np.array([2, 5, 1])
    # Class 0 ("automobile") matches labels 0 and 2 best; class 1 ("heavens") matches label 1.
    table = np.array([[0.9, 0.1], [0.1, 0.95], [0.8, 0.0]], dtype=np.float32)
    p1 = scoring.class_prototypes(means, counts, table, labels_per_class=1)
    assert np.allclose(p1, [[1, 0, 0], [0, 1, 0]])
    p2 = scoring.class_prototypes(means, counts, table, labels_per_class=2)
    assert np.allclose(p2[0], np.array([2, 0, 1]) / math.sqrt(5), atol=1e-6)
    s = scoring.prototype_scores(np.array([[0.0, 0.0, 1.0]]), p2)
    assert s.argmax() == 0


def test_retrieval_is_batched_and_maps_labels():
    rng = np.random.default_rng(0)
    refs = scoring.l2_normalise(rng.normal(size=(20, 8)))
    index = faiss.IndexFlatIP(8)
    index.add(refs)
    labels = np.arange(20) % 4
    hits = retrieval.search(index, refs[[3, 7, 11]] * 5.0, k=2, position_labels=labels)  # un-normalised queries
    assert hits.positions[:, 0].tolist() == [3, 7, 11]
    assert np.allclose(hits.sims[:, 0], 1.0, atol=1e-5)
    assert hits.label_ids[:, 0].tolist() == [3, 3, 3]
    # More neighbours asked than the index holds: k is capped.
    assert retrieval.search(index, refs[:1], k=50, position_labels=labels).positions.shape == (1, 20)
    with pytest.raises(ValueError, match="dim"):
        retrieval.search(index, np.ones((1, 5)), k=1, position_labels=labels)
