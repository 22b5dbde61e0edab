"""The reference-set job: Read -> Mask -> Label -> Pair -> Embed -> Commit | Dedup -> Filter -> Write -> Index.

    python -m pipeline.build_index --input 'gs://b/imgs/*.jpg' --output gs://b/ref \
        --label_source captions --captions gs://b/captions.json \
        --runner DataflowRunner --project P --region R --temp_location gs://b/tmp --setup_file ./setup.py

Two phases in one Beam pipeline, each step named as in the README's method table:

  A (heavy, resumable, per image): Read -> Mask -> Label (annotations, captions or captioner) -> Pair (CLIP,
    the paper's argmax) -> Embed (mask-pooled visual embeddings). Results are grouped by *input shard* (a stable
    hash of the image URI) and committed to `<output>/_staging/` with a marker written last (Commit). A re-run
    reads the markers at launch and skips every image of a committed shard before any model work.
    The images that *failed* in a committed shard are the exception: a re-run tries them again (transforms.images
    Todo) and commits their rows as a new generation of their shard (refset.staging), so a failure caused by a
    flaky disk, a preempted GPU or a bug fixed since is not lost.
  B (cheap, global, always recomputed): the staged rows of every committed shard (its generations merged) -> Dedup
    -> Filter (group-based, per label) -> Write (segments/, dropped/, failures/, one part per input shard, rows
    sorted; labels.parquet). Phase B is deterministic, so a resumed run writes exactly the rows an uninterrupted
    run does.

After the pipeline: Index (refset.index.build_index, FAISS) and manifest.json; then the failure budget
(--max_failure_rate): a run with more failed images than it allows ends with exit status 1 and one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, TestOptions
from transformers import AutoConfig

from inference import coco
from models.clip import describe_clip
from models.presets import resolve_models
from models.text import describe_text
from models.visual import describe_visual
from models.weights import WeightsUnavailable, load_pretrained
from pipeline import progress
from pipeline.command import RunFailure, UsageError, run_command, weights_error_of
from pipeline.config import IndexJobConfig
from pipeline.options import parse
from refset import manifest as manifest_lib
from refset import schema, staging, storage
from refset.index import RecallTargetMissed, build_index
from transforms import writers
from transforms.annotations import AnnotateImage, read_classes
from transforms.captions import (
    CAPTION_LABEL_BATCH,
    CaptionerModelHandler,
    CaptionLabelsHandler,
    ReadCaptionedImages,
    captions_identity,
    sniff_captions,
)
from transforms.coco import AnnotateCocoImage, ReadCategories, ReadCocoAnnotations, default_panoptic_dir
from transforms.embed import VisualModelHandler
from transforms.group_filter import Dedup, GroupFilter, GroupFilterConfig
from transforms.images import ReadImages, Todo, list_inputs
from transforms.masks import MaskerModelHandler
from transforms.pairing import PairingModelHandler

log = logging.getLogger("reme.build_index")
PROG = "build_index"


@dataclass(frozen=True)
class RunPlan:
    """What the launcher decided before any work: shards, what is already done, what the models are."""

    output: str
    num_images: int
    num_shards: int
    done_shards: tuple[int, ...]
    group_filter: GroupFilterConfig
    model_info: dict  # what the manifest records about each model, read from configs (no weights loaded)
    class_names: tuple[str, ...] = ()
    annotation_format: str = ""  # labelmaps | coco | coco_panoptic (annotations source)
    panoptic_dir: str | None = None  # the panoptic PNGs (coco_panoptic)
    images_todo: int = 0  # listed images outside the committed shards + failed images retried: this run's work
    captions_format: str | None = None  # "coco" or "jsonl", from the captions file's first bytes
    generations: dict[int, tuple[int, ...]] = field(default_factory=dict)  # committed shard -> its generations
    failing: dict[int, int] = field(default_factory=dict)  # committed shard with failures -> its latest generation
    generation: int = 1  # the generation this run commits its retries as (refset.staging)
    images_retried: int = 0  # failed images of committed shards this run tries again


# ---------------------------------------------------------------------------------------------------------
# Launch: listing, models, run record, resume state (all before the pipeline; errors are one UsageError line)
# ---------------------------------------------------------------------------------------------------------
def phase_a_fingerprint(config: IndexJobConfig) -> dict:
    """Everything that changes what phase A computes: a resumed run must match the run it resumes.

    Batch sizes and devices do not change results; numeric precision does, so it is part of the fingerprint.
    A captions file is identified by its content, read boundedly (transforms.captions.captions_identity).
    """
    settings = {"label_source": config.label_source, "annotations": annotations_setting(config),
                "ignore_index": list(config.ignore_index), "captions": config.captions,
                "max_side": config.read.max_side, "max_pixels": config.read.max_pixels}
    if config.coco_annotations:  # (added only here, so the fingerprints of earlier runs stay valid)
        settings.update(panoptic_dir=config.panoptic_dir, coco_crowd=config.coco_crowd)
    if config.label_source == "captions" and config.captions:
        settings["captions_file"] = captions_identity(config.captions)
    model_settings = dataclasses.asdict(config.models)
    model_settings.pop("cache_dir", None)
    for part in ("visual", "clip", "text", "captioner"):
        for key in ("batch_size", "device"):
            model_settings[part].pop(key, None)
    return json.loads(json.dumps({"settings": settings, "models": model_settings}))


def describe_models(config: IndexJobConfig) -> dict:
    """What the manifest records about each model of the run, from their configs: proves every needed model can be
    found before any work (one line naming the model and the fix otherwise), without loading any weights."""
    try:
        resolved = resolve_models(config.models)
        infos = {"visual": describe_visual(resolved.visual), "text": describe_text(resolved.text)}
        if not config.annotated:
            infos["clip"] = describe_clip(resolved.clip)
            infos["masker"] = {"kind": resolved.masker.kind, "min_area": resolved.masker.min_area,
                               "max_masks": resolved.masker.max_masks,
                               **dataclasses.asdict(getattr(resolved.masker, resolved.masker.kind))}
        else:
            infos["masker"] = {"kind": "annotations", "annotations": annotations_setting(config),
                               "ignore_index": list(config.ignore_index), "min_area": resolved.masker.min_area}
        if config.label_source == "captioner":
            load_pretrained(AutoConfig, resolved.captioner.model_id, resolved.captioner.revision, what="captioner")
            infos["captioner"] = dataclasses.asdict(resolved.captioner)
    except (ValueError, WeightsUnavailable) as exc:
        raise UsageError(str(exc)) from exc
    if not config.annotated and resolved.masker.kind == "sam":
        checkpoint = resolved.masker.sam.checkpoint
        if not checkpoint or not storage.exists(checkpoint):
            raise UsageError(f"SAM checkpoint not found: {checkpoint!r}; pass --sam_checkpoint (local or gs://) or "
                             "use --masker felzenszwalb")
    return infos


def annotations_setting(config: IndexJobConfig) -> str | list[str] | None:
    """--annotations as recorded: the one path as a string (as before several COCO files were possible), else
    the list."""
    if not config.annotations:
        return None
    return config.annotations[0] if len(config.annotations) == 1 else list(config.annotations)


def check_coco_annotations(config: IndexJobConfig) -> tuple[str, str | None]:
    """(format, panoptic PNG directory) of the COCO JSON files, each read up to its first annotation."""
    formats = []
    for path in config.annotations:
        if not storage.exists(path):
            raise UsageError(f"--annotations {path} does not exist")
        try:
            with storage.filesystem(path).open(path, "rb") as f:
                formats.append(coco.sniff_format(f))
        except coco.CocoError as exc:
            raise UsageError(f"--annotations {path} is no COCO annotations file: {exc}") from exc
    annotation_format = formats[0]
    if coco.PANOPTIC in formats and len(formats) > 1:
        raise UsageError("a COCO panoptic file is used alone (it holds things and stuff); several --annotations "
                         "files must all be instances/stuff files")
    path = config.annotations[0]
    if annotation_format != coco.PANOPTIC:
        if config.panoptic_dir:
            raise UsageError(f"--panoptic_dir given, but {path} holds instance annotations, not panoptic ones")
        return annotation_format, None
    panoptic_dir = config.panoptic_dir or default_panoptic_dir(path)
    if not storage.exists(panoptic_dir):
        raise UsageError(f"panoptic PNG directory {panoptic_dir} not found; pass --panoptic_dir")
    return annotation_format, panoptic_dir


def prepare(config: IndexJobConfig) -> RunPlan:
    """List the inputs, check the label source and the models, record the run, find committed shards."""
    output = config.output
    try:
        uris = list_inputs(list(config.inputs))
    except Exception as exc:  # noqa: BLE001 - any listing failure is the caller's input problem, in one line
        raise UsageError(f"cannot list --input {', '.join(config.inputs)}: {type(exc).__name__}: {exc}") from exc
    if not uris:
        raise UsageError(f"no input matched: {', '.join(config.inputs)} (no image files with extensions .jpg .png ...)")

    class_names: tuple[str, ...] = ()
    annotation_format, panoptic_dir, captions_format = "", None, None
    try:
        if config.coco_annotations:
            annotation_format, panoptic_dir = check_coco_annotations(config)
        elif config.annotated:
            annotation_format = "labelmaps"
            class_names = tuple(read_classes(config.annotations[0]))
        elif config.label_source == "captions":  # the first 64 KiB tell the format; the graph reads the rest
            captions_format = sniff_captions(config.captions)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable or malformed label source, in one line
        if isinstance(exc, ValueError) and config.label_source == "captions":
            raise UsageError(f"--captions {config.captions} {exc}") from exc  # "... is empty", "... is not JSONL"
        raise UsageError(f"cannot read labels source: {type(exc).__name__}: {exc}") from exc

    model_info = describe_models(config)

    try:
        if config.overwrite and storage.exists(output):
            storage.filesystem(output).rm(output, recursive=True)
        storage.makedirs(output)
    except (OSError, PermissionError) as exc:
        raise UsageError(f"output {output} is not writable: {type(exc).__name__}: {exc}") from exc
    removed = storage.remove_temp_files(output)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)

    digest = hashlib.sha1("\n".join(uris).encode("utf-8")).hexdigest()
    fingerprint = phase_a_fingerprint(config)
    run_path = storage.join(output, staging.RUN_FILE)
    if storage.exists(run_path):
        previous = storage.read_json(run_path)
        if config.num_shards and config.num_shards != previous["num_shards"]:
            raise UsageError(f"--num_shards {config.num_shards} conflicts with {previous['num_shards']} of the run being "
                             f"resumed in {output}; drop the flag to resume, or pass --overwrite to start fresh")
        if previous["inputs_sha1"] != digest:
            raise UsageError(f"the inputs differ from those of the run being resumed in {output} "
                             f"({previous['num_images']} images then, {len(uris)} now); use the same inputs, another "
                             "--output, or --overwrite")
        if previous["phase_a"] != fingerprint:
            raise UsageError(f"models, precision or label settings differ from those of the run being resumed in "
                             f"{output}; use the same settings, another --output, or --overwrite")
        num_shards = int(previous["num_shards"])
    else:
        num_shards = config.num_shards or max(1, math.ceil(len(uris) / config.images_per_shard))
        storage.write_json(run_path, {"num_shards": num_shards, "num_images": len(uris), "inputs_sha1": digest,
                                      "phase_a": fingerprint})
    generations = {s: g for s, g in staging.committed_generations(output).items() if s < num_shards}
    done = tuple(generations)
    failing = {s: g for s, g in staging.failing_shards(output, generations).items()}
    retried = count_failed(output, failing)
    if done:
        log.info("resuming: %d of %d input shards already committed; retrying %d failed images of %d of them",
                 len(done), num_shards, retried, len(failing))
    images_todo = sum(1 for uri in uris if staging.shard_of(uri, num_shards) not in done) if done else len(uris)
    return RunPlan(output=output, num_images=len(uris), num_shards=num_shards, done_shards=done,
                   group_filter=config.group_filter_for(len(uris)), model_info=model_info, class_names=class_names,
                   annotation_format=annotation_format, panoptic_dir=panoptic_dir,
                   images_todo=images_todo + retried, captions_format=captions_format, generations=generations,
                   failing=failing, generation=staging.next_generation(generations), images_retried=retried)


def count_failed(output: str, failing: dict[int, int]) -> int:
    """How many failed images the committed shards' latest generations hold (read in parallel: one small file per
    failing shard)."""
    if not failing:
        return 0
    with ThreadPoolExecutor(max_workers=min(16, len(failing))) as pool:
        return sum(pool.map(lambda sg: len(staging.failed_uris(output, *sg)), failing.items()))


# ---------------------------------------------------------------------------------------------------------
# The pipeline graph
# ---------------------------------------------------------------------------------------------------------
def _run_inference(handler_cls, config: IndexJobConfig, batch_size: int) -> RunInference:
    workers = config.workers
    return RunInference(handler_cls(config.models, max_batch_size=batch_size, torch_threads=workers.torch_threads,
                                    large_model=workers.large_model, model_copies=workers.model_copies,
                                    retry=config.failures.retry))


def _segments_schema(dtype: str):
    def schema_fn(rows):
        return schema.segments_schema(len(rows[0]["visual_embedding"]), dtype)

    return schema_fn


def build_pipeline(p: beam.Pipeline, config: IndexJobConfig, plan: RunPlan) -> None:
    """Phase A then phase B, top to bottom; step names as in the README's method table."""
    output, num_shards, models = plan.output, plan.num_shards, config.models
    retry = config.failures.retry

    # ---- Phase A: per image, skipped for committed shards (but their failures are tried again) ----------------
    todo = Todo(output, num_shards, plan.done_shards, plan.failing)
    if config.label_source == "captions":  # captions join their images by file name before any decoding
        items = p | "Read" >> ReadCaptionedImages(list(config.inputs), config.captions, plan.captions_format,
                                                  num_shards, plan.done_shards, config.read.max_side,
                                                  config.read.max_pixels, todo=todo, retry=retry)
    else:
        items = p | "Read" >> ReadImages(list(config.inputs), num_shards, plan.done_shards, config.read.max_side,
                                         config.read.max_pixels, todo=todo, retry=retry)
    if plan.annotation_format in (coco.INSTANCES, coco.PANOPTIC):  # each annotated region is a segment
        files = list(config.annotations)
        records = p | "ReadAnnotations" >> ReadCocoAnnotations(files)
        items = items | "Label" >> beam.ParDo(
            AnnotateCocoImage(plan.annotation_format, plan.panoptic_dir, config.coco_crowd, models.masker.min_area,
                              retry=retry),
            beam.pvalue.AsMultiMap(records), beam.pvalue.AsSingleton(p | "ReadCategories" >> ReadCategories(files)))
    elif config.annotated:  # the annotation's class regions are the segments, with their labels
        items = items | "Label" >> beam.ParDo(
            AnnotateImage(config.annotations[0], list(plan.class_names), config.ignore_index,
                          models.masker.min_area).retrying(retry))
    else:
        items = items | "Mask" >> _run_inference(MaskerModelHandler, config, config.workers.mask_batch_size)
        if config.label_source == "captions":
            items = items | "Label" >> _run_inference(CaptionLabelsHandler, config, CAPTION_LABEL_BATCH)
        else:
            items = items | "Label" >> _run_inference(CaptionerModelHandler, config, models.captioner.batch_size)
        items = items | "Pair" >> _run_inference(PairingModelHandler, config, config.workers.pairing_batch_size)
    items = items | "Embed" >> _run_inference(VisualModelHandler, config, models.visual.batch_size)
    if config.progress:  # counts for the launcher's bar (pipeline.progress)
        items = items | "Progress" >> beam.ParDo(progress.CountToFiles(progress_dir(output),
                                                                       progress.poll_interval(output)))
    committed = items | "Commit" >> writers.Commit(output, config.annotated, tuple(plan.failing), plan.generation)

    # ---- Phase B: every committed shard (earlier runs' and this run's) -> filtering -> final outputs --------
    # Once every commit of this run is done (the side input waits for all of them), each shard is read once with
    # all its generations: those committed before the run and this run's.
    earlier = plan.generations

    def with_generations(_, new):
        merged = {shard: set(gens) for shard, gens in earlier.items()}
        for shard, generation in new:
            merged.setdefault(shard, set()).add(generation)
        for shard in sorted(merged):
            yield shard, tuple(sorted(merged[shard]))

    staged = (
        p
        | "PreviouslyCommitted" >> beam.Create([None])
        | "AllCommittedShards" >> beam.FlatMap(with_generations, beam.pvalue.AsList(committed))
        | "SpreadShards" >> beam.Reshuffle()
        | "ReadStaged" >> beam.ParDo(writers.ReadStagedShard(output)).with_outputs("drops", "failures", main="pairs")
    )
    unique, duplicates = staged.pairs | "Dedup" >> Dedup()
    kept, filtered_out = unique | "Filter" >> GroupFilter(plan.group_filter)

    label_counts = (
        kept
        | "LabelOne" >> beam.Map(lambda row: (row["label"], 1))
        | "CountPerLabel" >> beam.CombinePerKey(sum)
        | "AllLabels" >> beam.combiners.ToList()
    )
    label_ids = label_counts | "WriteLabels" >> beam.ParDo(writers.WriteLabels(output, models))

    def with_label_id(row, ids):
        return {**row, "label_id": ids[row["label"]]}

    def by_shard(row, uri_field="image_uri"):
        return staging.shard_of(row[uri_field], num_shards), row

    (
        kept
        | "AttachLabelId" >> beam.Map(with_label_id, beam.pvalue.AsSingleton(label_ids))
        | "SegmentsByShard" >> beam.Map(by_shard)
        | "GroupSegments" >> beam.GroupByKey()
        | "WriteSegments" >> beam.ParDo(writers.WriteFinalShard(
            output, schema.SEGMENTS_DIR, _segments_schema(config.embedding_dtype), staging.pair_sort_key))
    )
    (
        (staged.drops, duplicates, filtered_out)
        | "AllDropped" >> beam.Flatten()
        | "DroppedByShard" >> beam.Map(by_shard)
        | "GroupDropped" >> beam.GroupByKey()
        | "WriteDropped" >> beam.ParDo(writers.WriteFinalShard(
            output, schema.DROPPED_DIR, lambda rows: schema.dropped_schema(), staging.drop_sort_key, "dropped_written"))
    )
    (
        staged.failures
        | "FailuresByShard" >> beam.Map(by_shard, "uri")
        | "GroupFailures" >> beam.GroupByKey()
        | "WriteFailures" >> beam.ParDo(writers.WriteFinalShard(
            output, schema.FAILURES_DIR, lambda rows: schema.failures_schema(), staging.failure_sort_key,
            "failures_written"))
    )


# ---------------------------------------------------------------------------------------------------------
# After the pipeline: Index (FAISS) + manifest
# ---------------------------------------------------------------------------------------------------------
def metrics_of(result) -> dict[str, int]:
    """Beam counters of a finished pipeline result (committed values; attempted where a runner has no commits)."""
    if result is None:
        return {}
    out: dict[str, int] = {}
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics support
        return out
    for counter in counters:
        try:
            value = counter.committed
        except Exception:  # noqa: BLE001 - runners without committed metrics raise here
            value = None
        if value is None:
            value = counter.attempted
        name, namespace = counter.key.metric.name, counter.key.metric.namespace
        key = name if namespace == "reme" else f"{namespace}.{name}"
        out[key] = out.get(key, 0) + int(value or 0)
    return dict(sorted(out.items()))


def finish(config: IndexJobConfig, plan: RunPlan, result) -> dict:
    counts = manifest_lib.count_outputs(plan.output)
    index_failure = None
    if config.index.skip:
        index_info = {"skipped": "--skip_index"}
    elif counts["segments_kept"] == 0:
        index_info = {"skipped": "no segments were kept"}
    else:
        stages = progress.Stages("faiss", progress.FAISS_UNITS, enabled=config.progress)
        try:
            index_info = build_index(plan.output, memory_budget=config.index.memory_budget,
                                     recall_target=config.index.recall_target, on_progress=stages)
        except RecallTargetMissed as missed:  # the best index is written; the manifest records it, then exit 1
            index_info, index_failure = missed.info, str(missed)
        finally:
            stages.close()
    params = {
        "label_source": config.label_source,
        "inputs": list(config.inputs),
        "num_images_listed": plan.num_images,
        "num_shards": plan.num_shards,
        "max_side": config.read.max_side,
        "max_pixels": config.read.max_pixels,
        "embedding_dtype": config.embedding_dtype,
        "group_filter": dataclasses.asdict(plan.group_filter),
        "annotations": annotations_setting(config),
        "annotation_format": plan.annotation_format or None,
        "panoptic_dir": plan.panoptic_dir,
        "coco_crowd": config.coco_crowd if config.coco_annotations else None,
        "ignore_index": list(config.ignore_index),
        "captions": config.captions,
        "captions_format": plan.captions_format,
    }
    manifest = manifest_lib.build_manifest(
        plan.output,
        models=config.models.to_dict(),
        model_info=plan.model_info,
        params=params,
        run={"output": plan.output, "resumed_shards": len(plan.done_shards), "shards": plan.num_shards,
             "images_retried": plan.images_retried},
        index_info=index_info,
        run_metrics=metrics_of(result),
    )
    storage.write_json(storage.join(plan.output, schema.MANIFEST), manifest)
    if index_failure is not None:
        raise RunFailure(f"index: {index_failure}")
    return manifest


def remove_final_outputs(output: str) -> None:
    """Phase B rewrites every final output from the staged shards; a part a shard no longer has rows for (its
    failures retried away, its segments filtered out by groups that changed) must not outlive it, nor a manifest
    that describes the previous outputs."""
    for directory in (schema.SEGMENTS_DIR, schema.DROPPED_DIR, schema.FAILURES_DIR):
        for path in storage.listdir(storage.join(output, directory)):
            storage.filesystem(path).rm(path)
    manifest = storage.join(output, schema.MANIFEST)
    if storage.exists(manifest):
        storage.filesystem(manifest).rm(manifest)


def progress_dir(output: str) -> str:
    """Where the workers count processed images for the launcher's bar (removed after the pipeline)."""
    return storage.join(output, staging.STAGING_DIR, "progress")


def torch_threads_per_worker(requested: int, options: PipelineOptions) -> int:
    """0 = auto: with the DirectRunner's multi_processing mode, split the cores between the worker processes."""
    if requested:
        return requested
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    if direct.direct_running_mode == "multi_processing" and workers > 0:
        return max(1, (os.cpu_count() or 1) // workers)
    return 0


def run_job(config: IndexJobConfig, beam_args: list[str] | None = None, save_main_session: bool = True) -> dict:
    """The job from Python: prepare (listing, models, resume state), the Beam pipeline, the index, the manifest.
    Returns the manifest ({} for a --dry_run)."""
    config.validate()
    plan = prepare(config)
    options = PipelineOptions(list(beam_args or []), save_main_session=save_main_session)
    threads = torch_threads_per_worker(config.workers.torch_threads, options)
    config = dataclasses.replace(config, workers=dataclasses.replace(config.workers, torch_threads=threads))
    counts = progress_dir(plan.output)
    progress.remove_counts(counts)  # an interrupted run's counts are not this run's
    dry_run = options.view_as(TestOptions).dry_run
    if not dry_run:
        remove_final_outputs(plan.output)
    bar = progress.Progress("indexing", plan.images_todo,
                            enabled=config.progress and plan.images_todo > 0 and not dry_run)
    try:
        with progress.polled(bar, lambda: progress.sum_counts(counts), progress.poll_interval(plan.output)):
            with beam.Pipeline(options=options) as p:
                build_pipeline(p, config, plan)
        progress.remove_counts(counts)
    except Exception as exc:
        if (line := weights_error_of(exc)) is not None:
            raise UsageError(line) from exc
        raise
    if dry_run:  # Beam's --dry_run: graph built and validated, nothing ran
        return {}
    manifest = finish(config, plan, getattr(p, "result", None))
    counts = manifest["counts"]
    config.failures.check(counts["images_failed"], counts["images_in"], counts.get("failed_by_kind", {}),
                          storage.join(plan.output, schema.FAILURES_DIR))
    return manifest


def run(argv=None, save_main_session: bool = True) -> dict:
    """Parse flags (exit 2 on a bad one), then run_job."""
    config, beam_args = parse(argv)
    return run_job(config, beam_args, save_main_session)


def main(argv=None) -> None:
    # Our own progress at INFO; third parties (Beam's default-runner notice, faiss probing its optional
    # extensions) only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("reme").setLevel(logging.INFO)
    manifest = run(argv)
    if not manifest:
        print("dry run: the job graph was built; nothing ran", file=sys.stderr)
        return
    counts = manifest["counts"]
    index = manifest.get("index") or {}
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.get("failed_by_kind", {}).items())
    print(f"reference set written to {manifest['run']['output']}: {counts['segments_kept']} segments, "
          f"{counts['labels']} labels from {counts['images_in']} images ({counts['images_failed']} failed"
          f"{': ' + kinds if kinds else ''}{retried_note(manifest)}); "
          f"dropped {counts['dropped_by_reason']}; index {index_summary(index)}",
          file=sys.stderr)
    if (line := captions_summary(manifest)) is not None:
        print(line, file=sys.stderr)


def index_summary(index: dict) -> str:
    """The run summary's index part: the key and its measured recall, or why there is no index."""
    if "index_key" not in index:
        return f"skipped ({index.get('skipped', 'not built')})"
    refine = " + float16 refine" if index.get("refine") else ""
    return (f"{index['index_key']}{refine} {index['search_params'] or 'exact'}, recall@{index['k']} "
            f"{index['recall_at_k']} (target {index['recall_target']} "
            f"{'met' if index['recall_target_met'] else 'missed'})")


def retried_note(manifest: dict) -> str:
    """'; 2 failed images of earlier runs tried again' for the summary line, when there were any."""
    retried = manifest.get("run", {}).get("images_retried", 0)
    return f"; {retried} failed images of earlier runs tried again" if retried else ""


def captions_summary(manifest: dict) -> str | None:
    """The run summary's captions line: what the join by file name left out (Beam counters), or None."""
    if manifest.get("params", {}).get("label_source") != "captions":
        return None
    metrics = manifest.get("run_metrics") or {}
    return (f"captions: {metrics.get('images_without_caption', 0)} images without a caption (unlabelled); "
            f"{metrics.get('captions_without_image', 0)} captions of "
            f"{metrics.get('captioned_names_without_image', 0)} file names not among the inputs; "
            f"{metrics.get('captions_unknown_image_id', 0)} with an image id the COCO images list lacks; "
            f"{metrics.get('caption_records_malformed', 0)} malformed records skipped")


if __name__ == "__main__":
    run_command(main, PROG)
