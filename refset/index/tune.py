"""Recall against exact search, and the cheapest search setting that reaches a target.

Recall is measured leave-one-out on `held_out_queries` stored vectors drawn at random: each is searched for k+1
neighbours in both the index and an exact inner-product search over the same vectors (streamed shard by shard,
during the add pass); the query's own row is removed from both lists, the first k kept, recall@k =
|approx ∩ exact| / k, where a vector exactly as similar as the k-th exact neighbour (a tie: duplicates are common
in reference sets) counts as right too, so a Flat index always measures 1.0. Removing the self-match makes each query behave like a new segment from the data's
distribution (the real labelling case) without holding anything out of the index; adding noise instead would not
do that in high dimension (the noisy query's nearest stored vector is still itself). The tuner takes the cheapest
nprobe/efSearch (and, with a refine stage, k_factor_rf) whose one-sided 95% lower confidence bound on recall
reaches the target; when no value does (compressed codes cap recall), the cheapest value within RECALL_PLATEAU of
the best recall measured.
"""

from __future__ import annotations

import math
import time
from typing import Any

import faiss
import numpy as np

from refset.index.plan import REFINE_K_FACTORS, IndexPlan

TIE_TOLERANCE = 1e-6  # similarities this close to the k-th neighbour's are ties (float32 inner products)
RECALL_PLATEAU = 0.005
REFINE_PARAM = "k_factor_rf"  # faiss.ParameterSpace's name for IndexRefine.k_factor


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Apply search parameters by name (nprobe, efSearch, quantizer_efSearch, k_factor_rf) to a loaded index."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def search_params_for(plan_param: str | None, value: int | None, index: faiss.Index) -> dict[str, int]:
    """The full parameter set for one value of the plan's search parameter (adds what must move with it)."""
    if plan_param is None or value is None:
        return {}
    params = {plan_param: int(value)}
    ivf = faiss.try_extract_index_ivf(index)
    if plan_param == "nprobe" and ivf is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
        # the HNSW coarse quantizer must explore at least as many candidates as lists we probe
        params["quantizer_efSearch"] = max(64, 2 * int(value))
    return params


def _self_last(ids: np.ndarray, self_pos: np.ndarray) -> np.ndarray:
    """Per query, the column order that moves its own row to the end and keeps the rest in order."""
    return np.argsort(ids == self_pos[:, None], axis=1, kind="stable")


def drop_self(ids: np.ndarray, self_pos: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own row from its result list (keeping order), then keep the first k."""
    return np.take_along_axis(ids, _self_last(ids, self_pos), axis=1)[:, :k]


def exact_answers(ids: np.ndarray, sims: np.ndarray, self_pos: np.ndarray, k: int,
                  tie_tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """The right answers per query from an exact search of width > k: its own row removed, the first k, then every
    further candidate as similar as the k-th (within `tie_tolerance`), -1 elsewhere. Vectors that tie with the k-th
    neighbour (duplicates are common in reference sets) are equally right, so an index that returns one of them
    instead of the one exact search happened to list is not wrong."""
    order = _self_last(ids, self_pos)
    width = ids.shape[1] - 1
    ids = np.take_along_axis(ids, order, axis=1)[:, :width]
    sims = np.take_along_axis(sims, order, axis=1)[:, :width]
    kth = sims[:, min(k, width) - 1 : min(k, width)]
    right = (np.arange(width)[None, :] < k) | (sims >= kth - tie_tolerance)
    return np.where(right & (ids >= 0), ids, -1)


def per_query_recall(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Share of the k right answers found, per query: approx [Q, k] against `exact` [Q, >= k] (its first k columns
    are the exact top k; further columns, from `exact_answers`, are ties of the k-th; -1 = absent)."""
    k = approx.shape[1]
    valid = exact >= 0
    hits = ((approx[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(axis=2).sum(axis=1)
    wanted = valid[:, :k].sum(axis=1)
    return np.minimum(hits, wanted) / np.maximum(wanted, 1)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / |exact|."""
    return float(np.mean(per_query_recall(approx, exact)))


def _measure(index, params, queries, query_pos, exact, k) -> dict[str, Any]:
    set_search_params(index, params)
    t0 = time.perf_counter()
    _, ids = index.search(queries, k + 1)
    seconds = time.perf_counter() - t0
    per_query = per_query_recall(drop_self(ids, query_pos, k), exact)
    rec = float(per_query.mean())
    # one-sided 95% lower bound: the target must hold beyond the sampling noise of the held-out queries
    lower = rec - 1.645 * float(per_query.std()) / math.sqrt(len(per_query))
    return {**params, "recall": round(rec, 4), "recall_lower_95": round(lower, 4),
            "qps": round(len(queries) / max(seconds, 1e-9), 1)}


def _sweep(index, plan, extra, queries, query_pos, exact, recall_target, k, stop_at_target):
    curve: list[dict[str, Any]] = []
    values = plan.candidates if plan.search_param else (None,)
    for value in values:
        point = _measure(index, {**search_params_for(plan.search_param, value, index), **extra},
                         queries, query_pos, exact, k)
        curve.append(point)
        if stop_at_target and point["recall_lower_95"] >= recall_target:
            break
        if stop_at_target and len(curve) >= 3 and point["recall"] - curve[-3]["recall"] < RECALL_PLATEAU / 2:
            break  # recall has flattened out below the target: more probing only costs time
    return curve


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
    """The cheapest setting reaching `recall_target` (or the best one), applied to `index`.

    Returns (search params applied, the measured curve [{param: v, recall, recall_lower_95, qps}, ...]). With a
    refine stage the plan's parameter is swept for each k_factor in REFINE_K_FACTORS (stopping at the first
    k_factor that reaches the target) and the fastest point that reaches it wins.
    """
    curve: list[dict[str, Any]] = []
    for extra in ({REFINE_PARAM: f} for f in REFINE_K_FACTORS) if plan.refine else ({},):
        curve += _sweep(index, plan, extra, queries, query_pos, exact, recall_target, k, stop_at_target)
        if stop_at_target and any(p["recall_lower_95"] >= recall_target for p in curve):
            break
    met = [p for p in curve if p["recall_lower_95"] >= recall_target]
    if met:
        # without refine the sweep stops at the first value that reaches the target: that is the cheapest
        chosen = max(met, key=lambda p: p["qps"]) if plan.refine else met[0]
    else:
        # Target out of reach (compressed codes cap recall): the cheapest value within RECALL_PLATEAU of the best,
        # rather than paying many times the search cost for the last thousandth of recall.
        top = max(p["recall"] for p in curve)
        chosen = next(p for p in curve if p["recall"] >= top - RECALL_PLATEAU)
    params = {name: value for name, value in chosen.items() if name not in ("recall", "recall_lower_95", "qps")}
    set_search_params(index, params)
    return params, curve
