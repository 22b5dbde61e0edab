"""`reme report` at users' label counts: build seconds and page size at 1k, 10k and 50k labels, one run.

Each reference set is synthetic (tests/support/report_sets.py: Zipf-sized labels, about 8 segments each, 5% as
many outliers again, 48 generated 640x480 JPEGs as the source images) and written to a temporary folder first; only
build_report + the write are timed. One JSON line per size, then one with the ratios side by side:

    python -m bench.report [--labels 1000,10000,50000] [--max_galleries 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from inference.report import DEFAULT_MAX_GALLERIES, DEFAULT_THUMBNAIL_BUDGET, build_report
from refset import schema
from tests.support.report_sets import synthetic_refset


def thumbnail_bytes(page: str) -> int:
    start = page.index('<script type="application/json" id="reme-data">') + len(
        '<script type="application/json" id="reme-data">')
    data = json.loads(page[start:page.index("</script>", start)])
    return sum(len(t[0]) for g in data["galleries"].values() for part in g.values() for t in part)


def measure(n_labels: int, max_galleries: int, workdir: Path) -> dict:
    root = synthetic_refset(workdir / f"ref-{n_labels}", n_labels)
    segments = sum(pq.read_metadata(p).num_rows for p in (root / schema.SEGMENTS_DIR).glob("part-*.parquet"))
    out = workdir / f"report-{n_labels}.html"
    start = time.perf_counter()
    page = build_report(str(root), max_galleries=max_galleries)
    out.write_text(page, encoding="utf-8")
    seconds = time.perf_counter() - start
    size = out.stat().st_size
    thumbs = thumbnail_bytes(page)
    return {"bench": "report", "labels": n_labels, "segments": segments, "seconds": round(seconds, 2),
            "bytes": size, "thumbnail_bytes": thumbs, "bytes_per_label_without_thumbnails":
            round((size - thumbs) / n_labels, 1), "max_galleries": max_galleries,
            "thumbnail_budget": DEFAULT_THUMBNAIL_BUDGET}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="1000,10000,50000", help="comma-separated label counts")
    parser.add_argument("--max_galleries", type=int, default=DEFAULT_MAX_GALLERIES)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.labels.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="reme-bench-report-") as tmp:
        for n in sizes:
            results.append(measure(n, args.max_galleries, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    first, last = results[0], results[-1]
    print(json.dumps({"bench": "report_scaling", "labels_ratio": round(last["labels"] / first["labels"], 1),
                      "seconds_ratio": round(last["seconds"] / max(first["seconds"], 1e-9), 2),
                      "bytes_ratio": round(last["bytes"] / first["bytes"], 2)}), flush=True)


if __name__ == "__main__":
    main()
