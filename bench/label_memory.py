"""Peak memory of `reme label` against photo size: flat above the working size.

For each size (1, 4, 12, 24, 48 MP by default, 3:2 JPEG photos), `reme label` labels a folder holding that one
photo, as users run it (a subprocess, tiny-random models, an index built once by the index job). Its resident
memory, summed over the process tree from /proc (bench.memory_flat.tree_rss_bytes), is sampled every 0.05 s; the
peak is reported with the run's time and a check that the label map has the photo's own size.

The same is run with `--max_side 0` (work at full resolution: how `reme label` ran before the working size) for
the sizes up to --full_res_max_mp, side by side, so the slope of the old behaviour is measured in the same run.

    .venv/bin/python -m bench.label_memory [--megapixels 1,4,12,24,48] [--full_res_max_mp 4]

One JSON line per run, then a summary line: peak RSS per megapixel above the working size for both modes, and
`flat` = the largest photo's peak is within 25% of the 1 MP photo's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.memory_flat import tree_rss_bytes

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("sky", "grass", "road")
WORKING_SIDE = 1024  # pipeline.config.ReadConfig.max_side, the default working size


def photo(megapixels: float, seed: int = 0) -> Image.Image:
    """A 3:2 photo-like image (colour bands, texture, noise) of about `megapixels`, built without a full-size float."""
    width = int(round(math.sqrt(megapixels * 1e6 * 3 / 2)))
    height = int(round(width * 2 / 3))
    rng = np.random.default_rng(seed)
    small = np.zeros((120, 180, 3))
    small[:40] = (70, 130, 230)
    small[40:80] = (40, 160, 40)
    small[80:] = (120, 110, 100)
    small += rng.normal(0, 12, small.shape)
    image = Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 24).convert("RGB")  # sensor-like grain: realistic JPEG sizes
    return Image.blend(image, grain, 0.15)


def build_index(work: Path, cache_dir: str) -> Path:
    from tests.inference.scenes import make_scenes

    train = make_scenes(work / "train", 12, seed=0)
    ref = work / "ref"
    argv = [sys.executable, "-m", "pipeline.build_index", "--label_source", "annotations", "--annotations",
            str(train), "--output", str(ref), "--preset", "tiny-random", "--cache_dir", cache_dir,
            "--min_label_count", "1", "--torch_threads", "1"]
    subprocess.run(argv, cwd=REPO, env=_env(), check=True, capture_output=True)
    return ref


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "PYTHONPATH": str(REPO)}


def _hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def label_peak(index: Path, inputs: Path, out: Path, cache_dir: str, max_side: int) -> dict:
    """Run `reme label` on `inputs`; peak tree RSS (sampled) and the main process's own high-water mark."""
    argv = [sys.executable, "-m", "pipeline.cli", "label", "--index", str(index), "--classes", ",".join(CLASSES),
            "--cache_dir", cache_dir, "--torch_threads", "1", "--no_progress", "--max_side", str(max_side),
            str(inputs), str(out)]
    peak_tree, peak_hwm = 0, 0
    start = time.monotonic()
    with open(out.parent / f"{out.name}.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss_bytes(proc.pid))
            peak_hwm = max(peak_hwm, _hwm_bytes(proc.pid))
            time.sleep(0.05)  # sampling period of a measurement loop
    if proc.returncode != 0:
        tail = (out.parent / f"{out.name}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"reme label failed with status {proc.returncode}: {tail}")
    return {"peak_rss_mb": round(max(peak_tree, peak_hwm) / 2**20, 1), "seconds": round(time.monotonic() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", default="1,4,12,24,48", help="photo sizes to label, comma-separated")
    parser.add_argument("--full_res_max_mp", type=float, default=4,
                        help="also run --max_side 0 (full resolution) up to this size (0 = never)")
    parser.add_argument("--cache_dir", default=None, help="tiny-random preset cache (default: a temp dir)")
    args = parser.parse_args()
    sizes = [float(v) for v in args.megapixels.split(",") if v.strip()]

    with tempfile.TemporaryDirectory(prefix="reme-label-memory-") as tmp:
        work = Path(tmp)
        cache_dir = args.cache_dir or str(work / "cache")
        index = build_index(work, cache_dir)
        rows = []
        for mp in sizes:
            folder = work / f"in-{mp:g}mp"
            folder.mkdir()
            image = photo(mp)
            image.save(folder / "photo.jpg", quality=90)
            width, height = image.size
            del image
            modes = [WORKING_SIDE] + ([0] if args.full_res_max_mp and mp <= args.full_res_max_mp else [])
            for max_side in modes:
                out = work / f"out-{mp:g}mp-{max_side}"
                measured = label_peak(index, folder, out, cache_dir, max_side)
                with Image.open(out / "photo.png") as im:
                    size_ok = im.size == (width, height)
                row = {"bench": "label_memory", "megapixels": round(width * height / 1e6, 2), "width": width,
                       "height": height, "file_mb": round((folder / "photo.jpg").stat().st_size / 2**20, 2),
                       "max_side": max_side, **measured, "label_map_at_input_size": size_ok}
                rows.append(row)
                print(json.dumps(row), flush=True)

        def slope(mode: int) -> float | None:
            """MB of peak RSS per extra megapixel, least squares over the photos above the working size."""
            points = [(r["megapixels"], r["peak_rss_mb"]) for r in rows if r["max_side"] == mode
                      and max(r["width"], r["height"]) > (mode or 0)]
            if len(points) < 2:
                return None
            x, y = np.array(points).T
            return round(float(np.polyfit(x, y, 1)[0]), 2)

        bounded = [r for r in rows if r["max_side"] == WORKING_SIDE]
        smallest, largest = bounded[0], bounded[-1]
        print(json.dumps({
            "bench": "label_memory", "summary": True, "working_side": WORKING_SIDE,
            "mb_per_megapixel_working_size": slope(WORKING_SIDE), "mb_per_megapixel_full_res": slope(0),
            "peak_rss_mb_smallest": smallest["peak_rss_mb"], "peak_rss_mb_largest": largest["peak_rss_mb"],
            "ratio_largest_to_smallest": round(largest["peak_rss_mb"] / smallest["peak_rss_mb"], 3),
            "flat": largest["peak_rss_mb"] <= 1.25 * smallest["peak_rss_mb"],
            "all_label_maps_at_input_size": all(r["label_map_at_input_size"] for r in rows),
        }), flush=True)


if __name__ == "__main__":
    main()
