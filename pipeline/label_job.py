"""The labelling job (`reme label`; `reme evaluate` runs it over a benchmark): Read -> Mask -> Embed -> Label ->
Write, a Beam pipeline that reuses the index job's own steps, so labelling scales the same way:

    Read    Create(uris still to do) | Reshuffle | ReadMatches | DecodeImage        (transforms.images)
    Mask    RunInference(MaskerModelHandler)                                        (transforms.masks)
    Embed   RunInference(VisualModelHandler)                                        (transforms.embed)
    Label   RunInference(LabelModelHandler): retrieval + class scoring             (transforms.label)
    Write   WriteImageOutputs: paint, write per-image outputs; failures -> OUTPUT/failures.parquet

Everything that can be refused is refused at launch with one line (command.UsageError), before any model work:
class list, index (missing, corrupt, other encoder), inputs (nothing matched), output (not writable, labelled for
other classes). Images whose label map already exists are skipped (a re-run resumes); failures are listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import posixpath
import tempfile
import time
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from inference import outputs
from inference.datasets import ignore_value_for, load_dataset
from inference.evaluate import score_predictions
from models.config import ModelsConfig
from models.presets import resolve_models
from pipeline import progress
from pipeline.command import UsageError
from pipeline.config import LabelJobConfig, ModelChoices
from refset import schema, storage
from refset.reader import ReferenceSet, encoder_mismatch
from transforms.embed import VisualModelHandler
from transforms.images import DecodeImage, list_inputs
from transforms.label import LabelModelHandler, WriteImageOutputs
from transforms.masks import MaskerModelHandler

log = logging.getLogger("reme.label")


@dataclass(frozen=True)
class LabelJob:
    """A labelling run ready to go: its config, the index's models (with the run's choices applied; each worker
    resolves them where it runs), and every input image with its output name."""

    config: LabelJobConfig
    models: ModelsConfig
    uris: tuple[str, ...]  # every input image, sorted
    names: tuple[str, ...]  # output name of each input (same order)

    @property
    def output(self) -> str:
        return self.config.output

    def todo(self) -> list[tuple[str, str]]:
        overlay = self.config.overlay
        return [(u, n) for u, n in zip(self.uris, self.names, strict=True) if not outputs.is_done(self.output, n, overlay)]


# ---------------------------------------------------------------------------------------------------------
# Launch-time preparation: everything that can fail does so here, with one line
# ---------------------------------------------------------------------------------------------------------
def list_images(inputs: list[str]) -> list[str]:
    """Image files of directories, globs and gs:// prefixes (a prefix that is no directory gets a '*')."""
    uris = list_inputs(inputs)
    if not uris:
        globbed = [p + "*" for p in inputs if not any(c in p for c in "*?[") and not p.endswith("/")]
        if globbed:
            uris = list_inputs(globbed)
    return uris


def output_names(uris: list[str], roots: list[str]) -> list[str]:
    """Safe, unique output names. Inputs whose cleaned names collide keep their extension (a.jpg, a.png ->
    a_jpg, a_png); names that still collide ("with space.jpg", "with_space.jpg") get a short hash of the URI."""
    def root_of(uri: str) -> str:
        matches = [r for r in roots if uri.split("://", 1)[-1].startswith(r.split("://", 1)[-1].rstrip("/") + "/")]
        return max(matches, key=len) if matches else ""

    def dedupe(names: list[str], rename) -> list[str]:
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        return [n if counts[n] == 1 else rename(n, u) for n, u in zip(names, uris, strict=True)]

    names = [outputs.output_name(u, root_of(u)) for u in uris]
    names = dedupe(names, lambda n, u: f"{n}_{outputs.output_name(posixpath.splitext(u)[1].lstrip('.')) or 'noext'}")
    names = dedupe(names, lambda n, u: f"{n}_{hashlib.sha1(u.encode('utf-8')).hexdigest()[:8]}")
    return names


def resolve_label_models(ref: ReferenceSet, choices: ModelChoices) -> ModelsConfig:
    """The index's own models (manifest "models"), with the run's choices (preset, cache, device, masker) applied."""
    base = ref.models_config()
    if base is None:
        if not choices.preset and not (choices.visual_kind or choices.visual_model):
            raise UsageError(f"the manifest of {ref.root} records no model configuration; pass --preset or "
                             "--visual_model/--text_model")
        base = ModelsConfig()
    models = dataclasses.replace(base, preset=choices.preset or base.preset, cache_dir=choices.cache_dir or base.cache_dir)
    masker = models.masker
    if choices.masker:
        masker = dataclasses.replace(masker, kind=choices.masker)
    if choices.min_area is not None:
        masker = dataclasses.replace(masker, min_area=choices.min_area)
    visual = dataclasses.replace(models.visual, kind=choices.visual_kind or models.visual.kind,
                                 model_id=choices.visual_model or models.visual.model_id)
    text = models.text
    if choices.text_model:
        text = dataclasses.replace(text, model_id=choices.text_model, kind=choices.text_kind or text.kind)
    if choices.device:
        visual, text = dataclasses.replace(visual, device=choices.device), dataclasses.replace(text, device=choices.device)
    if choices.visual_batch_size:
        visual = dataclasses.replace(visual, batch_size=choices.visual_batch_size)
    return dataclasses.replace(models, masker=masker, visual=visual, text=text)


def check_models_against_index(ref: ReferenceSet, models: ModelsConfig) -> None:
    """Refuse, before any work, a visual or text encoder other than the index's (compared on the resolved ids)."""

    try:
        resolved = resolve_models(models)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for role, cfg, recorded in (("visual", resolved.visual, ref.visual_info), ("text", resolved.text, ref.text_info)):
        if not recorded:
            continue
        why = encoder_mismatch(recorded, {"kind": cfg.kind, "model_id": cfg.model_id, "revision": cfg.revision})
        if why:
            raise UsageError(f"the index at {ref.root} was built with another {role} encoder ({why}); label "
                                "with the index's own models (drop the override) or rebuild the index")


def prepare_job(config: LabelJobConfig, uris: list[str] | None = None) -> LabelJob:
    """Check everything and write classes.json + run.json; `uris` (optional) are the exact images to label,
    otherwise the config's inputs (directories, globs, prefixes) are listed."""
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
    uris = sorted(uris) if uris is not None else list_images(inputs)
    if not uris:
        raise UsageError(f"no input matched: {', '.join(inputs)} (no image files with extensions .jpg .png ...)")
    names = output_names(uris, [outputs.input_root(p) for p in inputs])
    output = config.output.rstrip("/")
    try:
        storage.makedirs(output)
        storage.remove_temp_files(output)
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
        if previous != mapping:
            raise UsageError(f"{output} already holds label maps for other classes ({classes_path}); "
                             "use another output directory")
    try:
        storage.write_json(classes_path, mapping)
        storage.write_json(storage.join(output, outputs.RUN_JSON), {
            "index": config.index, "inputs": inputs, "request": dataclasses.asdict(request),
            "background_id": request.background_id})
    except (OSError, PermissionError) as exc:
        raise UsageError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    return LabelJob(config=dataclasses.replace(config, output=output), models=models, uris=tuple(uris),
                    names=tuple(names))


# ---------------------------------------------------------------------------------------------------------
# The pipeline graph
# ---------------------------------------------------------------------------------------------------------
def write_failures(rows: list[dict], output: str) -> int:
    if rows:
        rows = sorted(rows, key=lambda r: (r["uri"], r["stage"]))
        storage.write_parquet(storage.join(output, outputs.FAILURES),
                              pa.Table.from_pylist(rows, schema=schema.failures_schema()))
    return len(rows)


def build_label_pipeline(p: beam.Pipeline, job: LabelJob, todo: list[str]) -> None:
    config, models = job.config, job.models
    workers = config.workers
    shared = {"torch_threads": workers.torch_threads, "large_model": workers.large_model,
              "model_copies": workers.model_copies}
    written = (
        p
        | "Read" >> (beam.Create(todo) | "Reshuffle" >> beam.Reshuffle() | "ReadMatches" >> fileio.ReadMatches()
                     | "Decode" >> beam.ParDo(DecodeImage(1, config.read.max_side, config.read.max_pixels)))
        | "Mask" >> RunInference(MaskerModelHandler(models, max_batch_size=workers.mask_batch_size, **shared))
        | "Embed" >> RunInference(VisualModelHandler(models, max_batch_size=models.visual.batch_size, **shared))
        | "Label" >> RunInference(LabelModelHandler(config.index, config.request, models,
                                                    max_batch_size=workers.label_batch_size, **shared))
        | "Write" >> beam.ParDo(WriteImageOutputs(config.output, dict(zip(job.uris, job.names, strict=True)),
                                                  config.request, config.overlay))
    )
    (
        written
        | "Failed" >> beam.Filter(lambda item: item.get("failure") is not None)
        | "FailureRows" >> beam.Map(lambda item: item["failure"])
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.Map(write_failures, config.output)
    )


def labelling_progress(job: LabelJob, todo: list[tuple[str, str]], enabled: bool):
    """The labelling bar (pipeline.progress), fed by counting the finished label maps in OUTPUT: the same for every
    runner and process layout."""
    names = [n for _, n in todo]

    def count() -> int:
        done = {posixpath.basename(p)[:-4] for p in storage.listdir(job.output) if p.endswith(".png")}
        return sum(1 for n in names if n in done)

    bar = progress.Progress("labelling", len(todo), enabled=enabled and len(todo) > 0)
    return progress.polled(bar, count, progress.poll_interval(job.output))


def run_job(job: LabelJob, beam_args: list[str] | None = None) -> dict:
    """Run the labelling pipeline for the images not yet done; returns a summary (counts, failures)."""
    failures_path = storage.join(job.output, outputs.FAILURES)
    if storage.exists(failures_path):  # failures are re-tried: the list describes the latest run
        storage.filesystem(failures_path).rm(failures_path)
    todo = job.todo()
    start = time.perf_counter()
    if todo:
        options = PipelineOptions(list(beam_args or []), save_main_session=False)
        with labelling_progress(job, todo, job.config.progress):
            with beam.Pipeline(options=options) as p:
                build_label_pipeline(p, job, [u for u, _ in todo])
    failures = []
    if storage.exists(failures_path):
        failures = storage.read_parquet(failures_path).to_pylist()
    done = sum(1 for n in job.names if storage.exists(outputs.label_map_path(job.output, n)))
    return {
        "inputs": len(job.uris),
        "skipped_done": len(job.uris) - len(todo),
        "labelled": len(todo) - len(failures),
        "failed": len(failures),
        "done": done,
        "failures": failures,
        "seconds": round(time.perf_counter() - start, 3),
        "output": job.output,
    }


def label(config: LabelJobConfig, beam_args: list[str] | None = None) -> dict:
    """`reme label` from Python: prepare (refusing bad settings with one UsageError line), then run."""
    return run_job(prepare_job(config), beam_args)


# ---------------------------------------------------------------------------------------------------------
# reme evaluate: label a benchmark's images, then score them
# ---------------------------------------------------------------------------------------------------------
def evaluate_dataset(name: str, root: str, config: LabelJobConfig | None = None, predictions: str | None = None,
                     ignore_index: int | None = None, beam_args=None, show_progress: bool = True) -> dict:
    """`reme evaluate`: label the dataset's images with `config` (its request's classes replaced by the dataset's
    class list), unless `predictions` is given; then score.

    The label maps go to `config.output` when set, otherwise to a temporary directory removed afterwards: nothing
    is ever written inside or beside the dataset, which may be a read-only or shared mount.
    """
    dataset = load_dataset(name, root, ignore_index)
    if predictions is not None:
        return _score(dataset, predictions, show_progress)
    if config is None:
        raise ValueError("evaluate needs a labelling config (or predictions)")
    if config.output:
        return _label_and_score(dataset, config, config.output, beam_args)
    with tempfile.TemporaryDirectory(prefix=f"reme-evaluate-{name}-") as scratch:
        result = _label_and_score(dataset, config, scratch, beam_args)
    result["predictions"] = None  # they were in the temporary directory, now removed (--output keeps them)
    return result


def _score(dataset, predictions: str, show_progress: bool) -> dict:
    with progress.Progress("scoring", len(dataset), enabled=show_progress) as bar:
        return score_predictions(dataset, predictions, progress=bar.set)


def _label_and_score(dataset, config: LabelJobConfig, output: str, beam_args) -> dict:
    images_root = dataset.root / dataset.layout.images
    request = dataclasses.replace(config.request, class_names=tuple(dataset.class_names),
                                  ignore_value=ignore_value_for(len(dataset.class_names)))
    config = dataclasses.replace(config, inputs=(str(images_root),), output=output, request=request)
    # Exactly the benchmark's images (nested folders, split files), named relative to its image root.
    job = prepare_job(config, uris=[str(image) for _, image, _ in dataset])
    summary = run_job(job, beam_args)
    result = _score(dataset, job.output, config.progress)
    result["label_failures"] = summary["failed"]
    return result
