"""The FAISS index step: choice by size and budget, ids across shards, tuned recall, corrupt files, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.faiss_index import main
from refset import schema
from refset.index import (
    FLAT_MAX_VECTORS,
    CorruptIndex,
    RecallTargetMissed,
    build_index,
    choose_index,
    exact_answers,
    load_index,
    parse_memory,
    per_query_recall,
    search,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Small k-means runs are dominated by OpenMP threads spinning against other work on a shared CPU."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_shards(ref: Path, vectors: np.ndarray, sizes: list[int], dtype: str = "float32") -> list[list[str]]:
    """Write segments/part-*.parquet with the full segments schema; returns the segment ids per shard."""
    assert sum(sizes) == len(vectors)
    (ref / schema.SEGMENTS_DIR).mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    sch = schema.segments_schema(dim, dtype)
    all_ids, start = [], 0
    for shard, size in enumerate(sizes):
        x = vectors[start : start + size]
        ids = [schema.segment_id(f"img-{shard}-{i // 3}.jpg", i % 3) for i in range(size)]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1).astype(dtype)), dim)
        table = pa.table(
            {
                "segment_id": ids,
                "image_uri": [f"img-{shard}-{i // 3}.jpg" for i in range(size)],
                "width": pa.array([64] * size, pa.int32()),
                "height": pa.array([48] * size, pa.int32()),
                "bbox": pa.array([[0.0, 0.0, 8.0, 8.0]] * size, pa.list_(pa.float32(), 4)),
                "area": pa.array([64] * size, pa.int64()),
                "mask_rle": pa.array([b"x"] * size, pa.binary()),
                "label_id": pa.array([0] * size, pa.int32()),
                "label": ["thing"] * size,
                "pair_score": pa.array([0.5] * size, pa.float32()),
                "quality": pa.array([0.5] * size, pa.float32()),
                "visual_embedding": emb,
            },
            schema=sch,
        )
        pq.write_table(table, ref / schema.SEGMENTS_DIR / schema.shard_name(shard))
        all_ids.append(ids)
        start += size
    return all_ids


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def hard(n: int, dim: int, clusters: int, sigma: float, seed: int) -> np.ndarray:
    """The bench's hard family at small scale: centre + sigma·N(0, I) per dimension, normalised. With
    sigma·sqrt(dim) ~ 0.8 every member of a cluster is almost equidistant: coarse codes blur the top-10."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, clusters, n)] + sigma * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def loo_recall(index, x: np.ndarray, k: int, n_queries: int, seed: int) -> float:
    """Leave-one-out recall@k of a loaded index against numpy brute force, on stored vectors as queries."""
    qpos = np.random.default_rng(seed).choice(len(x), n_queries, replace=False)
    exact = exact_topk(x, x[qpos], k + 1)
    _, approx = search(index, x[qpos], k + 1)
    return float(np.mean([len((set(a) - {p}) & set(e[e != p][:k])) / k for a, e, p in zip(approx, exact, qpos, strict=True)]))


# --- choosing ---------------------------------------------------------------------------------------------------


def test_parse_memory_units():
    assert parse_memory("2GB") == 2_000_000_000
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(1234) == 1234
    with pytest.raises(ValueError, match="cannot parse"):
        parse_memory("two gigs")


def test_chooser_picks_flat_for_small_sets():
    plan = choose_index(10_000, 768, parse_memory("2GB"))
    assert plan.key == "Flat" and plan.search_param is None and plan.train_size == 0
    assert plan.memory_estimate_bytes == 10_000 * 768 * 4


def test_chooser_picks_ivf_for_large_sets_and_compresses_under_tight_budgets():
    roomy = choose_index(1_000_000, 768, parse_memory("8GB"))
    assert roomy.key.startswith("IVF") and roomy.search_param == "nprobe"
    assert roomy.memory_estimate_bytes <= roomy.memory_budget_bytes
    # raw float32 at 1M x 768 is 3.07 GB: under 2 GB the codes must be compressed
    mid = choose_index(1_000_000, 768, parse_memory("2GB"))
    assert mid.key.startswith("IVF") and ("SQ" in mid.key or "PQ" in mid.key)
    assert mid.memory_estimate_bytes <= parse_memory("2GB") < 1_000_000 * 768 * 4
    assert mid.nlist and mid.train_size >= 39 * mid.nlist
    # 8- and 6-bit scalar codes (3.8 / 2.9 GB at 5M) no longer fit 2 GB: 4-bit scalar codes (d/2 bytes)
    tight = choose_index(5_000_000, 768, parse_memory("2GB"))
    assert ",SQ4" in tight.key and tight.memory_estimate_bytes <= parse_memory("2GB")
    assert tight.memory_estimate_bytes >= 5_000_000 * 8  # at least the ids are counted
    # every alternative it passed over was over budget
    for alt in tight.alternatives[:-1]:
        assert alt["memory_estimate_bytes"] > parse_memory("2GB")


def test_float16_codes_are_chosen_when_they_fit_and_8_bit_when_they_do_not():
    # 1M x 768: float16 codes + ids are 1.544 GB, float32 3.08 GB: under 2 GB the ladder must stop at SQfp16
    plan = choose_index(1_000_000, 768, parse_memory("2GB"))
    assert plan.key == "IVF2048,SQfp16" and plan.memory_estimate_bytes <= parse_memory("2GB")
    assert plan.memory_estimate_bytes >= 1_000_000 * (2 * 768 + 8)
    assert choose_index(1_000_000, 768, parse_memory("1.5GB")).key == "IVF2048,SQ8"


def test_chooser_mid_size_is_a_graph_or_ivf_and_refuses_impossible_budgets():
    plan = choose_index(FLAT_MAX_VECTORS + 10_000, 256, parse_memory("2GB"))
    assert plan.key.startswith(("HNSW", "IVF")) and plan.search_param in ("efSearch", "nprobe")
    with pytest.raises(ValueError, match="too small"):
        choose_index(1_000_000, 768, 1_000_000)


# --- building, ids, recall ----------------------------------------------------------------------------------------


def test_flat_index_each_segment_is_its_own_neighbour_and_ids_map_across_shards(tmp_path):
    x = clustered(500, 24, 10, 0.5, seed=1)
    sizes = [120, 0, 200, 180]  # an empty shard must not shift positions
    ids = write_shards(tmp_path, x, sizes)
    info = build_index(str(tmp_path), held_out_queries=50)
    assert info["index_key"] == "Flat" and info["n"] == 500 and info["dim"] == 24
    assert info["recall_at_k"] == pytest.approx(1.0)

    index, table = load_index(str(tmp_path))
    scores, pos = search(index, x, 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(500))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)

    assert table.schema.equals(schema.index_ids_schema())
    expected_ids = [s for shard in ids for s in shard]
    assert table.column("segment_id").to_pylist() == expected_ids
    assert table.column("position").to_pylist() == list(range(500))
    # position 130 is row 10 of the third shard (part-00002), after 120 rows in part-00000 and none in part-00001
    row = table.slice(130, 1).to_pylist()[0]
    assert row["shard"] == schema.shard_name(2) and row["row"] == 10 and row["segment_id"] == ids[2][10]
    on_disk = json.loads((tmp_path / schema.INDEX_INFO).read_text())
    assert on_disk["index_key"] == "Flat" and on_disk["recall_at_k"] == info["recall_at_k"]


@pytest.mark.parametrize(
    "key, n, assignment",
    [("IVF32,Flat", 3000, "quantizer"), ("IVF1024,Flat", 24_000, "grouped")],  # many lists: two-level paths
)
def test_ivf_index_returns_each_segment_as_its_own_neighbour(tmp_path, key, n, assignment):
    x = clustered(n, 32, 40, 0.6, seed=2)
    write_shards(tmp_path, x, [n // 3] * 3)
    info = build_index(str(tmp_path), index_key=key, recall_target=0.95, held_out_queries=200)
    assert info["index_key"] == key and "nprobe" in info["search_params"]
    assert info["assignment"] == assignment and info["recall_target_met"]
    index, _ = load_index(str(tmp_path))
    _, pos = search(index, x, 1)
    # a vector is always found in its own list when that list is probed first: exact self-retrieval
    assert (pos[:, 0] == np.arange(n)).mean() == 1.0


def test_tuned_recall_meets_target_on_clustered_data(tmp_path):
    x = clustered(20_000, 32, 100, 0.8, seed=3)
    write_shards(tmp_path, x, [5000] * 4)
    info = build_index(str(tmp_path), index_key="IVF256,SQ8", recall_target=0.9, k=10, held_out_queries=300)
    nprobe = info["search_params"]["nprobe"]
    assert info["recall_target_met"] and info["recall_at_k"] >= 0.9
    assert nprobe < 256  # the tuner found a cheaper setting than scanning every list
    assert [p["nprobe"] for p in info["tuning_curve"]][-1] == nprobe

    # check the loaded index independently: brute-force neighbours in numpy, leave-one-out like the builder
    index, _ = load_index(str(tmp_path))
    assert index.nprobe == nprobe
    rng = np.random.default_rng(7)
    qpos = rng.choice(len(x), 300, replace=False)
    exact = exact_topk(x, x[qpos], 11)
    _, approx = search(index, x[qpos], 11)
    hits = [len((set(a) - {p}) & (set(e[e != p][:10]))) / 10 for a, e, p in zip(approx, exact, qpos, strict=True)]
    assert np.mean(hits) >= 0.88  # fresh queries, so allow a little sampling noise around the 0.9 target


def test_duplicate_vectors_are_ties_not_misses(tmp_path):
    """A reference set with many identical embeddings (the same look under several labels): exact search may list
    any of the tied copies, so a Flat index must still measure recall 1.0 and meet any target."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((20, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    x = np.repeat(base, 6, axis=0)  # 120 vectors, every one with 5 identical twins
    write_shards(tmp_path, x, [60, 60])
    info = build_index(str(tmp_path), recall_target=0.999, k=10, held_out_queries=100)
    assert info["index_key"] == "Flat"
    assert info["recall_at_k"] == 1.0 and info["recall_target_met"]


def test_recall_counts_ties_of_the_kth_neighbour_and_nothing_beyond():
    ids = np.array([[7, 1, 2, 3, 4]])  # exact search of width 2k+1 for query row 7 (its own row first), k = 2
    sims = np.array([[1.0, 0.9, 0.8, 0.8, 0.5]], dtype=np.float32)
    exact = exact_answers(ids, sims, np.array([7]), k=2)
    assert exact.tolist() == [[1, 2, 3, -1]]  # 3 ties with the 2nd neighbour; 4 does not
    assert per_query_recall(np.array([[1, 3]]), exact).tolist() == [1.0]
    assert per_query_recall(np.array([[1, 4]]), exact).tolist() == [0.5]
    assert per_query_recall(np.array([[2, 3]]), exact).tolist() == [1.0]


def test_info_has_one_key_per_fact(tmp_path):
    x = clustered(3000, 16, 20, 0.6, seed=8)
    write_shards(tmp_path, x, [3000])
    info = build_index(str(tmp_path), index_key="IVF16,SQ8", recall_target=0.9, k=5, held_out_queries=100)
    on_disk = json.loads((tmp_path / schema.INDEX_INFO).read_text())
    assert on_disk == info
    assert [key for key in info if key.startswith("recall_at")] == ["recall_at_k"] and info["k"] == 5
    assert set(info["search_params"]) == {"nprobe"} and "nprobe" not in info
    # the plan's record adds what the top level does not say; nothing is said twice under another name
    assert not set(info["plan"]) & set(info)
    assert not {"key", "n_vectors", "dim", "memory_budget_bytes", "memory_estimate_bytes", "train_size"} & set(info["plan"])


def test_a_coarse_first_choice_that_misses_escalates_to_better_codes(tmp_path):
    x = hard(20_000, 64, 50, 0.1, seed=9)
    write_shards(tmp_path, x, [10_000, 10_000])
    info = build_index(str(tmp_path), index_key="IVF64,SQ4", recall_target=0.95, held_out_queries=300)
    [first] = info["escalated_from"]
    assert first["index_key"] == "IVF64,SQ4" and first["recall_lower_95"] < 0.95 and first["next"] == "codes"
    # the most accurate codes within the (roomy) budget, on the same lists
    assert info["index_key"] == "IVF64,Flat" and info["refine"] is None
    assert info["recall_target_met"] and info["recall_at_k"] >= 0.95 > first["recall_at_k"]
    index, _ = load_index(str(tmp_path))
    assert loo_recall(index, x, 10, 300, seed=10) >= 0.93  # independent check, fresh draw of queries


def test_refine_from_float16_on_disk_lifts_recall_when_better_codes_do_not_fit(tmp_path):
    x = hard(20_000, 64, 50, 0.1, seed=9)
    write_shards(tmp_path, x, [10_000, 10_000])
    # 1 MB holds 4-bit codes (0.82 MB with ids) but not 6-bit (1.1 MB): only the refine stage can lift recall
    info = build_index(str(tmp_path), index_key="IVF64,SQ4", memory_budget="1MB", recall_target=0.95,
                       held_out_queries=300)
    [first] = info["escalated_from"]
    assert first["next"] == "refine" and first["recall_at_k"] < 0.9
    assert info["index_key"] == "IVF64,SQ4" and info["memory_estimate_bytes"] <= 1_000_000
    assert info["refine"]["codes"] == "SQfp16" and "k_factor_rf" in info["search_params"]
    assert info["recall_target_met"] and info["recall_at_k"] >= 0.95
    refine_file = tmp_path / info["refine"]["file"]
    assert refine_file.stat().st_size == info["refine"]["bytes"] >= 20_000 * 64 * 2

    index, _ = load_index(str(tmp_path))
    assert index.k_factor == info["search_params"]["k_factor_rf"]
    assert loo_recall(index, x, 10, 300, seed=10) >= 0.93
    _, pos = search(index, x[:500], 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(500))
    # a damaged refine file is refused like the index itself
    data = bytearray(refine_file.read_bytes())
    data[-3] ^= 0xFF
    refine_file.write_bytes(bytes(data))
    with pytest.raises(CorruptIndex, match="checksum"):
        load_index(str(tmp_path))


def test_grouped_lists_escalate_to_exact_lists_before_refine(tmp_path):
    # 40 clusters under 1024 lists: the grouped assigner agrees with exact on the sample, so it is used first;
    # 0.8 MB holds only 4-bit codes, which miss 0.95: exact lists come first, then the float16 refine
    x = clustered(24_000, 32, 40, 0.6, seed=2)
    write_shards(tmp_path, x, [8000] * 3)
    info = build_index(str(tmp_path), index_key="IVF1024,SQ4", memory_budget="0.8MB", recall_target=0.95,
                       held_out_queries=200)
    assert [(m["assignment"], m["next"]) for m in info["escalated_from"]] == [
        ("grouped", "exact_assignment"), ("exact", "refine")]
    assert info["assignment"] == "exact" and info["refine"] and info["recall_target_met"]
    index, _ = load_index(str(tmp_path))
    _, pos = search(index, x, 1)
    assert (pos[:, 0] == np.arange(len(x))).mean() == 1.0


def test_exact_assignment_puts_every_vector_in_the_list_of_faiss_s_quantizer(tmp_path):
    # 1024 lists over 1,000 random clusters: grouping the centroids has no structure to exploit, so the grouped
    # assigner disagrees with exact assignment on more than 0.1% of a sample and exact assignment is used
    n = 45_000
    x = hard(n, 32, 1000, 0.12, seed=11)
    write_shards(tmp_path, x, [15_000] * 3)
    info = build_index(str(tmp_path), index_key="IVF1024,Flat", recall_target=0.5, held_out_queries=100)
    assert info["assignment"] == "exact" and info["grouped_assignment_agreement"] < 0.999
    index, _ = load_index(str(tmp_path))
    ivf = faiss.extract_index_ivf(index)
    _, expected = ivf.quantizer.search(x, 1)  # faiss's own assignment (what index.add would do)
    got = np.full(n, -1)
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            got[faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()] = lst
    assert (got == expected[:, 0]).mean() == 1.0


def test_nothing_within_the_budget_reaches_the_target_raises_after_writing_the_best(tmp_path, capsys):
    # groups of 30 near-copies (spread 1e-5, below float16's resolution): which 10 of the 29 others are nearest
    # depends on differences no compressed code keeps, and float32 codes (0.41 MB) exceed the 0.3 MB budget
    rng = np.random.default_rng(12)
    centers = rng.standard_normal((100, 32))
    x = np.repeat(centers / np.linalg.norm(centers, axis=1, keepdims=True), 30, axis=0)
    x = x + 1e-5 * rng.standard_normal(x.shape)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    write_shards(tmp_path, x, [3000])
    with pytest.raises(RecallTargetMissed) as err:
        build_index(str(tmp_path), index_key="IVF16,SQ8", memory_budget="300KB", recall_target=0.95,
                    held_out_queries=200)
    message, info = str(err.value), err.value.info
    assert "\n" not in message and "IVF16,SQ8" in message and "IVF16,SQfp16" in message
    assert [m["index_key"] for m in info["escalated_from"]] == ["IVF16,SQ8"]
    assert info["index_key"] == "IVF16,SQfp16" and info["refine"] is None and not info["recall_target_met"]
    on_disk = json.loads((tmp_path / schema.INDEX_INFO).read_text())
    assert on_disk["recall_target_met"] is False and on_disk["index_key"] == "IVF16,SQfp16"
    index, _ = load_index(str(tmp_path))  # the best index was written and loads
    assert index.ntotal == 3000

    # the CLI: exit 1, one line
    capsys.readouterr()
    assert main(["--reference", str(tmp_path), "--index_key", "IVF16,SQ8", "--memory_budget", "300KB",
                 "--held_out_queries", "200"]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # progress bars, then the error as the last line
    assert err[-1].startswith("faiss_index: error: recall@10") and [ln for ln in err if "error" in ln] == err[-1:]


def test_float16_shards_load_and_search(tmp_path):
    x = clustered(400, 16, 8, 0.5, seed=4)
    write_shards(tmp_path, x, [250, 150], dtype="float16")
    info = build_index(str(tmp_path), held_out_queries=40)
    assert info["dim"] == 16 and info["n"] == 400
    index, _ = load_index(str(tmp_path))
    _, pos = search(index, x.astype(np.float16).astype(np.float32), 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(400))


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.fixture()
def built(tmp_path):
    write_shards(tmp_path, clustered(300, 16, 6, 0.5, seed=5), [300])
    build_index(str(tmp_path), held_out_queries=30)
    return tmp_path


def test_truncated_index_is_refused_with_one_line(built):
    path = built / schema.INDEX_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptIndex) as err:
        load_index(str(built))
    assert "\n" not in str(err.value) and "segments.faiss" in str(err.value)


def test_corrupt_index_without_recorded_size_is_refused(built):
    info_path = built / schema.INDEX_INFO
    info = json.loads(info_path.read_text())
    del info["index_bytes"], info["index_sha256"]  # as if written by an older build: faiss itself must refuse it
    info_path.write_text(json.dumps(info))
    (built / schema.INDEX_FILE).write_bytes(b"not a faiss index at all")
    with pytest.raises(CorruptIndex, match="cannot read") as err:
        load_index(str(built))
    assert "\n" not in str(err.value)


def test_flipped_bytes_fail_the_checksum(built):
    path = built / schema.INDEX_FILE
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, one vector changed
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptIndex, match="checksum"):
        load_index(str(built))


def test_missing_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no segment shards"):
        build_index(str(tmp_path))


def test_cli_builds_and_bad_flags_fail_in_one_line(built, capsys):
    assert main(["--reference", str(built), "--held_out_queries", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["index_key"] == "Flat"
    assert main(["--reference", str(built / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faiss_index: error:") and "\n" not in err

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.faiss_index", "--reference", str(built), "--bogus", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--bogus" in proc.stderr


def test_remote_reference_set_round_trips_through_fsspec(tmp_path):
    """A non-local reference dir (fsspec memory://, standing in for gs://) is read, written and loaded the same way."""
    import fsspec

    x = clustered(200, 16, 5, 0.5, seed=6)
    write_shards(tmp_path, x, [120, 80])
    remote = f"memory://reme-faiss-test-{tmp_path.name}"
    fs = fsspec.filesystem("memory")
    for part in sorted((tmp_path / schema.SEGMENTS_DIR).iterdir()):
        fs.pipe(f"{remote}/{schema.SEGMENTS_DIR}/{part.name}", part.read_bytes())
    info = build_index(remote, held_out_queries=20)
    assert fs.exists(f"{remote}/{schema.INDEX_FILE}") and info["n"] == 200
    assert not [p for p in fs.find(remote) if "/.tmp-" in p]  # no temp files left behind
    index, table = load_index(remote)
    _, pos = search(index, x, 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(200))
    assert table.column("shard").to_pylist()[120] == schema.shard_name(1)
