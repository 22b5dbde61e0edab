"""Mask pooling: every segment of an image from ONE forward pass, in one matrix product.

Masks are resized to the token grid as *area fractions* (the share of each token cell's area the mask covers, exact
for any image size), so a token half-covered by a segment gets weight 0.5. Every non-empty mask therefore gives at least one token a non-zero
weight, however small the segment. The pooled vector is the weighted mean of patch tokens, L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _overlap(n_pixels: int, n_cells: int, device) -> torch.Tensor:
    """[n_cells, n_pixels]: length of pixel p's extent [p, p+1) inside cell c's extent [c*s, (c+1)*s), s=n_pixels/n_cells."""
    step = n_pixels / n_cells
    start = torch.arange(n_cells, device=device, dtype=torch.float64)[:, None] * step
    pixel = torch.arange(n_pixels, device=device, dtype=torch.float64)[None, :]
    return (torch.minimum(pixel + 1, start + step) - torch.maximum(pixel, start)).clamp_(min=0).float()


def mask_weights(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """bool/float [N,H,W] -> float32 [N, h*w]: the fraction of each token cell's area that each mask covers.

    Exact area fractions for any H,W (cells need not align with pixels): W_n = Ry · M_n · Rxᵀ / cell_area with
    Ry, Rx the pixel/cell overlap lengths. Each mask is cut to its bounding box first, so the cost is the sum of
    the segments' bbox areas, not N·H·W (no [N,H,W] float copy of the masks is ever made).
    """
    n, height, width = masks.shape
    h, w = grid
    ry, rx = _overlap(height, h, masks.device), _overlap(width, w, masks.device)
    cell_area = (height / h) * (width / w)
    out = torch.zeros((n, h * w), dtype=torch.float32, device=masks.device)
    occupied = (masks if masks.dtype == torch.bool else masks != 0).view(torch.uint8)  # amax: ~8x faster than any()
    rows, cols = occupied.amax(dim=2).cpu().numpy(), occupied.amax(dim=1).cpu().numpy()
    for i in range(n):
        ys, xs = rows[i].nonzero()[0], cols[i].nonzero()[0]
        if len(ys) == 0:
            continue  # empty mask: no weight anywhere
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        crop = masks[i, y0:y1, x0:x1].to(torch.float32)
        out[i] = (ry[:, y0:y1] @ crop @ rx[:, x0:x1].T).reshape(-1) / cell_area
    return out


def mask_pool(tokens: torch.Tensor, masks) -> torch.Tensor:
    """Weighted mean of patch tokens under each mask, unit-norm.

    tokens: [h,w,D] or [1,h,w,D] (one image); masks: bool/float [N,H,W] (any H,W; numpy or torch).
    Returns float32 [N,D]. An empty mask yields a zero vector (nothing to pool).
    """
    if tokens.dim() == 4:
        if tokens.shape[0] != 1:
            raise ValueError("mask_pool takes the tokens of one image: [h,w,D] or [1,h,w,D]")
        tokens = tokens[0]
    if tokens.dim() != 3:
        raise ValueError(f"mask_pool expects tokens [h,w,D], got {tuple(tokens.shape)}")
    masks = torch.as_tensor(masks, device=tokens.device)
    if masks.dim() != 3:
        raise ValueError(f"mask_pool expects masks [N,H,W], got {tuple(masks.shape)}")
    h, w, d = tokens.shape
    if masks.shape[0] == 0:
        return torch.zeros((0, d), dtype=torch.float32, device=tokens.device)
    weights = mask_weights(masks, (h, w))  # [N, h*w]
    pooled = weights @ tokens.reshape(h * w, d).to(torch.float32)  # [N, D]
    pooled = pooled / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return F.normalize(pooled, dim=1)
