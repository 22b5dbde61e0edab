"""The labelling job (`reme label`): images -> masks -> visual embeddings -> retrieval + scoring -> painted maps.

A Beam pipeline that reuses the index job's own stages, so labelling scales the same way:

    Create(uris still to do) | Reshuffle | ReadMatches | DecodeImage          (transforms.images)
      | RunInference(MaskerModelHandler)                                       (transforms.masks)
      | RunInference(VisualModelHandler)                                       (transforms.embed)
      | BatchElements | ParDo(LabelAndWrite)  -> per-image outputs, failures  (this module)
      failures | ToList | write OUTPUT/failures.parquet

Everything that can be refused is refused at launch with one line, before any model work: class list, index
(missing, corrupt, other encoder), inputs (nothing matched), output (not writable, labelled for other classes).
Images whose label map already exists are skipped (a re-run resumes); failures are listed, never fatal.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np

from inference import outputs
from inference.datasets import load_dataset
from inference.evaluate import score_predictions
from inference.labeller import Labeller, LabelRequest
from models.config import ModelsConfig
from models.presets import preset_refusal, resolve_models
from models.text import build_text_encoder
from refset import schema, storage
from refset.reader import ReferenceSet, encoder_mismatch
from transforms.embed import VisualModelHandler, has_segments, kept_masks
from transforms.failures import failure_row
from transforms.images import DecodeImage, list_inputs
from transforms.masks import MaskerModelHandler

log = logging.getLogger("reme.label")


class LabelJobError(ValueError):
    """A labelling run that cannot start; the message is one line."""


@dataclass(frozen=True)
class LabelJob:
    index: str
    output: str
    uris: tuple[str, ...]  # every input image, sorted
    names: tuple[str, ...]  # output name of each input (same order)
    request: LabelRequest
    models: ModelsConfig  # unresolved; each worker resolves it where it runs
    overlay: bool = False
    max_pixels: int = 100_000_000
    mask_batch_size: int = 4
    visual_batch_size: int = 8
    label_batch_size: int = 16
    torch_threads: int = 0

    def todo(self) -> list[tuple[str, str]]:
        return [(u, n) for u, n in zip(self.uris, self.names, strict=True) if not outputs.is_done(self.output, n, self.overlay)]


# ---------------------------------------------------------------------------------------------------------
# Launch-time preparation (pure, testable): everything that can fail does so here, with one line
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
    import hashlib

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


def resolve_label_models(ref: ReferenceSet, overrides: dict) -> ModelsConfig:
    """The index's own models (manifest "models"), with any run-time overrides (preset, cache, device, masker)."""
    base = ref.models_config()
    visual_override = {k: v for k, v in overrides.items() if k in ("visual_kind", "visual_model") and v}
    if base is None:
        if not overrides.get("preset") and not visual_override:
            raise LabelJobError(f"the manifest of {ref.root} records no model configuration; pass --preset or "
                                "--visual_model/--text_model")
        base = ModelsConfig()
    changes = {k: overrides[k] for k in ("preset", "cache_dir") if overrides.get(k)}
    models = dataclasses.replace(base, **changes)
    if overrides.get("masker"):
        models = dataclasses.replace(models, masker=dataclasses.replace(models.masker, kind=overrides["masker"]))
    if overrides.get("min_area") is not None:
        models = dataclasses.replace(models, masker=dataclasses.replace(models.masker, min_area=overrides["min_area"]))
    visual = models.visual
    if visual_override:
        visual = dataclasses.replace(visual, kind=visual_override.get("visual_kind", visual.kind),
                                     model_id=visual_override.get("visual_model", visual.model_id))
    text = models.text
    if overrides.get("text_model"):
        text = dataclasses.replace(text, model_id=overrides["text_model"], kind=overrides.get("text_kind") or text.kind)
    device = overrides.get("device")
    if device:
        visual, text = dataclasses.replace(visual, device=device), dataclasses.replace(text, device=device)
    if overrides.get("visual_batch_size"):
        visual = dataclasses.replace(visual, batch_size=overrides["visual_batch_size"])
    models = dataclasses.replace(models, visual=visual, text=text)
    if refusal := preset_refusal(models):  # a preset never silently replaces a model setting
        raise LabelJobError(refusal)
    return models


def check_models_against_index(ref: ReferenceSet, models: ModelsConfig) -> None:
    """Refuse, before any work, a visual or text encoder other than the index's (compared on the resolved ids)."""

    try:
        resolved = resolve_models(models)
    except ValueError as exc:
        raise LabelJobError(str(exc)) from exc
    for role, cfg, recorded in (("visual", resolved.visual, ref.visual_info), ("text", resolved.text, ref.text_info)):
        if not recorded:
            continue
        why = encoder_mismatch(recorded, {"kind": cfg.kind, "model_id": cfg.model_id, "revision": cfg.revision})
        if why:
            raise LabelJobError(f"the index at {ref.root} was built with another {role} encoder ({why}); label "
                                "with the index's own models (drop the override) or rebuild the index")


def prepare_job(index: str, inputs: list[str], output: str, request: LabelRequest, overrides: dict | None = None,
                overlay: bool = False, uris: list[str] | None = None, **settings) -> LabelJob:
    """Check everything and write classes.json + run.json; `uris` (optional) are the exact images to label,
    otherwise `inputs` (directories, globs, prefixes) are listed."""
    overrides = overrides or {}
    ref = ReferenceSet.open(index)
    models = resolve_label_models(ref, overrides)
    check_models_against_index(ref, models)
    requested = {"kind": overrides.get("visual_kind"), "model_id": overrides.get("visual_model")}
    why = encoder_mismatch(ref.visual_info, requested) if ref.visual_info else None
    if why:  # an explicit request is checked as given (a preset would otherwise silently replace it)
        raise LabelJobError(f"the index at {ref.root} was built with another visual encoder ({why}); label with "
                            "the index's own models (drop the override) or rebuild the index")
    uris = sorted(uris) if uris is not None else list_images(inputs)
    if not uris:
        raise LabelJobError(f"no input matched: {', '.join(inputs)} (no image files with extensions .jpg .png ...)")
    roots = []
    for p in inputs:
        root = outputs.input_root(p)
        roots.append(root)
    names = output_names(uris, roots)
    output = output.rstrip("/")
    try:
        storage.makedirs(output)
        storage.remove_temp_files(output)
    except (OSError, PermissionError) as exc:
        raise LabelJobError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    classes_path = storage.join(output, outputs.CLASSES_JSON)
    mapping = outputs.classes_mapping(list(request.class_names))
    if storage.exists(classes_path):
        try:
            previous = storage.read_json(classes_path)
        except ValueError:
            previous = None
        if previous != mapping:
            raise LabelJobError(f"{output} already holds label maps for other classes ({classes_path}); "
                                "use another output directory")
    try:
        storage.write_json(classes_path, mapping)
        storage.write_json(storage.join(output, outputs.RUN_JSON), {
            "index": index, "inputs": list(inputs), "strategy": request.strategy, "k": request.k,
            "tau": request.tau, "threshold": request.threshold, "ignore_value": request.ignore_value,
            "background_id": request.background_id, "fill_uncovered": request.fill_uncovered})
    except (OSError, PermissionError) as exc:
        raise LabelJobError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    return LabelJob(index=index, output=output, uris=tuple(uris), names=tuple(names), request=request,
                    models=models, overlay=overlay, **settings)


# ---------------------------------------------------------------------------------------------------------
# Beam stages
# ---------------------------------------------------------------------------------------------------------
class LabelAndWrite(beam.DoFn):
    """Batches of embedded items -> one retrieval for all their segments -> painted maps written per image."""

    FAILURES = "failures"

    def __init__(self, job: LabelJob):
        self.job = job
        self.labelled = beam.metrics.Metrics.counter("reme", "images_labelled")
        self.failed = beam.metrics.Metrics.counter("reme", "images_failed")
        self.segments = beam.metrics.Metrics.counter("reme", "segments_labelled")

    def setup(self):

        resolved = resolve_models(self.job.models)
        reference = ReferenceSet.open(self.job.index)
        self.labeller = Labeller.from_text_encoder(reference, build_text_encoder(resolved.text), self.job.request)
        self.dim = int(reference.index.d)
        self.names = dict(zip(self.job.uris, self.job.names, strict=True))

    def process(self, batch):

        live, masks, embeddings = [], [], []
        for item in batch:
            if item.get("failure") is not None:
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(self.FAILURES, item["failure"])
                continue
            try:
                masks.append(kept_masks(item) if has_segments(item)
                             else np.zeros((0, item["height"], item["width"]), bool))
                embeddings.append(np.asarray(item.get("visual", np.zeros((0, self.dim), np.float32))))
                live.append(item)
            except Exception as exc:  # noqa: BLE001 - a broken item costs itself, not the batch
                del masks[len(live):]
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(self.FAILURES, failure_row(item["uri"], "label", exc))
        if not live:
            return
        try:
            results = self.labeller.label_batch(masks, embeddings)  # one retrieval for all segments of the batch
        except Exception:  # noqa: BLE001 - retry image by image to isolate the one that broke the batch
            results = [None] * len(live)
        for i, item in enumerate(live):
            try:
                one = results[i] if results[i] is not None else self.labeller.label_batch([masks[i]], [embeddings[i]])[0]
            except Exception as exc:  # noqa: BLE001
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(self.FAILURES, failure_row(item["uri"], "label", exc))
                continue
            try:
                keep = np.flatnonzero(item.get("keep", ()))
                rles = [item["rles"][j] for j in keep]
                outputs.write_image_outputs(
                    self.job.output, self.names.get(item["uri"]) or outputs.output_name(item["uri"]), item["uri"],
                    item["image"], one, rles, list(self.job.request.class_names), self.job.request.ignore_value,
                    self.job.overlay)
            except Exception as exc:  # noqa: BLE001
                self.failed.inc()
                yield beam.pvalue.TaggedOutput(self.FAILURES, failure_row(item["uri"], "write", exc))
                continue
            self.labelled.inc()
            self.segments.inc(len(one.class_ids))
            yield item["uri"]


def write_failures(rows: list[dict], output: str) -> int:
    import pyarrow as pa

    if rows:
        table = pa.Table.from_pylist(sorted(rows, key=lambda r: (r["uri"], r["stage"])), schema=schema.failures_schema())
        storage.write_parquet(storage.join(output, outputs.FAILURES), table)
    return len(rows)


def build_label_pipeline(p: beam.Pipeline, job: LabelJob, todo: list[str]) -> None:
    from apache_beam.io import fileio
    from apache_beam.ml.inference.base import RunInference


    handler_kw = {"torch_threads": job.torch_threads}
    results = (
        p
        | "Inputs" >> beam.Create(todo)
        | "Reshuffle" >> beam.Reshuffle()
        | "ReadMatches" >> fileio.ReadMatches()
        | "Decode" >> beam.ParDo(DecodeImage(1, 0, job.max_pixels))
        | "Masks" >> RunInference(MaskerModelHandler(job.models, max_batch_size=job.mask_batch_size, **handler_kw))
        | "VisualEmbeddings" >> RunInference(
            VisualModelHandler(job.models, max_batch_size=job.visual_batch_size, **handler_kw))
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=job.label_batch_size)
        | "LabelAndWrite" >> beam.ParDo(LabelAndWrite(job)).with_outputs(LabelAndWrite.FAILURES, main="labelled")
    )
    output = job.output
    (
        results[LabelAndWrite.FAILURES]
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.Map(write_failures, output)
    )


class _Progress:
    """A tqdm bar fed by counting finished label maps in OUTPUT: works for every runner and process layout."""

    def __init__(self, job: LabelJob, todo: list[tuple[str, str]], enabled: bool):
        self.job, self.todo, self.enabled = job, todo, enabled and len(todo) > 0
        self.stop = threading.Event()
        self.thread = None

    def _count(self) -> int:
        done = {posixpath.basename(p)[:-4] for p in storage.listdir(self.job.output) if p.endswith(".png")}
        return sum(1 for _, n in self.todo if n in done)

    def _run(self):
        from tqdm import tqdm

        interval = 0.5 if "://" not in self.job.output else 10.0
        with tqdm(total=len(self.todo), desc="labelling", unit="img", leave=True) as bar:
            while True:
                stopped = self.stop.wait(interval)
                try:
                    bar.n = self._count()
                    bar.refresh()
                except Exception:  # noqa: BLE001 - progress is best effort
                    pass
                if stopped:
                    return

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def run_job(job: LabelJob, beam_args: list[str] | None = None, progress: bool = True) -> dict:
    """Run the labelling pipeline for the images not yet done; returns a summary (counts, failures)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    failures_path = storage.join(job.output, outputs.FAILURES)
    if storage.exists(failures_path):  # failures are re-tried: the list describes the latest run
        storage.filesystem(failures_path).rm(failures_path)
    todo = job.todo()
    start = time.perf_counter()
    if todo:
        options = PipelineOptions(list(beam_args or []), save_main_session=False)
        with _Progress(job, todo, progress):
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


# ---------------------------------------------------------------------------------------------------------
# reme evaluate: label a benchmark's images, then score them
# ---------------------------------------------------------------------------------------------------------
def evaluate_dataset(name: str, root: str, index: str | None = None, predictions: str | None = None,
                     output: str | None = None, ignore_index: int | None = None, request_factory=None,
                     overrides: dict | None = None, settings: dict | None = None, beam_args=None,
                     progress: bool = True, overlay: bool = False) -> dict:
    """`reme evaluate`: label the dataset's images with the reference set at `index` (unless `predictions` is
    given), then score them (inference.evaluate)."""
    dataset = load_dataset(name, root, ignore_index)
    if predictions is None:
        if index is None or request_factory is None:
            raise ValueError("evaluate needs an index (or --predictions)")
        images_root = dataset.root / dataset.layout.images
        output = output or str(Path(root).resolve().parent / f"reme-{name}")
        request = request_factory(list(dataset.class_names))
        # Exactly the benchmark's images (nested folders, split files), named relative to its image root.
        job = prepare_job(index, [str(images_root)], output, request, overrides or {}, overlay=overlay,
                          uris=[str(image) for _, image, _ in dataset], **(settings or {}))
        summary = run_job(job, beam_args, progress=progress)
        predictions = output
        result = score_predictions(dataset, predictions)
        result["label_failures"] = summary["failed"]
        return result
    return score_predictions(dataset, predictions)
