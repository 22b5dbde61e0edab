"""Mask-pooled segment embeddings (one forward per image) vs one masked crop per segment (one forward each).

Same image (skimage astronaut, 512x512), same Felzenszwalb segments, same encoder, measured side by side in one
run on this CPU. Encoders: the tiny-random DINOv2 preset, and a CLIP ViT-B/16-sized vision model with random
weights built from its config (the real model's compute, no download). Prints one JSON line per encoder:
{"bench": "pooling_vs_crops", "model": ..., "segments": N, "pooled_s": ..., "crops_s": ..., "speedup": ...,
 "mean_cosine_agreement": ...}  (agreement = mean cosine between a segment's pooled and crop embeddings; with
random weights it says little about quality, only that the two paths see the same pixels.)

    python bench/pooling_vs_crops.py [--threads 1] [--skip-clip-b16] [--max-segments N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np
import skimage.data
import torch

from models.config import MaskerConfig, ModelsConfig, VisualEncoderConfig
from models.maskers import build_masker
from models.presets import resolve_models
from models.visual import VisualEncoder


def clip_b16_random(directory: str) -> str:
    """A randomly initialised CLIP ViT-B/16 vision tower (real architecture and size) saved for the real loader."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=16, projection_dim=512)
    CLIPVisionModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(directory)
    return directory


def measure(name: str, cfg: VisualEncoderConfig, image: np.ndarray, masks: np.ndarray) -> dict:
    enc = VisualEncoder(cfg)
    enc.embed_segments([image], [masks[:2]])  # warm-up: first-call allocations out of the timing
    enc.embed_crops(image, masks[:2])
    t0 = time.perf_counter()
    pooled = enc.embed_segments([image], [masks])[0]
    t1 = time.perf_counter()
    crops = enc.embed_crops(image, masks)
    t2 = time.perf_counter()
    return {
        "bench": "pooling_vs_crops", "model": name, "image": "astronaut 512x512", "segments": int(len(masks)),
        "image_size": enc.image_size, "dim": enc.dim, "threads": torch.get_num_threads(),
        "pooled_s": round(t1 - t0, 4), "crops_s": round(t2 - t1, 4), "speedup": round((t2 - t1) / (t1 - t0), 1),
        "mean_cosine_agreement": round(float(np.mean(np.sum(pooled * crops, axis=1))), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-clip-b16", action="store_true")
    parser.add_argument("--max-segments", type=int, default=0, help="0 = all Felzenszwalb segments")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image = skimage.data.astronaut()  # 512x512x3
    masks = build_masker(MaskerConfig())(image).masks
    if args.max_segments:
        masks = masks[: args.max_segments]

    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models(ModelsConfig(preset="tiny-random", cache_dir=tmp))
        tiny = dataclasses.replace(models.visual, device="cpu", batch_size=32)
        print(json.dumps(measure("tiny-random dinov2", tiny, image, masks)), flush=True)
        if not args.skip_clip_b16:
            cfg = VisualEncoderConfig(kind="clip", model_id=clip_b16_random(f"{tmp}/clip-b16"), image_size=224,
                                      batch_size=32, device="cpu")
            print(json.dumps(measure("clip-vit-b16 random (224)", cfg, image, masks)), flush=True)


if __name__ == "__main__":
    main()
