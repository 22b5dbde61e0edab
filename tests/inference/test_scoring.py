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


# ---- the per-label rule ------------------------------------------------------------------------------------
def test_label_evidence_by_hand():
    # Neighbours (sorted): A .9, B .8, A .7, C .6; m = 2; the smallest retrieved similarity is .6.
    labels, evidence = scoring.label_evidence(np.array([[0.9, 0.8, 0.7, 0.6]]), np.array([[0, 1, 0, 2]]), 2)
    got = {int(label): float(e) for label, e in zip(labels[0], evidence[0], strict=True) if np.isfinite(e)}
    assert got == pytest.approx({0: (0.9 + 0.7) / 2, 1: (0.8 + 0.6) / 2, 2: (0.6 + 0.6) / 2})
    # m = 1 is the nearest segment of each label.
    labels, evidence = scoring.label_evidence(np.array([[0.9, 0.8, 0.7, 0.6]]), np.array([[0, 1, 0, 2]]), 1)
    got = {int(label): float(e) for label, e in zip(labels[0], evidence[0], strict=True) if np.isfinite(e)}
    assert got == pytest.approx({0: 0.9, 1: 0.8, 2: 0.6})


def test_per_label_scores_by_hand():
    # Labels 0 "cat", 1 "kitten", 2 "dog"; classes cat, dog. Labels 0 and 1 both match "cat" best.
    table = np.array([[1.0, 0.3], [0.8, 0.4], [0.2, 1.0]], dtype=np.float32)
    sims = np.array([[0.9, 0.8, 0.7, 0.5]])
    labels = np.array([[2, 0, 1, 2]])
    evidence = {2: (0.9 + 0.5) / 2, 0: (0.8 + 0.5) / 2, 1: (0.7 + 0.5) / 2}
    t = float(np.std(sims))  # the temperature: spread of the segment's neighbour similarities
    z = {k: math.exp(v / t) for k, v in evidence.items()}
    p = {k: v / sum(z.values()) for k, v in z.items()}
    expected = [[p[0] * 1.0 + p[1] * 0.8, p[2] * 1.0]]
    got = scoring.per_label_scores(sims, labels, table, segments_per_label=2)
    assert np.allclose(got, expected, atol=1e-6)


def test_per_label_gives_no_vote_to_a_label_s_extra_segments():
    """Imbalance: a label's evidence comes from its m best segments; more segments of it change nothing as long
    as the smallest retrieved similarity stays put."""
    table = np.eye(2, dtype=np.float32)
    few = scoring.per_label_scores(np.array([[0.9, 0.88, 0.87, 0.5]]), np.array([[1, 0, 0, 1]]), table, 2)
    many = scoring.per_label_scores(np.array([[0.9, 0.88, 0.87, 0.86, 0.86, 0.85, 0.5]]),
                                    np.array([[1, 0, 0, 0, 0, 0, 1]]), table, 2)
    assert few.argmax() == many.argmax() == 0
    # The neighbour-weighted rule does count them: its margin for label 0 grows with label 0's segments.
    old_few = scoring.neighbour_scores(np.array([[0.9, 0.88, 0.87, 0.5]]), np.array([[1, 0, 0, 1]]), table)
    old_many = scoring.neighbour_scores(np.array([[0.9, 0.88, 0.87, 0.86, 0.86, 0.85, 0.5]]),
                                        np.array([[1, 0, 0, 0, 0, 0, 1]]), table)
    assert (old_many[0, 0] - old_many[0, 1]) > (old_few[0, 0] - old_few[0, 1])
    # Per-label evidence: the same label-0 evidence in both rows (its two best, .88 and .87).
    _, e_few = scoring.label_evidence(np.array([[0.9, 0.88, 0.87, 0.5]]), np.array([[1, 0, 0, 1]]), 2)
    _, e_many = scoring.label_evidence(np.array([[0.9, 0.88, 0.87, 0.86, 0.86, 0.85, 0.5]]),
                                       np.array([[1, 0, 0, 0, 0, 0, 1]]), 2)
    assert np.isclose(np.sort(e_few[np.isfinite(e_few)]), [0.7, 0.875]).all()
    assert np.isclose(np.sort(e_many[np.isfinite(e_many)]), [0.7, 0.875]).all()


def test_one_stray_segment_does_not_carry_a_label_with_two_per_label():
    table = np.eye(2, dtype=np.float32)
    sims, labels = np.array([[0.95, 0.94, 0.93, 0.6]]), np.array([[1, 0, 0, 0]])
    assert scoring.per_label_scores(sims, labels, table, segments_per_label=1).argmax() == 1  # nearest wins
    assert scoring.per_label_scores(sims, labels, table, segments_per_label=2).argmax() == 0  # support wins


def test_per_label_missing_neighbours_empty_rows_and_many_labels():
    table = np.zeros((50_000, 3), dtype=np.float32)
    table[[7, 49_999], [0, 2]] = 1.0
    sims = np.array([[0.9, 0.8, 0.1], [0.0, 0.0, 0.0]])
    labels = np.array([[49_999, 7, -1], [-1, -1, -1]])
    got = scoring.per_label_scores(sims, labels, table, segments_per_label=2)
    assert got.shape == (2, 3) and got[0].argmax() == 2 and np.allclose(got[1], 0)
    assert np.isclose(got[0].sum(), 1.0)  # both labels match a class exactly: all probability goes to classes
    assert scoring.per_label_scores(np.zeros((0, 4)), np.zeros((0, 4), int), table).shape == (0, 3)
    with pytest.raises(ValueError, match="segments_per_label"):
        scoring.per_label_scores(sims, labels, table, segments_per_label=0)


def test_label_classes_maps_each_label_to_its_best_class():
    best, cos = scoring.label_classes(np.array([[0.1, 0.9], [0.7, 0.2]]))
    assert best.tolist() == [1, 0] and np.allclose(cos, [0.9, 0.7])
