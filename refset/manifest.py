"""manifest.json: what a reference set is and how it was made (SPEC §3), computed from the written files.

Counts are read back from the outputs and the staging area, not from the run's metrics, so a resumed run's
manifest describes the whole reference set (including shards an earlier run committed); the Beam metrics of
the run that finished it are recorded beside them under `run_metrics`.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import pyarrow.parquet as pq

from refset import schema, staging, storage


def _parquet_files(directory: str) -> list[str]:
    return [p for p in storage.listdir(directory) if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]


def _num_rows(path: str) -> int:
    with storage.filesystem(path).open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def _column_counts(paths: list[str], column: str) -> dict[str, int]:
    counter: collections.Counter = collections.Counter()
    for path in paths:
        with storage.filesystem(path).open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            if column not in parquet.schema_arrow.names:  # (failures written before `kind` existed)
                continue
            values = parquet.read(columns=[column]).column(column).to_pylist()
        counter.update(v for v in values if v is not None)
    return dict(sorted(counter.items()))


def count_outputs(output: str) -> dict[str, Any]:
    """Reconciled counts: images in = images processed + images failed; masker segments = kept | dropped."""
    staged_images = staging.committed_paths(output, "images")  # generations hold disjoint images (staging doc)
    images_processed = sum(_num_rows(p) for p in staged_images)
    masks = sum(sum(storage.read_parquet(p, columns=["segments"]).column("segments").to_pylist()) for p in staged_images)
    failures = _parquet_files(storage.join(output, schema.FAILURES_DIR))
    failed_by_stage = _column_counts(failures, "stage")
    failed_by_kind = _column_counts(failures, "kind")
    dropped_by_reason = _column_counts(_parquet_files(storage.join(output, schema.DROPPED_DIR)), "reason")
    segments = sum(_num_rows(p) for p in _parquet_files(storage.join(output, schema.SEGMENTS_DIR)))
    labels_path = storage.join(output, schema.LABELS)
    labels = _num_rows(labels_path) if storage.exists(labels_path) else 0
    images_failed = sum(failed_by_stage.values())
    return {
        "images_in": images_processed + images_failed,
        "images_processed": images_processed,
        "images_failed": images_failed,
        "failed_by_stage": failed_by_stage,
        "failed_by_kind": failed_by_kind,
        "masks": masks,
        "segments_kept": segments,
        "dropped": sum(dropped_by_reason.values()),
        "dropped_by_reason": dropped_by_reason,
        "labels": labels,
    }


def build_manifest(
    output: str,
    *,
    models: dict,
    model_info: dict,
    params: dict,
    run: dict,
    index_info: dict | None,
    run_metrics: dict,
) -> dict:
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "models": models,
        "model_info": model_info,
        "dims": {
            "visual": model_info.get("visual", {}).get("dim"),
            "text": model_info.get("text", {}).get("dim"),
        },
        "params": params,
        "run": run,
        "counts": count_outputs(output),
        "run_metrics": run_metrics,
        "index": index_info,
    }
