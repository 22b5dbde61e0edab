"""Every knob of the reference-set job, as a Beam PipelineOptions subclass, and its validation.

`ReferenceSetOptions._add_argparse_args` is the single definition of our flags: `build_index.run()` uses it on a
plain argparse parser (parse_known_args, like Beam's wordcount) and hands everything else to Beam's own
PipelineOptions (runner, project, region, temp_location, setup_file, direct_running_mode, ...).
Validation happens before any work and stops with one line (`parser.error`).
"""

from __future__ import annotations

import argparse
import dataclasses

from apache_beam.options.pipeline_options import PipelineOptions

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
from models.presets import preset_refusal
from refset import storage
from refset.index import parse_memory
from transforms.group_filter import GroupFilterConfig

LABEL_SOURCES = ("annotations", "captions", "captioner")
AUTO_MIN_COUNT_IMAGES = 1000


class ReferenceSetOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add = parser.add_argument
        # I/O
        add("--input", action="append", default=None,
            help="image file, glob or directory, local or gs:// (repeatable); with --label_source annotations "
                 "it defaults to <annotations>/images")
        add("--output", help="reference-set directory, local or gs://")
        add("--overwrite", action="store_true", help="delete the output first and start fresh (default: resume)")
        add("--num_shards", type=int, default=0,
            help="input shards (resume unit, one output part per shard); 0 = ceil(images / images_per_shard)")
        add("--images_per_shard", type=int, default=256, help="images per input shard when --num_shards is 0")
        add("--max_side", type=int, default=1024, help="resize decoded images so the longest side is at most this (0 = keep)")
        add("--max_pixels", type=int, default=100_000_000, help="refuse larger images as decompression bombs")
        # labels
        add("--label_source", choices=LABEL_SOURCES, default="captions")
        add("--annotations", help="annotations directory: images/ + labels/ (label-map PNGs) + classes.txt")
        add("--ignore_index", type=int, action="append", default=None,
            help="label-map value(s) that are no class (repeatable), e.g. 255 for VOC, 0 for ADE20K, 11 for CamVid")
        add("--captions", help="COCO captions JSON or JSONL {\"image\": ..., \"caption\": ...}, matched by file name")
        # models
        add("--preset", default="default", help="models preset: default (configured weights) | tiny-random (offline)")
        add("--cache_dir", default=None, help="where presets materialise weights (default $REME_CACHE or ~/.cache/reme)")
        add("--masker", choices=("felzenszwalb", "sam"), default="felzenszwalb")
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
        add("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        # batching and model sharing (RunInference)
        add("--mask_batch_size", type=int, default=4)
        add("--visual_batch_size", type=int, default=VisualEncoderConfig.batch_size)
        add("--clip_batch_size", type=int, default=8, help="images per CLIP pairing batch")
        add("--caption_batch_size", type=int, default=CaptionerConfig.batch_size)
        add("--large_model", action="store_true",
            help="share one model per machine across worker processes (RunInference large_model)")
        add("--model_copies", type=int, default=None, help="model copies per machine when shared")
        add("--torch_threads", type=int, default=0, help="torch intra-op threads per worker process (0 = torch default)")
        # quality filtering
        add("--outlier_std", type=float, default=GroupFilterConfig.outlier_std)
        add("--trim_std", type=float, default=GroupFilterConfig.trim_std)
        add("--min_label_count", type=int, default=0,
            help=f"labels with fewer pairs are dropped as rare_label; 0 = auto: {GroupFilterConfig.min_label_count} "
                 f"from {AUTO_MIN_COUNT_IMAGES} images on, 1 below (a handful of images cannot form groups)")
        # output + index
        add("--embedding_dtype", choices=("float16", "float32"), default="float16")
        add("--memory_budget", default="2GB", help="FAISS index memory budget, e.g. 2GB")
        add("--recall_target", type=float, default=0.95)
        add("--skip_index", action="store_true", help="write the shards and manifest but no FAISS index")


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def run_command(main) -> None:
    """Run a command-line entry point, then end the process without interpreter teardown.

    Torch, faiss, pyarrow and grpc each keep native thread pools; tearing them down in interpreter finalisation
    occasionally aborted a run that had already finished, or already printed its one-line error, on a loaded
    machine ("terminate called without an active exception", exit -6). By the time `main` returns or raises,
    outputs are committed and messages printed, so flush and leave directly, with the status Python would give.
    """
    import logging
    import os
    import sys
    import traceback

    try:
        code = main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # SystemExit("message"): Python prints it and exits 1
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m pipeline.build_index",
        description="Build a ReME reference set (segments + labels + FAISS index) with Apache Beam.",
        epilog="Any other flag goes to Beam (e.g. --runner DataflowRunner --project P --region R "
               "--temp_location gs://b/tmp --setup_file ./setup.py).",
    )
    ReferenceSetOptions._add_argparse_args(parser)
    return parser


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Check flag combinations before any work; one-line errors through parser.error (exit status 2)."""
    if not args.output:
        parser.error("--output is required")
    if args.label_source == "annotations":
        if not args.annotations:
            parser.error("--label_source annotations needs --annotations DIR (images/ labels/ classes.txt)")
        if args.captions:
            parser.error("--captions conflicts with --label_source annotations")
        if not args.input:

            args.input = [storage.join(args.annotations, "images")]
    else:
        if args.ignore_index:
            parser.error("--ignore_index only applies to --label_source annotations")
        if args.annotations:
            parser.error(f"--annotations conflicts with --label_source {args.label_source}")
    if args.label_source == "captions" and not args.captions:
        parser.error("--label_source captions needs --captions FILE (COCO captions JSON or JSONL)")
    if args.label_source == "captioner" and args.captions:
        parser.error("--captions conflicts with --label_source captioner (captions are generated)")
    if not args.input:
        parser.error("--input is required (file, glob or directory; repeatable)")
    if args.num_shards < 0 or args.images_per_shard < 1:
        parser.error("--num_shards must be >= 0 and --images_per_shard >= 1")
    if args.max_side < 0 or args.min_area < 0 or args.max_masks < 0:
        parser.error("--max_side, --min_area and --max_masks must be >= 0")
    for name in ("mask_batch_size", "visual_batch_size", "clip_batch_size", "caption_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.model_copies is not None and args.model_copies < 1:
        parser.error("--model_copies must be >= 1")
    if args.outlier_std <= 0 or args.trim_std <= 0:
        parser.error("--outlier_std and --trim_std must be > 0")
    if args.min_label_count < 0:
        parser.error("--min_label_count must be >= 0 (0 = auto)")
    if not 0.0 < args.recall_target <= 1.0:
        parser.error("--recall_target must be in (0, 1]")
    if args.masker == "sam" and args.label_source != "annotations" and args.preset != "tiny-random" and not args.sam_checkpoint:
        parser.error("--masker sam needs --sam_checkpoint (local or gs:// .pth), or use --preset tiny-random")
    try:

        parse_memory(args.memory_budget)
    except (ImportError, ValueError) as exc:
        parser.error(f"--memory_budget: {exc}")
    if refusal := preset_refusal(models_config(args)):  # a preset never silently replaces a model setting
        parser.error(refusal)
    return args


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
            batch_size=args.visual_batch_size, device=args.device,
        ),
        clip=ClipConfig(model_id=args.clip_model, batch_size=max(ClipConfig.batch_size, args.clip_batch_size),
                        device=args.device),
        text=TextEncoderConfig(kind=args.text_kind, model_id=args.text_model, device=args.device),
        captioner=CaptionerConfig(kind=args.captioner_kind, model_id=args.captioner_model, prompt=args.captioner_prompt,
                                  batch_size=args.caption_batch_size, device=args.device),
    )


def group_filter_config(args: argparse.Namespace, num_images: int | None = None) -> GroupFilterConfig:
    min_count = args.min_label_count
    if min_count == 0:
        min_count = GroupFilterConfig.min_label_count if (num_images or 0) >= AUTO_MIN_COUNT_IMAGES else 1
    return GroupFilterConfig(outlier_std=args.outlier_std, trim_std=args.trim_std, min_label_count=min_count)
