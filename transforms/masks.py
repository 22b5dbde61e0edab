"""The Mask step: the configured class-agnostic masker per image; masks leave this step as COCO RLE.

A thin shell over models.maskers (build_step_masker, mask_images, segment_fields), which the Python API
(inference.api) calls too. One masker call per batch (`masker.batch`): SAM's fast generator embeds the batch's
images in batched image-encoder passes; Felzenszwalb works image by image either way.

The masker is built with min_area=0 so that segments below the minimum area are *seen* and recorded as
"too_small" drops (every masker segment is accounted for); `max_masks` still bounds memory inside the masker
(it keeps the largest), so segments beyond it are never produced and are not counted.
"""

from __future__ import annotations

from models.config import ModelsConfig
from models.maskers import build_step_masker, mask_images, segment_fields
from transforms.handlers import ItemModelHandler

__all__ = ["MaskerModelHandler", "segment_fields"]


class MaskerModelHandler(ItemModelHandler):
    stage = "mask"
    metrics_name = "masker"

    def build(self, models: ModelsConfig):
        return build_step_masker(models)

    def apply(self, items: list[dict], masker) -> None:
        fields = mask_images(masker, [item["image"] for item in items], self.models.masker.min_area)
        for item, found in zip(items, fields, strict=True):
            item.update(found)
