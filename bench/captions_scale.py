"""Captions at COCO's size: launch time and worker memory, today's approach (b96f008) vs the in-graph join, side
by side in one run.

Files (generated, tests/support/coco_captions.py): a captions_train2017.json-shaped COCO file (118,287 images,
591,753 captions, ~90 MB, "annotations" after the whole images list), the same captions as JSONL, and optionally
a JSONL of --big_jsonl_lines lines (10M: ~0.9 GB).

Every measurement runs in its own child process; its peak RSS (summed over the process tree, sampled from /proc
every 50 ms, as in bench/memory_flat.py) and wall time are reported. `import_floor` is a child that only imports
the same modules: the memory a measurement adds is its peak minus that floor.

    today_launch   the launcher's check: read_captions (whole file -> dict), refuse if empty
    today_worker   each worker's AttachCaptionLabels.setup(): the same whole-file dict, held for the whole run
    new_launch     sniff_captions (first 64 KiB) + captions_identity (first and last MiB: the resume fingerprint)
    new_worker     the one step that touches the file. COCO: StreamCocoCaptions over the whole file (what one
                   worker does; its output goes to the shuffle). JSONL: ReadFromText's source split into Beam's
                   default 64 MiB bundles, every bundle read and parsed in turn by this one process (a worker
                   reads only its bundles; reading them all bounds it from above)
    *_job          the captions part of the job on the DirectRunner (in-process, one worker), over 100 images
                   named in the file: today = ReadImages + AttachCaptionLabels; new = ReadCaptionedImages (join)
                   + CaptionLabelsHandler. The DirectRunner keeps its shuffle in this process's memory, so the
                   new job's figure includes the 0.7M shuffled caption records that a distributed runner (Dataflow
                   Shuffle) keeps off the workers; today's dict is held by every worker process.

    .venv/bin/python -m bench.captions_scale [--big_jsonl_lines 10000000] [--skip_jobs]

Prints one JSON line per measurement and a summary line with the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from bench.memory_flat import tree_rss_bytes
from tests.support.coco_captions import (
    COCO_TRAIN2017_CAPTIONS,
    COCO_TRAIN2017_IMAGES,
    coco_spec,
    write_coco_captions,
    write_jsonl_captions,
)

REPO = Path(__file__).resolve().parents[1]
TODAY_COMMIT = "b96f0088e309906acd97bc745d315653de812970"  # main before the in-graph join
JOB_IMAGES = 100


# ---------------------------------------------------------------------------------------------------------
# Child tasks (python -m bench.captions_scale --task NAME ...): each prints one JSON line
# ---------------------------------------------------------------------------------------------------------
def write_today(work: Path) -> Path:
    """transforms/captions.py as of TODAY_COMMIT (the code users ran before), written where the children import it.
    (Read once here: a child that ran git would fork, and a fork's copy-on-write pages inflate the tree's RSS.)"""
    source = subprocess.run(["git", "show", f"{TODAY_COMMIT}:transforms/captions.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = work / "today_captions.py"
    path.write_text(source, encoding="utf-8")
    return path


def load_today(path: str):
    spec = importlib.util.spec_from_file_location("today_captions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measured(work) -> dict:
    """Run `work()` after the imports, with the peak-RSS mark reset (clear_refs 5), so its peak is the work's own."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    try:
        out = work() or {}
    except (ValueError, SystemExit) as exc:  # today's refusal: report it with what it cost
        out = {"refused": True, "error": f"{type(exc).__name__}: {exc}"[:300]}
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {**out, "work_seconds": round(seconds, 3), "rss_before_work_mb": round(before, 1),
            "work_peak_rss_mb": round(peak, 1), "work_added_mb": round(peak - before, 1), "peak_reset": reset}


def task(name: str, path: str, images: str | None, today_source: str) -> dict:
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from models.config import ModelsConfig
    from transforms import captions
    from transforms.images import ReadImages

    today = load_today(today_source)

    def today_launch():
        if not today.read_captions(path):
            raise SystemExit("holds no captions")

    def today_worker():
        attach = today.AttachCaptionLabels(path)
        attach.setup()
        return {"images_in_dict": len(attach.captions)}

    def new_launch():
        return {"format": captions.sniff_captions(path), "identity": captions.captions_identity(path)}

    def new_worker():
        counts = {"records": 0, "bundles": 1}
        if captions.sniff_captions(path) == captions.COCO:
            for _ in captions.StreamCocoCaptions().process(path):
                counts["records"] += 1
            return counts
        source = beam.io.ReadFromText(path)._source  # what the graph's Read step splits
        bundles = list(source.split(desired_bundle_size=64 << 20))  # Beam's default bundle size
        counts["bundles"] = len(bundles)
        parse = captions.ParseCaptionLine()
        for bundle in bundles:
            tracker = bundle.source.get_range_tracker(bundle.start_position, bundle.stop_position)
            for line in bundle.source.read(tracker):
                for _ in parse.process(line):
                    counts["records"] += 1
        return counts

    def job(new: bool):
        with beam.Pipeline() as p:
            if new:
                items = (p | captions.ReadCaptionedImages([images], path, captions.sniff_captions(path), 1)
                         | RunInference(captions.CaptionLabelsHandler(ModelsConfig(),
                                                                      max_batch_size=captions.CAPTION_LABEL_BATCH)))
            else:
                items = p | ReadImages([images], 1) | beam.ParDo(today.AttachCaptionLabels(path))
            _ = items | beam.Map(lambda item: len(item["labels"]))
        counters = {c.key.metric.name: c.committed for c in p.result.metrics().query()["counters"]}
        return {key: counters.get(key) for key in ("images_read", "images_without_caption", "captions_without_image")}

    work = {"import_floor": lambda: {}, "today_launch": today_launch, "new_launch": new_launch,
            "today_worker": today_worker, "new_worker": new_worker, "today_job": lambda: job(False),
            "new_job": lambda: job(True)}
    if name not in work:
        raise SystemExit(f"unknown task {name}")
    return measured(work[name])


# ---------------------------------------------------------------------------------------------------------
# Parent: files, children sampled from /proc, JSON lines
# ---------------------------------------------------------------------------------------------------------
def measure(name: str, path: Path, images: Path, today: Path) -> dict:
    argv = [sys.executable, "-m", "bench.captions_scale", "--task", name, "--path", str(path), "--images",
            str(images), "--today", str(today)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    peak = 0
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.05)  # sampling period of a measurement loop
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    row = {"bench": "captions_scale", "task": name, "file": path.name, "process_seconds": round(seconds, 2),
           "process_tree_peak_rss_mb": round(peak / 2**20, 1)}
    if proc.returncode == 0:
        row.update(json.loads(stdout.strip().splitlines()[-1]))
    else:
        last = [line for line in stderr.strip().splitlines() if line.strip()]
        row.update(failed=True, error=(last[-1] if last else f"exit {proc.returncode}")[:300])
    return row


def make_files(work: Path, big_lines: int) -> dict[str, Path]:
    spec = coco_spec(COCO_TRAIN2017_IMAGES, COCO_TRAIN2017_CAPTIONS)
    files = {"coco": write_coco_captions(work / "captions_train2017.json", spec),
             "jsonl": write_jsonl_captions(work / "captions_train2017.jsonl", spec)}
    if big_lines:
        big = coco_spec(big_lines // 5, big_lines, seed=1)
        files["big_jsonl"] = write_jsonl_captions(work / f"captions_{big_lines}.jsonl", big)
    images = work / "images"
    images.mkdir()
    pixels = np.full((16, 16, 3), 120, np.uint8)
    for image_id in spec.image_ids[:JOB_IMAGES]:
        Image.fromarray(pixels).save(images / spec.file_names[image_id])
    files["images"] = images
    return files


def compare(kind: str, got: dict[str, dict]) -> dict:
    """Today vs new for one file: launch seconds, memory a worker adds for the captions, the job's process peak."""

    def figure(row: dict, key: str):
        if row.get("failed"):
            return "failed"
        return f"refused after {row['work_seconds']} s" if row.get("refused") and key == "work_seconds" else row[key]

    def ratio(a: dict, b: dict, key: str):
        ok = not (a.get("failed") or b.get("failed") or a.get("refused")) and b[key] > 0
        return round(a[key] / b[key], 1) if ok else None

    out = {
        f"{kind}_launch_seconds_today": figure(got["today_launch"], "work_seconds"),
        f"{kind}_launch_seconds_new": figure(got["new_launch"], "work_seconds"),
        f"{kind}_launch_ratio_today_to_new": ratio(got["today_launch"], got["new_launch"], "work_seconds"),
        f"{kind}_launch_added_mb_today": figure(got["today_launch"], "work_added_mb"),
        f"{kind}_launch_added_mb_new": figure(got["new_launch"], "work_added_mb"),
        f"{kind}_worker_added_mb_today": figure(got["today_worker"], "work_added_mb"),
        f"{kind}_worker_added_mb_new": figure(got["new_worker"], "work_added_mb"),
    }
    if "new_job" in got:
        out[f"{kind}_job_peak_mb_today"] = figure(got["today_job"], "work_peak_rss_mb")
        out[f"{kind}_job_peak_mb_new"] = figure(got["new_job"], "work_peak_rss_mb")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big_jsonl_lines", type=int, default=0, help="also a JSONL of this many lines (10M: ~1 GB)")
    parser.add_argument("--skip_jobs", action="store_true", help="no DirectRunner job measurements")
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--today", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        print(json.dumps(task(args.task, args.path, args.images, args.today)), flush=True)
        os._exit(0)  # no interpreter teardown: its transient memory is not the work's

    work = Path(tempfile.mkdtemp(prefix="reme-captions-scale-"))

    def emit(row: dict) -> dict:
        print(json.dumps(row), flush=True)
        return row

    try:
        files = make_files(work, args.big_jsonl_lines)
        today = write_today(work)
        summary: dict = {"bench": "captions_scale", "summary": True}
        for kind in ("coco", "jsonl", "big_jsonl"):
            if kind not in files:
                continue
            path = files[kind]
            emit({"bench": "captions_scale", "file": path.name, "format": kind,
                  "megabytes": round(path.stat().st_size / 2**20, 1)})
            names = ["import_floor", "today_launch", "new_launch", "today_worker", "new_worker"]
            if not args.skip_jobs and kind != "big_jsonl":
                names += ["today_job", "new_job"]
            got = {name: emit(measure(name, path, files["images"], today)) for name in names}
            summary.update(compare(kind, got))
        print(json.dumps(summary), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
