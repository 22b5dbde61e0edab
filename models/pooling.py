"""Mask pooling: every segment of an image from ONE forward pass, in one matrix product.

Masks are resized to the token grid as *area fractions* (the share of each token cell's area the mask covers, exact
for any image size), so a token half-covered by a segment gets weight 0.5. Every non-empty mask therefore gives at least one token a non-zero
weight, however small the segment. The pooled vector is the weighted mean of patch tokens, L2-normalised.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.segment_masks import SegmentMasks


def _overlap(n_pixels: int, n_cells: int, device) -> torch.Tensor:
    """[n_cells, n_pixels]: length of pixel p's extent [p, p+1) inside cell c's extent [c*s, (c+1)*s), s=n_pixels/n_cells."""
    step = n_pixels / n_cells
    start = torch.arange(n_cells, device=device, dtype=torch.float64)[:, None] * step
    pixel = torch.arange(n_pixels, device=device, dtype=torch.float64)[None, :]
    return (torch.minimum(pixel + 1, start + step) - torch.maximum(pixel, start)).clamp_(min=0).float()


def mask_weights(masks, grid: tuple[int, int], device=None) -> torch.Tensor:
    """bool/float [N,H,W] (tensor or numpy), or a compact models.segment_masks.SegmentMasks -> float32 [N, h*w]: the
    fraction of each token cell's area that each mask covers.

    Exact area fractions for any H,W (cells need not align with pixels): W_n = Ry · M_n · Rxᵀ / cell_area with
    Ry, Rx the pixel/cell overlap lengths. Each mask is cut to its bounding box first, so the cost is the sum of
    the segments' bbox areas, not N·H·W (no [N,H,W] float copy of the masks is ever made). Compact segments are
    cut one at a time from their id map or RLE (memory bounded by one image, whatever N), with the same result,
    on `device` (default CPU).
    """
    if isinstance(masks, SegmentMasks):
        n, height, width = masks.shape
        device = torch.device(device or "cpu")
        crops = ((i, y0, x0, torch.from_numpy(np.ascontiguousarray(crop)).to(device)) for i, y0, x0, crop in masks.crops())
    else:
        masks = torch.as_tensor(masks)
        n, height, width = masks.shape
        device = masks.device
        crops = _dense_crops(masks)
    h, w = grid
    ry, rx = _overlap(height, h, device), _overlap(width, w, device)
    cell_area = (height / h) * (width / w)
    out = torch.zeros((n, h * w), dtype=torch.float32, device=device)
    for i, y0, x0, crop in crops:
        y1, x1 = y0 + crop.shape[0], x0 + crop.shape[1]
        out[i] = (ry[:, y0:y1] @ crop.to(torch.float32) @ rx[:, x0:x1].T).reshape(-1) / cell_area
    return out


def _dense_crops(masks: torch.Tensor):
    """(index, y0, x0, crop) of each non-empty mask of a dense [N,H,W] tensor."""
    occupied = (masks if masks.dtype == torch.bool else masks != 0).view(torch.uint8)  # amax: ~8x faster than any()
    rows, cols = occupied.amax(dim=2).cpu().numpy(), occupied.amax(dim=1).cpu().numpy()
    for i in range(masks.shape[0]):
        ys, xs = rows[i].nonzero()[0], cols[i].nonzero()[0]
        if len(ys) == 0:
            continue  # empty mask: no weight anywhere
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        yield i, y0, x0, masks[i, y0:y1, x0:x1]


def mask_pool(tokens: torch.Tensor, masks) -> torch.Tensor:
    """Weighted mean of patch tokens under each mask, unit-norm.

    tokens: [h,w,D] or [1,h,w,D] (one image); masks: bool/float [N,H,W] (any H,W; numpy or torch), or a compact
    SegmentMasks (id map or RLE; pooled one segment at a time).
    Returns float32 [N,D]. An empty mask yields a zero vector (nothing to pool).
    """
    if tokens.dim() == 4:
        if tokens.shape[0] != 1:
            raise ValueError("mask_pool takes the tokens of one image: [h,w,D] or [1,h,w,D]")
        tokens = tokens[0]
    if tokens.dim() != 3:
        raise ValueError(f"mask_pool expects tokens [h,w,D], got {tuple(tokens.shape)}")
    if not isinstance(masks, SegmentMasks):
        masks = torch.as_tensor(masks, device=tokens.device)
        if masks.dim() != 3:
            raise ValueError(f"mask_pool expects masks [N,H,W], got {tuple(masks.shape)}")
    h, w, d = tokens.shape
    if masks.shape[0] == 0:
        return torch.zeros((0, d), dtype=torch.float32, device=tokens.device)
    weights = mask_weights(masks, (h, w), tokens.device)  # [N, h*w]
    pooled = weights @ tokens.reshape(h * w, d).to(torch.float32)  # [N, D]
    pooled = pooled / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return F.normalize(pooled, dim=1)
