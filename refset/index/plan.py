"""Which index, as data: the memory model and the choice by size and budget, then what to try when recall falls
short. Pure: no faiss, no I/O.

How the first index is chosen (each step recorded in the plan's `reason`):
  * fewer than FLAT_MAX_VECTORS vectors and the raw vectors fit the budget: exact `Flat` (nothing to tune);
  * up to HNSW_MAX_VECTORS: `HNSW32,Flat` when it fits (no training, high recall per query cost; its build cost
    grows too fast to use beyond that);
  * otherwise an IVF with about 2·sqrt(n) lists (a power of two: this balances the coarse search, nlist·d per
    query, against scanning nprobe·n/nlist codes) and the most accurate codes that fit the budget, in the order of
    CODE_LADDER: float32 (`Flat`), float16 (`SQfp16`), 8/6/4-bit scalar (`SQ8`, `SQ6`, `SQ4`), then product
    quantizers `PQm` with m = d/3, d/4, ... bytes per vector.
The memory estimate counts codes, ids (8 B per vector in an IVF), centroids, quantizer links and codebooks of the
*loaded* index; it must be <= the budget. Memory units: "2GB" = 2e9 bytes, "2GiB" = 2 * 2**30.

When the tuned recall misses the target, `escalations(plan)` lists what to try next, cheapest first, all within
the same budget: exact list assignment (when a grouped assigner was used), the most accurate codes that fit (when
the plan's codes are coarser, e.g. a caller's key), then re-ranking the IVF's candidates against float16 copies
of the vectors kept on disk (`refine`: memory-mapped, so only the pages touched count, not the budget).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

FLAT_MAX_VECTORS = 50_000
HNSW_MAX_VECTORS = 100_000
HNSW_M = 32
IVF_HNSW_QUANTIZER_MIN_LISTS = 32768  # below, batched brute-force assignment (BLAS) beats HNSW's per-query walk
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 points per centroid
MIN_TRAIN_SIZE = 100_000
MAX_TRAIN_SIZE = 400_000
NPROBE_CANDIDATES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EFSEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
REFINE_CODES = "SQfp16"  # what the on-disk refine stage stores per vector (2·d bytes)
REFINE_K_FACTORS = (2, 4, 8, 16)  # candidates re-ranked per result wanted, tried in increasing cost
SCALAR_BITS = {"Flat": 32, "SQfp16": 16, "SQ8": 8, "SQ6": 6, "SQ4": 4}


class RecallTargetMissed(RuntimeError):
    """Every index that fits the budget was built and tuned and none reached the recall target.

    The best one is written all the same (index_info.json says recall_target_met: false); `info` is its info.
    """

    def __init__(self, message: str, info: dict[str, Any]):
        super().__init__(message)
        self.info = info


@dataclass(frozen=True)
class IndexPlan:
    """The chosen index, as data (its facts are written into index_info.json and the manifest)."""

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
    assignment: str = "auto"  # IVF list assignment: "auto" (grouped when it agrees with exact) | "exact"
    refine: str | None = None  # None | "SQfp16@disk": candidates re-ranked against float16 vectors on disk

    @property
    def codes(self) -> str | None:
        """The IVF's code type (`SQ8`, `PQ96`, ...) when the key is `IVF...,<codes>`, else None."""
        parts = self.key.split(",")
        return parts[1] if len(parts) == 2 and parts[0].startswith("IVF") and code_bytes(parts[1], 1) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        return d


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
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
        if int(value) <= 0:
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


def hnsw_link_bytes(n: int, m: int = HNSW_M) -> int:
    # level 0 holds 2M neighbours (int32), upper levels ~M/(M-1)·1/M more per node on average; + level/offset arrays
    return int(n * (4 * 2 * m + 4 * m / max(m - 1, 1) + 12))


def code_bytes(codes: str, dim: int) -> int:
    """Bytes per vector of an IVF's codes; 0 for a string that is not a code type we model."""
    if codes in SCALAR_BITS:
        return math.ceil(SCALAR_BITS[codes] * dim / 8)
    if re.fullmatch(r"PQ\d+", codes):
        return int(codes[2:])  # 8 bits per sub-quantizer
    return 0


def _codebook_bytes(codes: str, dim: int) -> int:
    if codes.startswith("SQ") and codes != "SQfp16":
        return 2 * 4 * dim  # per-dimension min and range
    if codes.startswith("PQ"):
        return 256 * dim * 4  # m sub-codebooks of 256 centroids in d/m dims
    return 0


def nlist_for(n: int) -> int:
    """About 2·sqrt(n) lists (the next power of two), with at least ~40 vectors per list."""
    target = 2 ** math.ceil(math.log2(max(2 * math.sqrt(n), 1)))
    cap = 2 ** max(int(math.floor(math.log2(max(n // TRAIN_POINTS_PER_LIST, 1)))), 0)
    return int(max(1, min(target, cap, 65536)))


def ivf_estimate(n: int, dim: int, nlist: int, codes: str) -> int:
    quantizer = nlist * dim * 4
    if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS:
        quantizer += hnsw_link_bytes(nlist)
    lists_overhead = nlist * 64  # one std::vector pair per list
    return n * (code_bytes(codes, dim) + 8) + quantizer + lists_overhead + _codebook_bytes(codes, dim)


def code_ladder(dim: int) -> list[str]:
    """IVF codes from most to least accurate (and from largest to smallest)."""
    ladder = ["Flat", "SQfp16", "SQ8", "SQ6", "SQ4"]
    for div in range(3, dim + 1):  # PQ(d/2) has SQ4's size: the scalar codes are cheaper to train and search
        if dim % div == 0:
            ladder.append(f"PQ{dim // div}")
        if dim // div < 4:
            break
    return ladder


def train_size_for(n: int, nlist: int) -> int:
    return min(n, max(TRAIN_POINTS_PER_LIST * nlist, MIN_TRAIN_SIZE), MAX_TRAIN_SIZE)


def nprobe_candidates(nlist: int) -> tuple[int, ...]:
    return tuple(p for p in NPROBE_CANDIDATES if p <= nlist) or (1,)


def choose_index(n_vectors: int, dim: int, memory_budget_bytes: int | str) -> IndexPlan:
    """The index for `n_vectors` unit vectors of `dim` under a memory budget (see the module docstring)."""
    if n_vectors <= 0 or dim <= 0:
        raise ValueError(f"need a positive number of vectors and dimension, got n={n_vectors} dim={dim}")
    budget = parse_memory(memory_budget_bytes)
    n, d = int(n_vectors), int(dim)
    considered: list[dict[str, Any]] = []

    def plan(key, estimate, reason, **kw) -> IndexPlan:
        return IndexPlan(key=key, n_vectors=n, dim=d, memory_budget_bytes=budget, memory_estimate_bytes=int(estimate),
                         reason=reason, alternatives=considered, **kw)

    flat = n * d * 4
    considered.append({"key": "Flat", "memory_estimate_bytes": flat})
    if n < FLAT_MAX_VECTORS and flat <= budget:
        return plan("Flat", flat, f"n={n} < {FLAT_MAX_VECTORS} and raw vectors fit: exact search",
                    train_size=0, search_param=None, candidates=())

    hnsw = flat + hnsw_link_bytes(n)
    if n < HNSW_MAX_VECTORS:
        considered.append({"key": f"HNSW{HNSW_M},Flat", "memory_estimate_bytes": hnsw})
        if hnsw <= budget:
            return plan(f"HNSW{HNSW_M},Flat", hnsw, f"n={n} < {HNSW_MAX_VECTORS}: graph index, no training",
                        train_size=0, search_param="efSearch", candidates=EFSEARCH_CANDIDATES)

    nlist = nlist_for(n)
    coarse = f"IVF{nlist}_HNSW{HNSW_M}" if nlist >= IVF_HNSW_QUANTIZER_MIN_LISTS else f"IVF{nlist}"
    train_size = train_size_for(n, nlist)
    for codes in code_ladder(d):
        if codes.startswith("PQ") and train_size < 256:
            continue  # 8-bit PQ needs at least 256 training vectors per sub-quantizer
        estimate = ivf_estimate(n, d, nlist, codes)
        key = f"{coarse},{codes}"
        considered.append({"key": key, "memory_estimate_bytes": estimate})
        if estimate <= budget:
            return plan(key, estimate, f"n={n}: IVF with {nlist} lists; {codes} = most accurate codes within the budget",
                        train_size=train_size, search_param="nprobe", candidates=nprobe_candidates(nlist), nlist=nlist)
    smallest = min(c["memory_estimate_bytes"] for c in considered)
    raise ValueError(
        f"memory budget of {budget} bytes is too small for {n} vectors of dim {d}: "
        f"the smallest index considered needs {smallest} bytes"
    )


def escalations(plan: IndexPlan, grouped_assignment_used: bool) -> list[tuple[str, IndexPlan]]:
    """What to build next when `plan` missed the recall target, cheapest first: [(what, plan), ...].

    Each step keeps what the previous ones fixed: exact assignment, then better codes (same lists), then refine.
    Only IVFs escalate: Flat is exact, and HNSW32,Flat already stores float32 vectors.
    """
    codes = plan.codes
    if plan.nlist is None or codes is None:
        return []
    steps: list[tuple[str, IndexPlan]] = []
    current = plan
    if grouped_assignment_used:
        current = dataclasses.replace(current, assignment="exact",
                                      reason=current.reason + "; escalated: exact list assignment")
        steps.append(("exact_assignment", current))
    coarse = plan.key.split(",")[0]
    ladder = code_ladder(plan.dim)
    better = ladder[: ladder.index(codes)] if codes in ladder else []
    for candidate in better:  # most accurate first: one rebuild straight to the best codes that fit
        estimate = ivf_estimate(plan.n_vectors, plan.dim, plan.nlist, candidate)
        if estimate <= plan.memory_budget_bytes:
            current = dataclasses.replace(current, key=f"{coarse},{candidate}", memory_estimate_bytes=estimate,
                                          reason=current.reason + f"; escalated: {candidate} codes fit the budget")
            steps.append(("codes", current))
            break
    final_codes = current.codes or codes
    if plan.refine is None and SCALAR_BITS.get(final_codes, 0) < SCALAR_BITS[REFINE_CODES]:  # re-ranking at float16 helps only coarser codes
        current = dataclasses.replace(current, refine=f"{REFINE_CODES}@disk",
                                      reason=current.reason + "; escalated: re-rank against float16 vectors on disk")
        steps.append(("refine", current))
    return steps
