"""Smoke tests for bench/gpu.py: the one-shot GPU script must run end to end and report, never die.

The GPU figures themselves are measured on a GPU machine; here the script runs on the CPU with --quick (tiny SAM,
tiny encoders, small sizes) and the tests check the JSON it emits: the keys a reader of the results relies on,
identity of our SAM masks with the reference's, and that a failing section becomes an error line while the
other sections still run and the command exits 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_gpu_bench(out: Path, *flags: str, device: str = "cpu", timeout: int = 240) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--quick", "--device", device, "--out", str(out), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    written = [json.loads(line) for line in (out / "gpu_quick.jsonl").read_text().splitlines()]
    assert printed == written  # every printed line is in the results file, in order
    return printed


def by_section(rows: list[dict], section: str) -> list[dict]:
    return [r for r in rows if r.get("section") == section]


def test_failing_section_is_reported_and_the_rest_still_runs(tmp_path):
    # A SAM checkpoint that does not exist makes the sam section fail at model loading.
    rows = run_gpu_bench(tmp_path, "--sections", "sam,retrieval", "--sam-checkpoint", str(tmp_path / "missing.pth"))

    env = rows[0]
    assert env["section"] == "env" and env["device"] == "cpu" and env["quick"] is True
    assert isinstance(env["missing_modules"], list)

    sam = by_section(rows, "sam")
    assert any(r.get("kind") == "error" and "missing.pth" in r["error"] for r in sam)
    assert sam[-1]["kind"] == "status" and sam[-1]["rc"] != 0 and "error" in sam[-1]

    retrieval = by_section(rows, "retrieval")
    per_image = [r for r in retrieval if r.get("kind") == "per_image"]
    assert {r["retrieval"] for r in per_image} == {"faiss", "torch_exact_cpu"}
    for r in per_image:
        for key in ("retrieval_ms", "scoring_ms", "decide_ms", "painting_ms", "total_ms"):
            assert r[key] > 0
    assert retrieval[-1]["kind"] == "status" and retrieval[-1]["rc"] == 0

    done = rows[-1]
    assert done["section"] == "done" and done["failed_sections"] == 1 and done["sections"] == ["sam", "retrieval"]


def test_asking_for_cuda_without_one_falls_back_to_cpu_with_a_message(tmp_path):
    import torch

    rows = run_gpu_bench(tmp_path, "--sections", "retrieval", device="cuda")
    env = rows[0]
    if torch.cuda.is_available():
        assert env["device"] == "cuda" and "note" not in env
    else:
        assert env["device"] == "cpu" and "no CUDA device" in env["note"]
    assert rows[-1]["section"] == "done" and rows[-1]["failed_sections"] == 0


def test_mask_agreement_scores_matching_masks():
    import numpy as np

    from bench.gpu import mask_agreement

    def rec(mask):
        return {"segmentation": mask, "area": int(mask.sum())}

    a, b, empty = np.zeros((3, 4, 4), bool)
    a[:2] = True  # rows 0-1
    b[:, :1] = True  # column 0
    ref = [rec(a), rec(b), rec(empty)]
    same = mask_agreement(ref, ref, "cpu")
    assert same["mean_best_iou"] == 1.0 and same["share_iou_ge_0.9"] == 1.0  # empty matches empty
    # without b, b's best match is a: |a & b| = 2, |a | b| = 8 + 4 - 2 = 10 -> IoU 0.2
    partial = mask_agreement([rec(a), rec(empty)], ref, "cpu")
    assert partial["masks_ours"] == 2 and partial["masks_reference"] == 3
    assert abs(partial["mean_best_iou"] - (1.0 + 0.2 + 1.0) / 3) < 1e-3
    assert abs(partial["share_iou_ge_0.9"] - 2 / 3) < 1e-3


@pytest.mark.slow  # ~30-60 s on two shared cores
def test_quick_cpu_run_emits_every_section(tmp_path):
    rows = run_gpu_bench(tmp_path, "--all-variants")  # the GPU-only SAM variants' code runs too
    assert rows[0]["section"] == "env" and rows[-1]["section"] == "done"
    assert rows[-1]["failed_sections"] == 0
    assert not [r for r in rows if "error" in r]

    sam = by_section(rows, "sam")
    images = [r for r in sam if r.get("kind") == "image"]
    assert len(images) == 2
    (summary,) = [r for r in sam if r.get("kind") == "summary"]
    assert summary["thresholds"].startswith("keep-all") and summary["pred_iou_thresh"] == 0.0
    for variant in ("ours_fp32", "ours_fp32_exact", "ours_fp32_dbs256"):  # same masks as segment_anything's
        assert summary[f"{variant}_identical_images"] == "2/2"
    assert summary["ours_bf16_dbs256_mean_best_iou"] == 1.0  # autocast is off on a CPU: fp32, identical masks
    assert len([r for r in sam if r.get("kind") == "variant"]) == 2 * 4
    assert summary["reference_s"] > 0 and summary["ours_fp32_speedup"] > 0
    assert [r for r in sam if r.get("kind") == "generate_batch"]

    embed = [r for r in by_section(rows, "embed") if r.get("bench") == "embed_throughput"]
    assert {r["encoder"] for r in embed} == {"visual", "clip_crops"}
    assert {r["batch_size"] for r in embed} == {1, 2}

    assert [r for r in by_section(rows, "retrieval") if r.get("kind") == "per_image"]
    statuses = [r for r in rows if r.get("kind") == "status"]
    assert [s["section"] for s in statuses] == ["sam", "embed", "retrieval"]
    assert all(s["rc"] == 0 for s in statuses)
