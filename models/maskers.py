"""Class-agnostic maskers: one interface, image in -> `Segments` out.

* `felzenszwalb` — skimage.segmentation.felzenszwalb superpixels (the paper's default; CPU, no weights). The
  image is segmented at `max_side` and the label map is resized back with nearest neighbour, so every pixel
  belongs to exactly one segment. Felzenszwalb has no notion of confidence, so every score is 1.0. Its segments
  stay a label map (`Segments.id_map`, int32 segment index per pixel): a partition never needs N dense masks.
* `sam` — segment-anything's automatic mask generator with all of its parameters (MaskerConfig.sam). Scores are
  SAM's predicted IoU. `implementation="fast"` uses our `models.sam_fast.FastSamMaskGenerator` (same masks,
  faster), `"reference"` segment-anything's `SamAutomaticMaskGenerator`.

Both apply `min_area` then `max_masks` (largest first) and return masks in a deterministic order: area
descending, ties broken by the first pixel in row-major order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np

from models.config import FelzenszwalbConfig, MaskerConfig, ModelsConfig, SamConfig
from models.device import resolve_device
from models.segment_masks import SegmentMasks
from models.weights import load_sam

log = logging.getLogger(__name__)


class Segments:
    """Segments of one image from a masker: their masks (models.segment_masks.SegmentMasks: an id map for maskers
    that partition the image, else dense or RLE) and scores float32 [N].

    `Segments(masks, scores)` takes dense bool masks [N,H,W]; `Segments.from_id_map` keeps a partition compact.
    """

    def __init__(self, masks, scores):
        compact = masks if isinstance(masks, SegmentMasks) else SegmentMasks.from_dense(masks)
        self.compact = compact
        self.scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(compact) != len(self.scores):
            raise ValueError(f"Segments needs masks [N,H,W] and scores [N], got {compact.shape} and {self.scores.shape}")

    @classmethod
    def from_id_map(cls, id_map: np.ndarray, scores) -> Segments:
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        return cls(SegmentMasks.from_id_map(id_map, len(scores)), scores)

    def __len__(self) -> int:
        return len(self.compact)

    @property
    def masks(self) -> np.ndarray:
        """Dense bool [N,H,W] (built on demand from an id map: N x H x W bytes, for tests and small images)."""
        return self.compact.dense()

    @property
    def id_map(self) -> np.ndarray | None:
        """int32 [H,W] segment index per pixel (-1 = none) when the segments partition the image, else None."""
        return self.compact.id_map

    @property
    def areas(self) -> np.ndarray:
        return self.compact.areas()

    @property
    def bboxes(self) -> np.ndarray:
        """float32 [N,4] as (x, y, w, h), COCO style; zeros for an empty mask."""
        return self.compact.bboxes()

    def rles(self) -> list[bytes]:
        return self.compact.rles()


def order_and_limit(masks: np.ndarray, scores: np.ndarray, min_area: int = 0, max_masks: int = 0) -> Segments:
    """Drop masks below `min_area`, sort by (area desc, first pixel row-major), keep the first `max_masks`."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    n = len(masks)
    if n == 0:
        return Segments(masks.reshape((0,) + masks.shape[1:]), scores.reshape(0))
    flat = masks.reshape(n, -1)
    areas = flat.sum(axis=1)
    first = np.where(areas > 0, flat.argmax(axis=1), flat.shape[1])
    keep = np.flatnonzero(areas >= max(min_area, 1))
    order = keep[np.lexsort((first[keep], -areas[keep]))]
    if max_masks and max_masks > 0:
        order = order[:max_masks]
    return Segments(masks[order], scores[order])


def _resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum((np.arange(height) * labels.shape[0]) // height, labels.shape[0] - 1)
    cols = np.minimum((np.arange(width) * labels.shape[1]) // width, labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"maskers expect an RGB image [H,W,3], got shape {image.shape}")
    return image.astype(np.uint8, copy=False)


class FelzenszwalbMasker:
    def __init__(self, config: FelzenszwalbConfig, min_area: int = 0, max_masks: int = 0):
        self.config, self.min_area, self.max_masks = config, min_area, max_masks

    @property
    def info(self) -> dict:
        return {"kind": "felzenszwalb", **asdict(self.config), "min_area": self.min_area, "max_masks": self.max_masks}

    def label_map(self, image: np.ndarray) -> np.ndarray:
        """int label per pixel at the input size (every pixel in exactly one region)."""
        from skimage.segmentation import felzenszwalb
        from skimage.transform import resize

        image = _check_image(image)
        h, w = image.shape[:2]
        small = image
        side = self.config.max_side
        if side and max(h, w) > side:
            s = side / max(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            small = (resize(image, size, order=1, anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8)
        labels = felzenszwalb(small, scale=self.config.scale, sigma=self.config.sigma, min_size=self.config.min_size)
        return _resize_nearest(labels, h, w) if labels.shape != (h, w) else labels

    def __call__(self, image: np.ndarray) -> Segments:
        labels = self.label_map(image)
        ids, first, areas = np.unique(labels.ravel(), return_index=True, return_counts=True)
        keep = areas >= max(self.min_area, 1)
        ids, first, areas = ids[keep], first[keep], areas[keep]
        order = np.lexsort((first, -areas))
        if self.max_masks and self.max_masks > 0:
            order = order[: self.max_masks]
        ids = ids[order]
        # The label map renumbered to the kept segments' order (-1 elsewhere): a partition needs no N masks.
        lookup = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int32)
        lookup[ids] = np.arange(len(ids), dtype=np.int32)
        return Segments.from_id_map(lookup[labels], np.ones(len(ids), dtype=np.float32))

    def batch(self, images: list[np.ndarray]) -> list[Segments]:
        return [self(image) for image in images]


GENERATOR_PARAMS = (
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
    "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio", "crop_n_points_downscale_factor",
    "min_mask_region_area",
)


def sam_generator_kwargs(config: SamConfig) -> dict:
    """SamConfig -> the keyword arguments of SamAutomaticMaskGenerator (minus the model)."""
    return {name: getattr(config, name) for name in GENERATOR_PARAMS} | {"output_mode": "binary_mask"}


class SamMasker:
    def __init__(self, config: SamConfig, min_area: int = 0, max_masks: int = 0, device: str = "auto"):
        self.config, self.min_area, self.max_masks = config, min_area, max_masks
        self.device = resolve_device(device)
        self.model = load_sam(config.model_type, config.checkpoint).to(self.device)
        self.generator, self.implementation = self._make_generator()

    def _make_generator(self):
        kwargs = sam_generator_kwargs(self.config)
        if self.config.implementation == "fast":
            from models.sam_fast import FastSamMaskGenerator  # segment-anything + torchvision: SAM only

            return FastSamMaskGenerator(self.model, **kwargs), "fast"
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(self.model, **kwargs), "reference"

    @property
    def info(self) -> dict:
        return {"kind": "sam", **asdict(self.config), "implementation_used": self.implementation,
                "min_area": self.min_area, "max_masks": self.max_masks}

    def __call__(self, image: np.ndarray) -> Segments:
        image = _check_image(image)
        records = self.generator.generate(image)
        return segments_from_sam(records, image.shape[:2], self.min_area, self.max_masks)

    def batch(self, images: list[np.ndarray]) -> list[Segments]:
        """Several images at once; the fast generator embeds them in batched encoder passes."""
        images = [_check_image(image) for image in images]
        if hasattr(self.generator, "generate_batch"):
            all_records = self.generator.generate_batch(images)
        else:
            all_records = [self.generator.generate(image) for image in images]
        return [
            segments_from_sam(records, image.shape[:2], self.min_area, self.max_masks)
            for records, image in zip(all_records, images, strict=True)
        ]


def segments_from_sam(records: list[dict], shape: tuple[int, int], min_area: int = 0, max_masks: int = 0) -> Segments:
    """SamAutomaticMaskGenerator output (binary_mask mode) -> ordered, filtered Segments; score = predicted IoU."""
    if not records:
        return Segments(np.zeros((0, *shape), dtype=bool), np.zeros(0, dtype=np.float32))
    masks = np.stack([np.asarray(r["segmentation"], dtype=bool) for r in records])
    scores = np.array([r["predicted_iou"] for r in records], dtype=np.float32)
    return order_and_limit(masks, scores, min_area, max_masks)


def build_masker(config: MaskerConfig, device: str = "auto") -> Callable[[np.ndarray], Segments]:
    """MaskerConfig -> callable(image uint8 [H,W,3]) -> Segments, with min_area and max_masks applied."""
    if config.kind == "felzenszwalb":
        return FelzenszwalbMasker(config.felzenszwalb, config.min_area, config.max_masks)
    if config.kind == "sam":
        return SamMasker(config.sam, config.min_area, config.max_masks, device=device)
    raise ValueError(f"unknown masker kind '{config.kind}'; choose 'felzenszwalb' or 'sam'")


# ---------------------------------------------------------------------------------------------------------
# The Mask step of both jobs and of the Python API (transforms.masks is its Beam shell; inference.api calls it too)
# ---------------------------------------------------------------------------------------------------------
def build_step_masker(models: ModelsConfig) -> Callable[[np.ndarray], Segments]:
    """The masker of the Mask step, built with min_area=0 so that segments below the minimum area are *seen* and
    recorded as "too_small" drops (every masker segment is accounted for); `max_masks` still bounds memory inside
    the masker (it keeps the largest), so segments beyond it are never produced and are not counted."""
    return build_masker(replace(models.masker, min_area=0), device=models.visual.device)


def segment_fields(masks, scores: np.ndarray | None, min_area: int) -> dict:
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


def mask_images(masker, images: list[np.ndarray], min_area: int) -> list[dict]:
    """The Mask step on several images: one `masker.batch` call (SAM's fast generator embeds the images in batched
    encoder passes), then each image's segment fields (segment_fields)."""
    batch = getattr(masker, "batch", None)
    segments = batch(images) if batch is not None else [masker(image) for image in images]
    return [segment_fields(s, None, min_area) for s in segments]
