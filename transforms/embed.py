"""The Embed step: the retrieval key and filtering signal, as a RunInference ModelHandler batched across images.

A thin shell over models.visual.embed_images (which the Python API, inference.api, calls too): one forward of the
visual encoder per image (images are resized to its fixed square input, so images of any size batch together);
the masks of the item's `to_embed` segments are mask-pooled from the patch tokens. Both jobs use it: the index job
after pairing (only paired segments become reference rows), the labelling job for every kept segment.
"""

from __future__ import annotations

import numpy as np

from models.config import ModelsConfig
from models.rle import decode_masks
from models.segment_masks import segments_of
from models.visual import VisualEncoder, embed_images
from transforms.handlers import ItemModelHandler

__all__ = ["VisualModelHandler", "has_segments", "kept_masks", "masks_of", "segments_of"]


def masks_of(item: dict, indices) -> np.ndarray:
    """Dense bool [n,H,W] of some of the item's segments, decoded from RLE just for a forward pass."""
    return decode_masks([item["rles"][i] for i in indices], item["height"], item["width"])


def kept_masks(item: dict) -> np.ndarray:
    return masks_of(item, np.flatnonzero(item["keep"]))


def has_segments(item: dict) -> bool:
    return bool(np.any(item.get("keep", ())))


class VisualModelHandler(ItemModelHandler):
    """item -> item with `visual`: float32 [len(to_embed), D] unit vectors, row i for segment to_embed[i]."""

    stage = "embed"
    metrics_name = "visual"

    def build(self, models: ModelsConfig):
        return VisualEncoder(models.visual)

    def wants(self, item: dict) -> bool:
        return len(item.get("to_embed", ())) > 0

    def apply(self, items: list[dict], encoder) -> None:
        for item, embedding in zip(items, embed_images(encoder, items), strict=True):
            item["visual"] = embedding
