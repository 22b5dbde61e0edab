"""The Mask step: the configured class-agnostic masker per image; masks leave this step as COCO RLE.

The masker is built with min_area=0 so that segments below the minimum area are *seen* and recorded as
"too_small" drops (every masker segment is accounted for); `max_masks` still bounds memory inside the masker
(it keeps the largest), so segments beyond it are never produced and are not counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from models.config import ModelsConfig
from models.maskers import Segments, build_masker
from transforms.handlers import ItemModelHandler


def segment_fields(masks, scores: np.ndarray, min_area: int) -> dict:
    """Segments -> the item fields every later step reads (dense masks are not kept). `masks`: bool [N,H,W], or
    the masker's `Segments` (then `scores` is ignored).

    `keep`: the segments that pass the minimum area; `to_embed`: the segments the Embed step will embed (all the
    kept ones, until the Pair step narrows them to the paired ones). `segment_map` (only for maskers that partition
    the image): int32 [H,W] segment index per pixel, -1 = none, so later steps need no N x H x W masks.
    """
    segments = masks if isinstance(masks, Segments) else Segments(masks, scores)
    areas = segments.areas
    keep = areas >= max(int(min_area), 1)
    fields = {
        "rles": segments.rles(),
        "areas": areas,
        "bboxes": segments.bboxes,
        "keep": keep,
        "to_embed": np.flatnonzero(keep),
    }
    if segments.id_map is not None:
        fields["segment_map"] = segments.id_map
    return fields


class MaskerModelHandler(ItemModelHandler):
    stage = "mask"
    metrics_name = "masker"

    def build(self, models: ModelsConfig):
        unfiltered = dataclasses.replace(models.masker, min_area=0)
        return build_masker(unfiltered, device=models.visual.device)

    def apply(self, items: list[dict], masker) -> None:
        min_area = self.models.masker.min_area
        for item in items:
            segments = masker(item["image"])
            item.update(segment_fields(segments, None, min_area))
