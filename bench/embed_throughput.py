"""Embedding throughput: images/s (mask-pooled visual encoder) and crops/s (CLIP) by batch size and precision.

    python -m bench.embed_throughput                       # CPU, real-size random DINOv2-base + CLIP B/16
    python -m bench.embed_throughput --device cuda --batch-sizes 1,2,4,8,16,32,64 --precisions fp32,bf16

One JSON line per (encoder, precision, batch size), then one "best" line per encoder and precision: the batch
size the pipeline's RunInference batching should reach (`--visual_batch_size`, `--clip_batch_size`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import realsize
from models.clip import ClipEncoder
from models.config import ClipConfig, VisualEncoderConfig
from models.device import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images_and_masks(n: int, size: int, segments: int, seed: int = 0):
    """Photo-sized random images with `segments` horizontal-band masks each (cost is independent of content)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    bands = np.array_split(np.arange(size), segments)
    masks = np.zeros((segments, size, size), dtype=bool)
    for i, rows in enumerate(bands):
        masks[i, rows] = True
    return images, [masks] * n


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, lazy init
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench_visual(model_id: str, device: str, precision: str, batch: int, images, masks, repeats: int) -> dict:
    from models.visual import VisualEncoder

    enc = VisualEncoder(VisualEncoderConfig(model_id=model_id, device=device, precision=precision, batch_size=batch))
    n = 2 * batch  # two full batches per timing
    seconds = _time(lambda: enc.embed_segments(images[:n], masks[:n]), enc.device, repeats)
    return {"encoder": "visual", "model": Path(model_id).name, "images": n, "segments_per_image": len(masks[0]),
            "seconds": round(seconds, 4), "images_per_s": round(n / seconds, 3)}


def bench_clip(model_id: str, device: str, precision: str, batch: int, images, masks, repeats: int) -> dict:
    enc = ClipEncoder(ClipConfig(model_id=model_id, device=device, precision=precision, batch_size=batch))
    crops_per_image = len(masks[0])
    n_images = max(1, -(-batch // crops_per_image))
    seconds = _time(lambda: enc.embed_segments(images[:n_images], masks[:n_images]), enc.device, repeats)
    crops = n_images * crops_per_image
    return {"encoder": "clip_crops", "model": Path(model_id).name, "crops": crops, "seconds": round(seconds, 4),
            "crops_per_s": round(crops / seconds, 3)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default=None, help="comma list; default 1,4,16 on CPU, 1..64 on GPU")
    parser.add_argument("--precisions", default=None, help="comma list of fp32,bf16,fp16; default fp32 (+bf16 on GPU)")
    parser.add_argument("--visual-model", default=None, help="model id/dir; default: real-size random DINOv2-base")
    parser.add_argument("--clip-model", default=None, help="model id/dir; default: real-size random CLIP ViT-B/16")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--segments", type=int, default=16, help="segments per image")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    batches = [int(b) for b in (args.batch_sizes or ("1,2,4,8,16,32,64" if on_gpu else "1,4,16")).split(",")]
    precisions = (args.precisions or ("fp32,bf16" if on_gpu else "fp32")).split(",")
    cache = Path(tempfile.gettempdir()) / "reme-bench-models"
    visual_id = args.visual_model or realsize.dinov2_base(cache / "dinov2-base-random")
    clip_id = args.clip_model or realsize.clip_b16(cache / "clip-b16-random")
    images, masks = _images_and_masks(2 * max(batches), args.image_size, args.segments)

    rows = []
    for precision in precisions:
        for name, fn, model_id, key in (
            ("visual", bench_visual, visual_id, "images_per_s"),
            ("clip_crops", bench_clip, clip_id, "crops_per_s"),
        ):
            results = []
            for batch in batches:
                row = {"bench": "embed_throughput", "device": str(device), "precision": precision, "batch_size": batch,
                       **fn(model_id, str(device), precision, batch, images, masks, args.repeats)}
                print(json.dumps(row), flush=True)
                results.append(row)
            best = max(results, key=lambda r: r[key])
            summary = {"bench": "embed_throughput_best", "device": str(device), "encoder": name,
                       "precision": precision, "best_batch_size": best["batch_size"], key: best[key],
                       "speedup_vs_batch_1": round(best[key] / results[0][key], 3)}
            print(json.dumps(summary), flush=True)
            rows += results + [summary]
    return rows


if __name__ == "__main__":
    main()
