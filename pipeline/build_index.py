"""The reference-set job: images -> masks -> labels -> embeddings -> pairing -> group filtering -> Parquet + FAISS.

    python -m pipeline.build_index --input 'gs://b/imgs/*.jpg' --output gs://b/ref \
        --label_source captions --captions gs://b/captions.json \
        --runner DataflowRunner --project P --region R --temp_location gs://b/tmp --setup_file ./setup.py

Two phases in one Beam pipeline:

  A (heavy, resumable, per image): read -> masks (or annotation regions) -> labels -> visual embeddings ->
    CLIP pairing. Results are grouped by *input shard* (a stable hash of the image URI) and committed to
    `<output>/_staging/` with a marker written last. A re-run reads the markers at launch and skips every image
    of a committed shard before any model work.
  B (cheap, global, always recomputed): the staged rows of every committed shard -> exact-duplicate removal ->
    group-based filtering per label -> segments/, dropped/, failures/ (one part per input shard, rows sorted),
    labels.parquet. Phase B is deterministic, so a resumed run writes exactly the rows an uninterrupted run does.

After the pipeline: the FAISS index (refset.index.build_index) and manifest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from models.clip import ClipEncoder
from models.config import ModelsConfig
from models.presets import resolve_models
from models.text import build_text_encoder
from models.visual import VisualEncoder
from models.weights import WeightsUnavailable, load_pretrained
from pipeline.options import build_parser, group_filter_config, models_config, run_command, validate
from refset import manifest as manifest_lib
from refset import schema, staging, storage
from refset.index import build_index
from transforms import writers
from transforms.annotations import AnnotateImage, read_classes
from transforms.captions import AttachCaptionLabels, CaptionerModelHandler, read_captions
from transforms.embed import PairingModelHandler, VisualModelHandler
from transforms.group_filter import GroupFilter, GroupFilterConfig
from transforms.images import ReadImages, list_inputs
from transforms.masks import MaskerModelHandler
from transforms.pairing import FinishImage

log = logging.getLogger("reme.build_index")

# Settings that change what phase A computes: a resumed run must use the same ones as the run it resumes.
PHASE_A_SETTINGS = ("label_source", "annotations", "ignore_index", "captions", "max_side", "max_pixels")


@dataclass(frozen=True)
class RunPlan:
    """What the launcher decided before any work: shards, what is already done, the typed configs."""

    output: str
    inputs: tuple[str, ...]
    num_images: int
    num_shards: int
    done_shards: tuple[int, ...]
    models: ModelsConfig
    group_filter: GroupFilterConfig
    class_names: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------------
# Launch: listing, run record, resume state (all before the pipeline; errors are one line)
# ---------------------------------------------------------------------------------------------------------
def _fail(message: str):
    raise SystemExit(f"build_index: error: {' '.join(str(message).split())}")


def phase_a_fingerprint(args: argparse.Namespace, models: ModelsConfig) -> dict:
    settings = {name: getattr(args, name) for name in PHASE_A_SETTINGS}
    model_settings = dataclasses.asdict(models)
    model_settings.pop("cache_dir", None)
    for part in ("visual", "clip", "text", "captioner"):  # batching/device do not change results
        for key in ("batch_size", "device", "precision"):
            model_settings[part].pop(key, None)
    return {"settings": settings, "models": model_settings}


def prepare(args: argparse.Namespace) -> RunPlan:
    output = args.output.rstrip("/")
    try:
        uris = list_inputs(args.input)
    except Exception as exc:
        _fail(f"cannot list --input {args.input}: {type(exc).__name__}: {exc}")
    if not uris:
        _fail(f"no input matched: {', '.join(args.input)} (no image files with extensions .jpg .png ...)")

    models = models_config(args)
    class_names: tuple[str, ...] = ()
    try:
        if args.label_source == "annotations":
            class_names = tuple(read_classes(args.annotations))
        elif args.label_source == "captions":
            if not read_captions(args.captions):
                _fail(f"--captions {args.captions} holds no captions")
    except SystemExit:
        raise
    except Exception as exc:
        _fail(f"cannot read labels source: {type(exc).__name__}: {exc}")

    preflight_weights(args, models)

    try:
        if args.overwrite and storage.exists(output):
            storage.filesystem(output).rm(output, recursive=True)
        storage.makedirs(output)
    except (OSError, PermissionError) as exc:
        _fail(f"output {output} is not writable: {type(exc).__name__}: {exc}")
    removed = storage.remove_temp_files(output)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)

    digest = hashlib.sha1("\n".join(uris).encode("utf-8")).hexdigest()
    fingerprint = phase_a_fingerprint(args, models)
    run_path = storage.join(output, staging.RUN_FILE)
    if storage.exists(run_path):
        previous = storage.read_json(run_path)
        if args.num_shards and args.num_shards != previous["num_shards"]:
            _fail(f"--num_shards {args.num_shards} conflicts with {previous['num_shards']} of the run being resumed in "
                  f"{output}; drop the flag to resume, or pass --overwrite to start fresh")
        if previous["inputs_sha1"] != digest:
            _fail(f"the inputs differ from those of the run being resumed in {output} ({previous['num_images']} "
                  f"images then, {len(uris)} now); use the same inputs, another --output, or --overwrite")
        if previous["phase_a"] != json.loads(json.dumps(fingerprint)):
            _fail(f"models or label settings differ from those of the run being resumed in {output}; "
                  "use the same settings, another --output, or --overwrite")
        num_shards = int(previous["num_shards"])
    else:
        num_shards = args.num_shards or max(1, math.ceil(len(uris) / args.images_per_shard))
        storage.write_json(run_path, {"num_shards": num_shards, "num_images": len(uris), "inputs_sha1": digest,
                                      "phase_a": fingerprint})
    done = tuple(s for s in staging.done_shards(output) if s < num_shards)
    if done:
        log.info("resuming: %d of %d input shards already committed", len(done), num_shards)
    return RunPlan(output=output, inputs=tuple(args.input), num_images=len(uris), num_shards=num_shards,
                   done_shards=done, models=models, group_filter=group_filter_config(args, len(uris)),
                   class_names=class_names)


def preflight_weights(args: argparse.Namespace, models: ModelsConfig) -> None:
    """Stop before the pipeline when a needed model cannot be loaded (one line naming the model and the fix)."""

    try:
        resolved = resolve_models(models)
    except (ValueError, WeightsUnavailable) as exc:
        _fail(str(exc))
    if resolved.preset != "default":
        return
    from pathlib import Path

    from transformers import AutoConfig


    needed = [("visual encoder", resolved.visual.model_id, resolved.visual.revision),
              ("text encoder", resolved.text.model_id, resolved.text.revision)]
    if args.label_source != "annotations":
        needed.append(("CLIP pairing model", resolved.clip.model_id, resolved.clip.revision))
    if args.label_source == "captioner":
        needed.append(("captioner", resolved.captioner.model_id, resolved.captioner.revision))
    for what, model_id, revision in needed:
        if Path(model_id).is_dir():
            continue
        try:
            load_pretrained(AutoConfig, model_id, revision, what=what)
        except WeightsUnavailable as exc:
            _fail(str(exc))
    if args.label_source != "annotations" and resolved.masker.kind == "sam":
        checkpoint = resolved.masker.sam.checkpoint
        if not checkpoint or not storage.exists(checkpoint):
            _fail(f"SAM checkpoint not found: {checkpoint!r}; pass --sam_checkpoint (local or gs://) or use "
                  "--masker felzenszwalb")


# ---------------------------------------------------------------------------------------------------------
# The pipeline graph
# ---------------------------------------------------------------------------------------------------------
def _handler_kwargs(args, batch_size: int) -> dict:
    return {"max_batch_size": batch_size, "torch_threads": args.torch_threads, "large_model": args.large_model,
            "model_copies": args.model_copies}


def _segments_schema(dtype: str):
    def schema_fn(rows):
        return schema.segments_schema(len(rows[0]["visual_embedding"]), dtype)

    return schema_fn


def build_pipeline(p: beam.Pipeline, args: argparse.Namespace, plan: RunPlan) -> None:
    """Phase A then phase B, top to bottom."""
    output, models, num_shards = plan.output, plan.models, plan.num_shards
    annotated = args.label_source == "annotations"

    # ---- Phase A: per image, skipped for committed shards -------------------------------------------------
    items = p | "ReadImages" >> ReadImages(list(plan.inputs), num_shards, plan.done_shards, args.max_side,
                                           args.max_pixels)
    if annotated:
        items = items | "AnnotationSegments" >> beam.ParDo(
            AnnotateImage(args.annotations, list(plan.class_names), args.ignore_index or (), args.min_area))
    else:
        items = items | "Masks" >> RunInference(MaskerModelHandler(models, **_handler_kwargs(args, args.mask_batch_size)))
        if args.label_source == "captions":
            items = items | "CaptionLabels" >> beam.ParDo(AttachCaptionLabels(args.captions))
        else:
            items = items | "Captioner" >> RunInference(
                CaptionerModelHandler(models, **_handler_kwargs(args, args.caption_batch_size)))
    items = items | "VisualEmbeddings" >> RunInference(
        VisualModelHandler(models, **_handler_kwargs(args, args.visual_batch_size)))
    if not annotated:
        items = items | "PairingEmbeddings" >> RunInference(
            PairingModelHandler(models, **_handler_kwargs(args, args.clip_batch_size)))
    committed = (
        items
        | "ImageResults" >> beam.ParDo(FinishImage(annotated))
        | "GroupByInputShard" >> beam.GroupByKey()
        | "CommitShard" >> beam.ParDo(writers.WriteStagedShard(output))
    )

    # ---- Phase B: every committed shard (earlier runs' and this run's) -> filtering -> final outputs --------
    previously_done = p | "PreviouslyCommitted" >> beam.Create(list(plan.done_shards))
    staged = (
        (committed, previously_done)
        | "AllCommittedShards" >> beam.Flatten()
        | "ReadStaged" >> beam.ParDo(writers.ReadStagedShard(output)).with_outputs("drops", "failures", main="pairs")
    )
    kept, filtered_out = staged.pairs | "GroupFilter" >> GroupFilter(plan.group_filter)

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
            output, schema.SEGMENTS_DIR, _segments_schema(args.embedding_dtype), staging.pair_sort_key))
    )
    (
        (staged.drops, filtered_out)
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
# After the pipeline: FAISS index + manifest
# ---------------------------------------------------------------------------------------------------------
def model_infos(args: argparse.Namespace, models: ModelsConfig) -> dict:

    resolved = resolve_models(models)
    infos = {"visual": VisualEncoder(resolved.visual).info, "text": build_text_encoder(resolved.text).info}
    if args.label_source == "annotations":
        infos["masker"] = {"kind": "annotations", "annotations": args.annotations,
                           "ignore_index": args.ignore_index or [], "min_area": args.min_area}
    else:
        infos["masker"] = {"kind": resolved.masker.kind, "min_area": resolved.masker.min_area,
                           "max_masks": resolved.masker.max_masks,
                           **dataclasses.asdict(getattr(resolved.masker, resolved.masker.kind))}

        infos["clip"] = ClipEncoder(resolved.clip).info
    if args.label_source == "captioner":
        infos["captioner"] = dataclasses.asdict(resolved.captioner)
    return infos


def finish(args: argparse.Namespace, plan: RunPlan, result) -> dict:
    index_info = None
    counts = manifest_lib.count_outputs(plan.output)
    if args.skip_index:
        index_info = {"skipped": "--skip_index"}
    elif counts["segments_kept"] == 0:
        index_info = {"skipped": "no segments were kept"}
    else:

        index_info = build_index(plan.output, memory_budget=args.memory_budget, recall_target=args.recall_target)
    params = {
        "label_source": args.label_source,
        "inputs": list(plan.inputs),
        "num_images_listed": plan.num_images,
        "num_shards": plan.num_shards,
        "max_side": args.max_side,
        "max_pixels": args.max_pixels,
        "embedding_dtype": args.embedding_dtype,
        "group_filter": dataclasses.asdict(plan.group_filter),
        "annotations": args.annotations,
        "ignore_index": args.ignore_index or [],
        "captions": args.captions,
    }
    manifest = manifest_lib.build_manifest(
        plan.output,
        models=plan.models.to_dict(),
        model_info=model_infos(args, plan.models),
        params=params,
        run={"output": plan.output, "resumed_shards": len(plan.done_shards), "shards": plan.num_shards},
        index_info=index_info,
        run_metrics=manifest_lib.metrics_dict(result),
    )
    storage.write_json(storage.join(plan.output, schema.MANIFEST), manifest)
    return manifest


def torch_threads_per_worker(requested: int, options: PipelineOptions) -> int:
    """0 = auto: with the DirectRunner's multi_processing mode, split the cores between the worker processes."""
    if requested:
        return requested
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 1
    if direct.direct_running_mode == "multi_processing" and workers > 0:
        import os

        return max(1, (os.cpu_count() or 1) // workers)
    return 0


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    return validate(args, parser), beam_args


def run(argv=None, save_main_session: bool = True) -> dict:
    """Parse flags, prepare (listing, resume state), run the Beam pipeline, build the index, write the manifest."""
    args, beam_args = parse(argv)
    plan = prepare(args)
    options = PipelineOptions(beam_args, save_main_session=save_main_session)
    args.torch_threads = torch_threads_per_worker(args.torch_threads, options)
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, args, plan)
    except Exception as exc:
        text = str(exc)
        if "WeightsUnavailable" in text:  # a worker could not load a model: show the models layer's one line
            line = next((ln for ln in text.splitlines() if "WeightsUnavailable" in ln), text)
            _fail(line.split("WeightsUnavailable:", 1)[-1])
        raise
    if options.view_as(TestOptions).dry_run:  # Beam's --dry_run: graph built and validated, nothing ran
        return {}
    return finish(args, plan, getattr(p, "result", None))


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
    print(f"reference set written to {manifest['run']['output']}: {counts['segments_kept']} segments, "
          f"{counts['labels']} labels from {counts['images_in']} images ({counts['images_failed']} failed); "
          f"dropped {counts['dropped_by_reason']}; index {index.get('index_key', index.get('key', index))}",
          file=sys.stderr)


if __name__ == "__main__":
    run_command(main)
