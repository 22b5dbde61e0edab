"""Reading a COCO-size instances JSON: streamed (what the index job's graph does) vs loaded whole (json.load).

A made-up instances file of COCO train2017's shape (118,287 images, 7.3 annotations per image, polygons of COCO's
typical length, ~0.45 GB) is written once; then, each in its own child process (so peak memory is its own):

    load     json.load the whole document and index annotations by image (what a per-worker dict would hold)
    stream   inference.coco.stream_array over "images", "annotations" and "categories" (the three passes the
             graph's ReadCocoAnnotations/ReadCategories make), keeping nothing

Each prints seconds and peak RSS (ru_maxrss); the summary line gives the ratios measured side by side.

    .venv/bin/python bench/coco_stream.py [--images 118287] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_instances(path: Path, n_images: int, seed: int = 0) -> int:
    """A COCO-shaped instances JSON, written incrementally; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"info": {"description": "made up"}, "licenses": [], "images": [')
        for i in range(n_images):
            f.write(("," if i else "") + json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": 480,
                                                     "width": 640, "license": 1}))
        f.write('], "annotations": [')
        ann_id = 0
        for i in range(n_images):
            for _ in range(int(rng.poisson(7.3))):
                points = int(rng.integers(8, 40))  # COCO polygons: a few to a few dozen vertices
                xy = np.round(rng.uniform(0, 480, size=2 * points), 2).tolist()
                ann = {"id": ann_id + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 91)), "iscrowd": 0,
                       "segmentation": [xy], "area": round(float(rng.uniform(10, 50000)), 2),
                       "bbox": np.round(rng.uniform(0, 400, size=4), 2).tolist()}
                f.write(("," if ann_id else "") + json.dumps(ann))
                ann_id += 1
        f.write('], "categories": [' + ",".join(json.dumps({"id": c, "name": f"c{c}", "supercategory": "s"})
                                                 for c in range(1, 91)) + "]}")
    return path.stat().st_size


def child(method: str, path: str) -> None:
    t0 = time.perf_counter()
    if method == "load":
        with open(path, "rb") as f:
            doc = json.load(f)
        by_image: dict[int, list] = {}
        for ann in doc["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        counts = (len(doc["images"]), len(doc["annotations"]), len(doc["categories"]))
    else:
        sys.path.insert(0, str(REPO))
        from inference.coco import stream_array

        counts = []
        for key in ("images", "annotations", "categories"):
            with open(path, "rb") as f:
                counts.append(sum(1 for _ in stream_array(f, key)))
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "coco_stream", "method": method, "seconds": round(seconds, 2),
                      "peak_rss_mb": round(peak_mb, 1), "images": counts[0], "annotations": counts[1]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=118287)
    parser.add_argument("--keep", default=None, help="write the made-up file here (and reuse it when present)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="reme-coco-bench-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "instances.json"
        if not path.exists():
            write_instances(path, args.images)
        size_mb = path.stat().st_size / 1e6
        results = {}
        for method in ("stream", "load"):
            out = subprocess.run([sys.executable, __file__, "--child", method, str(path)], check=True,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            line = json.loads(out.stdout.strip().splitlines()[-1])
            line["file_mb"] = round(size_mb, 1)
            line["mb_per_s"] = round(size_mb * (3 if method == "stream" else 1) / line["seconds"], 1)
            print(json.dumps(line), flush=True)
            results[method] = line
    print(json.dumps({"bench": "coco_stream", "summary": True, "file_mb": round(size_mb, 1),
                      "images": results["stream"]["images"], "annotations": results["stream"]["annotations"],
                      "peak_rss_ratio_load_over_stream": round(results["load"]["peak_rss_mb"]
                                                               / results["stream"]["peak_rss_mb"], 1),
                      "seconds_ratio_stream_over_load": round(results["stream"]["seconds"]
                                                              / results["load"]["seconds"], 2)}))


if __name__ == "__main__":
    main()
