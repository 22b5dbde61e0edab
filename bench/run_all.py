"""`make bench`: every CPU benchmark in a quick setting (about 10 minutes on a 2-core machine), one JSON file.

    python bench/run_all.py [--only sam_tiny,paint] [--list] [--out bench/results/latest.jsonl]

Each script runs as its own process (`python -m bench.<name> <flags>`, from the repository root) with a time
limit; every JSON line it prints is echoed and appended to bench/results/latest.jsonl as it arrives, followed by
one {"bench": "run_all", ...} status line per script (seconds, exit status, error if any). A script that fails or
runs out of time costs its own lines only; the run goes on and exits 0, with the failures counted in the last line.

The sizes here are the scripts' own flags turned down so the whole set fits the time; the figures the README
quotes at full size are run by hand, e.g.
    python -m bench.faiss_scale --n 1000000 --budget 2GB
    python -m bench.faiss_scale --n 5000000 --budget 2GB --dtype float16 --flat_subset 1000000
    python -m bench.memory_flat                           # 2,000 images labelled, 1,000 indexed
    python -m bench.coco_stream                           # a COCO train2017-size instances JSON (0.45 GB)
    python -m bench.label_memory --full_res_max_mp 12     # peak RSS of reme label at 1-48 MP photos
    python -m bench.gpu --out DIR                         # on a GPU machine
    python -m bench.filter_quality                        # group filter: 5 hard worlds, first vs shipped rule
    python -m bench.filter_memory                         # Filter step per-worker RSS at 1k-50k labels
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.child import run_json_child

ROOT = Path(__file__).resolve().parents[1]

# (name, module, flags, time limit in seconds). Order: cheapest first, so a slow machine still gets most figures.
BENCHMARKS: list[tuple[str, str, list[str], int]] = [
    ("paint", "bench.paint", ["--size", "40", "--segments", "10", "--repeats", "2"], 60),
    ("pooling_vs_crops", "bench.pooling_vs_crops", ["--threads", "1", "--max-segments", "16"], 120),
    ("sam_tiny", "bench.sam_masker",
     ["--model", "tiny", "--points-per-side", "8", "--images", "2", "--max-side", "256", "--thresholds", "keep-all"],
     120),
    ("sam_vit_b", "bench.sam_masker",
     ["--model", "vit_b", "--points-per-side", "8", "--images", "1", "--max-side", "256", "--thresholds", "keep-all"],
     180),
    ("embed_throughput", "bench.embed_throughput",
     ["--device", "cpu", "--batch-sizes", "1,4", "--image-size", "224", "--segments", "8", "--repeats", "1",
      "--threads", "1"], 120),
    ("retrieval_paint", "bench.gpu",
     ["--device", "cpu", "--sections", "retrieval", "--refs", "100000", "--label-images", "16", "--out",
      "{tmp}"], 150),
    ("faiss_100k", "bench.faiss_scale",
     ["--n", "100000", "--budget", "2GB", "--queries", "200", "--held_out", "500", "--threads", "2",
      "--workdir", "{tmp}/faiss_100k"], 180),
    ("pipeline_overhead", "bench.pipeline_overhead", ["--images", "6", "--max_side", "128"], 180),
    ("label_throughput", "bench.label_throughput", ["--images", "8", "--size", "96x128"], 180),
    ("memory_flat", "bench.memory_flat", ["--label_images", "200", "--index_images", "100", "--size", "64"], 180),
    ("nouns", "bench.nouns", [], 120),
    ("report", "bench.report", ["--labels", "1000,10000"], 180),
    ("coco_stream", "bench.coco_stream", ["--images", "20000"], 180),
    ("coco_export", "bench.coco_export", ["--megapixels", "4", "--images", "1000"], 120),
    ("label_memory", "bench.label_memory", ["--megapixels", "1,24", "--full_res_max_mp", "1"], 240),
    ("filter_memory", "bench.filter_memory", ["--labels", "1000,10000", "--dim", "64", "--worker_labels", "100"], 180),
    ("filter_quality", "bench.filter_quality", ["--worlds", "dev:0", "--n_train", "32", "--skip", "end_to_end"], 240),
]


def run_one(name: str, module: str, flags: list[str], limit: int, sink) -> dict:
    """Run one benchmark script; forward its JSON lines to `sink`; return its status line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    child = run_json_child([sys.executable, "-m", module, *flags], limit, sink, env=env, echo_other=False)
    status = {"bench": "run_all", "script": name, "command": f"python -m {module} {' '.join(flags)}",
              "seconds": round(child.seconds, 1), "rc": child.rc, "lines": child.lines}
    if child.rc != 0:
        status["error"] = f"killed at its {limit} s limit" if child.timed_out else f"exit status {child.rc}"
        status["stderr_tail"] = child.stderr_tail
    elif child.lines == 0:
        status["error"] = "printed no JSON line"
    return status


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.jsonl"))
    ap.add_argument("--only", default=None, help="comma list of benchmark names (see --list)")
    ap.add_argument("--list", action="store_true", help="print the benchmarks and their commands, run nothing")
    args = ap.parse_args(argv)

    chosen = BENCHMARKS
    if args.only:
        wanted = {x.strip() for x in args.only.split(",") if x.strip()}
        unknown = wanted - {b[0] for b in BENCHMARKS}
        if unknown:
            ap.error(f"unknown benchmarks {sorted(unknown)}; known: {', '.join(b[0] for b in BENCHMARKS)}")
        chosen = [b for b in BENCHMARKS if b[0] in wanted]
    if args.list:
        for name, module, flags, limit in chosen:
            print(f"{name:18s} {limit:4d}s  python -m {module} {' '.join(flags)}")
        return 0

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failures = 0
    with open(out, "w", buffering=1) as f, tempfile.TemporaryDirectory(prefix="reme-bench-") as tmp:

        def sink(row: dict) -> None:
            line = json.dumps(row)
            print(line, flush=True)
            f.write(line + "\n")

        for name, module, flags, limit in chosen:
            flags = [x.replace("{tmp}", tmp) for x in flags]
            try:
                status = run_one(name, module, flags, limit, sink)
            except Exception as e:  # could not even start it: record and go on
                status = {"bench": "run_all", "script": name, "error": f"{type(e).__name__}: {e}"}
            failures += "error" in status
            sink(status)
        sink({"bench": "run_all", "script": "done", "seconds": round(time.perf_counter() - start, 1),
              "scripts": len(chosen), "failed": failures, "out": str(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
