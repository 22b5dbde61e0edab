"""End-to-end runs of the reference-set job on the DirectRunner with the tiny-random models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import build_index
from pipeline.command import RunFailure, exit_code_of
from refset import schema, staging
from refset.index import RecallTargetMissed
from transforms.annotations import decode_label_map

from .helpers import CLASSES, make_annotated_dataset, read_parts, rows


def job_argv(tiny_models, output: Path, *flags: str) -> list[str]:
    return ["--output", str(output), "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir,
            "--torch_threads", "1", *flags]


def run_job(tiny_models, output: Path, *flags: str) -> dict:
    return build_index.run(job_argv(tiny_models, output, *flags), save_main_session=False)


ANNOTATED_FLAGS = ("--label_source", "annotations", "--ignore_index", "0", "--num_shards", "3", "--min_label_count",
                   "2", "--embedding_dtype", "float32",
                   "--max_failure_rate", "0.5")  # 3 of the world's 15 inputs fail by design


@pytest.fixture(scope="module")
def annotated_run(tiny_models, tmp_path_factory):
    """12 made-up annotated images + 2 undecodable files + 1 image without a label map, in 3 input shards."""
    root = make_annotated_dataset(tmp_path_factory.mktemp("ann"))
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "notes.jpg").write_text("not an image")
    orphan = np.full((40, 40, 3), 128, dtype=np.uint8)
    from PIL import Image

    Image.fromarray(orphan).save(root / "images" / "orphan.png")
    output = tmp_path_factory.mktemp("ref") / "reference"
    manifest = run_job(tiny_models, output, "--annotations", str(root), *ANNOTATED_FLAGS)
    return root, output, manifest


def test_every_input_is_accounted_for(annotated_run):
    root, output, manifest = annotated_run
    inputs = {str(p) for p in (root / "images").iterdir()}
    segments, dropped, failures = rows(output / "segments"), rows(output / "dropped"), rows(output / "failures")
    seen = {r["image_uri"] for r in segments} | {r["image_uri"] for r in dropped} | {r["uri"] for r in failures}
    assert seen == inputs
    assert sorted((r["uri"].rsplit("/", 1)[-1], r["stage"]) for r in failures) == [
        ("empty.png", "decode"), ("notes.jpg", "decode"), ("orphan.png", "label")]
    counts = manifest["counts"]
    assert counts["images_in"] == len(inputs) == 15
    assert counts["images_failed"] == 3 and counts["images_processed"] == 12
    assert counts["segments_kept"] == len(segments) and counts["dropped"] == len(dropped)


def test_every_annotated_region_is_kept_or_dropped_with_a_reason(annotated_run):
    root, output, manifest = annotated_run
    expected = {}
    for path in sorted((root / "labels").glob("*.png")):
        ids = [i for i in np.unique(decode_label_map(path.read_bytes())) if i != 0]
        uri = str(root / "images" / path.name)
        expected.update({schema.segment_id(uri, k): CLASSES[i] for k, i in enumerate(ids)})
    segments, dropped = rows(output / "segments"), rows(output / "dropped")
    got = {r["segment_id"]: r["label"] for r in segments} | {r["segment_id"]: r["label"] for r in dropped}
    assert got == expected  # same segments, each with the class its annotation gives
    assert len(segments) + len(dropped) == len(expected) == manifest["counts"]["masks"]
    assert {r["reason"] for r in dropped} <= set(schema.DROP_REASONS)
    assert all(r["pair_score"] == 1.0 for r in segments)


def test_outputs_follow_the_contract(annotated_run):
    _, output, manifest = annotated_run
    dim = manifest["dims"]["visual"]
    labels = pq.read_table(output / "labels.parquet")
    assert labels.schema == schema.labels_schema(manifest["dims"]["text"])
    names = labels.column("label").to_pylist()
    assert names == sorted(names) and labels.column("label_id").to_pylist() == list(range(len(names)))
    label_of = dict(zip(labels.column("label_id").to_pylist(), names, strict=True))
    kept_counts = {}
    for part in sorted((output / "segments").glob("part-*.parquet")):
        table = pq.read_table(part)
        assert table.schema == schema.segments_schema(dim, "float32")
        ids = table.column("segment_id").to_pylist()
        assert ids == sorted(ids)
        for row in table.to_pylist():
            assert label_of[row["label_id"]] == row["label"]
            assert staging.shard_of(row["image_uri"], 3) == staging.shard_from_name(part.name)
            assert abs(np.linalg.norm(row["visual_embedding"]) - 1) < 1e-4
            kept_counts[row["label"]] = kept_counts.get(row["label"], 0) + 1
    assert dict(zip(names, labels.column("count").to_pylist(), strict=True)) == kept_counts
    for part in sorted((output / "dropped").glob("part-*.parquet")):
        assert pq.read_table(part).schema == schema.dropped_schema()
    assert not list(output.rglob(".tmp-*"))


def test_faiss_returns_each_segment_as_its_own_neighbour(annotated_run):
    from refset.index import load_index, search

    _, output, manifest = annotated_run
    segments = read_parts(output / "segments")
    vectors = np.asarray(segments.column("visual_embedding").to_pylist(), dtype=np.float32)
    index, ids = load_index(str(output))
    _, positions = search(index, vectors, 1)
    np.testing.assert_array_equal(positions[:, 0], np.arange(len(vectors)))
    assert ids.column("segment_id").to_pylist() == segments.column("segment_id").to_pylist()


def test_manifest_records_models_counts_and_recall(annotated_run, tiny_models):
    _, output, manifest = annotated_run
    on_disk = json.loads((output / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"]
    assert manifest["schema_version"] == schema.SCHEMA_VERSION
    assert manifest["model_info"]["visual"]["model_id"] == tiny_models.visual.model_id
    assert manifest["model_info"]["text"]["dim"] == manifest["dims"]["text"] > 0
    assert manifest["models"]["preset"] == "tiny-random"
    index = manifest["index"]
    assert index["k"] == 10 and index["recall_at_k"] >= 0.95 and index["n"] == manifest["counts"]["segments_kept"]
    assert manifest["run_metrics"]["images_read"] == 13  # 12 + the orphan; 2 undecodable
    assert manifest["run_metrics"]["images_failed"] == 3
    assert manifest["params"]["num_shards"] == 3


def test_a_missed_recall_target_is_recorded_in_the_manifest_then_fails_the_job_in_one_line(
        annotated_run, tiny_models, tmp_path, monkeypatch):
    """The index step raising RecallTargetMissed (it has written its best index): the manifest is written with that
    index's info, then the job ends as a RunFailure (exit 1, one line)."""
    root, output, _ = annotated_run
    copy = tmp_path / "reference"
    shutil.copytree(output, copy)
    config, _ = build_index.parse(job_argv(tiny_models, copy, "--annotations", str(root), *ANNOTATED_FLAGS))
    plan = build_index.prepare(config)
    written = {**json.loads((copy / schema.INDEX_INFO).read_text()), "recall_at_k": 0.5, "recall_lower_95": 0.45,
               "recall_target_met": False}

    def index_step(reference, **kwargs):
        assert reference == plan.output
        raise RecallTargetMissed("recall@10 0.5 (95% lower bound 0.45) is below the target 0.95 for every index "
                                 "within the 2 GB budget (tried Flat)", written)

    monkeypatch.setattr(build_index, "build_index", index_step)
    with pytest.raises(RunFailure) as err:
        build_index.finish(config, plan, None)
    code, line = exit_code_of(err.value)
    assert code == 1 and line.startswith("index: recall@10 0.5") and "\n" not in line
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["index"]["recall_target_met"] is False and manifest["index"]["recall_at_k"] == 0.5
    assert manifest["counts"]["segments_kept"] > 0  # the rest of the record is there too
    assert "target 0.95 missed" in build_index.index_summary(manifest["index"])


def test_real_photos_from_all_three_annotation_formats(real_data, tiny_models, tmp_path):
    for dataset, ignore in (("voc2012", "255"), ("ade20k", "0"), ("camvid", "11")):
        output = tmp_path / dataset
        manifest = run_job(tiny_models, output, "--label_source", "annotations", "--annotations",
                           str(real_data / dataset), "--ignore_index", ignore, "--max_side", "160",
                           "--min_label_count", "1", "--skip_index")
        n_images = len(list((real_data / dataset / "images").iterdir()))
        counts = manifest["counts"]
        assert counts["images_in"] == n_images and counts["images_failed"] == 0
        assert counts["segments_kept"] + counts["dropped"] == counts["masks"] > n_images
        classes = (real_data / dataset / "classes.txt").read_text().splitlines()
        assert {r["label"] for r in rows(output / "segments")} <= set(classes)


def test_captions_source(tiny_models, tmp_path):
    from pipeline.samples import write_samples

    written = write_samples(tmp_path / "samples")
    captions = tmp_path / "samples" / "captions.jsonl"
    lines = captions.read_text().splitlines()
    captions.write_text("\n".join(lines[1:]) + "\n")  # the first image has no caption: its segments are unlabelled
    output = tmp_path / "reference"
    manifest = run_job(tiny_models, output, "--input", str(tmp_path / "samples" / "images"), "--captions",
                       str(captions), "--max_side", "96", "--min_label_count", "1", "--felzenszwalb_min_size", "60")
    counts = manifest["counts"]
    assert counts["images_in"] == len(written) and counts["images_failed"] == 0
    segments, dropped = rows(output / "segments"), rows(output / "dropped")
    uncaptioned = str(written[0])
    assert {r["reason"] for r in dropped if r["image_uri"] == uncaptioned} == {"unlabelled"}
    assert not [r for r in segments if r["image_uri"] == uncaptioned]
    # every masker segment is kept or dropped; a segment picked by two labels may be in segments twice
    all_ids = {r["segment_id"] for r in segments} | {r["segment_id"] for r in dropped}
    assert len(all_ids) == counts["masks"]
    assert {r["reason"] for r in dropped} <= {"unpaired", "unlabelled", "too_small", "outlier", "duplicate"}
    assert all(-1.0 <= r["pair_score"] <= 1.0 for r in segments)
    caption_words = " ".join(json.loads(line)["caption"].lower() for line in lines[1:])
    assert all(r["label"].split()[-1] in caption_words or r["label"][:-1] in caption_words for r in segments)
    assert "clip" in manifest["model_info"] and manifest["index"]["n"] == counts["segments_kept"]


def test_captioner_source(tiny_models, tmp_path):
    """Generated captions (tiny random BLIP: arbitrary words) -> labels; whatever they are, the accounting holds."""
    root = make_annotated_dataset(tmp_path / "data", n_images=3)
    output = tmp_path / "reference"
    manifest = run_job(tiny_models, output, "--input", str(root / "images"), "--label_source", "captioner",
                       "--felzenszwalb_min_size", "40", "--skip_index")
    counts = manifest["counts"]
    assert counts["images_in"] == 3 and counts["images_failed"] == 0 and counts["masks"] > 3
    segments, dropped = rows(output / "segments"), rows(output / "dropped")
    assert len({r["segment_id"] for r in segments} | {r["segment_id"] for r in dropped}) == counts["masks"]
    assert manifest["model_info"]["captioner"]["model_id"] == tiny_models.captioner.model_id


def test_the_same_picture_under_two_names_is_dropped_once_as_duplicate(tiny_models, tmp_path):
    """Dedup keys by content: a copy re-encoded with other PNG settings (other file bytes, same pixels) loses each
    of its regions to the original's as "duplicate"; the copy whose file name sorts first is the one kept."""
    from PIL import Image

    root = make_annotated_dataset(tmp_path / "ann", n_images=4, seed=7)
    with Image.open(root / "images" / "img_000.png") as im:
        im.save(root / "images" / "copy_000.png", compress_level=1)
    (root / "labels" / "copy_000.png").write_bytes((root / "labels" / "img_000.png").read_bytes())
    assert (root / "images" / "copy_000.png").read_bytes() != (root / "images" / "img_000.png").read_bytes()
    output = tmp_path / "ref"
    run_job(tiny_models, output, "--label_source", "annotations", "--annotations", str(root), "--ignore_index", "0",
            "--num_shards", "2", "--outlier_mads", "1e9", "--min_label_count", "1")
    original, copy = (str(root / "images" / f"{name}.png") for name in ("img_000", "copy_000"))
    regions = [i for i in np.unique(decode_label_map((root / "labels" / "img_000.png").read_bytes())) if i != 0]
    dropped = rows(output / "dropped")
    # "copy_000.png" < "img_000.png": the copy is kept, the original's regions are the duplicates
    assert {r["segment_id"] for r in dropped if r["reason"] == "duplicate"} == {
        schema.segment_id(original, k) for k in range(len(regions))}
    kept = {r["segment_id"] for r in rows(output / "segments")}
    assert {schema.segment_id(copy, k) for k in range(len(regions))} <= kept
