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
    build_index,
    choose_index,
    load_index,
    parse_memory,
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
