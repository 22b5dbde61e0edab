"""Rows -> Parquet with the contract's schemas; staged shards are committed with their marker last."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from refset import schema, staging, storage
from transforms import records, writers


def segment_row(i: int, dim: int = 4) -> dict:
    emb = np.linspace(-1, 1, dim, dtype=np.float32) * (i + 1) / 10
    return {"segment_id": schema.segment_id("/a.png", i), "image_uri": "/a.png", "width": 5, "height": 4,
            "bbox": [0.0, 1.0, 2.0, 3.0], "area": 6, "mask_rle": b"x" * i, "label_id": 0, "label": "cat",
            "pair_score": 0.5, "quality": 0.9, "visual_embedding": emb}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_segments_table_has_the_contract_schema(dtype):
    rows = [segment_row(i) for i in range(3)]
    table = staging.table_from_rows(rows, schema.segments_schema(4, dtype))
    assert table.schema == schema.segments_schema(4, dtype)
    back = staging.rows_from_table(table)
    tolerance = 1e-3 if dtype == "float16" else 0
    for row, original in zip(back, rows, strict=True):
        np.testing.assert_allclose(row["visual_embedding"], original["visual_embedding"], atol=tolerance)
        assert row["mask_rle"] == original["mask_rle"] and row["bbox"] == original["bbox"]


def test_empty_tables_keep_their_schema():
    table = staging.table_from_rows([], schema.segments_schema(8, "float16"))
    assert table.num_rows == 0 and table.schema.field("visual_embedding").type == pa.list_(pa.float16(), 8)


def test_staged_shard_round_trip_and_marker_written_last(tmp_path, monkeypatch):
    output = str(tmp_path)
    pair = {k: v for k, v in segment_row(1).items() if k not in ("label_id", "quality")}
    drop = records.drop_row(segment_row(2), "too_small")
    failure = {"uri": "/b.png", "stage": "decode", "error_type": "ImageDecodeError", "message": "empty",
               "kind": "bad_input"}
    image = {"uri": "/a.png", "width": 5, "height": 4, "segments": 2}
    order = []
    real_write = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda path, data: (order.append(path), real_write(path, data)))
    staging.write_staged_shard(output, 7, {"pairs": [pair], "drops": [drop], "failures": [failure], "images": [image]})
    # 4 staging files, the failure marker (the shard has a failure), then the commit marker
    assert order[-1] == staging.done_marker(output, 7) and len(order) == 6
    assert order[-2] == staging.failed_marker(output, 7)
    assert staging.done_shards(output) == [7] and staging.failing_shards(output) == {7: 0}
    staged = staging.read_staged_shard(output, 7)
    assert staged["failures"] == [failure] and staged["images"] == [image]
    assert staged["drops"][0]["reason"] == "too_small" and staged["drops"][0]["label"] is None
    np.testing.assert_array_equal(staged["pairs"][0]["visual_embedding"], pair["visual_embedding"])


def test_interrupted_shard_write_leaves_no_marker(tmp_path, monkeypatch):
    output = str(tmp_path)
    calls = []

    def failing_write(path, table):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        storage.write_bytes(path, b"partial")

    monkeypatch.setattr(storage, "write_parquet", failing_write)
    with pytest.raises(OSError):
        staging.write_staged_shard(output, 3, {})
    assert staging.done_shards(output) == []


def test_label_ids_follow_sorted_names():
    counts = [("zebra", 2), ("apple", 5), ("mango", 1)]
    assert writers.label_ids(counts) == {"apple": 0, "mango": 1, "zebra": 2}
    rows = writers.labels_rows(sorted(counts), np.eye(3, dtype=np.float32))
    assert [(r["label_id"], r["label"], r["count"]) for r in rows] == [(0, "apple", 5), (1, "mango", 1), (2, "zebra", 2)]


def test_shard_of_is_stable_and_spread():
    uris = [f"gs://b/img/{i:05d}.jpg" for i in range(2000)]
    shards = [staging.shard_of(u, 8) for u in uris]
    assert shards == [staging.shard_of(u, 8) for u in uris]
    counts = np.bincount(shards, minlength=8)
    assert counts.min() > 180  # roughly uniform (expected 250 each)
    assert staging.shard_from_name("part-00012.parquet") == 12 and staging.shard_from_name("x/part-00003") == 3
