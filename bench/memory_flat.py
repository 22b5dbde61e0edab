"""Flat memory under load: `reme label` over 2,000 small images and `build_index` over 1,000 (tiny-random models).

Each command runs as a subprocess (as users run it); its resident memory (RSS, summed over the process tree, read
from /proc) is sampled every 0.1 s.

- Labelling: label maps appear one by one in OUTPUT, so progress is observable. We report the peak RSS seen up to
  the moment 10% of the maps exist and the peak over the whole run; flat means end_peak <= 1.2 * peak_at_10pct.
- Index build: phase A's progress is not visible on disk until shards commit, so the 10% point is measured as a
  separate run over the first 10% of the images (same flags); flat means full_peak <= 1.2 * tenth_peak.

    .venv/bin/python bench/memory_flat.py [--label_images 2000] [--index_images 1000] [--size 64]

Prints one JSON line per measurement and a final summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = ["a red wall next to green grass", "a blue sky over a brown field", "a grey road beside a yellow house",
            "green grass under a blue sky"]
COLOURS = np.array([[200, 40, 40], [40, 170, 60], [40, 60, 200], [140, 100, 60], [128, 128, 128], [230, 210, 60]])


def make_images(directory: Path, count: int, size: int, seed: int = 0) -> list[str]:
    """`count` PNGs of `size`x`size`: 2-3 noisy colour regions each (segmentable, distinct, deterministic)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        colours = COLOURS[rng.choice(len(COLOURS), size=3, replace=False)]
        cut_x, cut_y = rng.integers(size // 4, 3 * size // 4, size=2)
        image = np.empty((size, size, 3), dtype=np.float64)
        image[:, :cut_x] = colours[0]
        image[:cut_y, cut_x:] = colours[1]
        image[cut_y:, cut_x:] = colours[2]
        image += rng.normal(0, 8, image.shape)
        name = f"img_{i:05d}.png"
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(directory / name)
        names.append(name)
    return names


def write_captions(path: Path, names: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, name in enumerate(names):
            f.write(json.dumps({"image": name, "caption": CAPTIONS[i % len(CAPTIONS)]}) + "\n")
    return path


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of `pid` and all its descendants."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
        stack.extend(_children(p))
    return total


def run_sampled(argv: list[str], progress=None, interval: float = 0.1, log: Path | None = None) -> dict:
    """Run argv, sampling tree RSS; `progress()` (optional) returns how many items are done at each sample."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    samples = []  # (seconds, rss_bytes, progress)
    start = time.monotonic()
    with open(log or os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            rss = tree_rss_bytes(proc.pid)
            done = progress() if progress else None
            if rss:
                samples.append((time.monotonic() - start, rss, done))
            time.sleep(interval)  # sampling period of a measurement loop
    if proc.returncode != 0:
        tail = Path(log).read_text(errors="replace")[-2000:] if log else ""
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with status {proc.returncode}: {tail}")
    return {"seconds": round(time.monotonic() - start, 2), "samples": samples}


def _mb(n: float) -> float:
    return round(n / 2**20, 1)


def bench_label(work: Path, index: Path, cache_dir: str, count: int, size: int, reme: list[str]) -> dict:
    images = work / "label-images"
    make_images(images, count, size, seed=1)
    out = work / "labels"
    argv = [*reme, "label", "--index", str(index), "--classes", "red wall,green grass,blue sky,road,house",
            "--cache_dir", cache_dir, "--torch_threads", "1", "--no_progress", str(images), str(out)]

    def maps_done() -> int:
        try:
            return sum(1 for e in os.scandir(out) if e.name.endswith(".png"))
        except FileNotFoundError:
            return 0

    run = run_sampled(argv, maps_done, log=work / "label.log")
    samples = run["samples"]
    tenth = max(1, count // 10)
    peak_10 = max((rss for _, rss, done in samples if done is not None and done <= tenth), default=0)
    reached = next((t for t, _, done in samples if done is not None and done >= tenth), None)
    peak_end = max(rss for _, rss, _ in samples)
    done = maps_done()
    return {
        "bench": "memory_flat", "job": "reme label", "images": count, "image_size": size, "maps_written": done,
        "seconds": run["seconds"], "images_per_s": round(done / run["seconds"], 2),
        "peak_rss_mb_at_10pct": _mb(peak_10), "peak_rss_mb_end": _mb(peak_end),
        "ratio_end_to_10pct": round(peak_end / peak_10, 3) if peak_10 else None,
        "flat": bool(peak_10) and peak_end <= 1.2 * peak_10, "seconds_to_10pct": reached,
        "samples": len(samples), "method": "in-run: RSS peak until 10% of label maps exist vs whole-run peak",
    }


def bench_index(work: Path, cache_dir: str, count: int, size: int) -> tuple[dict, Path]:
    images = work / "index-images"
    names = make_images(images, count, size, seed=2)
    captions = write_captions(work / "captions.jsonl", names)
    tenth_dir = work / "index-images-10pct"
    tenth_dir.mkdir()
    for name in names[: max(1, count // 10)]:
        shutil.copy(images / name, tenth_dir / name)

    def build(inputs: Path, output: Path, log: Path) -> dict:
        argv = [sys.executable, "-m", "pipeline.build_index", "--input", str(inputs), "--output", str(output),
                "--preset", "tiny-random", "--cache_dir", cache_dir, "--label_source", "captions",
                "--captions", str(captions), "--torch_threads", "1", "--images_per_shard", "100"]
        return run_sampled(argv, log=log)

    tenth = build(tenth_dir, work / "ref-10pct", work / "index-10pct.log")
    full = build(images, work / "ref", work / "index.log")
    peak_10 = max(rss for _, rss, _ in tenth["samples"])
    peak_end = max(rss for _, rss, _ in full["samples"])
    counts = json.loads((work / "ref" / "manifest.json").read_text())["counts"]
    return {
        "bench": "memory_flat", "job": "build_index", "images": count, "image_size": size,
        "images_in": counts.get("images_in"), "segments_kept": counts.get("segments_kept"),
        "seconds": full["seconds"], "seconds_10pct_run": tenth["seconds"],
        "images_per_s": round(count / full["seconds"], 2),
        "peak_rss_mb_at_10pct": _mb(peak_10), "peak_rss_mb_end": _mb(peak_end),
        "ratio_end_to_10pct": round(peak_end / peak_10, 3), "flat": peak_end <= 1.2 * peak_10,
        "method": "two runs, same flags: first 10% of the images vs all of them; peak RSS of each",
    }, work / "ref"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label_images", type=int, default=2000)
    parser.add_argument("--index_images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cache_dir", default=None, help="tiny-random preset cache (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reme-memory-flat-"))
    cache_dir = args.cache_dir or str(work / "cache")
    script = Path(sys.executable).parent / "reme"
    reme = [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]
    try:
        index_result, index = bench_index(work, cache_dir, args.index_images, args.size)
        print(json.dumps(index_result), flush=True)
        label_result = bench_label(work, index, cache_dir, args.label_images, args.size, reme)
        print(json.dumps(label_result), flush=True)
        print(json.dumps({"bench": "memory_flat", "summary": True,
                          "flat_index": index_result["flat"], "flat_label": label_result["flat"]}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
