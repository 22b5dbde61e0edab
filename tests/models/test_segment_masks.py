"""Compact segments: an id map, RLE or dense masks give the same areas, boxes, RLEs, crops and pooled embeddings."""

import numpy as np
import pytest
import torch

from models.config import FelzenszwalbConfig
from models.maskers import FelzenszwalbMasker, Segments, segment_fields
from models.pooling import mask_pool, mask_weights
from models.rle import decode_masks, encode_masks
from models.segment_masks import SegmentMasks, segments_of


def _partition(rng, height=23, width=31, n=7):
    """A random partition with some uncovered pixels (-1) and one declared segment that owns no pixel."""
    id_map = rng.integers(-1, n - 1, size=(height, width)).astype(np.int32)  # id n-1 never occurs
    return id_map, n


def _all_forms(id_map, n):
    dense = id_map[None] == np.arange(n)[:, None, None]
    return dense, [SegmentMasks.from_id_map(id_map, n), SegmentMasks.from_rles(encode_masks(dense), *id_map.shape),
                   SegmentMasks.from_dense(dense)]


def test_every_backing_agrees_with_the_dense_masks():
    rng = np.random.default_rng(0)
    id_map, n = _partition(rng)
    dense, forms = _all_forms(id_map, n)
    # Independent expectations from the dense array.
    areas = dense.reshape(n, -1).sum(1)
    for form in forms:
        assert len(form) == n and form.shape == (n, *id_map.shape)
        np.testing.assert_array_equal(form.areas(), areas)
        np.testing.assert_array_equal(form.dense(), dense)
        np.testing.assert_array_equal(decode_masks(form.rles(), *id_map.shape), dense)
        for i, (x, y, w, h) in enumerate(form.bboxes()):
            ys, xs = np.nonzero(dense[i])
            if len(ys) == 0:
                assert w == h == 0
            else:
                assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        seen = set()
        for i, y0, x0, crop in form.crops():
            seen.add(i)
            rebuilt = np.zeros_like(dense[i])
            rebuilt[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
            np.testing.assert_array_equal(rebuilt, dense[i])
        assert seen == {i for i in range(n) if dense[i].any()}  # empty segments yield no crop


def test_subset_renumbers_in_the_given_order():
    rng = np.random.default_rng(1)
    id_map, n = _partition(rng)
    dense, forms = _all_forms(id_map, n)
    pick = [4, 0, 2]
    for form in forms:
        sub = form.subset(pick)
        assert len(sub) == 3
        np.testing.assert_array_equal(sub.dense(), dense[pick])
    part = forms[0].subset(pick)
    assert part.is_partition and set(np.unique(part.id_map)) <= {-1, 0, 1, 2}


def test_an_id_map_holding_an_undeclared_segment_is_refused():
    with pytest.raises(ValueError, match="declared"):
        SegmentMasks.from_id_map(np.array([[0, 3]]), count=2)


def test_pooling_from_compact_segments_equals_pooling_from_dense_masks():
    rng = np.random.default_rng(2)
    id_map, n = _partition(rng, 37, 53, 9)
    dense, forms = _all_forms(id_map, n)
    tokens = torch.from_numpy(rng.normal(size=(7, 5, 16)).astype(np.float32))
    expected_w = mask_weights(torch.from_numpy(dense), (7, 5))
    expected = mask_pool(tokens, dense)
    for form in forms:
        torch.testing.assert_close(mask_weights(form, (7, 5)), expected_w, rtol=0, atol=0)
        torch.testing.assert_close(mask_pool(tokens, form), expected, rtol=0, atol=0)


def test_felzenszwalb_keeps_its_label_map_and_the_item_carries_it():
    rng = np.random.default_rng(3)
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = 200
    image[20:, :30, 2] = 150
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    segments = FelzenszwalbMasker(FelzenszwalbConfig(min_size=10))(image)
    assert isinstance(segments, Segments) and segments.id_map is not None and segments.id_map.shape == (40, 60)
    assert (segments.id_map >= 0).all() and segments.id_map.max() == len(segments) - 1  # a partition
    fields = segment_fields(segments, None, min_area=1)
    np.testing.assert_array_equal(fields["segment_map"], segments.id_map)
    item = {**fields, "height": 40, "width": 60}
    compact = segments_of(item, fields["to_embed"])
    assert compact.is_partition
    np.testing.assert_array_equal(compact.dense(), decode_masks(fields["rles"], 40, 60))
    # Without a segment map (SAM: overlapping masks) the same segments come from RLE.
    from_rle = segments_of({k: v for k, v in item.items() if k != "segment_map"}, fields["to_embed"])
    assert not from_rle.is_partition
    np.testing.assert_array_equal(from_rle.dense(), compact.dense())
