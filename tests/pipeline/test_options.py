"""Flags: every knob parses into the typed configs; bad combinations stop before any work with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import build_index
from pipeline.config import IndexJobConfig

REPO = Path(__file__).resolve().parents[2]


def test_flags_reach_the_typed_configs():
    config, beam_args = build_index.parse([
        "--input", "a/*.jpg", "--input", "gs://b/imgs", "--output", "out", "--captions", "c.jsonl",
        "--masker", "sam", "--sam_checkpoint", "gs://b/sam.pth", "--sam_model_type", "vit_h", "--min_area", "10",
        "--visual_kind", "clip", "--visual_model", "openai/clip-vit-large-patch14", "--visual_batch_size", "32",
        "--device", "cuda", "--precision", "bf16", "--outlier_mads", "1.5", "--clip_batch_size", "3",
        "--clip_crop_batch_size", "96", "--runner", "DirectRunner", "--direct_num_workers", "2",
    ])
    assert config.inputs == ("a/*.jpg", "gs://b/imgs")
    assert beam_args == ["--runner", "DirectRunner", "--direct_num_workers", "2"]
    models = config.models
    assert models.masker.kind == "sam" and models.masker.sam.model_type == "vit_h"
    assert models.masker.sam.checkpoint == "gs://b/sam.pth" and models.masker.min_area == 10
    assert models.visual.kind == "clip" and models.visual.batch_size == 32 and models.visual.device == "cuda"
    assert models.visual.precision == models.clip.precision == models.captioner.precision == "bf16"
    # images per pairing batch and crops per CLIP forward are two settings, not one merged with max()
    assert config.workers.pairing_batch_size == 3 and models.clip.batch_size == 96
    assert config.group_filter.outlier_mads == 1.5
    # min_label_count 0 = auto: small runs cannot form groups of 3, large ones can
    assert config.group_filter_for(num_images=7).min_label_count == 1
    assert config.group_filter_for(num_images=5000).min_label_count == 3


def test_every_flag_default_is_the_config_default():
    """The parser reads its defaults from the dataclasses: flags left out give the Python API's defaults."""
    config, _ = build_index.parse(["--input", "x", "--output", "o", "--captions", "c"])
    assert config == IndexJobConfig(inputs=("x",), output="o", captions="c")


def test_annotations_input_defaults_to_images_folder():
    config, _ = build_index.parse(["--output", "o", "--label_source", "annotations", "--annotations", "/d/voc"])
    assert config.inputs == ("/d/voc/images",)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "x"], "--output is required"),
        (["--output", "o", "--captions", "c"], "--input is required"),
        (["--input", "x", "--output", "o"], "needs --captions"),
        (["--output", "o", "--label_source", "annotations"], "needs --annotations"),
        (["--input", "x", "--output", "o", "--captions", "c", "--ignore_index", "255"], "only applies"),
        (["--input", "x", "--output", "o", "--label_source", "captioner", "--captions", "c"], "conflicts"),
        (["--input", "x", "--output", "o", "--captions", "c", "--masker", "sam"], "needs --sam_checkpoint"),
        (["--input", "x", "--output", "o", "--captions", "c", "--recall_target", "2"], "recall_target"),
        (["--input", "x", "--output", "o", "--captions", "c", "--memory_budget", "lots"], "--memory_budget"),
    ],
)
def test_bad_flags_stop_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_index.parse(argv)
    assert exit_info.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_cli_no_input_matched_is_one_line_before_any_work(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build_index", "--input", str(tmp_path / "nothing" / "*.jpg"),
         "--output", str(tmp_path / "out"), "--captions", str(tmp_path / "c.jsonl"), "--preset", "tiny-random"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("build_index: error: no input matched")
    assert not (tmp_path / "out").exists()


def test_missing_weights_stop_before_any_work_with_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"x")
    (tmp_path / "c.jsonl").write_text('{"image": "a.png", "caption": "a cat"}\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.build_index", "--input", str(images), "--output", str(tmp_path / "out"),
         "--captions", str(tmp_path / "c.jsonl"), "--visual_model", "no-such-org/no-such-model"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("build_index: error: cannot load visual encoder 'no-such-org/no-such-model'")
    assert "tiny-random" in last  # names the offline way out
    assert not (tmp_path / "out").exists()


def test_torch_threads_auto_splits_cores_between_direct_workers():
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert build_index.torch_threads_per_worker(0, options) == max(1, (os.cpu_count() or 1) // 2)
    assert build_index.torch_threads_per_worker(3, options) == 3
    assert build_index.torch_threads_per_worker(0, PipelineOptions([])) == 0
