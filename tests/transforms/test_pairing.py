"""The paper's pairing rule on hand-made embeddings."""

from __future__ import annotations

import numpy as np

from transforms.pairing import pair_segments, paired_with_segments


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


def test_a_pairing_over_kept_segments_speaks_in_the_image_s_segment_indices():
    kept = np.array([0, 2, 5])
    pairing = paired_with_segments(pair_segments(unit([[1, 0], [0, 1], [1, 1]]), unit([[0, 1]])), kept)
    np.testing.assert_array_equal(pairing.segment, [2])
    np.testing.assert_array_equal(pairing.unpaired, [0, 5])
