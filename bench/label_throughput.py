"""Labelling throughput (images/s) of the `reme label` Beam job: Felzenszwalb masker + tiny random encoders,
1 worker (DirectRunner in_memory) vs 2 workers (DirectRunner multi_processing), same images, same index, one run.

The reference set is built first by the real index job (annotations of generated scenes). Each labelling run
starts from an empty output, so wall time includes Beam start-up and model loading per worker: what a user
waits for. Prints one JSON line per setting and a final line with the ratio:

    python bench/label_throughput.py [--images 32] [--size 192x256]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("sky", "grass", "road")


def make_scenes(root: Path, count: int, seed: int, h: int, w: int) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    colours = [(np.array([70, 130, 230]), 4), (np.array([40, 160, 40]), 30), (np.array([120, 110, 100]), 6)]
    for i in range(count):
        a, b = sorted(rng.integers(h // 5, h - h // 5, 2))
        b = max(b, a + h // 8)
        label = np.zeros((h, w), np.uint8)
        label[:a], label[a:b], label[b:] = rng.permutation(3)
        image = np.zeros((h, w, 3))
        for c, (mean, noise) in enumerate(colours):
            image[label == c] = (mean + rng.normal(0, noise, (h, w, 3)))[label == c]
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"img{i:04d}.png")
        Image.fromarray(label).save(root / "labels" / f"img{i:04d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", default="192x256")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    from pipeline.build_index import run as build_index
    from pipeline.cli import main as reme

    work = Path(tempfile.mkdtemp(prefix="reme-bench-label-"))
    try:
        cache = str(work / "cache")
        train = make_scenes(work / "train", 12, 0, h, w)
        images = make_scenes(work / "test", args.images, 1, h, w)
        build_index(["--label_source", "annotations", "--annotations", str(train), "--output", str(work / "ref"),
                     "--preset", "tiny-random", "--cache_dir", cache, "--min_label_count", "1"],
                    save_main_session=False)
        settings = {
            "1_worker": ["--direct_num_workers", "1", "--direct_running_mode", "in_memory", "--torch_threads", "2"],
            "2_workers": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing",
                          "--torch_threads", "1"],
        }
        rates = {}
        for name, flags in settings.items():
            out = work / f"out-{name}"
            start = time.perf_counter()
            code = reme(["label", "--index", str(work / "ref"), "--classes", ",".join(CLASSES),
                         str(images / "images"), str(out), "--no_progress", *flags])
            seconds = time.perf_counter() - start
            done = len(list(out.glob("*.png")))
            rates[name] = done / seconds
            print(json.dumps({"bench": "label_throughput", "setting": name, "images": done, "exit": code,
                              "image_size": args.size, "seconds": round(seconds, 2),
                              "images_per_s": round(rates[name], 2)}))
        print(json.dumps({"bench": "label_throughput", "ratio_2_workers_over_1": round(rates["2_workers"] / rates["1_worker"], 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
