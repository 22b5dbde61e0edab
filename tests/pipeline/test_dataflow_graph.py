"""The job graph for Dataflow builds and serialises with no network, and the sdist carries every worker package."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import build_index

from .helpers import make_annotated_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source", ["annotations", "captions", "captioner"])
def test_dataflow_job_graph_serialises_offline(tmp_path, source, tiny_models):
    root = make_annotated_dataset(tmp_path / "data", n_images=2)
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "img_000.png", "caption": "brick wall and grass"}\n')
    flags = {"annotations": ["--label_source", "annotations", "--annotations", str(root), "--ignore_index", "0"],
             "captions": ["--input", str(root / "images"), "--captions", str(captions)],
             "captioner": ["--input", str(root / "images"), "--label_source", "captioner"]}[source]
    argv = ["--output", str(tmp_path / "out"), *flags, "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir,
            "--runner", "DataflowRunner", "--dry_run", "true", "--project", "my-project-123", "--region",
            "us-central1", "--temp_location", "gs://bucket/tmp", "--setup_file", str(REPO / "setup.py"),
            "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    config, beam_args = build_index.parse(argv)
    plan = build_index.prepare(config)
    options = PipelineOptions(beam_args, save_main_session=True)
    assert options.get_all_options()["runner"] == "DataflowRunner"
    pipeline = beam.Pipeline(options=options)
    build_index.build_pipeline(pipeline, config, plan)
    # Beam's --dry_run skips the GCS bucket checks; to_runner_api() pickles every DoFn, ModelHandler and side
    # input into the portable job proto, as submission does, with no network involved.
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    # The steps of the README's method table, by name: Read, Mask, Label, Pair, Embed, ..., Dedup, Filter, Write.
    expected = {"Read", "Label", "Embed", "Commit", "ReadStaged", "Dedup", "Filter", "WriteLabels", "WriteSegments",
                "WriteDropped", "WriteFailures"}
    expected |= {"annotations": set(), "captions": {"Mask", "Pair"}, "captioner": {"Mask", "Pair"}}[source]
    assert expected <= names
    assert len(proto.SerializeToString()) > 1000
    # the graph round-trips through its proto form, as the Dataflow runner does before submission
    assert beam.Pipeline.from_runner_api(proto, pipeline.runner, options) is not None


@pytest.mark.slow
def test_sdist_contains_every_worker_package(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    (archive,) = tmp_path.glob("reme-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for package in ("models", "transforms", "pipeline", "inference"):
        local = {f"{package}/{p.name}" for p in (REPO / package).glob("*.py")}
        assert local and local <= names, f"{package}: missing {sorted(local - names)}"
    assert "setup.py" in names
