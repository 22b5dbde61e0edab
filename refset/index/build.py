"""Training, list assignment and adding; the float16 refine file. faiss objects in, faiss objects out (no
reference-set layout here beyond the shards' embeddings).

Training and adding on a few CPU cores: from 1024 lists the centroids come from two-level k-means (faiss.contrib;
about 2·sqrt(nlist) distances per training point instead of nlist). Vectors go to lists one of three ways,
recorded as the info's `assignment`:
  * "quantizer": faiss's own `index.add` (few lists, or a coarse quantizer we do not model);
  * "grouped": through groups of centroids (`GroupedAssigner`): ~7x fewer flops than brute force, but a vector
    whose nearest list lies outside its probed groups lands in the wrong list, where every query misses it. It is
    used only when it agrees with exact assignment on a sample to GROUPED_MIN_AGREEMENT;
  * "exact": brute-force inner product against every centroid (BLAS), the same lists as faiss's flat quantizer.
    The list of every vector is kept, so a rebuild with other codes (an escalation) re-adds without reassigning.
An HNSW coarse quantizer (the usual advice) was measured slower than batched brute force here, so it is only used
from 32768 lists. Search always uses the IVF's own coarse quantizer.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable

import faiss
import numpy as np

from refset.index.plan import IndexPlan
from refset.index.shards import Shard, embeddings, read_shard

TWO_LEVEL_KMEANS_MIN_LISTS = 1024  # two-level k-means: ~2·sqrt(nlist) distances per point instead of nlist
GROUPED_ASSIGN_MIN_LISTS = 1024
ASSIGN_PROBE_GROUPS = 4
GROUPED_MIN_AGREEMENT = 0.999  # below, too many vectors would sit in a list their queries never probe
AGREEMENT_SAMPLE = 5000
ASSIGN_BATCH = 65536


def new_index(plan: IndexPlan) -> faiss.Index:
    return faiss.index_factory(plan.dim, plan.key, faiss.METRIC_INNER_PRODUCT)


def train(index: faiss.Index, xt: np.ndarray, seed: int, centroids: np.ndarray | None = None) -> np.ndarray | None:
    """Train `index` on `xt`; with `centroids` (an earlier build's lists) only its codes are trained.

    Returns the coarse centroids (None for a non-IVF index)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or (centroids is None and ivf.nlist < TWO_LEVEL_KMEANS_MIN_LISTS):
        if ivf is not None:
            ivf.cp.seed = seed
        index.train(xt)
        return None if ivf is None else ivf.quantizer.reconstruct_n(0, ivf.nlist)
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):  # e.g. an OPQ rotation given as index_key
        for i in range(outer.chain.size()):
            vt = outer.chain.at(i)
            vt.train(xt)
            xt = vt.apply(xt)
    if centroids is None:
        from faiss.contrib.clustering import two_level_clustering

        spherical = ivf.metric_type == faiss.METRIC_INNER_PRODUCT
        centroids, _ = two_level_clustering(xt, int(math.sqrt(ivf.nlist)), ivf.nlist, spherical=spherical, seed=seed)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    ivf.quantizer.train(centroids)
    ivf.quantizer.add(centroids)
    ivf.train(xt)  # the quantizer is full, so this trains only the codes (SQ ranges / PQ codebooks)
    index.is_trained = True
    return centroids


class GroupedAssigner:
    """Nearest IVF list for many vectors at a fraction of brute force's cost, all in batched matrix products.

    The lists' centroids are grouped by a small k-means (about sqrt(nlist) groups); a vector is compared with the
    group centres, then only with the centroids of its `probe` best groups: (sqrt(nlist) + probe·sqrt(nlist))·d
    flops per vector instead of nlist·d. A vector whose nearest list is in another group lands in its best list
    among those probed.
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


class ExactAssigner:
    """The nearest list of every vector by brute-force inner product with all centroids (BLAS, in batches)."""

    def __init__(self, centroids: np.ndarray):
        self.flat = faiss.IndexFlatIP(centroids.shape[1])
        self.flat.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def assign(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.int64)
        for lo in range(0, len(x), ASSIGN_BATCH):
            _, lists = self.flat.search(x[lo : lo + ASSIGN_BATCH], 1)
            out[lo : lo + ASSIGN_BATCH] = lists[:, 0]
        return out

    def assign_shards(self, shards: list[Shard]) -> np.ndarray:
        """The list of every vector of every shard, in the global order."""
        out = np.empty(shards[-1].start + shards[-1].rows, dtype=np.int64)
        for shard in shards:
            x = embeddings(read_shard(shard))
            if len(x):
                out[shard.start : shard.start + shard.rows] = self.assign(x)
        return out


def _plain_ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF when `index` is one itself (not wrapped in a transform), else None."""
    ivf = faiss.try_extract_index_ivf(index)
    outer = faiss.downcast_index(index)
    return ivf if ivf is not None and isinstance(outer, faiss.IndexIVF) else None


def choose_assigner(index: faiss.Index, mode: str, sample: np.ndarray, seed: int
                    ) -> tuple[str, GroupedAssigner | ExactAssigner | None, float | None]:
    """(assignment name, assigner or None for faiss's own add, grouped-vs-exact agreement on `sample` or None).

    mode "auto": grouped for many lists when it agrees with exact assignment on the sample, else exact;
    mode "exact": exact for every IVF with many lists (few lists: faiss's own add, which is exact too)."""
    ivf = _plain_ivf(index)
    if ivf is None or ivf.nlist < GROUPED_ASSIGN_MIN_LISTS:
        return "quantizer", None, None
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    exact = ExactAssigner(centroids)
    if mode == "exact" or not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexFlat):
        return "exact", exact, None
    grouped = GroupedAssigner(centroids, seed)
    check = np.ascontiguousarray(sample[:AGREEMENT_SAMPLE])
    agreement = round(float((grouped.assign(check) == exact.assign(check)).mean()), 4)
    if agreement >= GROUPED_MIN_AGREEMENT:
        return "grouped", grouped, agreement
    return "exact", exact, agreement


def add(index: faiss.Index, x: np.ndarray, lists: np.ndarray | None) -> None:
    """Add `x` at the next positions: to the given lists, or through faiss's own quantizer when None."""
    if lists is None:
        index.add(x)
        return
    from faiss.contrib.ivf_tools import add_preassigned

    ivf = faiss.downcast_index(index)
    # keep our own reference: add_preassigned rebinds its `ids` argument to a raw pointer, freeing a temporary
    ids = np.arange(ivf.ntotal, ivf.ntotal + len(x), dtype=np.int64)
    add_preassigned(ivf, x, np.ascontiguousarray(lists, dtype=np.int64), ids=ids)


def readd(index: faiss.Index, shards: list[Shard], lists: np.ndarray | None,
          step: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Add every shard's vectors again (a rebuild with other codes), reusing the lists of an earlier pass."""
    n = shards[-1].start + shards[-1].rows
    for shard in shards:
        x = embeddings(read_shard(shard))
        if len(x):
            add(index, x, None if lists is None else lists[shard.start : shard.start + shard.rows])
        step(shard.start + shard.rows, n)


# ---------------------------------------------------------------------------------------------------------------
# The refine stage: float16 copies of the vectors in faiss's own IndexScalarQuantizer(QT_fp16) file format,
# written shard by shard (never all in memory) and memory-mapped at load (faiss.IO_FLAG_MMAP_IFC).


def _fp16_header(dim: int, n: int) -> tuple[bytes, int]:
    """faiss's serialisation of an SQfp16 flat index holding n vectors, without its codes; and the code size."""
    empty = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    blob = faiss.serialize_index(empty).tobytes()
    # layout: fourcc "IxSQ", int32 d, int64 ntotal, ... scalar quantizer ..., then the codes as size_t + bytes
    if blob[:4] != b"IxSQ" or struct.unpack_from("<q", blob, 8)[0] != 0 or struct.unpack("<Q", blob[-8:])[0] != 0:
        raise RuntimeError("unexpected faiss serialisation of IndexScalarQuantizer; cannot stream the refine file")
    header = blob[:8] + struct.pack("<q", n) + blob[16:-8] + struct.pack("<Q", n * empty.code_size)
    return header, int(empty.code_size)


def write_refine(shards: list[Shard], dim: int, local_path: str,
                 step: Callable[[int, int], None] = lambda done, total: None) -> tuple[int, str]:
    """Write the float16 refine file for every shard's vectors at `local_path`; returns (bytes, sha256)."""
    n = shards[-1].start + shards[-1].rows
    header, code_size = _fp16_header(dim, n)
    if code_size != 2 * dim:
        raise RuntimeError(f"faiss SQfp16 code size is {code_size}, expected {2 * dim}")
    h = hashlib.sha256()
    size = 0
    with open(local_path, "wb") as f:
        for chunk in _refine_chunks(header, shards):
            f.write(chunk)
            h.update(chunk)
            size += len(chunk)
            step(min(size // code_size, n), n)
    check = faiss.read_index(local_path, faiss.IO_FLAG_MMAP_IFC)  # faiss itself must read what we wrote
    first = embeddings(read_shard(next(s for s in shards if s.rows))) if n else None
    if check.ntotal != n or (first is not None and not np.array_equal(
            check.reconstruct(0), first[0].astype(np.float16).astype(np.float32))):
        raise RuntimeError("the refine file does not read back as written")
    return size, h.hexdigest()


def _refine_chunks(header: bytes, shards: list[Shard]):
    yield header
    for shard in shards:
        x = embeddings(read_shard(shard))
        if len(x):
            yield np.ascontiguousarray(x.astype("<f2")).tobytes()


def with_refine(base: faiss.Index, refine: faiss.Index, k_factor: int = 4) -> faiss.IndexRefine:
    """`base` proposes k·k_factor candidates, `refine`'s float16 vectors re-rank them."""
    index = faiss.IndexRefine(base, refine)
    index.own_fields = False
    index.referenced_objects = [base, refine]  # keep the parts alive as long as the wrapper
    index.k_factor = float(k_factor)
    return index
