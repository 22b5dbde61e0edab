"""The Embed step: the retrieval key and filtering signal, as a RunInference ModelHandler batched across images.

One forward of the visual encoder per image (images are resized to its fixed square input, so images of any size
batch together); the masks of the item's `to_embed` segments are mask-pooled from the patch tokens
(models.visual.VisualEncoder.embed_segments). Both jobs use it: the index job after pairing (only paired
segments become reference rows), the labelling job for every kept segment.
"""

from __future__ import annotations

import numpy as np

from models.config import ModelsConfig
from models.rle import decode_masks
from models.segment_masks import SegmentMasks
from models.visual import VisualEncoder
from transforms.handlers import ItemModelHandler


def masks_of(item: dict, indices) -> np.ndarray:
    """Dense bool [n,H,W] of some of the item's segments, decoded from RLE just for a forward pass."""
    return decode_masks([item["rles"][i] for i in indices], item["height"], item["width"])


def segments_of(item: dict, indices) -> SegmentMasks:
    """Some of the item's segments, compact (models.segment_masks): from its segment map where the masker gave one,
    else from RLE; pooling and painting then take them one at a time, never as N x H x W."""
    if item.get("segment_map") is not None:
        every = SegmentMasks.from_id_map(item["segment_map"], len(item["rles"]))
    else:
        every = SegmentMasks.from_rles(item["rles"], item["height"], item["width"])
    return every.subset(indices)


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
        masks = [segments_of(it, it["to_embed"]) for it in items]
        embeddings = encoder.embed_segments([it["image"] for it in items], masks)
        for item, emb in zip(items, embeddings, strict=True):
            item["visual"] = np.asarray(emb, dtype=np.float32)
