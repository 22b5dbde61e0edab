"""FAISS index over a reference set's visual embeddings (SPEC §3): choose, train, add, tune, escalate, write, load.

The public surface (everything outside this package uses only these names):

    build_index(reference_dir, memory_budget="2GB", recall_target=0.95, k=10, ...) -> dict (index_info.json)
    load_index(reference_dir) -> (faiss.Index with the tuned search parameters applied, ids pyarrow.Table)
    search(index, queries, k) -> (scores, positions)
    set_search_params(index, {"nprobe": 16, ...})
    choose_index(n, dim, budget) -> IndexPlan; parse_memory("2GB"); recall_at_k(approx, exact)
    CorruptIndex, RecallTargetMissed

    python -m pipeline.faiss_index --reference DIR [--memory_budget 2GB --recall_target 0.95]

Embeddings are unit vectors, so the metric is inner product (= cosine). Index row i is row i of the global segment
order: `segments/part-*.parquet` sorted by name, rows in file order; `index/ids.parquet` maps it back to
segment_id / shard / row.

The package, autofaiss-style: plan.py (which index: memory model, choice, escalations; pure), build.py (train,
assign, add; the float16 refine file), tune.py (recall against exact search, the search parameter), io.py
(checksummed files), shards.py (reading the embeddings).

The step: choose the most accurate index that fits the budget (plan.py), train it, add every shard (computing the
held-out queries' exact neighbours in the same pass), tune its search parameter to the recall target. When the
tuned recall misses the target it escalates within the same budget, cheapest first: exact list assignment, the
most accurate codes that fit, then a refine stage that re-ranks the IVF's candidates against float16 copies of the
vectors kept on disk beside the index (index/refine_fp16.faiss, memory-mapped at load). When nothing reaches the
target, the best index is written all the same (recall_target_met: false) and RecallTargetMissed is raised.
"""

from __future__ import annotations

import os

# Idle OpenMP threads that spin instead of sleeping made faiss k-means ~7x slower on a shared 2-core machine;
# the setting is read when faiss's OpenMP runtime starts, so it must precede the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import dataclasses  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from refset import schema, storage  # noqa: E402
from refset.index import build as _build  # noqa: E402
from refset.index import io as _io  # noqa: E402
from refset.index.io import CorruptIndex  # noqa: E402
from refset.index.plan import (  # noqa: E402
    EFSEARCH_CANDIDATES,
    FLAT_MAX_VECTORS,
    HNSW_MAX_VECTORS,
    REFINE_CODES,
    IndexPlan,
    RecallTargetMissed,
    choose_index,
    escalations,
    ivf_estimate,
    nprobe_candidates,
    parse_memory,
    train_size_for,
)
from refset.index.shards import embeddings, gather, list_shards, read_shard  # noqa: E402
from refset.index.tune import exact_answers, per_query_recall, recall_at_k, set_search_params, tune  # noqa: E402

__all__ = [
    "FLAT_MAX_VECTORS",
    "HNSW_MAX_VECTORS",
    "CorruptIndex",
    "IndexPlan",
    "RecallTargetMissed",
    "build_index",
    "choose_index",
    "exact_answers",
    "load_index",
    "parse_memory",
    "per_query_recall",
    "recall_at_k",
    "search",
    "set_search_params",
]

RECALL_METHOD = "leave-one-out: stored vectors as queries, own row removed from approximate and exact lists"


def build_index(
    reference_dir: str,
    memory_budget: str | int = "2GB",
    recall_target: float = 0.95,
    k: int = 10,
    held_out_queries: int = 1000,
    seed: int = 0,
    index_key: str | None = None,
    progress: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Build <reference_dir>/index/ from the segment shards; returns the index info (also written as JSON).

    `index_key` overrides the chooser's first choice (any faiss.index_factory string; the search parameter is
    inferred); escalation still applies to it. `on_progress(stage, done, total)` is told how the stages "train",
    "add" (vectors), "refine" (vectors) and "tune" advance. Raises RecallTargetMissed, after writing the best index
    and its info, when no index within the budget reaches `recall_target`.
    """
    step = on_progress or (lambda stage, done, total: None)
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    if k < 1 or held_out_queries < 1:
        raise ValueError(f"k and held_out_queries must be >= 1, got k={k} held_out_queries={held_out_queries}")
    log = (lambda msg: print(f"[faiss_index] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    t_start = time.perf_counter()
    shards, dim = list_shards(reference_dir)
    n = shards[-1].start + shards[-1].rows
    if n == 0:
        raise ValueError(f"the segment shards under {reference_dir} hold no rows")
    budget = parse_memory(memory_budget)
    plan = choose_index(n, dim, budget) if index_key is None else _plan_for_key(index_key, n, dim, budget)
    log(f"n={n} dim={dim} -> {plan.key} (estimate {plan.memory_estimate_bytes / 1e9:.2f} GB)")

    rng = np.random.default_rng(seed)
    n_queries = min(held_out_queries, n)
    query_pos = np.sort(rng.choice(n, size=n_queries, replace=False)).astype(np.int64)
    train_pos = np.sort(rng.choice(n, size=plan.train_size, replace=False)).astype(np.int64)
    wanted = np.union1d(query_pos, train_pos)
    sample = gather(shards, wanted, dim)
    queries = np.ascontiguousarray(sample[np.searchsorted(wanted, query_pos)])
    xt = np.ascontiguousarray(sample[np.searchsorted(wanted, train_pos)]) if plan.train_size else None

    index = _build.new_index(plan)
    t0 = time.perf_counter()
    centroids = None
    if plan.train_size:
        step("train", 0, 1)
        centroids = _build.train(index, xt, seed)
    assignment, assigner, agreement = _build.choose_assigner(index, plan.assignment, sample, seed)
    del sample
    if plan.train_size:
        step("train", 1, 1)
    train_seconds = time.perf_counter() - t0
    log(f"trained in {train_seconds:.1f}s; list assignment: {assignment} (grouped agreement {agreement})")

    # Add shard by shard; the exact neighbours of the queries come from the same pass (no second read).
    t0 = time.perf_counter()
    width = 2 * k + 1  # the top k, the query's own row, and room for ties of the k-th neighbour
    heap = faiss.ResultHeap(n_queries, width, keep_max=True)
    lists = np.empty(n, dtype=np.int64) if assignment == "exact" else None  # kept for rebuilds with other codes
    id_parts = []
    for shard in shards:
        table = read_shard(shard, with_ids=True)
        x = embeddings(table)
        if len(x):
            shard_lists = assigner.assign(x) if assigner is not None else None
            if lists is not None:
                lists[shard.start : shard.start + shard.rows] = shard_lists
            _build.add(index, x, shard_lists)
            scores, local = faiss.knn(queries, x, min(width, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
            if local.shape[1] < width:  # pad a tiny shard to the heap's width
                pad = width - local.shape[1]
                scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
                local = np.pad(local, ((0, 0), (0, pad)), constant_values=-1)
            heap.add_result(np.ascontiguousarray(scores, dtype=np.float32),
                            np.where(local >= 0, local + shard.start, -1).astype(np.int64))
        id_parts.append(_ids_table(shard, table))
        log(f"added {shard.name} ({shard.start + shard.rows}/{n})")
        step("add", shard.start + shard.rows, n)
    heap.finalize()
    add_seconds = time.perf_counter() - t0
    if index.ntotal != n:
        raise RuntimeError(f"index holds {index.ntotal} vectors, expected {n}")
    exact = exact_answers(heap.I, heap.D, query_pos, k)

    def tuned(idx: faiss.Index, p: IndexPlan) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, Any]]:
        step("tune", 0, 1)
        params, curve = tune(idx, p, queries, query_pos, exact, recall_target, k)
        step("tune", 1, 1)
        chosen = next((c for c in curve if all(c.get(a) == b for a, b in params.items())), curve[-1])
        log(f"{p.key}{' + refine ' + p.refine if p.refine else ''} ({assignment} lists) tuned {params or 'exact'}: "
            f"recall@{k}={chosen['recall']} (lower 95% {chosen['recall_lower_95']}) qps={chosen['qps']}")
        return params, curve, chosen

    t0 = time.perf_counter()
    params, curve, chosen = tuned(index, plan)
    tune_seconds = time.perf_counter() - t0

    # Escalate within the budget while the target is missed: exact lists, better codes, refine from disk.
    base, refine_file, missed = index, None, []
    t_escalate = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="reme-faiss-")
    try:
        while chosen["recall_lower_95"] < recall_target:
            steps = escalations(plan, grouped_assignment_used=assignment == "grouped")
            if not steps:
                break
            what, nxt = steps[0]
            missed.append({"index_key": plan.key, "assignment": assignment, "refine": plan.refine,
                           "search_params": params, "recall_at_k": chosen["recall"],
                           "recall_lower_95": chosen["recall_lower_95"], "qps": chosen["qps"], "next": what})
            log(f"recall target {recall_target} missed; escalating: {what} -> {nxt.key}")
            if what == "refine":
                refine_file = os.path.join(tmp, os.path.basename(schema.INDEX_REFINE))
                refine_bytes, refine_sha = _build.write_refine(shards, dim, refine_file,
                                                               lambda done, total: step("refine", done, total))
                refine = faiss.read_index(refine_file, faiss.IO_FLAG_MMAP_IFC)
                index = _build.with_refine(base, refine)
            else:
                if what == "exact_assignment":
                    assignment = "exact"
                    lists = _build.ExactAssigner(centroids).assign_shards(shards)
                base = _build.new_index(nxt)
                _build.train(base, xt, seed, centroids)
                _build.readd(base, shards, lists, lambda done, total: step("add", done, total))
                index = base
            plan = nxt
            params, curve, chosen = tuned(index, plan)
        escalate_seconds = time.perf_counter() - t_escalate

        index_bytes, index_sha = _io.write_index(base, storage.join(reference_dir, schema.INDEX_FILE))
        refine_info = None
        refine_path = storage.join(reference_dir, schema.INDEX_REFINE)
        if refine_file is not None:
            _io.put_file(refine_file, refine_path)
            refine_info = {"codes": REFINE_CODES, "storage": "disk, memory-mapped at load", "file": schema.INDEX_REFINE,
                           "bytes": refine_bytes, "sha256": refine_sha}
        elif storage.exists(refine_path):
            storage.filesystem(refine_path).rm(refine_path)  # an earlier build's refine file is not this index's
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    storage.write_parquet(storage.join(reference_dir, schema.INDEX_IDS), pa.concat_tables(id_parts))

    met = chosen["recall_lower_95"] >= recall_target
    info = {
        "index_key": plan.key,
        "metric": plan.metric,
        "n": n,
        "dim": dim,
        "memory_budget_bytes": budget,
        "memory_estimate_bytes": plan.memory_estimate_bytes,
        "index_bytes": index_bytes,
        "index_sha256": index_sha,
        "refine": refine_info,
        "search_params": params,
        "k": k,
        "recall_at_k": chosen["recall"],
        "recall_lower_95": chosen["recall_lower_95"],
        "recall_target": recall_target,
        "recall_target_met": met,
        "qps": chosen["qps"],
        "held_out_queries": n_queries,
        "recall_method": RECALL_METHOD,
        "tuning_curve": curve,
        "escalated_from": missed,
        "assignment": assignment,
        "grouped_assignment_agreement": agreement,
        "train_size": plan.train_size,
        "plan": {"reason": plan.reason, "nlist": plan.nlist, "search_param": plan.search_param,
                 "candidates": list(plan.candidates), "alternatives": plan.alternatives},
        "train_seconds": round(train_seconds, 2),
        "add_seconds": round(add_seconds, 2),
        "tune_seconds": round(tune_seconds, 2),
        "escalate_seconds": round(escalate_seconds, 2),
        "build_seconds": round(time.perf_counter() - t_start, 2),
        "seed": seed,
        "faiss_version": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
    }
    storage.write_json(storage.join(reference_dir, schema.INDEX_INFO), info)
    if not met:
        tried = [m["index_key"] + (" + refine" if m["refine"] else "") for m in missed] + [
            plan.key + (" + refine" if plan.refine else "")]
        raise RecallTargetMissed(
            f"recall@{k} {chosen['recall']} (95% lower bound {chosen['recall_lower_95']}) is below the target "
            f"{recall_target} for every index within the {_human_bytes(budget)} budget (tried {', '.join(tried)}); "
            f"the best was written to {storage.join(reference_dir, schema.INDEX_DIR)}: raise --memory_budget or "
            "lower --recall_target",
            info,
        )
    return info


def _human_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def _ids_table(shard, table: pa.Table) -> pa.Table:
    return pa.table(
        {
            "position": pa.array(np.arange(shard.start, shard.start + shard.rows, dtype=np.int64)),
            "segment_id": table.column("segment_id").combine_chunks().cast(pa.string()),
            "shard": pa.array([shard.name] * shard.rows, pa.string()),
            "row": pa.array(np.arange(shard.rows, dtype=np.int64)),
        },
        schema=schema.index_ids_schema(),
    )


def _plan_for_key(key: str, n: int, dim: int, budget: int) -> IndexPlan:
    """A plan for an explicit factory key (its memory estimate: the model's when it knows the codes, else -1)."""
    probe = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(probe)
    if ivf is not None:
        nlist = int(ivf.nlist)
        search = {"train_size": train_size_for(n, nlist), "search_param": "nprobe",
                  "candidates": nprobe_candidates(nlist), "nlist": nlist}
    else:
        hnsw = "HNSW" in key.split(",")[0]
        search = {"train_size": 0 if probe.is_trained else min(n, 100_000),
                  "search_param": "efSearch" if hnsw else None, "candidates": EFSEARCH_CANDIDATES if hnsw else ()}
    plan = IndexPlan(key=key, n_vectors=n, dim=dim, memory_budget_bytes=budget, memory_estimate_bytes=-1,
                     reason="index_key given by the caller", **search)
    if plan.codes and plan.nlist:
        plan = dataclasses.replace(plan, memory_estimate_bytes=ivf_estimate(n, dim, plan.nlist, plan.codes))
    return plan


def load_index(reference_dir: str) -> tuple[faiss.Index, pa.Table]:
    """The index with its tuned search parameters applied, and the id map (row i = index position i)."""
    index_path = storage.join(reference_dir, schema.INDEX_FILE)
    info_path = storage.join(reference_dir, schema.INDEX_INFO)
    ids_path = storage.join(reference_dir, schema.INDEX_IDS)
    for p in (index_path, info_path, ids_path):
        if not storage.exists(p):
            raise CorruptIndex(f"missing {p}: build the index first (python -m pipeline.faiss_index --reference ...)")
    try:
        info = storage.read_json(info_path)
    except ValueError as e:
        raise CorruptIndex(f"{info_path} is not valid JSON ({e}); rebuild the index") from None
    index = _io.read_index(index_path, info_path, info.get("index_bytes"), info.get("index_sha256"))
    refine = info.get("refine")
    if refine:
        refine_path = storage.join(reference_dir, refine["file"])
        if not storage.exists(refine_path):
            raise CorruptIndex(f"missing {refine_path}, the refine stage of this index; rebuild the index")
        vectors = _io.read_index(refine_path, info_path, refine.get("bytes"), refine.get("sha256"), mmap=True)
        if vectors.ntotal != index.ntotal:
            raise CorruptIndex(f"{refine_path} holds {vectors.ntotal} vectors, the index {index.ntotal}; rebuild")
        index = _build.with_refine(index, vectors)
    try:
        ids = storage.read_parquet(ids_path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorruptIndex(f"cannot read {ids_path}: {e}") from None
    if ids.num_rows != index.ntotal:
        raise CorruptIndex(f"{ids_path} has {ids.num_rows} rows but the index holds {index.ntotal} vectors")
    set_search_params(index, info.get("search_params", {}))
    return index, ids


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (inner-product scores, index positions) per query; positions are -1 where fewer than k exist."""
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries)), dtype=np.float32)
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dim {q.shape[1]}, the index has dim {index.d}")
    return index.search(q, int(k))
