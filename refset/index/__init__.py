"""FAISS index over a reference set's visual embeddings (SPEC §3): choose, train, add, tune, write, load.

Public surface (autofaiss-style, small):

    choose_index(n_vectors, dim, memory_budget_bytes) -> IndexPlan   # the decision, as data
    build_index(reference_dir, memory_budget="2GB", recall_target=0.95, k=10, ...) -> dict (index_info.json)
    load_index(reference_dir) -> (faiss.Index with the tuned search parameter applied, ids pyarrow.Table)
    search(index, queries, k) -> (scores, positions)

    python -m pipeline.faiss_index --reference DIR [--memory_budget 2GB --recall_target 0.95]

Embeddings are unit vectors, so the metric is inner product (= cosine). Index row i is row i of the global segment
order: `segments/part-*.parquet` sorted by name, rows in file order; `index/ids.parquet` maps it back to
segment_id / shard / row.

How the index is chosen (each step recorded in the plan's `reason`):
  * fewer than FLAT_MAX_VECTORS vectors and the raw vectors fit the budget: exact `Flat` (nothing to tune);
  * up to HNSW_MAX_VECTORS: `HNSW32,Flat` when it fits (no training, high recall per query cost; its build cost
    grows too fast to use beyond that);
  * otherwise an IVF with about 2·sqrt(n) lists (a power of two: this balances the coarse search, nlist·d per
    query, against scanning nprobe·n/nlist codes) and the most accurate codes that fit the budget, in this order:
    float32 (`Flat`), 8-bit scalar (`SQ8`, d bytes), 6-bit scalar (`SQ6`), then product quantizers `PQm` with
    m = d/2, d/3, d/4, ... bytes per vector.
The memory estimate counts codes, ids (8 B per vector in an IVF), centroids, quantizer links and codebooks of the
*loaded* index; it must be <= the budget. Memory units: "2GB" = 2e9 bytes, "2GiB" = 2 * 2**30.

Training and adding on a few CPU cores: from 1024 lists the centroids come from two-level k-means (faiss.contrib;
about 2·sqrt(nlist) distances per training point instead of nlist), and vectors are assigned to lists through
groups of centroids (`_GroupedAssigner`), all batched matrix products. An HNSW coarse quantizer (the usual advice)
was measured slower than batched brute force here, so it is only used from 32768 lists. Search always uses the
exact (flat) coarse quantizer.

Recall is measured leave-one-out on `held_out_queries` stored vectors drawn at random: each is searched for k+1
neighbours in both the index and an exact inner-product search over the same vectors (streamed shard by shard,
during the add pass); the query's own row is removed from both lists, the first k kept, recall@k =
|approx ∩ exact| / k. Removing the self-match makes each query behave like a new segment from the data's
distribution (the real labelling case) without holding anything out of the index; adding noise instead would not
do that in high dimension (the noisy query's nearest stored vector is still itself). The tuner takes the cheapest
nprobe/efSearch whose one-sided 95% lower confidence bound on recall reaches the target; when no value does
(compressed codes cap recall), the cheapest value within RECALL_PLATEAU of the best recall measured.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Idle OpenMP threads that spin instead of sleeping made faiss k-means ~7x slower on a shared 2-core machine;
# the setting is read when faiss's OpenMP runtime starts, so it must precede the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refset import schema, storage

FLAT_MAX_VECTORS = 50_000
HNSW_MAX_VECTORS = 100_000
HNSW_M = 32
IVF_HNSW_QUANTIZER_MIN_LISTS = 32768  # below, batched brute-force assignment (BLAS) beats HNSW's per-query walk
TWO_LEVEL_KMEANS_MIN_LISTS = 1024  # two-level k-means: ~2·sqrt(nlist) distances per point instead of nlist
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 points per centroid
MIN_TRAIN_SIZE = 100_000
GROUPED_ASSIGN_MIN_LISTS = 1024
ASSIGN_PROBE_GROUPS = 4
MAX_TRAIN_SIZE = 400_000
NPROBE_CANDIDATES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EFSEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EMBEDDING_COLUMN = "visual_embedding"
RECALL_PLATEAU = 0.005


class CorruptIndex(RuntimeError):
    """The index files under <reference>/index are missing, truncated or do not match their recorded info."""


@dataclass(frozen=True)
class IndexPlan:
    """The chosen index, as data (written into index_info.json and the manifest)."""

    key: str  # faiss.index_factory string
    n_vectors: int
    dim: int
    memory_budget_bytes: int
    memory_estimate_bytes: int
    train_size: int  # vectors sampled for training (0: nothing to train)
    search_param: str | None  # "nprobe" | "efSearch" | None (exact)
    candidates: tuple[int, ...]  # values of search_param tried in increasing cost
    nlist: int | None = None
    metric: str = "inner_product"
    reason: str = ""
    alternatives: list[dict[str, Any]] = field(default_factory=list)  # what else was considered and its estimate

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        return d


# ---------------------------------------------------------------------------------------------------------------
# Choosing


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_memory(value: str | int) -> int:
    """'2GB' -> 2_000_000_000, '1.5GiB' -> 1610612736, 123 -> 123."""
    if isinstance(value, (int, np.integer)):
        if value <= 0:
            raise ValueError(f"memory budget must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"cannot parse memory budget {value!r}: use e.g. 2GB, 512MB, 1.5GiB")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"memory budget must be positive, got {value!r}")
    return n


def _hnsw_link_bytes(n: int, m: int = HNSW_M) -> int:
    # level 0 holds 2M neighbours (int32), upper levels ~M/(M-1)·1/M more per node on average; + level/offset arrays
    return int(n * (4 * 2 * m + 4 * m / max(m - 1, 1) + 12))


def _code_bytes(codes: str, dim: int) -> int:
    if codes == "Flat":
        return 4 * dim
    if codes.startswith("SQ"):
        return math.ceil(int(codes[2:]) * dim / 8)
    if codes.startswith("PQ"):
        return int(codes[2:])  # 8 bits per sub-quantizer
    raise ValueError(codes)


def _codebook_bytes(codes: str, dim: int) -> int:
    if codes.startswith("SQ"):
        return 2 * 4 * dim  # per-dimension min and range
    if codes.startswith("PQ"):
        return 256 * dim * 4  # m sub-codebooks of 256 centroids in d/m dims
    return 0


def _nlist_for(n: int) -> int:
    """About 2·sqrt(n) lists (the next power of two), with at least ~40 vectors per list."""
    target = 2 ** math.ceil(math.log2(max(2 * math.sqrt(n), 1)))
    cap = 2 ** max(int(math.floor(math.log2(max(n // TRAIN_POINTS_PER_LIST, 1)))), 0)
    return int(max(1, min(target, cap, 65536)))


def _ivf_estimate(n: int, dim: int, nlist: int, codes: str) -> int:
    quantizer = nlist * dim * 4
    if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS:
        quantizer += _hnsw_link_bytes(nlist)
    lists_overhead = nlist * 64  # one std::vector pair per list
    return n * (_code_bytes(codes, dim) + 8) + quantizer + lists_overhead + _codebook_bytes(codes, dim)


def _code_ladder(dim: int) -> list[str]:
    """Codes from most to least accurate (and from largest to smallest)."""
    ladder = ["Flat", "SQ8", "SQ6"]
    for div in range(2, dim + 1):
        if dim % div == 0:
            ladder.append(f"PQ{dim // div}")
        if dim // div < 4:
            break
    return ladder


def choose_index(n_vectors: int, dim: int, memory_budget_bytes: int) -> IndexPlan:
    """The index for `n_vectors` unit vectors of `dim` under a memory budget (see the module docstring)."""
    if n_vectors <= 0 or dim <= 0:
        raise ValueError(f"need a positive number of vectors and dimension, got n={n_vectors} dim={dim}")
    budget = parse_memory(memory_budget_bytes)
    n, d = int(n_vectors), int(dim)
    considered: list[dict[str, Any]] = []

    def plan(key, estimate, reason, **kw) -> IndexPlan:
        return IndexPlan(
            key=key,
            n_vectors=n,
            dim=d,
            memory_budget_bytes=budget,
            memory_estimate_bytes=int(estimate),
            reason=reason,
            alternatives=considered,
            **kw,
        )

    flat = n * d * 4
    considered.append({"key": "Flat", "memory_estimate_bytes": flat})
    if n < FLAT_MAX_VECTORS and flat <= budget:
        return plan(
            "Flat",
            flat,
            f"n={n} < {FLAT_MAX_VECTORS} and raw vectors fit: exact search",
            train_size=0,
            search_param=None,
            candidates=(),
        )

    hnsw = flat + _hnsw_link_bytes(n)
    if n < HNSW_MAX_VECTORS:
        considered.append({"key": f"HNSW{HNSW_M},Flat", "memory_estimate_bytes": hnsw})
        if hnsw <= budget:
            return plan(
                f"HNSW{HNSW_M},Flat",
                hnsw,
                f"n={n} < {HNSW_MAX_VECTORS}: graph index, no training",
                train_size=0,
                search_param="efSearch",
                candidates=EFSEARCH_CANDIDATES,
            )

    nlist = _nlist_for(n)
    coarse = f"IVF{nlist}_HNSW{HNSW_M}" if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS else f"IVF{nlist}"
    train_size = min(n, max(TRAIN_POINTS_PER_LIST * nlist, MIN_TRAIN_SIZE), MAX_TRAIN_SIZE)
    nprobes = tuple(p for p in NPROBE_CANDIDATES if p <= nlist) or (1,)
    for codes in _code_ladder(d):
        if codes.startswith("PQ") and train_size < 256:
            continue  # 8-bit PQ needs at least 256 training vectors per sub-quantizer
        estimate = _ivf_estimate(n, d, nlist, codes)
        key = f"{coarse},{codes}"
        considered.append({"key": key, "memory_estimate_bytes": estimate})
        if estimate <= budget:
            return plan(
                key,
                estimate,
                f"n={n}: IVF with {nlist} lists; {codes} = most accurate codes within the budget",
                train_size=train_size,
                search_param="nprobe",
                candidates=nprobes,
                nlist=nlist,
            )
    smallest = min(c["memory_estimate_bytes"] for c in considered)
    raise ValueError(
        f"memory budget of {budget} bytes is too small for {n} vectors of dim {d}: "
        f"the smallest index considered needs {smallest} bytes"
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading shards


@dataclass(frozen=True)
class _Shard:
    path: str
    name: str
    rows: int
    start: int  # global position of its first row


def _list_shards(reference_dir: str) -> tuple[list[_Shard], int]:
    paths = [p for p in storage.glob(storage.join(reference_dir, schema.SEGMENTS_DIR, "part-*.parquet"))]
    paths.sort(key=lambda p: p.rsplit("/", 1)[-1])
    if not paths:
        raise FileNotFoundError(f"no segment shards under {storage.join(reference_dir, schema.SEGMENTS_DIR)}")
    shards, start, dim = [], 0, None
    for path in paths:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            rows = pf.metadata.num_rows
            arrow_schema = pf.schema_arrow
        if EMBEDDING_COLUMN not in arrow_schema.names:
            raise ValueError(f"{path} has no {EMBEDDING_COLUMN!r} column")
        t = arrow_schema.field(EMBEDDING_COLUMN).type
        if not pa.types.is_fixed_size_list(t) or t.value_type not in (pa.float16(), pa.float32()):
            raise ValueError(f"{path}: {EMBEDDING_COLUMN} must be fixed_size_list<float16|float32>, got {t}")
        if dim is not None and t.list_size != dim:
            raise ValueError(f"{path}: embedding dim {t.list_size} differs from earlier shards' {dim}")
        dim = t.list_size
        shards.append(_Shard(path=path, name=path.rsplit("/", 1)[-1], rows=rows, start=start))
        start += rows
    return shards, int(dim)


def _embeddings(table: pa.Table) -> np.ndarray:
    col = table.column(EMBEDDING_COLUMN).combine_chunks()
    dim = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slicing offsets
    return np.ascontiguousarray(values.reshape(-1, dim), dtype=np.float32)


def _read_shard(shard: _Shard, with_ids: bool = False) -> pa.Table:
    columns = [EMBEDDING_COLUMN, "segment_id"] if with_ids else [EMBEDDING_COLUMN]
    table = storage.read_parquet(shard.path, columns=columns)
    if table.num_rows != shard.rows:
        raise ValueError(f"{shard.path}: read {table.num_rows} rows, metadata says {shard.rows}")
    return table


def _gather(shards: list[_Shard], positions: np.ndarray, dim: int) -> np.ndarray:
    """Vectors at sorted global `positions`, reading only the shards that hold them."""
    out = np.empty((len(positions), dim), dtype=np.float32)
    for shard in shards:
        lo, hi = np.searchsorted(positions, [shard.start, shard.start + shard.rows])
        if hi > lo:
            out[lo:hi] = _embeddings(_read_shard(shard))[positions[lo:hi] - shard.start]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building


def _train(index: faiss.Index, xt: np.ndarray, seed: int) -> None:
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or ivf.nlist < TWO_LEVEL_KMEANS_MIN_LISTS:
        if ivf is not None:
            ivf.cp.seed = seed
        index.train(xt)
        return
    from faiss.contrib.clustering import two_level_clustering

    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):  # e.g. an OPQ rotation given as index_key
        for i in range(outer.chain.size()):
            vt = outer.chain.at(i)
            vt.train(xt)
            xt = vt.apply(xt)
    spherical = ivf.metric_type == faiss.METRIC_INNER_PRODUCT
    centroids, _ = two_level_clustering(xt, int(math.sqrt(ivf.nlist)), ivf.nlist, spherical=spherical, seed=seed)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    ivf.quantizer.train(centroids)
    ivf.quantizer.add(centroids)
    ivf.train(xt)  # the quantizer is full, so this trains only the codes (SQ ranges / PQ codebooks)
    index.is_trained = True


class _GroupedAssigner:
    """Nearest IVF list for many vectors at a fraction of brute force's cost, all in batched matrix products.

    The lists' centroids are grouped by a small k-means (about sqrt(nlist) groups); a vector is compared with the
    group centres, then only with the centroids of its `probe` best groups: (sqrt(nlist) + probe·sqrt(nlist))·d
    flops per vector instead of nlist·d. Exact search still uses the IVF's flat quantizer; a vector occasionally
    lands in its second-best list, which the measured recall includes (and `agreement` reports).
    """

    def __init__(self, centroids: np.ndarray, seed: int, probe: int = ASSIGN_PROBE_GROUPS):
        nlist, d = centroids.shape
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        km = faiss.Kmeans(d, int(math.sqrt(nlist)), niter=20, seed=seed, spherical=True)
        km.train(self.centroids)
        self.groups = km.centroids
        _, group_of = km.index.search(self.centroids, 1)
        group_of = group_of[:, 0]
        self.members = [np.nonzero(group_of == g)[0] for g in range(len(self.groups))]
        self.member_vectors = [np.ascontiguousarray(self.centroids[m]) for m in self.members]
        self.probe = min(probe, len(self.groups))

    def assign(self, x: np.ndarray) -> np.ndarray:
        # faiss.knn rather than numpy matmul: faiss's BLAS threads honour omp_set_num_threads and sleep when idle
        n = len(x)
        _, top = faiss.knn(x, self.groups, self.probe, metric=faiss.METRIC_INNER_PRODUCT)
        rows = np.repeat(np.arange(n), self.probe)
        groups = top.reshape(-1)
        order = np.argsort(groups, kind="stable")
        rows, groups = rows[order], groups[order]
        bounds = np.searchsorted(groups, np.arange(len(self.groups) + 1))
        best = np.full(n, -np.inf, dtype=np.float32)
        label = np.zeros(n, dtype=np.int64)
        for g, members in enumerate(self.members):
            r = rows[bounds[g] : bounds[g + 1]]
            if not len(r) or not len(members):
                continue
            s, j = faiss.knn(np.ascontiguousarray(x[r]), self.member_vectors[g], 1, metric=faiss.METRIC_INNER_PRODUCT)
            s, j = s[:, 0], members[j[:, 0]]
            better = s > best[r]
            best[r[better]] = s[better]
            label[r[better]] = j[better]
        return label


def _grouped_assigner(index: faiss.Index, seed: int) -> _GroupedAssigner | None:
    """An assigner for IVFs with a flat coarse quantizer and many lists (else None: plain index.add)."""
    ivf = faiss.try_extract_index_ivf(index)
    if (
        ivf is None
        or ivf is not faiss.downcast_index(index)
        and not isinstance(faiss.downcast_index(index), faiss.IndexIVF)
    ):
        return None
    quantizer = faiss.downcast_index(ivf.quantizer)
    if ivf.nlist < GROUPED_ASSIGN_MIN_LISTS or not isinstance(quantizer, faiss.IndexFlat):
        return None
    return _GroupedAssigner(quantizer.reconstruct_n(0, ivf.nlist), seed)


def _add(index: faiss.Index, x: np.ndarray, assigner: _GroupedAssigner | None) -> None:
    if assigner is None:
        index.add(x)
        return
    from faiss.contrib.ivf_tools import add_preassigned

    ivf = faiss.downcast_index(index)
    # keep our own reference: add_preassigned rebinds its `ids` argument to a raw pointer, freeing a temporary
    ids = np.arange(ivf.ntotal, ivf.ntotal + len(x), dtype=np.int64)
    add_preassigned(ivf, x, assigner.assign(x), ids=ids)


def _set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _search_params(plan_param: str | None, value: int | None, index: faiss.Index) -> dict[str, int]:
    if plan_param is None or value is None:
        return {}
    params = {plan_param: int(value)}
    ivf = faiss.try_extract_index_ivf(index)
    if plan_param == "nprobe" and ivf is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
        # the HNSW coarse quantizer must explore at least as many candidates as lists we probe
        params["quantizer_efSearch"] = max(64, 2 * int(value))
    return params


def _drop_self(ids: np.ndarray, self_pos: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own row from its result list (keeping order), then keep the first k."""
    not_self = ids != self_pos[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")  # non-self entries first, original order kept
    return np.take_along_axis(ids, order, axis=1)[:, :k]


def per_query_recall(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|approx ∩ exact| / |exact| per query (-1 entries in `exact` are absent neighbours)."""
    valid = exact >= 0
    hits = ((approx[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(axis=1).sum(axis=1)
    return hits / np.maximum(valid.sum(axis=1), 1)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / |exact|."""
    return float(np.mean(per_query_recall(approx, exact)))


def tune(
    index: faiss.Index,
    plan: IndexPlan,
    queries: np.ndarray,
    query_pos: np.ndarray,
    exact: np.ndarray,
    recall_target: float,
    k: int,
    stop_at_target: bool = True,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Cheapest candidate value of the plan's search parameter reaching `recall_target` (or the best one).

    Returns (search params to apply, the measured curve [{param: v, recall, qps}, ...]).
    """
    curve: list[dict[str, Any]] = []
    values = plan.candidates if plan.search_param else (None,)
    for value in values:
        params = _search_params(plan.search_param, value, index)
        _set_search_params(index, params)
        t0 = time.perf_counter()
        _, ids = index.search(queries, k + 1)
        seconds = time.perf_counter() - t0
        per_query = per_query_recall(_drop_self(ids, query_pos, k), exact)
        rec = float(per_query.mean())
        # one-sided 95% lower bound: the target must hold beyond the sampling noise of the held-out queries
        lower = rec - 1.645 * float(per_query.std()) / math.sqrt(len(per_query))
        point = {
            **params,
            "recall": round(rec, 4),
            "recall_lower_95": round(lower, 4),
            "qps": round(len(queries) / max(seconds, 1e-9), 1),
        }
        curve.append(point)
        if stop_at_target and lower >= recall_target:
            return params, curve
        if stop_at_target and len(curve) >= 3 and rec - curve[-3]["recall"] < RECALL_PLATEAU / 2:
            break  # recall has flattened out below the target: more probing only costs time
    # Target out of reach (compressed codes cap recall): the cheapest value within RECALL_PLATEAU of the best,
    # rather than paying many times the search cost for the last thousandth of recall.
    top = max(p["recall"] for p in curve)
    best = next(i for i, p in enumerate(curve) if p["recall"] >= top - RECALL_PLATEAU)
    params = _search_params(plan.search_param, values[best], index)
    _set_search_params(index, params)
    return params, curve


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _put_file(local_path: str, dest: str) -> None:
    """Move a finished local file to `dest` (local or remote) so readers never see a partial file."""
    if "://" not in dest or dest.startswith("file://"):
        dest = dest.split("://", 1)[-1]
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(dest), f"{storage.TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(dest)}")
        try:
            # copy rather than rename: the temp file may live on another filesystem
            with open(local_path, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    storage.filesystem(dest).put_file(local_path, dest)  # a GCS object appears only when its upload completes


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

    `index_key` overrides the chooser (any faiss.index_factory string; the search parameter is then inferred).
    `on_progress(stage, done, total)` is told how the stages "train", "add" (vectors) and "tune" advance.
    """
    step = on_progress or (lambda stage, done, total: None)
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    if k < 1 or held_out_queries < 1:
        raise ValueError(f"k and held_out_queries must be >= 1, got k={k} held_out_queries={held_out_queries}")
    log = (lambda msg: print(f"[faiss_index] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    t_start = time.perf_counter()
    shards, dim = _list_shards(reference_dir)
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
    sample = _gather(shards, wanted, dim)
    queries = np.ascontiguousarray(sample[np.searchsorted(wanted, query_pos)])

    index = faiss.index_factory(dim, plan.key, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    if plan.train_size:
        step("train", 0, 1)
        _train(index, np.ascontiguousarray(sample[np.searchsorted(wanted, train_pos)]), seed)
    assigner = _grouped_assigner(index, seed)
    agreement = None
    if assigner is not None:
        check = np.ascontiguousarray(sample[: min(len(sample), 5000)])
        _, exact_lists = faiss.extract_index_ivf(index).quantizer.search(check, 1)
        agreement = round(float((assigner.assign(check) == exact_lists[:, 0]).mean()), 4)
    del sample
    train_seconds = time.perf_counter() - t0
    if plan.train_size:
        step("train", 1, 1)
    log(f"trained in {train_seconds:.1f}s")

    # Add shard by shard; the exact neighbours of the queries come from the same pass (no second read).
    t0 = time.perf_counter()
    heap = faiss.ResultHeap(n_queries, k + 1, keep_max=True)
    id_parts = []
    for shard in shards:
        table = _read_shard(shard, with_ids=True)
        x = _embeddings(table)
        if len(x):
            _add(index, x, assigner)
            scores, local = faiss.knn(queries, x, min(k + 1, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
            if local.shape[1] < k + 1:  # pad a tiny shard to the heap's width
                pad = k + 1 - local.shape[1]
                scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
                local = np.pad(local, ((0, 0), (0, pad)), constant_values=-1)
            heap.add_result(
                np.ascontiguousarray(scores, dtype=np.float32),
                np.where(local >= 0, local + shard.start, -1).astype(np.int64),
            )
        id_parts.append(
            pa.table(
                {
                    "position": pa.array(np.arange(shard.start, shard.start + shard.rows, dtype=np.int64)),
                    "segment_id": table.column("segment_id").combine_chunks().cast(pa.string()),
                    "shard": pa.array([shard.name] * shard.rows, pa.string()),
                    "row": pa.array(np.arange(shard.rows, dtype=np.int64)),
                },
                schema=schema.index_ids_schema(),
            )
        )
        log(f"added {shard.name} ({shard.start + shard.rows}/{n})")
        step("add", shard.start + shard.rows, n)
    heap.finalize()
    add_seconds = time.perf_counter() - t0
    if index.ntotal != n:
        raise RuntimeError(f"index holds {index.ntotal} vectors, expected {n}")
    exact = _drop_self(heap.I, query_pos, k)

    t0 = time.perf_counter()
    step("tune", 0, 1)
    params, curve = tune(index, plan, queries, query_pos, exact, recall_target, k)
    step("tune", 1, 1)
    tune_seconds = time.perf_counter() - t0
    chosen = next((p for p in curve if all(p.get(a) == b for a, b in params.items())), curve[-1])
    log(f"tuned {params or 'exact'}: recall@{k}={chosen['recall']} qps={chosen['qps']}")

    index_path = storage.join(reference_dir, schema.INDEX_FILE)
    with tempfile.TemporaryDirectory(prefix="reme-faiss-") as tmp:
        local = os.path.join(tmp, "segments.faiss")
        faiss.write_index(index, local)
        index_bytes = os.path.getsize(local)
        sha = _file_sha256(local)
        _put_file(local, index_path)
    storage.write_parquet(storage.join(reference_dir, schema.INDEX_IDS), pa.concat_tables(id_parts))

    info = {
        "index_key": plan.key,
        "metric": plan.metric,
        "n": n,
        "dim": dim,
        "memory_budget_bytes": budget,
        "memory_estimate_bytes": plan.memory_estimate_bytes,
        "index_bytes": index_bytes,
        "index_sha256": sha,
        "plan": plan.to_dict(),
        "search_params": params,
        "recall_target": recall_target,
        "recall_target_met": chosen["recall_lower_95"] >= recall_target,
        "recall_lower_95": chosen["recall_lower_95"],
        "k": k,
        f"recall_at_{k}": chosen["recall"],
        "recall_at_k": chosen["recall"],
        "qps": chosen["qps"],
        "held_out_queries": n_queries,
        "recall_method": "leave-one-out: stored vectors as queries, own row removed from approximate and exact lists",
        "tuning_curve": curve,
        "train_size": plan.train_size,
        "add_assignment": "grouped" if assigner is not None else "quantizer",
        "add_assignment_agreement": agreement,
        "train_seconds": round(train_seconds, 2),
        "add_seconds": round(add_seconds, 2),
        "tune_seconds": round(tune_seconds, 2),
        "build_seconds": round(time.perf_counter() - t_start, 2),
        "seed": seed,
        "faiss_version": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
    }
    storage.write_json(storage.join(reference_dir, schema.INDEX_INFO), info)
    return info


def _plan_for_key(key: str, n: int, dim: int, budget: int) -> IndexPlan:
    """A plan for an explicit factory key (the estimate is the written size, filled in after the build)."""
    probe = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(probe)
    if ivf is not None:
        nlist = int(ivf.nlist)
        search = {"train_size": min(n, max(TRAIN_POINTS_PER_LIST * nlist, MIN_TRAIN_SIZE), MAX_TRAIN_SIZE),
                  "search_param": "nprobe", "candidates": tuple(p for p in NPROBE_CANDIDATES if p <= nlist) or (1,),
                  "nlist": nlist}
    else:
        hnsw = "HNSW" in key.split(",")[0]
        search = {"train_size": 0 if probe.is_trained else min(n, 100_000),
                  "search_param": "efSearch" if hnsw else None, "candidates": EFSEARCH_CANDIDATES if hnsw else ()}
    return IndexPlan(key=key, n_vectors=n, dim=dim, memory_budget_bytes=budget, memory_estimate_bytes=-1,
                     reason="index_key given by the caller", **search)


# ---------------------------------------------------------------------------------------------------------------
# Loading and searching


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
    with tempfile.TemporaryDirectory(prefix="reme-faiss-") as tmp:
        local = index_path.split("://", 1)[-1] if "://" not in index_path or index_path.startswith("file://") else None
        if local is None:
            local = os.path.join(tmp, "segments.faiss")
            storage.filesystem(index_path).get_file(index_path, local)
        size = os.path.getsize(local)
        if "index_bytes" in info and size != info["index_bytes"]:
            raise CorruptIndex(
                f"{index_path} is {size} bytes, its info records {info['index_bytes']}: "
                "truncated or replaced; rebuild the index"
            )
        if "index_sha256" in info and _file_sha256(local) != info["index_sha256"]:
            raise CorruptIndex(f"{index_path} does not match the checksum in {info_path}; rebuild the index")
        try:
            index = faiss.read_index(local)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CorruptIndex(f"cannot read {index_path}: {first}") from None
    try:
        ids = storage.read_parquet(ids_path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorruptIndex(f"cannot read {ids_path}: {e}") from None
    if ids.num_rows != index.ntotal:
        raise CorruptIndex(f"{ids_path} has {ids.num_rows} rows but the index holds {index.ntotal} vectors")
    _set_search_params(index, info.get("search_params", {}))
    return index, ids


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (inner-product scores, index positions) per query; positions are -1 where fewer than k exist."""
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries)), dtype=np.float32)
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dim {q.shape[1]}, the index has dim {index.d}")
    return index.search(q, int(k))
