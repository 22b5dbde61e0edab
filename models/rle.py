"""COCO run-length encoding of boolean masks via pycocotools (the format the reference set stores)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks: np.ndarray) -> list[bytes]:
    """bool [N,H,W] -> one COCO RLE `counts` byte string per mask (compressed pycocotools form)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"encode_masks expects [N,H,W] masks, got shape {masks.shape}")
    if len(masks) == 0:
        return []
    # pycocotools wants Fortran-ordered uint8 [H,W,N].
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return [rle["counts"] for rle in mask_utils.encode(fortran)]


def decode_rle(counts: bytes, height: int, width: int) -> np.ndarray:
    """One RLE `counts` (bytes or str) -> bool [H,W]."""
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return mask_utils.decode({"size": [int(height), int(width)], "counts": counts}).astype(bool)


def decode_masks(rles: list[bytes], height: int, width: int) -> np.ndarray:
    """List of RLE counts -> bool [N,H,W] (N may be 0)."""
    if len(rles) == 0:
        return np.zeros((0, int(height), int(width)), dtype=bool)
    objs = [{"size": [int(height), int(width)], "counts": c.encode("ascii") if isinstance(c, str) else c} for c in rles]
    return mask_utils.decode(objs).transpose(2, 0, 1).astype(bool)
