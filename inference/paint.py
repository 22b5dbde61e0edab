"""Painting: segment-level class decisions -> one per-pixel label map (SPEC §1, labelling step 5).

Rules: a pixel takes the class of the most confident segment covering it; among equally confident segments the
smaller one wins (it is the more specific region); remaining ties go to the lower segment index so the result is
deterministic. Pixels no segment covers take the class of the nearest covered pixel's segment (Euclidean
distance transform), or `ignore_value` when the caller asks for that.

Painting works at the *working size* (where masks and embeddings are made) from compact segments: an id map
(a partition, its own winner map) or RLE masks taken one at a time; never N dense masks. The class map is then
brought to the input's own size by nearest-neighbour upsampling (`upsample_nearest`), one byte (or two, for 16-bit
ids) per output pixel. The work is vectorised: one boolean write per segment, one distance transform for the
holes; no per-pixel Python.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.segment_masks import SegmentMasks


def paint_order(confidences: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Segment indices in painting order: lowest priority first, so the winner of every pixel is painted last.

    Priority = (confidence, smaller area, lower index), compared in that order.
    """
    n = len(confidences)
    index = np.arange(n)
    # np.lexsort sorts by the last key first; ascending on all keys puts the highest priority last.
    return np.lexsort((-index, -np.asarray(areas, dtype=np.int64), np.asarray(confidences, dtype=np.float64)))


def as_segment_masks(masks) -> SegmentMasks:
    """SegmentMasks as given, or dense bool [N,H,W] wrapped (tests and small callers)."""
    if isinstance(masks, SegmentMasks):
        return masks
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N,H,W], got shape {masks.shape}")
    return SegmentMasks.from_dense(masks)


def winning_segment(masks, confidences: np.ndarray, fill_uncovered: bool = True) -> np.ndarray:
    """int32 [H,W]: index of the segment each pixel takes (-1 where nothing covers it and fill is off).

    masks: models.segment_masks.SegmentMasks (id map or RLE) or dense bool [N,H,W]; confidences: float [N].
    A partition (an id map) is its own winner map. Overlapping segments are painted one at a time into a map of
    the winner's priority rank (a z-buffer: a segment takes the pixels whose current winner ranks lower), so
    memory is two [H,W] maps plus one segment's crop, and the result equals painting in priority order.
    """
    masks = as_segment_masks(masks)
    n, height, width = masks.shape
    if len(confidences) != n:
        raise ValueError(f"{n} masks but {len(confidences)} confidences")
    if n == 0:
        return np.full((height, width), -1, dtype=np.int32)
    if masks.is_partition:
        winner = masks.id_map.astype(np.int32, copy=True)
    else:
        order = paint_order(np.asarray(confidences), masks.areas())
        rank = np.empty(n, dtype=np.int32)
        rank[order] = np.arange(n, dtype=np.int32)
        ranks = np.full((height, width), -1, dtype=np.int32)
        for i, y0, x0, crop in masks.crops():
            window = ranks[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]]
            window[crop & (window < rank[i])] = rank[i]
        winner = np.where(ranks >= 0, order.astype(np.int32)[np.maximum(ranks, 0)], -1).astype(np.int32)
    if fill_uncovered:
        holes = winner < 0
        if holes.any() and not holes.all():
            # For every hole pixel, the coordinates of the nearest covered pixel.
            _, (rows, cols) = ndimage.distance_transform_edt(holes, return_distances=True, return_indices=True)
            winner = winner[rows, cols]
    return winner


def paint(
    masks,
    class_ids: np.ndarray,
    confidences: np.ndarray,
    ignore_value: int = 255,
    fill_uncovered: bool = True,
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """Per-pixel class map [H,W] (the masks' size) from segments and their (class id, confidence).

    Segments whose class is `ignore_value` (unlabelled) still claim their pixels: a confident "don't know" is not
    overwritten by a less confident guess. Pixels left uncovered get the nearest segment's class when
    `fill_uncovered`, else `ignore_value`; an image with no segments is all `ignore_value`.
    """
    class_ids = np.asarray(class_ids)
    winner = winning_segment(masks, np.asarray(confidences), fill_uncovered=fill_uncovered)
    lookup = np.append(class_ids.astype(np.int64), ignore_value).astype(dtype)  # index -1 -> ignore_value
    return lookup[winner]


def source_pixels(source: int, working: int) -> np.ndarray:
    """For each of `source` output pixels along one axis, the working-size pixel whose centre is nearest to its
    centre: floor((i + 0.5) * working / source), the same centre-aligned mapping as the decoder's resize."""
    index = np.floor((np.arange(source, dtype=np.float64) + 0.5) * (working / source)).astype(np.int64)
    return np.minimum(index, working - 1)


def upsample_nearest(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A working-size map [h,w] at the input's size [height,width], nearest neighbour per pixel (ids never blend).

    Two takes (rows, then columns): the only arrays made are [height,w] and the result [height,width].
    """
    h, w = label_map.shape
    if (h, w) == (height, width):
        return label_map
    return label_map.take(source_pixels(height, h), axis=0).take(source_pixels(width, w), axis=1)
