"""Dense visual encoders (DINOv2, CLIP vision) and mask pooling of segments: one forward pass per image.

The image is resized to a fixed square (`image_size`, rounded to a multiple of the patch size), normalised with the
model's own processor mean/std, and the patch tokens [h,w,D] are mask-pooled for every segment in one matrix
product (models.pooling). `embed_crops` is the slow baseline: one masked crop per segment through the encoder.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.config import VisualEncoderConfig
from models.device import autocast, resolve_device, resolve_dtype
from models.pooling import mask_pool
from models.segment_masks import segments_of
from models.weights import load_pretrained


def to_pixels(images: list[np.ndarray], size: int, mean, std, device) -> torch.Tensor:
    """uint8 [H,W,3] images -> normalised float [B,3,size,size] (bicubic, antialiased square resize)."""
    out = []
    for image in images:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H,W,3], got shape {image.shape}")
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if not image.flags.writeable:  # e.g. decoded read-only buffers; torch.from_numpy warns on those
            image = image.copy()
        t = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(t, size=(size, size), mode="bicubic", antialias=True, align_corners=False))
    pixels = torch.cat(out).clamp_(0, 1)
    mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def masked_crop(image: np.ndarray, mask: np.ndarray, fill: np.ndarray, padding: float = 0.0, square: bool = True) -> np.ndarray:
    """The segment's bbox (+ relative padding, squared around its centre) with outside-mask pixels set to `fill`.

    Regions beyond the image border are `fill` too, so the crop keeps the segment's aspect ratio.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return np.broadcast_to(fill.astype(np.uint8), (1, 1, 3)).copy()
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = y1 - y0, x1 - x0
    ph, pw = h * padding, w * padding
    if square:
        side = max(h + 2 * ph, w + 2 * pw)
        ph, pw = (side - h) / 2, (side - w) / 2
    Y0, Y1 = int(np.floor(y0 - ph)), int(np.ceil(y1 + ph))
    X0, X1 = int(np.floor(x0 - pw)), int(np.ceil(x1 + pw))
    crop = np.empty((Y1 - Y0, X1 - X0, 3), dtype=np.uint8)
    crop[:] = fill.astype(np.uint8)
    H, W = mask.shape
    sy0, sy1, sx0, sx1 = max(Y0, 0), min(Y1, H), max(X0, 0), min(X1, W)
    region = np.where(mask[sy0:sy1, sx0:sx1, None], image[sy0:sy1, sx0:sx1], fill.astype(np.uint8))
    crop[sy0 - Y0 : sy1 - Y0, sx0 - X0 : sx1 - X0] = region
    return crop


def visual_info(config: VisualEncoderConfig, model_config, clip_post_layernorm: bool = True) -> dict:
    """What a reference set records about its visual encoder, from the configs alone (no weights loaded)."""
    patch = int(model_config.patch_size)
    info = {
        "model_id": config.model_id, "revision": config.revision, "kind": config.kind,
        "dim": int(model_config.hidden_size), "image_size": max(1, round(config.image_size / patch)) * patch,
        "patch_size": patch, "pooling": "mask_area_weighted_mean",
    }
    if config.kind == "clip":
        info["post_layernorm"] = clip_post_layernorm
    return info


def describe_visual(config: VisualEncoderConfig) -> dict:
    """visual_info of a configured encoder, reading only its config.json."""
    from transformers import AutoConfig

    model_config = load_pretrained(AutoConfig, config.model_id, config.revision, what="visual encoder")
    return visual_info(config, getattr(model_config, "vision_config", model_config))


class VisualEncoder:
    """VisualEncoder(VisualEncoderConfig): .dim, .info, .embed_segments, .embed_crops, .patch_tokens."""

    def __init__(self, config: VisualEncoderConfig, clip_post_layernorm: bool = True):
        from transformers import AutoImageProcessor

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.precision, self.device)
        if config.kind == "dinov2":
            # AutoModel: Dinov2Model for DINOv2 checkpoints, Dinov2WithRegistersModel for the "-with-registers" ones
            # (their register tokens sit between CLS and the patch tokens and are skipped below).
            from transformers import AutoModel as cls
        elif config.kind == "clip":
            from transformers import CLIPVisionModel as cls
        else:
            raise ValueError(f"unknown visual encoder kind '{config.kind}'; choose 'dinov2' or 'clip'")
        self.model = load_pretrained(cls, config.model_id, config.revision, what=f"{config.kind} visual encoder")
        if config.kind == "dinov2" and not str(self.model.config.model_type).startswith("dinov2"):
            raise ValueError(f"visual kind 'dinov2' but '{config.model_id}' is a {self.model.config.model_type} model")
        self.model.eval().to(self.device)
        processor = load_pretrained(AutoImageProcessor, config.model_id, config.revision,
                                    what=f"{config.kind} image processor")
        self.mean, self.std = list(processor.image_mean), list(processor.image_std)
        self.fill = np.round(np.array(self.mean) * 255)  # pixels that normalise to zero
        mcfg = self.model.config
        self.patch_size = int(mcfg.patch_size)
        self.image_size = max(1, round(config.image_size / self.patch_size)) * self.patch_size
        self.grid = self.image_size // self.patch_size
        self.num_prefix = 1 + int(getattr(mcfg, "num_register_tokens", 0) or 0)
        self.clip_post_layernorm = clip_post_layernorm
        self.dim = int(mcfg.hidden_size)

    @property
    def info(self) -> dict:
        return visual_info(self.config, self.model.config, self.clip_post_layernorm)

    def _forward(self, pixels: torch.Tensor):
        kwargs = {"interpolate_pos_encoding": True} if self.config.kind == "clip" else {}
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self.model(pixel_values=pixels, **kwargs)

    def patch_tokens(self, images: list[np.ndarray]) -> torch.Tensor:
        """float32 [B, h, w, D] patch tokens for a batch of images (one forward)."""
        out = self._forward(to_pixels(images, self.image_size, self.mean, self.std, self.device))
        tokens = out.last_hidden_state.float()  # autocast may hand back bf16/fp16; pool and normalise in fp32
        if self.config.kind == "clip" and self.clip_post_layernorm:
            with torch.inference_mode():
                tokens = getattr(self.model, "vision_model", self.model).post_layernorm(tokens)
        tokens = tokens[:, self.num_prefix :]
        return tokens.reshape(len(images), self.grid, self.grid, -1)

    def embed_segments(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """Mask-pooled embeddings: list of float32 [N_i, dim] unit vectors, one forward per image, batched."""
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} mask arrays")
        results: list[np.ndarray] = []
        bs = max(1, self.config.batch_size)
        for start in range(0, len(images), bs):
            tokens = self.patch_tokens(images[start : start + bs])
            for tok, m in zip(tokens, masks[start : start + bs], strict=True):
                results.append(mask_pool(tok, m).cpu().numpy().astype(np.float32))
        return results

    def embed_crops(self, image: np.ndarray, masks: np.ndarray, padding: float = 0.1) -> np.ndarray:
        """One masked crop per segment -> the encoder's pooled (CLS) embedding; float32 [N, dim] unit vectors."""
        image = np.asarray(image)
        masks = np.asarray(masks, dtype=bool)
        out = np.zeros((len(masks), self.dim), dtype=np.float32)
        bs = max(1, self.config.batch_size)
        for start in range(0, len(masks), bs):
            crops = [masked_crop(image, m, self.fill, padding) for m in masks[start : start + bs]]
            result = self._forward(to_pixels(crops, self.image_size, self.mean, self.std, self.device))
            out[start : start + len(crops)] = F.normalize(result.pooler_output.float(), dim=1).cpu().numpy()
        return out


def embed_images(encoder: VisualEncoder, items: list[dict]) -> list[np.ndarray]:
    """The Embed step on several images: each image's `to_embed` segments mask-pooled from one forward pass per
    image (batched); `items` hold the image (`image`) and its segment fields (models.maskers.segment_fields).
    float32 [len(to_embed), D] unit vectors per image, row i for segment to_embed[i]."""
    masks = [segments_of(item, item["to_embed"]) for item in items]
    embeddings = encoder.embed_segments([item["image"] for item in items], masks)
    return [np.asarray(e, dtype=np.float32) for e in embeddings]
