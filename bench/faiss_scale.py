"""FAISS at scale (issue 6 item 3): the index build_index chooses, its build time, recall@10 and queries/s
against a Flat index measured in the same run, and the nprobe-vs-recall-vs-QPS curve.

    python bench/faiss_scale.py --n 1000000 --budget 2GB
    python bench/faiss_scale.py --n 5000000 --budget 2GB --dtype float16 --flat_subset 1000000
    python bench/faiss_scale.py --family clustered --n 1000000 --budget 2GB --recall_target 0.95
    python bench/faiss_scale.py --family clustered --n 5000000 --budget 2GB --recall_target 0.95 --dtype float16 \
        --flat_subset 1000000

Two data families (`--family`):
  * lowrank (default): the mixture described below, made to resemble real segment embeddings;
  * clustered: the hard case for compressed codes: `--clusters` (2,000) centres uniform on the sphere, each point
    = centre + `--sigma` (0.03) · N(0, I) per dimension, normalised. In 768-d the noise has norm ~0.83, so every
    member of a cluster is almost equidistant from the others: the top-10 is decided by small differences in
    inner product that coarse codes (SQ8 and below) blur. Equal cluster sizes.

Data: a mixture of `--clusters` Gaussians on the unit sphere in d=768, generated in chunks with a fixed seed and
written as segments/part-*.parquet (segment_id + visual_embedding; the columns the index step reads). Each
cluster has a centre drawn uniformly on the sphere and a spread with a low-rank part (its own random
`--intrinsic_dim`-dimensional subspace, scale `--spread`) plus an isotropic floor (`--noise`), then each point is
normalised. The low-rank part is what makes it resemble real segment embeddings: neighbours within a cluster
are genuinely nearer than the rest of the cluster, as they are for real features; a purely isotropic Gaussian in
768-d makes every member of a cluster almost equidistant. Cluster sizes are skewed (log-normal weights).

Queries are *fresh* points from the same mixture (not stored vectors). Exact neighbours come from brute-force
inner product over all stored vectors. "Flat" QPS is faiss.IndexFlatIP searching the same query batch; with
`--flat_subset m` (for sets too big to hold as float32 next to other work) it is measured on the first m vectors
and scaled by m/n (exhaustive search cost is linear in n), which the JSON says.

Prints JSON lines; writes them to bench/results/faiss_scale_<n>_<budget>.jsonl and the curve to
bench/results/faiss_curve_<n>_<budget>.json.
"""

from __future__ import annotations

import os

# The 2 cores here are shared with other work: OpenMP threads that spin while waiting make faiss several times
# slower under contention (measured: k-means 4.5 s spinning vs 0.7 s passive). Must be set before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from refset import schema  # noqa: E402
from refset.index import (  # noqa: E402
    RecallTargetMissed,
    build_index,
    load_index,
    parse_memory,
    recall_at_k,
    set_search_params,
)

RESULTS = Path(__file__).resolve().parent / "results"


class Mixture:
    """Clustered unit vectors; `sample(n, seed)` is deterministic for a given mixture and seed.

    Cluster centres are grouped under `super_clusters` parents (centre = parent + sub_spread * random unit
    vector), every point shares a common direction with weight `shared` (real embeddings are anisotropic: random
    pairs have a positive cosine), and each cluster spreads along its own low-rank subspace plus an isotropic floor.
    """

    def __init__(
        self,
        dim: int,
        clusters: int,
        intrinsic_dim: int,
        spread: float,
        noise: float,
        seed: int,
        super_clusters: int = 100,
        sub_spread: float = 0.8,
        shared: float = 0.4,
    ):
        rng = np.random.default_rng(seed)
        self.dim, self.clusters, self.r, self.spread, self.noise = dim, clusters, intrinsic_dim, spread, noise

        def unit(a: np.ndarray) -> np.ndarray:
            return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)

        parents = unit(rng.standard_normal((super_clusters, dim)))
        centers = parents[rng.integers(0, super_clusters, clusters)] + sub_spread * unit(
            rng.standard_normal((clusters, dim))
        )
        self.centers = unit(centers) + shared * unit(rng.standard_normal(dim))
        # a random (not orthonormalised: close enough in 768-d) basis per cluster, rows of norm ~1
        self.bases = (rng.standard_normal((clusters, intrinsic_dim, dim)) / np.sqrt(dim)).astype(np.float32)
        w = rng.lognormal(0.0, 0.5, clusters)
        self.weights = w / w.sum()

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, self.weights)
        # isotropic floor: uniform components of unit variance (4x cheaper to draw than normals; in 768-d the
        # inner products it induces are Gaussian all the same)
        x = rng.random((n, self.dim), dtype=np.float32)
        x -= np.float32(0.5)
        x *= np.float32(self.noise * np.sqrt(12.0 / self.dim))
        z = rng.standard_normal((n, self.r), dtype=np.float32) * np.float32(self.spread / np.sqrt(self.r))
        start = 0
        for c in np.nonzero(counts)[0]:  # points generated cluster by cluster (contiguous blocks), shuffled below
            end = start + counts[c]
            x[start:end] += self.centers[c] + z[start:end] @ self.bases[c]
            start = end
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x[rng.permutation(n)]


class Clustered:
    """`clusters` centres uniform on the unit sphere; a point is its centre + sigma·N(0, I), normalised."""

    def __init__(self, dim: int, clusters: int, sigma: float, seed: int):
        rng = np.random.default_rng(seed)
        c = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.dim, self.sigma = dim, sigma

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, self.dim), dtype=np.float32)
        x *= np.float32(self.sigma)
        x += self.centers[rng.integers(0, len(self.centers), n)]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def write_data(ref: Path, mixture: Mixture | Clustered, n: int, shard_rows: int, dtype: str, seed: int) -> float:
    """Write segments/ in chunks (one shard per chunk); returns seconds. Reuses a complete earlier write."""
    done = ref / "segments" / "_DONE"
    if done.exists():
        return 0.0
    if ref.exists():
        shutil.rmtree(ref)
    (ref / "segments").mkdir(parents=True)
    t0 = time.perf_counter()
    for shard, start in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - start)
        x = mixture.sample(rows, seed=seed + 1 + shard)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1).astype(dtype)), mixture.dim)
        ids = pa.array([f"synthetic-{start + i:09d}" for i in range(rows)], pa.string())
        table = pa.table({"segment_id": ids, "visual_embedding": emb})
        pq.write_table(table, ref / "segments" / schema.shard_name(shard), compression="none", use_dictionary=False)
    done.write_text("ok\n")
    return time.perf_counter() - t0


def read_all(ref: Path, dim: int, limit: int) -> np.ndarray:
    """The first `limit` stored vectors as float32, filled shard by shard into one array (no 2x peak)."""
    out = np.empty((limit, dim), dtype=np.float32)
    filled = 0
    for path in sorted((ref / "segments").glob("part-*.parquet")):
        col = pq.read_table(path, columns=["visual_embedding"]).column(0).combine_chunks()
        x = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        take = min(len(x), limit - filled)
        out[filled : filled + take] = x[:take]
        filled += take
        if filled == limit:
            break
    return out[:filled]


def exact_neighbours(ref: Path, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over every stored vector, streamed shard by shard."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    start = 0
    for path in sorted((ref / "segments").glob("part-*.parquet")):
        col = pq.read_table(path, columns=["visual_embedding"]).column(0).combine_chunks()
        x = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, queries.shape[1]).astype(np.float32)
        d, i = faiss.knn(queries, x, k, metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, i + start)
        start += len(x)
    heap.finalize()
    return heap.D, heap.I


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    best, ids = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return ids, len(queries) / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="lowrank", choices=["lowrank", "clustered"])
    p.add_argument("--sigma", type=float, default=0.03, help="clustered: per-dimension noise around each centre")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--budget", default="2GB")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=None, help="default 3000 (lowrank), 2000 (clustered)")
    p.add_argument("--intrinsic_dim", type=int, default=24)
    p.add_argument("--spread", type=float, default=0.6)
    p.add_argument("--noise", type=float, default=0.25)
    p.add_argument("--super_clusters", type=int, default=100)
    p.add_argument("--sub_spread", type=float, default=0.8)
    p.add_argument("--shared", type=float, default=0.4)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--shard_rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=None, help="fresh queries; default 1000 (lowrank), 5000 (clustered)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--held_out", type=int, default=1000, help="build_index's held-out queries for tuning")
    p.add_argument("--recall_target", type=float, default=0.97)
    p.add_argument("--flat_subset", type=int, default=0, help="measure Flat QPS on this many vectors, scale by n")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the synthetic reference set lives (default /tmp/...)")
    p.add_argument("--min_speedup", type=float, default=5.0, help="stop the curve once slower than this x Flat")
    p.add_argument("--keep_data", action="store_true")
    p.add_argument("--generate_only", action="store_true", help="write the synthetic shards and stop")
    args = p.parse_args(argv)
    clustered = args.family == "clustered"
    args.clusters = args.clusters or (2000 if clustered else 3000)
    args.queries = args.queries or (5000 if clustered else 1000)

    faiss.omp_set_num_threads(args.threads)
    tag = f"{args.n}_{args.budget}" if not clustered else f"clustered_{args.n}_{args.budget}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines_path = RESULTS / f"faiss_scale_{tag}.jsonl"
    lines_out = open(lines_path, "w")

    def emit(obj: dict) -> None:
        line = json.dumps(obj)
        print(line, flush=True)
        lines_out.write(line + "\n")
        lines_out.flush()

    family = f"clustered-sigma{args.sigma}" if clustered else "lowrank"
    ref = Path(args.workdir or f"/tmp/reme-faiss-bench/{family}-{args.n}-{args.dim}-{args.clusters}-{args.dtype}-{args.seed}")
    mixture = Clustered(args.dim, args.clusters, args.sigma, args.seed) if clustered else Mixture(
        args.dim,
        args.clusters,
        args.intrinsic_dim,
        args.spread,
        args.noise,
        args.seed,
        super_clusters=args.super_clusters,
        sub_spread=args.sub_spread,
        shared=args.shared,
    )
    try:  # numpy's BLAS threads spin against the other work on these 2 cores; one thread is faster here
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        from contextlib import nullcontext as threadpool_limits
    with threadpool_limits(1):
        gen_seconds = write_data(ref, mixture, args.n, args.shard_rows, args.dtype, args.seed)
    emit(
        {
            "event": "data",
            "family": family,
            "n": args.n,
            "dim": args.dim,
            "clusters": args.clusters,
            **({"sigma": args.sigma} if clustered else {}),
            "intrinsic_dim": args.intrinsic_dim,
            "spread": args.spread,
            "noise": args.noise,
            "super_clusters": args.super_clusters,
            "sub_spread": args.sub_spread,
            "shared": args.shared,
            "dtype": args.dtype,
            "shards": len(list((ref / "segments").glob("part-*.parquet"))),
            "write_seconds": round(gen_seconds, 1),
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
        }
    )

    if args.generate_only:
        return 0

    # 1. the build step, exactly as the pipeline runs it
    for old in (ref / "index").glob("*"):
        old.unlink()
    build_error = None
    try:
        info = build_index(
            str(ref),
            memory_budget=args.budget,
            recall_target=args.recall_target,
            k=args.k,
            held_out_queries=args.held_out,
            seed=args.seed,
            progress=True,
        )
    except RecallTargetMissed as missed:  # the best index is written all the same: bench it
        info, build_error = missed.info, str(missed)
    emit(
        {
            "event": "build",
            **{
                key: info[key]
                for key in (
                    "index_key",
                    "memory_budget_bytes",
                    "memory_estimate_bytes",
                    "index_bytes",
                    "search_params",
                    "recall_at_k",
                    "recall_target",
                    "recall_target_met",
                    "qps",
                    "refine",
                    "assignment",
                    "grouped_assignment_agreement",
                    "train_size",
                    "train_seconds",
                    "add_seconds",
                    "tune_seconds",
                    "escalate_seconds",
                    "build_seconds",
                    "escalated_from",
                )
            },
            "build_error": build_error,
            "build_tuning_curve": info["tuning_curve"],
        }
    )

    # 2. fresh queries; 3. Flat on the same queries (all vectors, or a subset scaled linearly). With all vectors,
    # Flat's answer is the exact neighbours (one exhaustive pass, not two); with a subset they are streamed.
    queries = mixture.sample(args.queries, seed=10**6 + args.seed)
    m = args.flat_subset if 0 < args.flat_subset < args.n else args.n
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(read_all(ref, args.dim, limit=m))
    t0 = time.perf_counter()
    exact_scores, exact = flat.search(queries, args.k)
    flat_qps_measured = len(queries) / (time.perf_counter() - t0)
    del flat
    exact_seconds = 0.0
    if m != args.n:
        t0 = time.perf_counter()
        exact_scores, exact = exact_neighbours(ref, queries, args.k)
        exact_seconds = time.perf_counter() - t0
    flat_qps = flat_qps_measured * m / args.n
    emit(
        {
            "event": "flat",
            "qps": round(flat_qps, 2),
            "measured_on": m,
            "measured_qps": round(flat_qps_measured, 2),
            "scaled": m != args.n,
            "note": "exhaustive search time is linear in n" if m != args.n else "",
            "streamed_exact_seconds": round(exact_seconds, 1),
            # what the data looks like to a query: cosine of its 1st and k-th exact neighbours, random pairs
            "query_nn1_cos": round(float(exact_scores[:, 0].mean()), 3),
            "query_nnk_cos": round(float(exact_scores[:, -1].mean()), 3),
            "random_pair_cos": round(float((queries[: len(queries) // 2] @ queries[len(queries) // 2 :].T).mean()), 3),
        }
    )

    # 4. the built index as the labeller loads it, at its tuned setting and along the curve
    index, _ = load_index(str(ref))
    ids, qps = timed_search(index, queries, args.k, repeats=2)
    tuned = {
        "event": "tuned",
        "index_key": info["index_key"],
        **info["search_params"],
        "recall_at_k": round(recall_at_k(ids, exact), 4),
        "qps": round(qps, 1),
        "speedup_vs_flat": round(qps / flat_qps, 1),
    }
    emit(tuned)
    curve = []
    param = info["plan"]["search_param"]
    for value in info["plan"]["candidates"] if param else []:
        set_search_params(index, {**info["search_params"], param: value})
        ids, qps = timed_search(index, queries, args.k, repeats=2)
        point = {
            **info["search_params"],
            param: value,
            "recall_at_k": round(recall_at_k(ids, exact), 4),
            "qps": round(qps, 1),
            "speedup_vs_flat": round(qps / flat_qps, 1),
        }
        curve.append(point)
        emit({"event": "curve", **point})
        if point["speedup_vs_flat"] < args.min_speedup:
            break
    (RESULTS / f"faiss_curve_{tag}.json").write_text(
        json.dumps(
            {
                "index_key": info["index_key"],
                "n": args.n,
                "budget": args.budget,
                "flat_qps": flat_qps,
                "flat_scaled_from": m,
                "curve": curve,
            },
            indent=1,
        )
        + "\n"
    )

    def best_at(min_speedup: float) -> dict | None:
        ok = [c for c in curve if c["speedup_vs_flat"] >= min_speedup]
        return max(ok, key=lambda c: c["recall_at_k"]) if ok else None

    at50, at20 = best_at(50), best_at(20)
    emit(
        {
            "event": "summary",
            "n": args.n,
            "dim": args.dim,
            "family": family,
            "budget": args.budget,
            "index_key": info["index_key"],
            "refine": bool(info.get("refine")),
            "search_params": info["search_params"],
            "k": args.k,
            "recall_at_k": tuned["recall_at_k"],
            "qps_ratio_vs_flat": tuned["speedup_vs_flat"],
            "build_s": info["build_seconds"],
            "memory": {
                "budget_bytes": parse_memory(args.budget),
                "estimate_bytes": info["memory_estimate_bytes"],
                "index_file_bytes": info["index_bytes"],
                "refine_on_disk_bytes": (info.get("refine") or {}).get("bytes", 0),
            },
            "recall_target": info["recall_target"],
            "recall_target_met": info["recall_target_met"],
            "build_error": build_error,
            "build_seconds": info["build_seconds"],
            "index_bytes": info["index_bytes"],
            "budget_bytes": parse_memory(args.budget),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "tuned": {k: v for k, v in tuned.items() if k != "event"},
            "best_recall_at_50x_flat": at50,
            "best_recall_at_20x_flat": at20,
            # the targets: 1M under 2 GB (recall, speed, build time); 5M under 2 GB (>= 20x Flat)
            "targets": {
                "recall>=0.97": tuned["recall_at_k"] >= 0.97,
                "speedup>=50": tuned["speedup_vs_flat"] >= 50,
                "build<=180s": info["build_seconds"] <= 180,
            }
            if args.n <= 1_000_000
            else {"recall>=0.95": tuned["recall_at_k"] >= 0.95, "speedup>=20": tuned["speedup_vs_flat"] >= 20},
        }
    )
    lines_out.close()
    if not args.keep_data:
        shutil.rmtree(ref, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
