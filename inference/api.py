"""The Python API, for notebooks: browse and search a reference set, label images with any class list.

    from inference import Labeller, ReferenceSet

    ref = ReferenceSet.open("out/reference")            # local or gs://
    ref.counts                                          # images, segments kept, dropped by reason, labels, ...
    ref.labels_table().to_pandas()                      # Arrow tables; .to_pandas() where pandas is installed
    ref.search_text("a small dog", k=5)                 # nearest reference labels, through the index's text encoder
    ref.search_image("photo.jpg", k=5)                  # its segments -> nearest reference segments
    result = Labeller(ref, ["cat", "dog", "sky"]).label("photo.jpg")   # a path, a PIL image or a uint8 array
    result.label_map, result.segments, result.classes

No second path: both run the per-image functions of `reme label`'s Beam steps, with the same models and defaults.

    step     reme label (transforms/)                  the function both call
    Read     ReadNamed -> DecodeImage                  models.images.decode_image_sized (decode_pil_image: in memory)
    Mask     MaskerModelHandler                        models.maskers.build_step_masker, mask_images
    Embed    VisualModelHandler                        models.visual.embed_images
    Label    LabelModelHandler                         inference.labeller.Labeller.build, decide_images
    Write    WriteImageOutputs                         inference.labeller.paint_segments, inference.outputs

The models are the index's own, resolved by `labelling_models` (which `reme label` calls too) and checked against
the encoders the index was built with; the working size and the scoring rule default to the same dataclass defaults
(models.images.DEFAULT_MAX_SIDE, inference.labeller.LabelRequest). So the label map of an image equals the PNG
`reme label` writes for it (tests/inference/test_api.py). Models load on first use and are shared by the
ReferenceSet and every Labeller made from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from inference import outputs
from inference.datasets import ignore_value_for
from inference.labeller import ImageLabels, LabelRequest, paint_segments, parse_class_aliases
from inference.labeller import Labeller as DecisionLabeller
from inference.scoring import l2_normalise
from models.config import ModelsConfig
from models.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DecodedImage, decode_image_sized, decode_pil_image
from models.maskers import build_step_masker, mask_images, segment_fields
from models.presets import preset_refusal, resolve_models
from models.rle import decode_masks
from models.text import build_text_encoder
from models.visual import VisualEncoder, embed_images
from refset import reader, storage
from refset.reader import ReferenceSetError, encoder_mismatch

__all__ = ["LabelResult", "Labeller", "ReferenceSet", "check_encoders", "labelling_models"]


# ---------------------------------------------------------------------------------------------------------
# Which models label with a reference set: shared by `reme label` (pipeline.label_job) and this API
# ---------------------------------------------------------------------------------------------------------
def labelling_models(ref: reader.ReferenceSet, *, preset: str | None = None, cache_dir: str | None = None,
                     masker: str | None = None, min_area: int | None = None, visual_kind: str | None = None,
                     visual_model: str | None = None, text_kind: str | None = None, text_model: str | None = None,
                     device: str | None = None, visual_batch_size: int | None = None) -> ModelsConfig:
    """The index's own models (manifest "models") with the run's choices applied (None = the index's); the
    keywords are the fields of pipeline.config.ModelChoices. ReferenceSetError when the manifest records no models
    and nothing says which to use."""
    base = ref.models_config()
    if base is None:
        if not preset and not (visual_kind or visual_model):
            raise ReferenceSetError(f"the manifest of {ref.root} records no model configuration; pass --preset or "
                                    "--visual_model/--text_model")
        base = ModelsConfig()
    models = dataclasses.replace(base, preset=preset or base.preset, cache_dir=cache_dir or base.cache_dir)
    chosen_masker = models.masker
    if masker:
        chosen_masker = dataclasses.replace(chosen_masker, kind=masker)
    if min_area is not None:
        chosen_masker = dataclasses.replace(chosen_masker, min_area=min_area)
    visual = dataclasses.replace(models.visual, kind=visual_kind or models.visual.kind,
                                 model_id=visual_model or models.visual.model_id)
    text = models.text
    if text_model:
        text = dataclasses.replace(text, model_id=text_model, kind=text_kind or text.kind)
    if device:
        visual, text = dataclasses.replace(visual, device=device), dataclasses.replace(text, device=device)
    if visual_batch_size:
        visual = dataclasses.replace(visual, batch_size=visual_batch_size)
    models = dataclasses.replace(models, masker=chosen_masker, visual=visual, text=text)
    if refusal := preset_refusal(models):  # e.g. --visual_model with a preset that would replace it
        raise ReferenceSetError(refusal)
    return models


def check_encoders(ref: reader.ReferenceSet, models: ModelsConfig) -> ModelsConfig:
    """The resolved models (presets materialised), refused with one line (ReferenceSetError) when their visual or
    text encoder is not the one the index was built with (compared on the resolved ids)."""
    try:
        resolved = resolve_models(models)
    except ValueError as exc:
        raise ReferenceSetError(str(exc)) from exc
    for role, cfg, recorded in (("visual", resolved.visual, ref.visual_info), ("text", resolved.text, ref.text_info)):
        if not recorded:
            continue
        why = encoder_mismatch(recorded, {"kind": cfg.kind, "model_id": cfg.model_id, "revision": cfg.revision})
        if why:
            raise ReferenceSetError(f"the index at {ref.root} was built with another {role} encoder ({why}); label "
                                    "with the index's own models (drop the override) or rebuild the index")
    return resolved


# ---------------------------------------------------------------------------------------------------------
# Images in, the labelling job's item out
# ---------------------------------------------------------------------------------------------------------
ImageLike = str | Path | bytes | Image.Image | np.ndarray


def decode(image: ImageLike, max_side: int = DEFAULT_MAX_SIDE,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[DecodedImage, str]:
    """(decoded image at the working size, its uri): a path (local or gs://) is read and decoded as `reme label`
    reads its inputs; bytes are an encoded file; a PIL image or a uint8 array goes through the same conversions."""
    if isinstance(image, (str, Path)):
        uri = str(image)
        return decode_image_sized(storage.read_bytes(uri), max_side, max_pixels), uri
    if isinstance(image, (bytes, bytearray)):
        return decode_image_sized(bytes(image), max_side, max_pixels), "<bytes>"
    uri = getattr(image, "filename", "") or f"<{type(image).__name__}>"
    return decode_pil_image(image, max_side, max_pixels), uri


def image_item(decoded: DecodedImage, uri: str) -> dict:
    """The labelling job's per-image item (transforms.images.DecodeImage makes the same fields)."""
    pixels = decoded.pixels
    return {"uri": uri, "image": pixels, "height": int(pixels.shape[0]), "width": int(pixels.shape[1]),
            "source_height": decoded.source_height, "source_width": decoded.source_width, "failure": None}


def mask_item(item: dict, mask: np.ndarray) -> None:
    """A caller's own mask (bool, at the image's own size or at the working size) as the item's one segment."""
    mask = np.asarray(mask).astype(bool)
    working = (item["height"], item["width"])
    if mask.shape == (item["source_height"], item["source_width"]) and mask.shape != working:
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(working[::-1], Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    if mask.shape != working:
        raise ValueError(f"the mask is {list(mask.shape)}; the image is {[item['source_height'], item['source_width']]}"
                         f" (working size {list(working)})")
    if not mask.any():
        raise ValueError("the mask is empty")
    item.update(segment_fields(mask[None], np.ones(1, np.float32), 1))


# ---------------------------------------------------------------------------------------------------------
# ReferenceSet: refset.reader's, plus the models to search it
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ReferenceSet(reader.ReferenceSet):
    """A reference set opened for browsing and search. Tables: `counts`, `labels_table()`, `segments_table()`,
    `segments_at(positions)`, `dropped_table()`, `failures_table()` (refset.reader); searches: `search_text`,
    `search_image`. Models (the index's own) load on first use."""

    choices: dict = field(default_factory=dict, repr=False)  # labelling_models keywords
    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    _models: ModelsConfig | None = field(default=None, repr=False)
    _loaded: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, root: str | Path, visual: Any = None, *, preset: str | None = None, cache_dir: str | None = None,
             device: str | None = None, masker: str | None = None, min_area: int | None = None,
             max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> ReferenceSet:
        """Open the reference set at `root` (local or gs://). The keywords are `reme label`'s flags of the same
        names: the models preset and its cache (default: the index's own), the device, the masker and the working
        size images are decoded at."""
        ref = super().open(str(root), visual)
        ref.choices = {key: value for key, value in (("preset", preset), ("cache_dir", cache_dir), ("device", device),
                                                     ("masker", masker), ("min_area", min_area)) if value is not None}
        ref.max_side, ref.max_pixels = max_side, max_pixels
        return ref

    # ---- models, loaded once ------------------------------------------------------------------------------
    @property
    def models(self) -> ModelsConfig:
        """The resolved models this set labels and searches with (the index's own, checked)."""
        if self._models is None:
            self._models = check_encoders(self, labelling_models(self, **self.choices))
        return self._models

    def _model(self, role: str):
        if role not in self._loaded:
            build = {"masker": build_step_masker, "visual": lambda m: VisualEncoder(m.visual),
                     "text": lambda m: build_text_encoder(m.text)}[role]
            self._loaded[role] = build(self.models)
        return self._loaded[role]

    # ---- the per-image steps of reme label ----------------------------------------------------------------
    def segment(self, image: ImageLike, mask: np.ndarray | None = None) -> dict:
        """Read, Mask and Embed one image as `reme label` does: its item with segment fields and `visual`
        embeddings of the `to_embed` segments. With `mask`, that mask is the one segment (no masker)."""
        item = image_item(*decode(image, self.max_side, self.max_pixels))
        if mask is None:
            item.update(mask_images(self._model("masker"), [item["image"]], self.models.masker.min_area)[0])
        else:
            mask_item(item, mask)
        if len(item["to_embed"]):
            item["visual"] = embed_images(self._model("visual"), [item])[0]
        return item

    # ---- search -------------------------------------------------------------------------------------------
    def search_text(self, text: str | list[str], k: int = 10) -> pa.Table:
        """The k reference labels nearest to each text (cosine of the index's text embeddings: the table the
        labeller scores classes through). Columns: query, rank, label_id, label, count, similarity; the label's
        segments are `segments_table(label_ids=...)`."""
        texts = [text] if isinstance(text, str) else list(text)
        label_text = self.label_text_embeddings()
        queries = l2_normalise(np.asarray(self._model("text").encode(texts), dtype=np.float32))
        sims = queries @ l2_normalise(label_text).T  # [Q, L]
        k = max(0, min(int(k), sims.shape[1]))
        rows = []
        names, ids, counts = self.label_names, self.label_ids, self.label_counts
        for q, query in enumerate(texts):
            for rank, j in enumerate(np.argsort(-sims[q], kind="stable")[:k]):
                rows.append({"query": query, "rank": rank, "label_id": int(ids[j]), "label": names[j],
                             "count": int(counts[j]), "similarity": float(sims[q, j])})
        return pa.Table.from_pylist(rows, schema=TEXT_HITS)

    def search_image(self, image: ImageLike, mask: np.ndarray | None = None, k: int = 10) -> pa.Table:
        """The k reference segments nearest to each segment of an image (its visual embeddings, the retrieval key of
        `reme label`), or to the one region `mask` (bool [H,W] at the image's size). Columns: query_segment (index
        into the image's kept segments), rank, similarity, then the reference segment (segments_at columns)."""
        item = self.segment(image, mask)
        queries = item.get("visual", np.zeros((0, int(self.index.d)), np.float32))
        k = max(1, min(int(k), int(self.index.ntotal)))
        if len(queries) == 0:
            return _image_hits(self.segments_at([]), np.zeros(0, np.int64), np.zeros(0, np.int64),
                               np.zeros(0, np.float32))
        sims, positions = self.index.search(np.ascontiguousarray(l2_normalise(queries), dtype=np.float32), k)
        query, rank = np.nonzero(positions >= 0)
        found = self.segments_at(positions[query, rank])
        return _image_hits(found, query, rank, sims[query, rank])


TEXT_HITS = pa.schema([("query", pa.string()), ("rank", pa.int32()), ("label_id", pa.int32()), ("label", pa.string()),
                       ("count", pa.int64()), ("similarity", pa.float32())])


def _image_hits(found: pa.Table, query: np.ndarray, rank: np.ndarray, sims: np.ndarray) -> pa.Table:
    head = pa.table({"query_segment": pa.array(np.asarray(query, np.int32)),
                     "rank": pa.array(np.asarray(rank, np.int32)),
                     "similarity": pa.array(np.asarray(sims, np.float32))})
    for name in found.column_names:
        head = head.append_column(name, found.column(name))
    return head


# ---------------------------------------------------------------------------------------------------------
# Labeller: a class list over a reference set
# ---------------------------------------------------------------------------------------------------------
@dataclass
class LabelResult:
    """One labelled image.

    label_map: [H, W] class ids at the image's own (upright) size, `ignore_value` where unlabelled: the pixels of
      the PNG `reme label` writes. segments: one row per segment, the columns of reme label's segments/*.parquet
      (class_id, class_name, score, area and mask_rle at the working size `height` x `width`).
    """

    uri: str
    class_names: tuple[str, ...]
    ignore_value: int
    label_map: np.ndarray
    segments: pa.Table
    labels: ImageLabels = field(repr=False)

    @property
    def classes(self) -> pa.Table:
        """One row per class present: class_id, class_name, area (pixels at the image's size), bbox (x, y, w, h)
        and score (the area-weighted mean confidence of its segments): the COCO export's annotation per class."""
        regions = outputs.class_regions(self.labels, self.ignore_value)
        return pa.table({
            "class_id": pa.array([r["class_id"] for r in regions], pa.int32()),
            "class_name": pa.array([self.class_names[r["class_id"]] for r in regions], pa.string()),
            "area": pa.array([r["area"] for r in regions], pa.int64()),
            "bbox": pa.array([r["bbox"] for r in regions], pa.list_(pa.float32(), 4)),
            "score": pa.array([r["score"] for r in regions], pa.float32()),
        })

    def coco_annotations(self, image_id: int = 1) -> list[dict]:
        """The image's annotations as in `reme label --format coco` (RLE at the image's size, category = class + 1)."""
        return [outputs.coco_annotation(r, image_id) for r in outputs.class_regions(self.labels, self.ignore_value)]

    def masks(self) -> np.ndarray:
        """bool [N, h, w]: the segments' masks at the working size (decoded from their RLE)."""
        h, w = (self.labels.working_map.shape if self.labels.working_map is not None else self.label_map.shape)
        return decode_masks(self.segments.column("mask_rle").to_pylist(), h, w)


class Labeller:
    """Label images with any class names over a reference set, exactly as `reme label` does.

        labeller = Labeller(ref, ["cat", "dog", "sky"])      # or Labeller("out/reference", "cat,dog,sky")
        result = labeller.label("photo.jpg")

    `reference`: an opened ReferenceSet (its models are shared) or its path; `classes`: a list or "a,b,c". A class
    may have aliases, scored as one class (the max over its names): `["person, man, woman", "cat"]`,
    `[("person", "man"), "cat"]` or "person, man; cat" (inference.labeller.parse_class_aliases). The
    keywords are `reme label`'s scoring flags, with the same defaults (inference.labeller.LabelRequest).
    """

    def __init__(self, reference: ReferenceSet | reader.ReferenceSet | str | Path, classes: str | list[str], *,
                 strategy: str = LabelRequest.strategy, k: int = LabelRequest.k, tau: float = LabelRequest.tau,
                 threshold: float | None = LabelRequest.threshold, fill_uncovered: bool = LabelRequest.fill_uncovered,
                 **open_options):
        if not isinstance(reference, ReferenceSet):
            root = reference.root if isinstance(reference, reader.ReferenceSet) else reference
            reference = ReferenceSet.open(root, **open_options)
        elif open_options:
            raise TypeError(f"{', '.join(open_options)}: give these to ReferenceSet.open")
        if isinstance(classes, str):
            aliases = parse_class_aliases(text=classes)
        else:  # each item is a class: "person, man, woman" or ("person", "man", "woman")
            aliases = parse_class_aliases(lines=[c if isinstance(c, str) else ",".join(c) for c in classes])
        names = [a[0] for a in aliases]
        self.reference = reference
        self.request = LabelRequest(class_names=tuple(names), aliases=tuple(aliases), strategy=strategy, k=k,
                                    tau=tau, threshold=threshold, ignore_value=ignore_value_for(len(names)),
                                    fill_uncovered=fill_uncovered)
        self.decider = DecisionLabeller.from_text_encoder(reference, reference._model("text"), self.request)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.request.class_names

    def label(self, image: ImageLike, mask: np.ndarray | None = None) -> LabelResult:
        """Label one image (a path, bytes, a PIL image or a uint8 array); with `mask`, only that region (one
        segment) is labelled."""
        item = self.reference.segment(image, mask)
        (decision,) = self.decider.decide_images([item.get("visual")])
        labels = paint_segments(item, decision, self.request)
        return self._result(item, labels)

    def label_many(self, images: list[ImageLike]) -> list[LabelResult]:
        """Label several images; their segments are retrieved together, as in one batch of `reme label`."""
        items = [self.reference.segment(image) for image in images]
        decisions = self.decider.decide_images([item.get("visual") for item in items])
        return [self._result(item, paint_segments(item, d, self.request))
                for item, d in zip(items, decisions, strict=True)]

    def _result(self, item: dict, labels: ImageLabels) -> LabelResult:
        segments = item.get("to_embed", np.zeros(0, np.int64))
        working = labels.working_map if labels.working_map is not None else labels.label_map
        table = outputs.segments_table(item["uri"], labels.class_ids, labels.scores, labels.areas,
                                       [item["rles"][i] for i in segments], working.shape[0], working.shape[1],
                                       list(self.class_names), *labels.label_map.shape)
        return LabelResult(item["uri"], self.class_names, self.request.ignore_value, labels.label_map, table, labels)
