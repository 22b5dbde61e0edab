"""Real-size models with random weights, for benchmarks on machines that cannot download the real ones.

Compute cost depends on the architecture, not on the weights, so DINOv2-base and CLIP ViT-B/16 built from their
default config classes time like the pretrained models. They are saved with `save_pretrained` and loaded back
through the same loaders as real weights. Pass a real model id/dir instead where one is available.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.presets import build_tokenizer


def dinov2_base(out: Path) -> str:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config()).eval().save_pretrained(out)  # defaults = dinov2-base: 768-d, 12 layers, patch 14
        BitImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(out)
    return str(out)


def clip_b16(out: Path) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        tokenizer = build_tokenizer()
        config = CLIPConfig(
            text_config=dict(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=2, eos_token_id=3),
            vision_config=dict(patch_size=16),  # defaults: 768-d, 12 layers, 224 px -> ViT-B/16
            projection_dim=512,
        )
        CLIPModel(config).eval().save_pretrained(out)
        tokenizer.save_pretrained(out)
        CLIPImageProcessor().save_pretrained(out)
    return str(out)
