"""Painting: segment-level class decisions -> one per-pixel label map (SPEC §1, labelling step 5).

Rules: a pixel takes the class of the most confident segment covering it; among equally confident segments the
smaller one wins (it is the more specific region); remaining ties go to the lower segment index so the result is
deterministic. Pixels no segment covers take the class of the nearest covered pixel's segment (Euclidean
distance transform), or `ignore_value` when the caller asks for that.

The work is vectorised: one boolean-indexed write per segment in priority order (painter's algorithm), and one
distance transform for the holes; no per-pixel Python.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def paint_order(confidences: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Segment indices in painting order: lowest priority first, so the winner of every pixel is painted last.

    Priority = (confidence, smaller area, lower index), compared in that order.
    """
    n = len(confidences)
    index = np.arange(n)
    # np.lexsort sorts by the last key first; ascending on all keys puts the highest priority last.
    return np.lexsort((-index, -np.asarray(areas, dtype=np.int64), np.asarray(confidences, dtype=np.float64)))


def winning_segment(masks: np.ndarray, confidences: np.ndarray, fill_uncovered: bool = True) -> np.ndarray:
    """int32 [H,W]: index of the segment each pixel takes (-1 where nothing covers it and fill is off).

    masks: bool [N,H,W]; confidences: float [N].
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N,H,W], got shape {masks.shape}")
    n, height, width = masks.shape
    if len(confidences) != n:
        raise ValueError(f"{n} masks but {len(confidences)} confidences")
    winner = np.full((height, width), -1, dtype=np.int32)
    if n == 0:
        return winner
    areas = masks.reshape(n, -1).sum(axis=1)
    flat = winner.reshape(-1)
    flat_masks = masks.reshape(n, -1)
    for i in paint_order(confidences, areas):
        flat[flat_masks[i]] = i
    if fill_uncovered:
        holes = winner < 0
        if holes.any() and not holes.all():
            # For every hole pixel, the coordinates of the nearest covered pixel.
            _, (rows, cols) = ndimage.distance_transform_edt(holes, return_distances=True, return_indices=True)
            winner = winner[rows, cols]
    return winner


def paint(
    masks: np.ndarray,
    class_ids: np.ndarray,
    confidences: np.ndarray,
    ignore_value: int = 255,
    fill_uncovered: bool = True,
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """Per-pixel class map [H,W] from segments and their (class id, confidence).

    Segments whose class is `ignore_value` (unlabelled) still claim their pixels: a confident "don't know" is not
    overwritten by a less confident guess. Pixels left uncovered get the nearest segment's class when
    `fill_uncovered`, else `ignore_value`; an image with no segments is all `ignore_value`.
    """
    class_ids = np.asarray(class_ids)
    winner = winning_segment(masks, np.asarray(confidences), fill_uncovered=fill_uncovered)
    lookup = np.append(class_ids.astype(np.int64), ignore_value)  # index -1 -> ignore_value
    return lookup[winner].astype(dtype)
