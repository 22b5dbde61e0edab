"""CLIP image embeddings of segments, used for the paper's segment-label pairing.

`masked_crop` mode (default): each segment's bbox plus `crop_padding`, squared around its centre, with pixels
outside the mask (and beyond the image border) set to the processor mean, resized to CLIP's input size, through
`CLIPModel.get_image_features`; crops of all images in a call are batched together (`batch_size`).
`pooled_dense` mode: CLIP vision patch tokens of the whole image (post-layernorm, visual projection) mask-pooled per
segment, one forward per image; cheaper, but CLIP's patch tokens are weakly aligned with text, so measure it before
relying on it for pairing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.config import ClipConfig
from models.device import autocast, resolve_device, resolve_dtype
from models.pooling import mask_pool
from models.visual import masked_crop, to_pixels
from models.weights import load_pretrained


def clip_info(config: ClipConfig, model_config) -> dict:
    """What a reference set records about its pairing model, from the configs alone (no weights loaded)."""
    return {"model_id": config.model_id, "revision": config.revision, "kind": "clip",
            "dim": int(model_config.projection_dim), "crop_mode": config.crop_mode,
            "crop_padding": config.crop_padding, "image_size": int(model_config.vision_config.image_size)}


def describe_clip(config: ClipConfig) -> dict:
    """clip_info of a configured model, reading only its config.json."""
    from transformers import CLIPConfig

    return clip_info(config, load_pretrained(CLIPConfig, config.model_id, config.revision, what="CLIP pairing model"))


class ClipEncoder:
    def __init__(self, config: ClipConfig):
        from transformers import AutoImageProcessor, CLIPModel

        if config.crop_mode not in ("masked_crop", "pooled_dense"):
            raise ValueError(f"unknown CLIP crop_mode '{config.crop_mode}'; choose 'masked_crop' or 'pooled_dense'")
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.precision, self.device)
        self.model = load_pretrained(CLIPModel, config.model_id, config.revision, what="CLIP image encoder")
        self.model.eval().to(self.device)
        processor = load_pretrained(AutoImageProcessor, config.model_id, config.revision, what="CLIP image processor")
        self.mean, self.std = list(processor.image_mean), list(processor.image_std)
        self.fill = np.round(np.array(self.mean) * 255)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.dim = int(self.model.config.projection_dim)

    @property
    def info(self) -> dict:
        return clip_info(self.config, self.model.config)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.dtype):
            out = self.model.get_image_features(pixel_values=pixels)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return F.normalize(feats.float(), dim=-1)

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Already-cropped uint8 images -> float32 [n, dim] unit vectors (batched)."""
        out = np.zeros((len(crops), self.dim), dtype=np.float32)
        bs = max(1, self.config.batch_size)
        for start in range(0, len(crops), bs):
            pixels = to_pixels(crops[start : start + bs], self.image_size, self.mean, self.std, self.device)
            out[start : start + bs] = self._image_features(pixels).cpu().numpy()
        return out

    def embed_segments(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """list of float32 [N_i, dim] unit vectors, one array per image."""
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} mask arrays")
        if self.config.crop_mode == "pooled_dense":
            return [self._pooled_dense(img, m) for img, m in zip(images, masks, strict=True)]
        crops, counts = [], []
        for image, m in zip(images, masks, strict=True):
            image, m = np.asarray(image), np.asarray(m, dtype=bool)
            crops += [masked_crop(image, mask, self.fill, self.config.crop_padding) for mask in m]
            counts.append(len(m))
        flat = self.embed_crops(crops)
        return [part for part in np.split(flat, np.cumsum(counts)[:-1])] if counts else []

    def _pooled_dense(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        pixels = to_pixels([image], self.image_size, self.mean, self.std, self.device)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            hidden = self.model.vision_model(pixel_values=pixels).last_hidden_state
            tokens = self.model.visual_projection(self.model.vision_model.post_layernorm(hidden[:, 1:]))
        grid = self.image_size // int(self.model.config.vision_config.patch_size)
        tokens = tokens.float().reshape(grid, grid, -1)
        return mask_pool(tokens, np.asarray(masks, dtype=bool)).cpu().numpy().astype(np.float32)
