"""Typed configuration for every model reme uses: one dataclass per concern.

These are what a reference set's manifest records (`asdict(config)`), and what the labeller compares against
the manifest to refuse an index built with other encoders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Device = str  # "auto" | "cpu" | "cuda" | "cuda:N"
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class FelzenszwalbConfig:
    """skimage.segmentation.felzenszwalb parameters (the paper's default masker)."""

    scale: float = 200.0
    sigma: float = 0.8
    min_size: int = 100
    # Images are segmented at this longest side (then masks are resized back) so cost does not explode on
    # 4k photos; 0 keeps the input size.
    max_side: int = 512


@dataclass(frozen=True)
class SamConfig:
    """segment-anything SamAutomaticMaskGenerator parameters, all exposed, same names and defaults."""

    model_type: str = "vit_b"  # vit_b | vit_l | vit_h | tiny (the tiny-random preset)
    checkpoint: str | None = None  # local path or gs:// URI of the .pth state dict
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    # Our faster generator (models.sam_fast) vs segment-anything's own class; same masks either way.
    implementation: Literal["fast", "reference"] = "fast"


@dataclass(frozen=True)
class MaskerConfig:
    kind: Literal["felzenszwalb", "sam"] = "felzenszwalb"
    min_area: int = 64  # segments smaller than this many pixels are dropped (reason "too_small")
    max_masks: int = 256  # keep the largest N per image (bounded memory); 0 = unbounded
    felzenszwalb: FelzenszwalbConfig = field(default_factory=FelzenszwalbConfig)
    sam: SamConfig = field(default_factory=SamConfig)


@dataclass(frozen=True)
class VisualEncoderConfig:
    """Dense patch-token encoder whose mask-pooled tokens are the retrieval key and filtering signal."""

    kind: Literal["dinov2", "clip"] = "dinov2"
    model_id: str = "facebook/dinov2-base"
    revision: str | None = None
    image_size: int = 448  # square input; token grid = image_size / patch_size
    batch_size: int = 8
    device: Device = "auto"
    precision: Precision = "auto"


@dataclass(frozen=True)
class ClipConfig:
    """CLIP used for pairing: segment crops (image tower) and label prompts (text tower)."""

    model_id: str = "openai/clip-vit-base-patch16"
    revision: str | None = None
    crop_mode: Literal["masked_crop", "pooled_dense"] = "masked_crop"
    crop_padding: float = 0.1  # relative bbox padding around a segment crop
    batch_size: int = 64
    device: Device = "auto"
    precision: Precision = "auto"


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder for label embeddings stored in labels.parquet and for class names at labelling time."""

    kind: Literal["clip", "sentence"] = "clip"
    model_id: str = "openai/clip-vit-base-patch16"
    revision: str | None = None
    # CLIP prompt ensembling; ignored for sentence encoders.
    templates: tuple[str, ...] = (
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of a small {}.",
        "a photo of a large {}.",
        "a cropped photo of a {}.",
        "a close-up photo of a {}.",
        "a bright photo of a {}.",
        "there is a {} in the scene.",
    )
    batch_size: int = 256
    device: Device = "auto"


@dataclass(frozen=True)
class CaptionerConfig:
    kind: Literal["blip", "llava"] = "blip"
    model_id: str = "Salesforce/blip-image-captioning-base"
    revision: str | None = None
    prompt: str | None = None  # LLaVA needs one, e.g. "USER: <image>\nDescribe the image. ASSISTANT:"
    max_new_tokens: int = 40
    batch_size: int = 8
    device: Device = "auto"
    precision: Precision = "auto"


@dataclass(frozen=True)
class ModelsConfig:
    """Everything model-related for one run. `preset` names where the weights come from."""

    preset: str = "default"  # "default" (hub ids / local dirs as configured) | "tiny-random" (offline)
    cache_dir: str | None = None  # where presets materialise weights; default ~/.cache/reme
    masker: MaskerConfig = field(default_factory=MaskerConfig)
    visual: VisualEncoderConfig = field(default_factory=VisualEncoderConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)

    def to_dict(self) -> dict:
        return asdict(self)
