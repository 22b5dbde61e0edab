"""Painting throughput: the vectorised painter (inference.paint) vs a naive per-pixel reference, same inputs.

Random overlapping rectangular and blob masks with coarse confidences (so ties happen), a few uncovered pixels.
The naive reference scans every segment for every pixel and every covered pixel for every hole, so it runs on a
small image; the vectorised painter is timed on that same image (the ratio) and on a 512x512 image with 128
segments (the absolute figure a labelling run pays per image). One JSON line:

    python bench/paint.py [--size 48] [--segments 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from inference.paint import paint


def random_masks(rng, n, h, w):
    masks = np.zeros((n, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        if i % 2:
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, y0:y0 + rng.integers(2, h // 2 + 2), x0:x0 + rng.integers(2, w // 2 + 2)] = True
        else:
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, max(3, h // 4))
            masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks, rng.integers(0, 4, size=n) / 3.0, rng.integers(0, 20, size=n)


def naive_paint(masks, class_ids, conf, ignore=255):
    n, h, w = masks.shape
    areas = masks.reshape(n, -1).sum(1)
    out = np.full((h, w), ignore)
    covered = []
    for y in range(h):
        for x in range(w):
            best = None
            for i in range(n):
                if masks[i, y, x]:
                    key = (conf[i], -areas[i], -i)
                    if best is None or key > best[0]:
                        best = (key, i)
            if best is not None:
                out[y, x] = class_ids[best[1]]
                covered.append((y, x))
    for y in range(h):
        for x in range(w):
            if out[y, x] == ignore and covered:
                cy, cx = min(covered, key=lambda p: (p[0] - y) ** 2 + (p[1] - x) ** 2)
                out[y, x] = out[cy, cx]
    return out


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--segments", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    masks, conf, ids = random_masks(rng, args.segments, args.size, args.size)
    naive_s = best_of(lambda: naive_paint(masks, ids, conf), 1)
    fast_s = best_of(lambda: paint(masks, ids, conf), max(args.repeats, 5))
    big_masks, big_conf, big_ids = random_masks(rng, 128, 512, 512)
    big_s = best_of(lambda: paint(big_masks, big_ids, big_conf), args.repeats)
    print(json.dumps({
        "bench": "paint", "image": f"{args.size}x{args.size}", "segments": args.segments,
        "naive_s": round(naive_s, 4), "vectorised_s": round(fast_s, 6), "speedup": round(naive_s / fast_s, 1),
        "vectorised_512x512_128_segments_s": round(big_s, 4),
    }))


if __name__ == "__main__":
    main()
