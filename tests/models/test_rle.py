import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.rle import decode_masks, decode_rle, encode_masks


def test_round_trip_random_and_edge_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 31, 47)) > 0.6
    masks[0] = False  # empty
    masks[1] = True  # full
    masks[2] = False
    masks[2, 0, 0] = masks[2, -1, -1] = True  # corner pixels only
    rles = encode_masks(masks)
    assert all(isinstance(r, bytes) for r in rles)
    np.testing.assert_array_equal(decode_masks(rles, 31, 47), masks)
    for i, r in enumerate(rles):
        np.testing.assert_array_equal(decode_rle(r, 31, 47), masks[i])
        np.testing.assert_array_equal(decode_rle(r.decode("ascii"), 31, 47), masks[i])  # str counts accepted


def test_counts_are_standard_coco_rle_area_and_bbox():
    masks = np.zeros((1, 10, 20), dtype=bool)
    masks[0, 2:5, 3:9] = True  # 3 rows x 6 cols
    rle = {"size": [10, 20], "counts": encode_masks(masks)[0]}
    assert mask_utils.area(rle) == 18
    np.testing.assert_allclose(mask_utils.toBbox(rle), [3, 2, 6, 3])


def test_empty_list_and_bad_shape():
    assert encode_masks(np.zeros((0, 4, 4), dtype=bool)) == []
    assert decode_masks([], 4, 6).shape == (0, 4, 6)
    with pytest.raises(ValueError):
        encode_masks(np.zeros((4, 4), dtype=bool))
