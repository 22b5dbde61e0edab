"""The labelling job for --runner DataflowRunner builds and serialises its job graph with no network."""

from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from inference.labeller import LabelRequest
from models.config import ModelsConfig
from pipeline.config import LabelJobConfig
from pipeline.label_job import LabelJob, build_label_pipeline

REPO = Path(__file__).resolve().parents[2]


def test_dataflow_graph_serialises():
    options = PipelineOptions([
        "--runner", "DataflowRunner", "--dry_run", "true", "--project", "my-project-123", "--region", "us-central1",
        "--temp_location", "gs://bucket/tmp", "--setup_file", str(REPO / "setup.py")])
    config = LabelJobConfig(index="gs://bucket/ref", inputs=("gs://bucket/in",), output="gs://bucket/out",
                            request=LabelRequest(("cat", "dog")))
    job = LabelJob(config=config, models=ModelsConfig(), patterns=("gs://bucket/in/**",), roots=("gs://bucket/in",))
    pipeline = beam.Pipeline(options=options)
    build_label_pipeline(pipeline, job)
    proto = pipeline.to_runner_api()  # pickles every DoFn and ModelHandler, as submission does
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Read", "Mask", "Embed", "Label", "Write", "WriteFailures"} <= names
    # Inputs and finished outputs are listed in the pipeline, not carried in the graph.
    assert {"Read/List/Match", "Read/ListFinished", "Read/JoinByName", "Read/Reshuffle"} <= names
    assert len(proto.SerializeToString()) > 0
