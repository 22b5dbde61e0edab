"""Per-worker memory of the Filter step from 1k to 50k labels: the shipped design and the first one side by side.

A Beam worker of the Filter step judges the pairs of the labels (keys) it is given, and holds whatever the step
ships to every worker. Each measurement is a fresh subprocess that plays one such worker for a fixed share of the
work (`--worker_labels` labels x `--pairs_per_label` pairs) while the run has N labels in all:

- "shipped" (transforms.group_filter): the whole run's pairs stream through the Bank combiner (SmallestFn,
  bank_size); then, per label of the worker, SmallestFn -> label_model -> _DecideGroup.process, the step's own
  DoFn, with the bank as its side input. Nothing else is held: per-label statistics arrive joined by key.
- "first" (the first design): every label's statistics were side inputs (AsDict of the per-label mean sums,
  trimmed-mean sums and quality moments, as its Beam graph shipped them); the worker then decides its pairs.

Peak RSS (ru_maxrss) of each subprocess, and its RSS after imports (the interpreter, numpy, Beam), in one run.
Embeddings are random unit vectors (the memory does not depend on their values).

    python -m bench.filter_memory                     # 1k, 5k, 20k, 50k labels, dim 384 -> JSON lines
    python -m bench.filter_memory --labels 1000,50000 --dim 64     # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _unit_rows(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _label_pairs(label_index: int, pairs: int, dim: int) -> list[dict]:
    rng = np.random.default_rng(label_index)
    centre = _unit_rows(rng, 1, dim)[0]
    emb = centre + 0.5 * _unit_rows(rng, pairs, dim)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    label = f"label{label_index:06d}"
    return [{"segment_id": f"{label}-{i:05d}", "image_uri": f"/img/{label}-{i}.png", "width": 8, "height": 8,
             "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1, "mask_rle": b"", "label": label, "pair_score": 0.3,
             "visual_embedding": emb[i]} for i in range(pairs)]


def child_shipped(labels: int, worker_labels: int, pairs: int, dim: int) -> dict:
    from transforms.group_filter import (
        GroupFilterConfig,
        SmallestFn,
        _DecideGroup,
        label_model,
        make_bank,
        member_entry,
    )

    config = GroupFilterConfig()
    after_imports = _rss_mb()
    bank_fn = SmallestFn(config.bank_size)
    acc = bank_fn.create_accumulator()
    for li in range(labels):  # the whole run's pairs stream through the bank combiner
        for row in _label_pairs(li, pairs, dim):
            acc = bank_fn.add_input(acc, member_entry(row["segment_id"], row["label"], row["visual_embedding"]))
    bank = make_bank(bank_fn.extract_output(acc)[1])
    decide = _DecideGroup(config)
    sample_fn = SmallestFn(config.sample_size)
    kept = dropped = 0
    for li in range(worker_labels):  # this worker's keys
        rows = _label_pairs(li, pairs, dim)
        sample = sample_fn.create_accumulator()
        for row in rows:
            sample = sample_fn.add_input(sample, member_entry(row["segment_id"], row["label"], row["visual_embedding"]))
        count, entries = sample_fn.extract_output(sample)
        model = label_model(rows[0]["label"], count, entries, config)
        for out in decide.process((rows[0]["label"], {"model": [model], "pairs": iter(rows)}), bank):
            if hasattr(out, "tag"):
                dropped += 1
            else:
                kept += 1
    return {"after_imports_mb": round(after_imports, 1), "bank_rows": len(bank.ids), "kept": kept, "dropped": dropped}


def child_first(labels: int, worker_labels: int, pairs: int, dim: int) -> dict:
    import apache_beam  # noqa: F401  (the worker has Beam loaded in both designs)

    scale = float(2**30)
    after_imports = _rss_mb()
    # The side inputs every worker held: AsDict(label -> (count, int64 fixed-point sum)) twice, moments once.
    means_1, means_2, moments_2 = {}, {}, {}
    for li in range(labels):
        rows = _label_pairs(li, pairs, dim)
        emb = np.stack([r["visual_embedding"] for r in rows]).astype(np.float64)
        fixed = np.rint(emb * scale).astype(np.int64).sum(0)
        label = rows[0]["label"]
        means_1[label] = (len(rows), fixed)
        means_2[label] = (len(rows), fixed.copy())
        q = emb @ (fixed / np.linalg.norm(fixed))
        moments_2[label] = (len(rows), int(np.rint(q * scale).sum()), int(np.rint(q * q * scale).sum()))
    kept = dropped = 0
    for li in range(worker_labels):
        for row in _label_pairs(li, pairs, dim):
            n, s, s2 = moments_2[row["label"]]
            mean = means_2[row["label"]][1].astype(np.float64)
            quality = float(np.dot(row["visual_embedding"].astype(np.float64), mean / np.linalg.norm(mean)))
            mu = s / scale / n
            cut = mu - 2.0 * max(s2 / scale / n - mu * mu, 0.0) ** 0.5
            dropped, kept = (dropped + 1, kept) if quality < cut else (dropped, kept + 1)
    return {"after_imports_mb": round(after_imports, 1), "kept": kept, "dropped": dropped}


def run_child(design: str, labels: int, args) -> dict:
    argv = [sys.executable, "-m", "bench.filter_memory", "--child", design, "--labels", str(labels),
            "--worker_labels", str(args.worker_labels), "--pairs_per_label", str(args.pairs_per_label),
            "--dim", str(args.dim)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default="1000,5000,20000,50000")
    ap.add_argument("--worker_labels", type=int, default=500, help="labels this worker judges (its keys)")
    ap.add_argument("--pairs_per_label", type=int, default=20)
    ap.add_argument("--dim", type=int, default=384, help="embedding size (DINOv2-S: 384, -B: 768)")
    ap.add_argument("--child", choices=("shipped", "first"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    counts = [int(v) for v in args.labels.split(",")]
    if args.child:
        fn = child_shipped if args.child == "shipped" else child_first
        out = fn(counts[0], min(args.worker_labels, counts[0]), args.pairs_per_label, args.dim)
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(out))
        return 0
    rows = {}
    for labels in counts:
        for design in ("shipped", "first"):  # side by side, one run
            result = run_child(design, labels, args)
            rows[(design, labels)] = result
            print(json.dumps({"bench": "filter_memory", "design": design, "labels": labels,
                              "pairs": labels * args.pairs_per_label, "worker_labels": args.worker_labels,
                              "dim": args.dim, **result}), flush=True)
    summary = {"bench": "filter_memory", "summary": True, "labels": counts}
    for design in ("shipped", "first"):
        peaks = [rows[(design, n)]["peak_rss_mb"] - rows[(design, n)]["after_imports_mb"] for n in counts]
        summary[f"{design}_filter_mb"] = [round(p, 1) for p in peaks]
        summary[f"{design}_growth_{counts[0]}_to_{counts[-1]}"] = round(peaks[-1] / max(peaks[0], 1e-9), 2)
    summary["shipped_flat"] = bool(summary[f"shipped_growth_{counts[0]}_to_{counts[-1]}"] <= 1.2)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
