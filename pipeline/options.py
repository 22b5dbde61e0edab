"""The reference-set job's flags, parsed into its typed `IndexJobConfig` (pipeline.config).

`get_args_parser()` defines our flags, with every default read from the dataclass that owns it; `parse(argv)`
uses it like Beam's wordcount (parse_known_args) and hands everything else to Beam's own PipelineOptions
(runner, project, region, temp_location, setup_file, direct_running_mode, ...). Bad flags and combinations stop
before any work with one line (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses

from models.config import (
    CaptionerConfig,
    ClipConfig,
    FelzenszwalbConfig,
    MaskerConfig,
    ModelsConfig,
    SamConfig,
    TextEncoderConfig,
    VisualEncoderConfig,
)
from pipeline.command import OneLineArgumentParser, UsageError
from pipeline.config import (
    AUTO_MIN_COUNT_IMAGES,
    EMBEDDING_DTYPES,
    LABEL_SOURCES,
    FailureConfig,
    IndexBuildConfig,
    IndexJobConfig,
    ReadConfig,
    WorkerConfig,
)
from refset import storage
from transforms.group_filter import GroupFilterConfig

PROG = "python -m pipeline.build_index"


def add_worker_flags(parser: argparse.ArgumentParser, *, pairing: bool) -> None:
    """RunInference batching and model sharing (both jobs)."""
    add = parser.add_argument
    add("--mask_batch_size", type=int, default=WorkerConfig.mask_batch_size, help="images per masker call")
    add("--visual_batch_size", type=int, default=None,
        help=f"images per visual-encoder forward (default {VisualEncoderConfig.batch_size})")
    if pairing:
        add("--clip_batch_size", type=int, default=WorkerConfig.pairing_batch_size,
            help="images per CLIP pairing batch")
        add("--clip_crop_batch_size", type=int, default=ClipConfig.batch_size,
            help="segment crops per CLIP forward pass")
    add("--large_model", action="store_true",
        help="share one model per machine across worker processes (RunInference large_model)")
    add("--model_copies", type=int, default=None, help="model copies per machine when shared")
    add("--torch_threads", type=int, default=WorkerConfig.torch_threads,
        help="torch intra-op threads per worker process (0 = auto: cores / direct_num_workers)")
    add("--max_pixels", type=int, default=ReadConfig.max_pixels, help="refuse larger images as decompression bombs")
    add_failure_flags(parser)


def add_failure_flags(parser: argparse.ArgumentParser) -> None:
    """Retries of transient errors and the failure budget (both jobs; defaults from FailureConfig)."""
    add = parser.add_argument
    add("--max_failure_rate", type=float, default=FailureConfig.max_failure_rate,
        help="exit with status 1 when more than this fraction of the inputs failed (0..1)")
    add("--retry_attempts", type=int, default=FailureConfig.retry_attempts,
        help="tries in all for an input that meets a transient error (I/O, timeout, HTTP 429/5xx, out of memory)")
    add("--retry_backoff", type=float, default=FailureConfig.retry_backoff,
        help="seconds before the first retry; doubles with each retry")
    add("--retry_max_backoff", type=float, default=FailureConfig.retry_max_backoff,
        help="longest wait between two tries, in seconds")


def failure_config(args: argparse.Namespace) -> FailureConfig:
    return FailureConfig(max_failure_rate=args.max_failure_rate, retry_attempts=args.retry_attempts,
                         retry_backoff=args.retry_backoff, retry_max_backoff=args.retry_max_backoff)


def add_index_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    # I/O
    add("--input", action="append", default=None,
        help="image file, glob or directory, local or gs:// (repeatable); with --label_source annotations "
             "it defaults to <annotations>/images")
    add("--output", help="reference-set directory, local or gs://")
    add("--overwrite", action="store_true", help="delete the output first and start fresh (default: resume)")
    add("--num_shards", type=int, default=IndexJobConfig.num_shards,
        help="input shards (resume unit, one output part per shard); 0 = ceil(images / images_per_shard)")
    add("--images_per_shard", type=int, default=IndexJobConfig.images_per_shard,
        help="images per input shard when --num_shards is 0")
    add("--max_side", type=int, default=ReadConfig.max_side,
        help="resize decoded images so the longest side is at most this (0 = keep)")
    # labels
    add("--label_source", choices=LABEL_SOURCES, default=IndexJobConfig.label_source)
    add("--annotations", action="append", default=None,
        help="annotations directory (images/ + labels/ label-map PNGs + classes.txt), or COCO JSON: one panoptic "
             "file (with its PNG directory), or instances/stuff files, repeatable (COCO-Stuff: instances_*.json + "
             "stuff_*.json)")
    add("--panoptic_dir", default=None,
        help="COCO panoptic PNG directory (default: the JSON's path without .json, as COCO ships it)")
    add("--coco_crowd", choices=("skip", "keep"), default=IndexJobConfig.coco_crowd,
        help="COCO crowd regions (iscrowd: a group of objects): skip them, or keep each as one segment")
    add("--ignore_index", type=int, action="append", default=None,
        help="label-map value(s) that are no class (repeatable), e.g. 255 for VOC, 0 for ADE20K, 11 for CamVid")
    add("--captions", help="COCO captions JSON or JSONL {\"image\": ..., \"caption\": ...}, matched by file name")
    # models
    add("--preset", default=ModelsConfig.preset, help="models preset: default (configured weights) | tiny-random (offline)")
    add("--cache_dir", default=None, help="where presets materialise weights (default $REME_CACHE or ~/.cache/reme)")
    add("--masker", choices=("felzenszwalb", "sam"), default=MaskerConfig.kind)
    add("--sam_model_type", default=SamConfig.model_type, help="vit_b | vit_l | vit_h")
    add("--sam_checkpoint", default=None, help="SAM .pth checkpoint, local or gs://")
    add("--sam_points_per_side", type=int, default=SamConfig.points_per_side)
    add("--felzenszwalb_scale", type=float, default=FelzenszwalbConfig.scale)
    add("--felzenszwalb_min_size", type=int, default=FelzenszwalbConfig.min_size)
    add("--min_area", type=int, default=MaskerConfig.min_area, help="segments below this many pixels are dropped (too_small)")
    add("--max_masks", type=int, default=MaskerConfig.max_masks, help="largest N masks kept per image (0 = all)")
    add("--visual_kind", choices=("dinov2", "clip"), default=VisualEncoderConfig.kind)
    add("--visual_model", default=VisualEncoderConfig.model_id)
    add("--visual_image_size", type=int, default=VisualEncoderConfig.image_size)
    add("--clip_model", default=ClipConfig.model_id)
    add("--text_kind", choices=("clip", "sentence"), default=TextEncoderConfig.kind)
    add("--text_model", default=TextEncoderConfig.model_id)
    add("--captioner_kind", choices=("blip", "llava"), default=CaptionerConfig.kind)
    add("--captioner_model", default=CaptionerConfig.model_id)
    add("--captioner_prompt", default=None,
        help='LLaVA prompt, e.g. "USER: <image>\\nDescribe the image. ASSISTANT:" (default: the model\'s own)')
    add("--caption_batch_size", type=int, default=CaptionerConfig.batch_size, help="images per captioner batch")
    add("--device", default=VisualEncoderConfig.device, help="auto | cpu | cuda | cuda:N")
    add("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=VisualEncoderConfig.precision,
        help="numeric precision of the encoders on a GPU (auto = bf16 where supported); CPU runs in fp32")
    add_worker_flags(parser, pairing=True)
    # quality filtering
    add("--outlier_mads", type=float, default=GroupFilterConfig.outlier_mads,
        help="group filter: a pair is an outlier when its support (mean cosine to its --filter_neighbours "
             "nearest members of its label) is below the label's median support minus this many robust standard "
             "deviations (1.4826 x MAD) AND another label supports it more (transforms/group_filter.py)")
    add("--filter_neighbours", type=int, default=GroupFilterConfig.neighbours,
        help="members of its own label a pair must look like (a label may have several looks)")
    add("--filter_sample", type=int, default=GroupFilterConfig.sample_size,
        help="reference members per label the group filter compares against (bounds memory per label)")
    add("--min_label_count", type=int, default=0,
        help=f"labels with fewer pairs are dropped as rare_label; 0 = auto: {GroupFilterConfig.min_label_count} "
             f"from {AUTO_MIN_COUNT_IMAGES} images on, 1 below (a handful of images cannot form groups)")
    # output + index
    add("--embedding_dtype", choices=EMBEDDING_DTYPES, default=IndexJobConfig.embedding_dtype)
    add("--memory_budget", default=IndexBuildConfig.memory_budget, help="FAISS index memory budget, e.g. 2GB")
    add("--recall_target", type=float, default=IndexBuildConfig.recall_target)
    add("--skip_index", action="store_true", help="write the shards and manifest but no FAISS index")
    add("--no_progress", action="store_true", help="no progress bars (images processed, FAISS stages)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="Build a ReME reference set (segments + labels + FAISS index) with Apache Beam.",
        epilog="Any other flag goes to Beam (e.g. --runner DataflowRunner --project P --region R "
               "--temp_location gs://b/tmp --setup_file ./setup.py).",
    )
    add_index_flags(parser)
    return parser


def models_config(args: argparse.Namespace) -> ModelsConfig:
    """The typed models configuration of a run (recorded in the manifest; resolved again on each worker)."""
    return ModelsConfig(
        preset=args.preset,
        cache_dir=args.cache_dir,
        masker=MaskerConfig(
            kind=args.masker,
            min_area=args.min_area,
            max_masks=args.max_masks,
            felzenszwalb=dataclasses.replace(
                FelzenszwalbConfig(), scale=args.felzenszwalb_scale, min_size=args.felzenszwalb_min_size
            ),
            sam=dataclasses.replace(
                SamConfig(), model_type=args.sam_model_type, checkpoint=args.sam_checkpoint,
                points_per_side=args.sam_points_per_side,
            ),
        ),
        visual=VisualEncoderConfig(
            kind=args.visual_kind, model_id=args.visual_model, image_size=args.visual_image_size,
            batch_size=args.visual_batch_size or VisualEncoderConfig.batch_size, device=args.device,
            precision=args.precision,
        ),
        clip=ClipConfig(model_id=args.clip_model, batch_size=args.clip_crop_batch_size, device=args.device,
                        precision=args.precision),
        text=TextEncoderConfig(kind=args.text_kind, model_id=args.text_model, device=args.device),
        captioner=CaptionerConfig(kind=args.captioner_kind, model_id=args.captioner_model, prompt=args.captioner_prompt,
                                  batch_size=args.caption_batch_size, device=args.device, precision=args.precision),
    )


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        mask_batch_size=args.mask_batch_size,
        pairing_batch_size=getattr(args, "clip_batch_size", WorkerConfig.pairing_batch_size),
        label_batch_size=getattr(args, "label_batch_size", WorkerConfig.label_batch_size),
        torch_threads=args.torch_threads, large_model=args.large_model, model_copies=args.model_copies,
    )


def index_config(args: argparse.Namespace) -> IndexJobConfig:
    """Flags -> the typed job configuration (not yet validated)."""
    inputs = args.input
    annotations = tuple(args.annotations or ())
    if not inputs and args.label_source == "annotations" and len(annotations) == 1 \
            and not annotations[0].lower().endswith(".json"):
        inputs = [storage.join(annotations[0], "images")]
    return IndexJobConfig(
        inputs=tuple(inputs or ()),
        output=(args.output or "").rstrip("/"),
        label_source=args.label_source,
        annotations=annotations,
        ignore_index=tuple(args.ignore_index or ()),
        panoptic_dir=args.panoptic_dir,
        coco_crowd=args.coco_crowd,
        captions=args.captions,
        overwrite=args.overwrite,
        num_shards=args.num_shards,
        images_per_shard=args.images_per_shard,
        embedding_dtype=args.embedding_dtype,
        read=ReadConfig(max_side=args.max_side, max_pixels=args.max_pixels),
        models=models_config(args),
        workers=worker_config(args),
        group_filter=GroupFilterConfig(neighbours=args.filter_neighbours, outlier_mads=args.outlier_mads,
                                       sample_size=args.filter_sample, min_label_count=args.min_label_count),
        index=IndexBuildConfig(memory_budget=args.memory_budget, recall_target=args.recall_target,
                               skip=args.skip_index),
        failures=failure_config(args),
        progress=not args.no_progress,
    )


def parse(argv=None) -> tuple[IndexJobConfig, list[str]]:
    """argv -> (validated IndexJobConfig, the flags left for Beam); a bad flag exits 2 with one line."""
    parser = get_args_parser()
    args, beam_args = parser.parse_known_args(argv)
    try:
        return index_config(args).validate(), beam_args
    except UsageError as exc:
        parser.error(str(exc))
