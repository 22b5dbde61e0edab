"""The labelling job (`reme label`; `reme evaluate` runs it over a benchmark): Read -> Mask -> Embed -> Label ->
Write, a Beam pipeline that reuses the index job's own steps, so labelling scales the same way:

    Read    MatchAll(inputs) | name in the graph, joined with ONE listing of OUTPUT (done images are skipped)
            | Reshuffle | decode at the working size (ReadConfig.max_side)           (transforms.label ReadTodo)
    Mask    RunInference(MaskerModelHandler)                                        (transforms.masks)
    Embed   RunInference(VisualModelHandler)                                        (transforms.embed)
    Label   RunInference(LabelModelHandler): retrieval + class scoring             (transforms.label)
    Write   WriteImageOutputs: paint at the working size, upsample to the input's size, write its outputs;
            failures -> OUTPUT/failures.parquet

Neither the inputs nor the finished outputs are listed into the job graph or checked image by image: both are
listings inside the pipeline, and the summary's counts are its Beam counters. A directory input means every image
under it (subfolders too); outputs mirror each input's path relative to it (inference.outputs).

Everything that can be refused is refused at launch with one line (command.UsageError), before any model work:
class list, index (missing, corrupt, other encoder), inputs (nothing matched), output (not writable, labelled for
other classes). Images whose label map already exists are skipped (a re-run resumes); failures are listed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import posixpath
import re
import tempfile
import time
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from inference import outputs
from inference.api import check_encoders, labelling_models
from inference.datasets import ignore_value_for, load_dataset
from inference.evaluate import score_predictions
from inference.labeller import LabelRequest
from models.config import ModelsConfig
from pipeline import progress
from pipeline.build_index import metrics_of
from pipeline.command import UsageError
from pipeline.config import LabelJobConfig, ModelChoices
from refset import schema, storage
from refset.reader import ReferenceSet, ReferenceSetError, encoder_mismatch
from transforms.embed import VisualModelHandler
from transforms.images import is_image_path
from transforms.label import LabelModelHandler, ReadTodo, WriteImageOutputs
from transforms.masks import MaskerModelHandler

log = logging.getLogger("reme.label")


@dataclass(frozen=True)
class LabelJob:
    """A labelling run ready to go: its config, the index's models (with the run's choices applied; each worker
    resolves them where it runs), and what the pipeline lists: patterns matched in the graph, the roots outputs are
    named against, and (reme evaluate) the exact images wanted."""

    config: LabelJobConfig
    models: ModelsConfig
    patterns: tuple[str, ...]  # Beam match patterns (a directory is DIR/**, literal names escaped)
    roots: tuple[str, ...]  # outputs mirror each input's path relative to the longest root it lies under
    only: frozenset[str] | None = None  # just these paths (a benchmark's split), None = every image matched

    @property
    def output(self) -> str:
        return self.config.output


# ---------------------------------------------------------------------------------------------------------
# Launch-time preparation: everything that can fail does so here, with one line
# ---------------------------------------------------------------------------------------------------------
MATCH_CHECK_LIMIT = 1000  # files looked at per pattern by the launch check (never a full listing)


def glob_escape(path: str) -> str:
    """A literal path as a Beam match pattern: '*', '?' and '[' become one-character classes ('[[]')."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def input_patterns(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(match patterns, roots) of the inputs: a directory -> every file under it (DIR/**), rooted at DIR; a file
    -> itself, rooted at its folder; a glob -> as given, rooted at its fixed directory part; anything else is a
    prefix (gs://b/photos/2024- -> 2024-*). One check per input argument, none per image."""
    patterns, roots = [], []
    for given in inputs:
        text = given.rstrip("/") or given
        fs = storage.filesystem(text)
        if given.endswith("/") or fs.isdir(text):
            patterns.append(glob_escape(text) + "/**")
            roots.append(text)
        elif fs.isfile(text):
            patterns.append(glob_escape(text))
            roots.append(posixpath.dirname(text))
        elif any(c in text for c in "*?["):
            patterns.append(text)
            roots.append(outputs.input_root(text))
        else:
            patterns.append(glob_escape(text) + "*")
            roots.append(posixpath.dirname(text))
    return patterns, roots


def check_inputs_match(patterns: list[str], inputs: list[str]) -> None:
    """Refuse inputs that match no image, looking at most MATCH_CHECK_LIMIT files per pattern."""
    try:
        results = FileSystems.match(patterns, limits=[MATCH_CHECK_LIMIT] * len(patterns))
    except Exception as exc:  # noqa: BLE001 - any listing failure is the caller's input problem, in one line
        raise UsageError(f"cannot list {', '.join(inputs)}: {type(exc).__name__}: {exc}") from exc
    seen = [m.path for r in results for m in r.metadata_list]
    truncated = any(len(r.metadata_list) >= MATCH_CHECK_LIMIT for r in results)
    if not truncated and not any(is_image_path(path) for path in seen):
        raise UsageError(f"no input matched: {', '.join(inputs)} (no image files with extensions .jpg .png ...)")


def resolve_label_models(ref: ReferenceSet, choices: ModelChoices) -> ModelsConfig:
    """The index's own models (manifest "models"), with the run's choices (preset, cache, device, masker) applied:
    the Python API's own resolution (inference.api.labelling_models), so both label with the same models."""
    try:
        return labelling_models(ref, **dataclasses.asdict(choices))
    except ReferenceSetError as exc:
        raise UsageError(str(exc)) from exc


def check_models_against_index(ref: ReferenceSet, models: ModelsConfig) -> None:
    """Refuse, before any work, a visual or text encoder other than the index's (inference.api.check_encoders)."""
    try:
        check_encoders(ref, models)
    except ReferenceSetError as exc:
        raise UsageError(str(exc)) from exc


def prepare_job(config: LabelJobConfig, uris: list[str] | None = None) -> LabelJob:
    """Check everything and write classes.json + run.json; `uris` (optional) are the exact images to label (they
    must lie under the config's inputs), otherwise every image the inputs (directories, globs, prefixes) match."""
    config.validate()
    ref = ReferenceSet.open(config.index)
    models = resolve_label_models(ref, config.models)
    check_models_against_index(ref, models)
    choices = config.models
    requested = {"kind": choices.visual_kind, "model_id": choices.visual_model}
    why = encoder_mismatch(ref.visual_info, requested) if ref.visual_info else None
    if why:  # an explicit request is checked as given (a preset would otherwise silently replace it)
        raise UsageError(f"the index at {ref.root} was built with another visual encoder ({why}); label with "
                         "the index's own models (drop the override) or rebuild the index")
    inputs = list(config.inputs)
    try:
        patterns, roots = input_patterns(inputs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot list {', '.join(inputs)}: {type(exc).__name__}: {exc}") from exc
    if uris is not None:
        if not uris:
            raise UsageError(f"no input matched: {', '.join(inputs)} (no images listed)")
    else:
        check_inputs_match(patterns, inputs)
    output = config.output.rstrip("/")
    try:
        storage.makedirs(output)  # temp files of interrupted writes go when the pipeline lists OUTPUT
    except (OSError, PermissionError) as exc:
        raise UsageError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    request = config.request
    classes_path = storage.join(output, outputs.CLASSES_JSON)
    mapping = outputs.classes_mapping(list(request.class_names))
    if storage.exists(classes_path):
        try:
            previous = storage.read_json(classes_path)
        except ValueError:
            previous = None
        if previous != mapping or _previous_names(output) not in (None, _names(request)):
            raise UsageError(f"{output} already holds label maps for other classes ({classes_path}); "
                             "use another output directory")
    try:
        storage.write_json(classes_path, mapping)
        storage.write_json(storage.join(output, outputs.RUN_JSON), {
            "index": config.index, "inputs": inputs, "request": dataclasses.asdict(request),
            "background_id": request.background_id, "read": dataclasses.asdict(config.read),
            "formats": list(config.formats)})
    except (OSError, PermissionError) as exc:
        raise UsageError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    return LabelJob(config=dataclasses.replace(config, output=output), models=models, patterns=tuple(patterns),
                    roots=tuple(roots), only=None if uris is None else frozenset(str(u) for u in uris))


def _names(request: LabelRequest) -> list[list[str]]:
    """Every class's names as run.json records them (aliases included)."""
    return [list(request.names_of(i)) for i in range(len(request.class_names))]


def _previous_names(output: str) -> list[list[str]] | None:
    """The class names (with aliases) of an earlier run into `output`, from its run.json; None when unknown."""
    try:  # read only where classes.json exists; no existence check of its own (one listing-free read)
        previous = storage.read_json(storage.join(output, outputs.RUN_JSON))
    except (OSError, ValueError):
        return None
    request = (previous or {}).get("request") or {}
    if not request.get("class_names"):
        return None
    aliases = request.get("aliases") or [[n] for n in request["class_names"]]
    return [list(names) for names in aliases]


# ---------------------------------------------------------------------------------------------------------
# The pipeline graph
# ---------------------------------------------------------------------------------------------------------
def write_failures(rows: list[dict], output: str) -> int:
    if rows:
        rows = sorted(rows, key=lambda r: (r["uri"], r["stage"]))
        storage.write_parquet(storage.join(output, outputs.FAILURES),
                              pa.Table.from_pylist(rows, schema=schema.failures_schema()))
    return len(rows)


def build_label_pipeline(p: beam.Pipeline, job: LabelJob) -> None:
    config, models = job.config, job.models
    workers = config.workers
    retry = config.failures.retry
    shared = {"torch_threads": workers.torch_threads, "large_model": workers.large_model,
              "model_copies": workers.model_copies, "retry": retry}
    every = progress.poll_interval(config.output)
    todo_dir, written_dir = progress_dirs(config.output)
    count_todo = progress.CountToFiles(todo_dir, every) if config.progress else None
    read = p | "Read" >> ReadTodo(job.patterns, job.roots, config.output, config.overlay, config.read.max_side,
                                  config.read.max_pixels, job.only, count_todo, coco=config.coco, retry=retry)
    written = (
        read["items"]
        | "Mask" >> RunInference(MaskerModelHandler(models, max_batch_size=workers.mask_batch_size, **shared))
        | "Embed" >> RunInference(VisualModelHandler(models, max_batch_size=models.visual.batch_size, **shared))
        | "Label" >> RunInference(LabelModelHandler(config.index, config.request, models,
                                                    max_batch_size=workers.label_batch_size, **shared))
        | "Write" >> beam.ParDo(WriteImageOutputs(config.output, config.request, config.overlay,
                                                  job.roots if config.coco else None).retrying(retry))
    )
    if config.progress:  # the bar's count: images written, summed by the launcher
        (
            written
            | "Written" >> beam.Filter(lambda item: item.get("failure") is None)
            | "CountWritten" >> beam.ParDo(progress.CountToFiles(written_dir, every))
        )
    (
        (written, read["refused"])
        | "AllItems" >> beam.Flatten()
        | "Failed" >> beam.Filter(lambda item: item.get("failure") is not None)
        | "FailureRows" >> beam.Map(lambda item: item["failure"])
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.Map(write_failures, config.output)
    )


PROGRESS_DIR = f"{storage.TMP_PREFIX}progress"  # under OUTPUT; no input can be named so (outputs.UnsafeName)


def progress_dirs(output: str) -> tuple[str, str]:
    """Where the workers count (progress.CountToFiles) the images to do and the images written."""
    return storage.join(output, PROGRESS_DIR, "todo"), storage.join(output, PROGRESS_DIR, "written")


def run_job(job: LabelJob, beam_args: list[str] | None = None) -> dict:
    """Run the labelling pipeline (it skips the images already done); returns a summary (counts, failures).

    The counts are the pipeline's Beam counters: images listed, skipped as done, written; failures are read back
    from OUTPUT/failures.parquet. No file is checked image by image. The progress bar sums what the workers count
    (pipeline.progress): its total appears once the pipeline has listed and joined the inputs.
    """
    failures_path = storage.join(job.output, outputs.FAILURES)
    if storage.exists(failures_path):  # failures are re-tried: the list describes the latest run
        storage.filesystem(failures_path).rm(failures_path)
    progress_root = storage.join(job.output, PROGRESS_DIR)
    progress.remove_counts(progress_root)  # an interrupted run's counts are not this run's
    todo_dir, written_dir = progress_dirs(job.output)
    bar = progress.Progress("labelling", None, enabled=job.config.progress)

    def measure() -> int:
        bar.set_total(progress.sum_counts(todo_dir))
        return progress.sum_counts(written_dir)

    start = time.perf_counter()
    options = PipelineOptions(list(beam_args or []), save_main_session=False)
    try:
        with progress.polled(bar, measure, progress.poll_interval(job.output)):
            with beam.Pipeline(options=options) as p:
                build_label_pipeline(p, job)
    finally:
        progress.remove_counts(progress_root)
    counts = metrics_of(getattr(p, "result", None))
    failures = []
    if storage.exists(failures_path):
        failures = storage.read_parquet(failures_path).to_pylist()
    skipped, labelled = counts.get("label_skipped_done", 0), counts.get("label_written", 0)
    coco = None
    if job.config.coco:  # one file for the run, from every finished image's fragment (this run's and earlier ones')
        coco = outputs.assemble_coco(job.output, list(job.config.request.class_names))
    inputs = max(counts.get("label_inputs", 0), skipped + labelled + len(failures))
    by_kind = collections.Counter(row.get("kind") or "unknown" for row in failures)
    job.config.failures.check(len(failures), inputs, dict(by_kind), failures_path)
    return {
        "inputs": inputs,
        "skipped_done": skipped,
        "labelled": labelled,
        "failed": len(failures),
        "done": skipped + labelled,
        "failures": failures,
        "seconds": round(time.perf_counter() - start, 3),
        "output": job.output,
        "coco": coco,
    }


def label(config: LabelJobConfig, beam_args: list[str] | None = None) -> dict:
    """`reme label` from Python: prepare (refusing bad settings with one UsageError line), then run."""
    return run_job(prepare_job(config), beam_args)


# ---------------------------------------------------------------------------------------------------------
# reme evaluate: label a benchmark's images, then score them
# ---------------------------------------------------------------------------------------------------------
def evaluate_dataset(name: str, root: str, config: LabelJobConfig | None = None, predictions: str | None = None,
                     ignore_index: int | None = None, beam_args=None, show_progress: bool = True,
                     classes: list[tuple[str, ...]] | None = None) -> dict:
    """`reme evaluate`: label the dataset's images with `config` (its request's classes replaced by the dataset's
    class list), unless `predictions` is given; then score.

    The classes are scored through the benchmark's standard class file (inference.datasets.CLASS_ALIASES: aliases,
    the background line of stuff names), or through `classes` (one tuple of names per benchmark class, in id order).
    On a benchmark with a background class it is predicted by default: scored through its names, and taken by
    every segment whose best score is under the threshold (the request's, else the benchmark's default).

    The label maps go to `config.output` when set, otherwise to a temporary directory removed afterwards: nothing
    is ever written inside or beside the dataset, which may be a read-only or shared mount.
    """
    dataset = load_dataset(name, root, ignore_index)
    if predictions is not None:
        return _score(dataset, predictions, show_progress)
    if config is None:
        raise ValueError("evaluate needs a labelling config (or predictions)")
    threshold_given = config.request.threshold is not None
    request = benchmark_request(dataset, config.request, classes)
    config = dataclasses.replace(config, request=request)
    if config.output:
        result = _label_and_score(dataset, config, config.output, beam_args)
    else:
        with tempfile.TemporaryDirectory(prefix=f"reme-evaluate-{name}-") as scratch:
            result = _label_and_score(dataset, config, scratch, beam_args)
        result["predictions"] = None  # they were in the temporary directory, now removed (--output keeps them)
    bg = request.background_id
    if bg is not None:  # how the background was predicted, for the record
        result["background"] = {
            "name": request.class_names[bg], "names": [n for i, n in request.scored_names if i == bg],
            "threshold": request.threshold,
            "threshold_from": "--threshold" if threshold_given else "the benchmark's default"}
    return result


def _score(dataset, predictions: str, show_progress: bool) -> dict:
    with progress.Progress("scoring", len(dataset), enabled=show_progress) as bar:
        return score_predictions(dataset, predictions, progress=bar.set)


def benchmark_request(dataset, request: LabelRequest, classes: list[tuple[str, ...]] | None = None) -> LabelRequest:
    """The request `reme evaluate` labels a benchmark with: its class names, each scored through the names of its
    standard class file (or of `classes`, one tuple per class in id order), and on a benchmark with a background
    class, the benchmark's default threshold unless the request sets one."""
    names = list(dataset.class_names)
    if classes is None:
        aliases = dataset.class_aliases
    elif len(classes) != len(names):
        raise UsageError(f"{dataset.name} has {len(names)} classes but --classes/--classes-file gives {len(classes)}; "
                         "give one line per class, in the benchmark's id order")
    else:
        aliases = [tuple(c) for c in classes]
    threshold = request.threshold
    if threshold is None and dataset.has_background:
        threshold = dataset.background_threshold
    return dataclasses.replace(request, class_names=tuple(names), aliases=tuple(aliases), threshold=threshold,
                               ignore_value=ignore_value_for(len(names)))


def _label_and_score(dataset, config: LabelJobConfig, output: str, beam_args) -> dict:
    images_root = dataset.root / dataset.layout.images
    config = dataclasses.replace(config, inputs=(str(images_root),), output=output)
    # Exactly the benchmark's images (nested folders, split files), named relative to its image root.
    job = prepare_job(config, uris=[str(image) for _, image, _ in dataset])
    summary = run_job(job, beam_args)
    result = _score(dataset, job.output, config.progress)
    result["label_failures"] = summary["failed"]
    return result
