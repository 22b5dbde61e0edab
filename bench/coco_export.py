"""The cost of `reme label --format coco`, side by side with what a run pays anyway. Two JSON lines:

* per image: class_regions (one RLE per class present at the input's full size) against encode_label_png (the PNG
  every run writes) on the same label map of a large photo, time and peak traced memory of each;
* per run: assemble_coco streaming N per-image fragments into coco.json, against the obvious alternative (read
  every fragment into one dict, json.dump it), time and peak traced memory of each.

    python -m bench.coco_export [--megapixels 24] [--classes 12] [--images 5000] [--per-image 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from inference import outputs
from inference.labeller import ImageLabels


def measure(fn) -> tuple[float, float]:
    """(seconds, peak traced MB) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 1e6


def blob_map(height: int, width: int, classes: int, seed: int) -> np.ndarray:
    """A label map of smooth regions (upsampled from a coarse random grid), like a painted photo's."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (max(2, height // 200), max(2, width // 200)), dtype=np.uint8)
    rows = np.minimum(np.arange(height) * coarse.shape[0] // height, coarse.shape[0] - 1)
    cols = np.minimum(np.arange(width) * coarse.shape[1] // width, coarse.shape[1] - 1)
    return coarse[rows][:, cols]


def per_image(megapixels: float, classes: int) -> dict:
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    label_map = blob_map(height, width, classes, seed=0)
    n = 200
    labels = ImageLabels(label_map, np.arange(n) % classes, np.linspace(0.5, 1, n).astype(np.float32),
                         np.full(n, 1000, np.int64))
    png_s, png_mb = measure(lambda: outputs.encode_label_png(label_map))
    coco_s, coco_mb = measure(lambda: outputs.class_regions(labels, 255))
    return {"bench": "coco_export_per_image", "height": height, "width": width,
            "classes_present": int(len(np.unique(label_map))), "png_s": round(png_s, 3), "png_peak_mb": round(png_mb, 1),
            "coco_regions_s": round(coco_s, 3), "coco_regions_peak_mb": round(coco_mb, 1),
            "label_map_mb": round(label_map.nbytes / 1e6, 1), "time_ratio_coco_vs_png": round(coco_s / png_s, 2)}


def per_run(images: int, per_image_regions: int) -> dict:
    rng = np.random.default_rng(1)
    class_names = [f"class{i}" for i in range(per_image_regions * 2)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / outputs.COCO_DIR).mkdir()
        counts = "".join(rng.choice(list("0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 600))  # a typical RLE length
        for i in range(images):
            fragment = {"image": {"file_name": f"img{i:07d}.jpg", "width": 640, "height": 480,
                                  "label_map": f"img{i:07d}.png"},
                        "regions": [{"class_id": c, "rle": {"size": [480, 640], "counts": counts}, "area": 1000 + c,
                                     "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.5} for c in range(per_image_regions)]}
            (out / outputs.COCO_DIR / f"img{i:07d}.json").write_text(json.dumps(fragment, separators=(",", ":")))
        names = [f"img{i:07d}" for i in range(images)]

        def whole() -> None:  # the alternative: every annotation of the run in one dict
            doc = {"images": [], "annotations": [], "categories": outputs.coco_categories(class_names)}
            for image_id, (_, fragment) in enumerate(outputs._read_fragments(str(out), names), start=1):
                doc["images"].append({"id": image_id, **fragment["image"]})
                for region in fragment["regions"]:
                    doc["annotations"].append(outputs.coco_annotation(region, image_id, len(doc["annotations"]) + 1))
            (out / "whole.json").write_text(json.dumps(doc, separators=(",", ":")))

        stream_s, stream_mb = measure(lambda: outputs.assemble_coco(str(out), class_names, names))
        whole_s, whole_mb = measure(whole)
        size_mb = (out / outputs.COCO_JSON).stat().st_size / 1e6
        same = json.loads((out / outputs.COCO_JSON).read_text())["annotations"] == \
            json.loads((out / "whole.json").read_text())["annotations"]
    return {"bench": "coco_export_assembly", "images": images, "annotations": images * per_image_regions,
            "file_mb": round(size_mb, 1), "stream_s": round(stream_s, 2), "stream_peak_mb": round(stream_mb, 1),
            "whole_s": round(whole_s, 2), "whole_peak_mb": round(whole_mb, 1),
            "memory_ratio_whole_vs_stream": round(whole_mb / stream_mb, 1), "same_annotations": same}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(per_image(args.megapixels, args.classes)), flush=True)
    print(json.dumps(per_run(args.images, args.per_image)), flush=True)


if __name__ == "__main__":
    main()
