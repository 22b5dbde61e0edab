"""One typed configuration per job: `IndexJobConfig` (the reference-set job) and `LabelJobConfig` (`reme label`
and `reme evaluate`).

Every default is defined once, in a dataclass: the model settings in models.config, the scoring rule in
inference.labeller.LabelRequest, the group filter in transforms.group_filter.GroupFilterConfig, and the job
settings here. The command-line parsers (pipeline.options, pipeline.cli), the Python API and the benches all read
them from there. `validate()` raises command.UsageError with one line, so a bad setting is refused the same way
from a flag or from Python.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from inference.labeller import LabelRequest
from inference.outputs import FORMATS
from models.config import ModelsConfig
from models.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from models.presets import preset_refusal
from pipeline.command import RunFailure, UsageError
from refset.index import parse_memory
from transforms.failures import RetryPolicy
from transforms.group_filter import GroupFilterConfig

LABEL_SOURCES = ("annotations", "captions", "captioner")
EMBEDDING_DTYPES = ("float16", "float32")
# With min_label_count 0 (auto), runs of this many images or more drop labels seen fewer than
# GroupFilterConfig.min_label_count times; smaller runs keep every label (a handful of images cannot form groups).
AUTO_MIN_COUNT_IMAGES = 1000


@dataclass(frozen=True)
class ReadConfig:
    """How input images are decoded (models.images.decode_image), in both jobs.

    `max_side` is the *working size*: masks, embeddings and (in `reme label`) painting happen there, so memory per
    image is bounded whatever the photo's size; `reme label` then upsamples its label map to each input's own size.
    """

    max_side: int = DEFAULT_MAX_SIDE  # longest side after decoding (0 = keep, unbounded memory on large photos)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger inputs are refused from the header (decompression bombs)

    def validate(self) -> None:
        if self.max_side < 0:
            raise UsageError("--max_side must be >= 0")
        if self.max_pixels < 1:
            raise UsageError("--max_pixels must be >= 1")


@dataclass(frozen=True)
class WorkerConfig:
    """Batching and model sharing on the workers (Beam RunInference), in both jobs.

    Images per visual-encoder or captioner forward are the model configs' own `batch_size`; CLIP crops per forward
    are `ClipConfig.batch_size`. These are the batch sizes of the stages with no model config of their own.
    """

    mask_batch_size: int = 4  # images per masker call
    pairing_batch_size: int = 8  # images per CLIP pairing batch
    label_batch_size: int = 16  # images per retrieval batch (labelling job)
    torch_threads: int = 0  # torch intra-op threads per worker process; 0 = auto (see build_index)
    large_model: bool = False  # one model copy per machine, shared by its worker processes
    model_copies: int | None = None  # model copies per machine when shared

    def validate(self) -> None:
        for name in ("mask_batch_size", "pairing_batch_size", "label_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be >= 1")
        if self.torch_threads < 0:
            raise UsageError("--torch_threads must be >= 0 (0 = auto)")
        if self.model_copies is not None and self.model_copies < 1:
            raise UsageError("--model_copies must be >= 1")


@dataclass(frozen=True)
class FailureConfig:
    """What the jobs do about inputs that fail (transforms.failures), in both jobs.

    A transient error (I/O, timeouts, HTTP 429/5xx, out of memory) is tried again up to `retry_attempts` tries in
    all, waiting `retry_backoff` seconds, doubling each time up to `retry_max_backoff`; other errors fail the input
    at once. A run ends with exit status 1 (RunFailure) when more than `max_failure_rate` of its inputs are in the
    failures, counted over everything the output holds (a resumed run counts the earlier runs' images too).
    """

    max_failure_rate: float = 0.1
    retry_attempts: int = 3
    retry_backoff: float = 1.0  # seconds before the first retry
    retry_max_backoff: float = 30.0

    def validate(self) -> None:
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise UsageError("--max_failure_rate must be in [0, 1]")
        if self.retry_attempts < 1:
            raise UsageError("--retry_attempts must be >= 1 (1 = no retry)")
        if self.retry_backoff < 0 or self.retry_max_backoff < 0:
            raise UsageError("--retry_backoff and --retry_max_backoff must be >= 0")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retry_attempts, self.retry_backoff, self.retry_max_backoff)

    def check(self, failed: int, total: int, by_kind: dict[str, int], where: str) -> None:
        """RunFailure (one line) when `failed` of `total` inputs is over the budget; a run where every input failed
        never passes (not even with --max_failure_rate 1)."""
        if failed == 0 or total == 0:
            return
        rate = failed / total
        if rate <= self.max_failure_rate and failed < total:
            return
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())) or "kinds unknown"
        raise RunFailure(f"{failed} of {total} images failed ({rate:.1%}, over --max_failure_rate "
                         f"{self.max_failure_rate:g}): {kinds}; listed in {where} (the same command again retries them)")


@dataclass(frozen=True)
class IndexBuildConfig:
    """The FAISS step after the pipeline (refset.index.build_index)."""

    memory_budget: str = "2GB"  # memory the loaded index may use (2GB = 2e9 bytes, 2GiB = 2**31)
    recall_target: float = 0.95  # recall@10 against exact search, measured on held-out queries
    skip: bool = False  # write the shards and manifest but no index

    def validate(self) -> None:
        try:
            parse_memory(self.memory_budget)
        except ValueError as exc:
            raise UsageError(f"--memory_budget: {exc}") from exc
        if not 0.0 < self.recall_target <= 1.0:
            raise UsageError("--recall_target must be in (0, 1]")


def _check_batch_sizes(models: ModelsConfig) -> None:
    for flag, value in (("--visual_batch_size", models.visual.batch_size),
                        ("--caption_batch_size", models.captioner.batch_size),
                        ("--clip_crop_batch_size", models.clip.batch_size)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1")


@dataclass(frozen=True)
class IndexJobConfig:
    """Everything one run of the reference-set job needs (python -m pipeline.build_index)."""

    inputs: tuple[str, ...]  # image files, globs or directories, local or gs://
    output: str  # the reference-set directory, local or gs://
    label_source: Literal["annotations", "captions", "captioner"] = "captions"
    # one images/ + labels/ + classes.txt directory, or COCO JSON files: one panoptic file, or instances/stuff files
    # (e.g. COCO-Stuff = instances_*.json for things + stuff_*.json for stuff)
    annotations: tuple[str, ...] = ()
    ignore_index: tuple[int, ...] = ()  # label-map values that are no class
    panoptic_dir: str | None = None  # COCO panoptic PNGs; default: the JSON's path without .json
    coco_crowd: Literal["skip", "keep"] = "skip"  # COCO iscrowd regions (groups of objects): skipped or kept
    captions: str | None = None  # COCO captions JSON or JSONL
    overwrite: bool = False  # delete the output first (default: resume)
    num_shards: int = 0  # input shards; 0 = ceil(images / images_per_shard)
    images_per_shard: int = 256
    embedding_dtype: Literal["float16", "float32"] = "float16"
    read: ReadConfig = field(default_factory=ReadConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    group_filter: GroupFilterConfig = field(default_factory=lambda: GroupFilterConfig(min_label_count=0))
    index: IndexBuildConfig = field(default_factory=IndexBuildConfig)
    failures: FailureConfig = field(default_factory=FailureConfig)
    progress: bool = True  # progress bars on the launcher (images processed, then the FAISS stages)

    @property
    def annotated(self) -> bool:
        return self.label_source == "annotations"

    @property
    def coco_annotations(self) -> bool:
        """--annotations names a COCO JSON (panoptic or instances/stuff, told apart by its content at launch)
        rather than a label-map directory."""
        return self.annotated and bool(self.annotations) and self.annotations[0].lower().endswith(".json")

    def validate(self) -> IndexJobConfig:
        """Check the settings before any work (UsageError, one line); returns self."""
        if not self.output:
            raise UsageError("--output is required")
        if self.label_source not in LABEL_SOURCES:
            raise UsageError(f"--label_source must be one of {', '.join(LABEL_SOURCES)}")
        if self.annotated:
            if not self.annotations:
                raise UsageError("--label_source annotations needs --annotations DIR (images/ labels/ classes.txt)")
            if self.captions:
                raise UsageError("--captions conflicts with --label_source annotations")
            if len({a.lower().endswith(".json") for a in self.annotations}) > 1 or (
                    len(self.annotations) > 1 and not self.coco_annotations):
                raise UsageError("--annotations takes one label-map directory, or COCO JSON files (repeatable)")
            if self.coco_annotations and self.ignore_index:
                raise UsageError("--ignore_index applies to label-map annotations, not to a COCO JSON")
            if not self.coco_annotations and (self.panoptic_dir or self.coco_crowd != "skip"):
                raise UsageError("--panoptic_dir and --coco_crowd apply to COCO JSON annotations (--annotations "
                                 "FILE.json)")
        else:
            if self.ignore_index:
                raise UsageError("--ignore_index only applies to --label_source annotations")
            if self.annotations or self.panoptic_dir:
                raise UsageError(f"--annotations conflicts with --label_source {self.label_source}")
        if self.label_source == "captions" and not self.captions:
            raise UsageError("--label_source captions needs --captions FILE (COCO captions JSON or JSONL)")
        if self.label_source == "captioner" and self.captions:
            raise UsageError("--captions conflicts with --label_source captioner (captions are generated)")
        if self.coco_crowd not in ("skip", "keep"):
            raise UsageError("--coco_crowd must be skip or keep")
        if not self.inputs:
            if self.coco_annotations:
                raise UsageError("--annotations FILE.json needs --input (the images it annotates, e.g. "
                                 "coco/train2017)")
            raise UsageError("--input is required (file, glob or directory; repeatable)")
        if self.num_shards < 0 or self.images_per_shard < 1:
            raise UsageError("--num_shards must be >= 0 and --images_per_shard >= 1")
        if self.embedding_dtype not in EMBEDDING_DTYPES:
            raise UsageError(f"--embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}")
        masker = self.models.masker
        if masker.min_area < 0 or masker.max_masks < 0:
            raise UsageError("--min_area and --max_masks must be >= 0")
        if masker.kind == "sam" and not self.annotated and self.models.preset != "tiny-random" \
                and not masker.sam.checkpoint:
            raise UsageError("--masker sam needs --sam_checkpoint (local or gs:// .pth), or use --preset tiny-random")
        if self.group_filter.outlier_mads <= 0:
            raise UsageError("--outlier_mads must be > 0")
        if self.group_filter.neighbours < 1 or self.group_filter.sample_size < 2:
            raise UsageError("--filter_neighbours must be >= 1 and --filter_sample >= 2")
        if self.group_filter.min_label_count < 0:
            raise UsageError("--min_label_count must be >= 0 (0 = auto)")
        _check_batch_sizes(self.models)
        if refusal := preset_refusal(self.models):  # a setting the preset would have to replace silently
            raise UsageError(refusal)
        for part in (self.read, self.workers, self.index, self.failures):
            part.validate()
        return self

    def group_filter_for(self, num_images: int) -> GroupFilterConfig:
        """The group filter of a run over `num_images` images (min_label_count 0 = auto, see above)."""
        if self.group_filter.min_label_count:
            return self.group_filter
        auto = GroupFilterConfig.min_label_count if num_images >= AUTO_MIN_COUNT_IMAGES else 1
        return dataclasses.replace(self.group_filter, min_label_count=auto)


@dataclass(frozen=True)
class ModelChoices:
    """What `reme label` may choose about models; everything unset (None) is the index's own.

    The visual and text encoders must be the index's (checked at launch); the masker, device and batch sizes
    may differ from how the index was built.
    """

    preset: str | None = None
    cache_dir: str | None = None
    masker: Literal["felzenszwalb", "sam"] | None = None
    min_area: int | None = None
    visual_kind: Literal["dinov2", "clip"] | None = None
    visual_model: str | None = None
    text_kind: Literal["clip", "sentence"] | None = None
    text_model: str | None = None
    device: str | None = None
    visual_batch_size: int | None = None

    def validate(self) -> None:
        if self.min_area is not None and self.min_area < 0:
            raise UsageError("--min_area must be >= 0")
        if self.visual_batch_size is not None and self.visual_batch_size < 1:
            raise UsageError("--visual_batch_size must be >= 1")


@dataclass(frozen=True)
class LabelJobConfig:
    """Everything one labelling run needs (`reme label`; `reme evaluate` labels a benchmark with it)."""

    index: str  # the reference set, local or gs://
    inputs: tuple[str, ...]  # directories, globs or gs:// prefixes of images
    output: str  # where label maps go, local or gs://
    request: LabelRequest  # the classes and the scoring rule
    models: ModelChoices = field(default_factory=ModelChoices)
    read: ReadConfig = field(default_factory=ReadConfig)  # working size; label maps come out at the input's size
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    failures: FailureConfig = field(default_factory=FailureConfig)
    overlay: bool = False  # also write colour overlays with a legend
    progress: bool = True  # a progress bar while labelling
    formats: tuple[str, ...] = ("png",)  # what is written: PNG label maps always, "coco" adds OUTPUT/coco.json

    @property
    def coco(self) -> bool:
        return "coco" in self.formats

    def validate(self) -> LabelJobConfig:
        if not self.inputs:
            raise UsageError("no input given")
        if not self.output:
            raise UsageError("no output directory given")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or "png" not in self.formats:
            raise UsageError(f"--format: {'unknown format ' + repr(unknown[0]) if unknown else 'png is always written'};"
                             f" give one or more of {', '.join(FORMATS)} (e.g. --format png,coco)")
        for part in (self.models, self.read, self.workers, self.failures):
            part.validate()
        return self


def parse_formats(text: str) -> tuple[str, ...]:
    """`--format png,coco` -> ("png", "coco"): the PNG label maps are always written (they mark an image done), so
    `--format coco` means the same; unknown names are kept for validate() to refuse in one line."""
    given = [part.strip().lower() for part in text.split(",") if part.strip()]
    return tuple(["png"] + [f for f in dict.fromkeys(given) if f != "png"])
