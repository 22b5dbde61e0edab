import numpy as np

from inference.labeller import LabelRequest, paint_image
from inference.paint import paint, upsample_nearest, winning_segment
from inference.scoring import Decision
from models.rle import encode_masks
from models.segment_masks import SegmentMasks


def naive_paint(masks, class_ids, confidences, ignore_value=255, fill_uncovered=True):
    """Per-pixel reference: for every pixel, scan all segments; holes take the nearest covered pixel's class
    (squared Euclidean distance, nearest found by scanning every covered pixel)."""
    n, h, w = masks.shape
    winner = np.full((h, w), -1)
    for y in range(h):
        for x in range(w):
            best = None
            for i in range(n):
                if not masks[i, y, x]:
                    continue
                key = (confidences[i], -masks[i].sum(), -i)
                if best is None or key > best[0]:
                    best = (key, i)
            if best is not None:
                winner[y, x] = best[1]
    out = np.full((h, w), ignore_value)
    covered = [(y, x) for y in range(h) for x in range(w) if winner[y, x] >= 0]
    for y in range(h):
        for x in range(w):
            if winner[y, x] >= 0:
                out[y, x] = class_ids[winner[y, x]]
            elif fill_uncovered and covered:
                d = [((y - cy) ** 2 + (x - cx) ** 2, cy, cx) for cy, cx in covered]
                _, cy, cx = min(d)  # one nearest pixel; distance ties are checked separately by the caller
                out[y, x] = class_ids[winner[cy, cx]]
    return out, winner


def test_more_confident_segment_wins_overlap():
    masks = np.zeros((2, 4, 6), bool)
    masks[0, :, :4] = True  # class 1, confidence 0.9
    masks[1, :, 2:] = True  # class 2, confidence 0.5
    out = paint(masks, np.array([1, 2]), np.array([0.9, 0.5]))
    assert (out[:, :4] == 1).all() and (out[:, 4:] == 2).all()
    out = paint(masks, np.array([1, 2]), np.array([0.4, 0.5]))
    assert (out[:, :2] == 1).all() and (out[:, 2:] == 2).all()


def test_smaller_segment_wins_a_confidence_tie():
    masks = np.zeros((2, 5, 5), bool)
    masks[0] = True  # big, class 3
    masks[1, 1:3, 1:3] = True  # small, class 7, same confidence
    out = paint(masks, np.array([3, 7]), np.array([0.6, 0.6]))
    expected = np.full((5, 5), 3)
    expected[1:3, 1:3] = 7
    assert (out == expected).all()
    # The order of the segments does not matter.
    out2 = paint(masks[::-1].copy(), np.array([7, 3]), np.array([0.6, 0.6]))
    assert (out2 == expected).all()


def test_uncovered_pixels_take_the_nearest_segment_or_ignore():
    masks = np.zeros((2, 1, 9), bool)
    masks[0, 0, 0:2] = True  # class 1 on the left
    masks[1, 0, 7:9] = True  # class 2 on the right
    out = paint(masks, np.array([1, 2]), np.array([0.5, 0.5]))
    assert out[0, 4] in (1, 2)  # equidistant
    assert out[0, :4].tolist() == [1, 1, 1, 1] and out[0, 5:].tolist() == [2, 2, 2, 2]
    out = paint(masks, np.array([1, 2]), np.array([0.5, 0.5]), ignore_value=255, fill_uncovered=False)
    assert out[0].tolist() == [1, 1, 255, 255, 255, 255, 255, 2, 2]


def test_no_segments_is_all_ignore_and_unlabelled_segments_keep_their_pixels():
    out = paint(np.zeros((0, 3, 4), bool), np.zeros(0), np.zeros(0), ignore_value=255)
    assert out.shape == (3, 4) and (out == 255).all()
    masks = np.zeros((2, 2, 2), bool)
    masks[0] = True
    masks[1, 0, 0] = True
    out = paint(masks, np.array([4, 255]), np.array([0.2, 0.9]))
    assert out[0, 0] == 255 and (out.ravel()[1:] == 4).all()


def test_sixteen_bit_ids():
    masks = np.ones((1, 2, 2), bool)
    out = paint(masks, np.array([800]), np.array([1.0]), ignore_value=65535, dtype=np.uint16)
    assert out.dtype == np.uint16 and (out == 800).all()


def test_agrees_with_naive_reference_on_random_overlapping_masks():
    rng = np.random.default_rng(0)
    for trial in range(12):
        h, w, n = rng.integers(5, 14), rng.integers(5, 14), rng.integers(1, 7)
        masks = np.zeros((n, h, w), bool)
        for i in range(n):
            y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
            masks[i, y0:y0 + rng.integers(1, h), x0:x0 + rng.integers(1, w)] = True
        # Coarse confidences so ties (broken by area, then index) really happen.
        conf = rng.integers(0, 3, size=n) / 2.0
        classes = rng.integers(0, 5, size=n)
        fast_winner = winning_segment(masks, conf, fill_uncovered=False)
        fast = paint(masks, classes, conf, fill_uncovered=True)
        slow, slow_winner = naive_paint(masks, classes, conf)
        assert (fast_winner == slow_winner).all(), trial
        covered = slow_winner >= 0
        assert (fast[covered] == slow[covered]).all(), trial
        # Holes: the class must be that of one of the nearest covered pixels (EDT breaks distance ties its way).
        cov = np.argwhere(covered)
        for y, x in np.argwhere(~covered):
            d = ((cov - [y, x]) ** 2).sum(1)
            allowed = {classes[slow_winner[cy, cx]] for cy, cx in cov[d == d.min()]}
            assert fast[y, x] in allowed, (trial, y, x)


def _random_overlapping(rng, h, w, n):
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        masks[i, y0:y0 + rng.integers(1, h), x0:x0 + rng.integers(1, w)] = True
    return masks


def test_compact_rle_segments_paint_like_the_naive_reference():
    """SAM-like overlapping masks carried as RLE (never stacked) take the pixels the per-pixel reference gives."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        h, w, n = rng.integers(5, 14), rng.integers(5, 14), rng.integers(1, 7)
        masks = _random_overlapping(rng, h, w, n)
        conf = rng.integers(0, 3, size=n) / 2.0
        compact = SegmentMasks.from_rles(encode_masks(masks), h, w)
        _, slow_winner = naive_paint(masks, rng.integers(0, 5, size=n), conf)
        np.testing.assert_array_equal(winning_segment(compact, conf, fill_uncovered=False), slow_winner, str(trial))


def test_a_partition_is_its_own_winner_map_and_holes_take_the_nearest_segment():
    id_map = np.array([[0, 0, -1, 1, 1], [0, -1, -1, -1, 1]], np.int32)
    compact = SegmentMasks.from_id_map(id_map, 2)
    np.testing.assert_array_equal(winning_segment(compact, np.array([0.1, 0.9]), fill_uncovered=False), id_map)
    filled = paint(compact, np.array([3, 7]), np.array([0.1, 0.9]))
    assert filled[0].tolist() == [3, 3, filled[0, 2], 7, 7] and filled[0, 2] in (3, 7)
    assert filled[1].tolist()[:2] == [3, 3] and filled[1].tolist()[3:] == [7, 7]


def test_upsampling_takes_the_working_pixel_with_the_nearest_centre():
    rng = np.random.default_rng(6)
    for _ in range(20):
        h, w = rng.integers(1, 9, size=2)
        height, width = rng.integers(1, 40, size=2)
        small = rng.integers(0, 250, size=(h, w)).astype(np.uint8)
        big = upsample_nearest(small, int(height), int(width))
        assert big.shape == (height, width) and big.dtype == np.uint8
        for y in range(height):
            for x in range(width):
                # Distances between pixel centres in the image's own [0, 1] coordinates (brute force).
                dy = np.abs((np.arange(h) + 0.5) / h - (y + 0.5) / height)
                dx = np.abs((np.arange(w) + 0.5) / w - (x + 0.5) / width)
                rows, cols = np.flatnonzero(dy <= dy.min() + 1e-12), np.flatnonzero(dx <= dx.min() + 1e-12)
                assert big[y, x] in {small[r, c] for r in rows for c in cols}


def test_paint_image_paints_at_the_working_size_and_writes_at_the_input_size():
    id_map = np.zeros((4, 6), np.int32)
    id_map[:, 3:] = 1
    request = LabelRequest(("a", "b"))
    labels = paint_image(SegmentMasks.from_id_map(id_map, 2), Decision(np.array([0, 1]), np.array([0.5, 0.5])),
                         request, size=(40, 60))
    assert labels.working_map.shape == (4, 6) and labels.label_map.shape == (40, 60)
    assert (labels.label_map[:, :30] == 0).all() and (labels.label_map[:, 30:] == 1).all()
    np.testing.assert_array_equal(labels.areas, [12, 12])  # areas stay at the working size
