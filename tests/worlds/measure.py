"""Measuring label quality on a generated world, the way a user's run would produce it.

    ref = build_reference(world.train, tmp / "ref", cache_dir)       # the real index job (annotations source)
    feats = segment_and_embed(world.test, ref)                        # masks + embeddings, as `reme label` makes them
    summary = evaluate(ref, feats, LabelRequest(CLASSES))             # inference.labeller + inference.metrics

`segment_and_embed` runs the index's own masker and visual encoder (the models `reme label` resolves for that
index), so re-scoring its output with another `LabelRequest` gives what `reme label` with those flags would paint,
without re-running the models: sweeps over k, strategies and reference sets cost numpy time only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inference.labeller import Labeller, LabelRequest
from inference.metrics import ConfusionMatrix
from models.maskers import build_masker
from models.presets import resolve_models
from models.text import build_text_encoder
from models.visual import VisualEncoder
from pipeline.config import ModelChoices
from pipeline.label_job import resolve_label_models
from refset.reader import ReferenceSet
from tests.worlds.hard import CLASSES, IGNORE


def build_reference(annotations: Path, out: Path, cache_dir: str, *extra: str) -> Path:
    """A GT reference set built by the real index job (annotations source, tiny-random preset)."""
    from pipeline.build_index import run

    run(["--label_source", "annotations", "--annotations", str(annotations), "--output", str(out),
         "--preset", "tiny-random", "--cache_dir", str(cache_dir), "--ignore_index", str(IGNORE), *extra],
        save_main_session=False)
    return Path(out)


@dataclass
class Features:
    names: list[str]
    masks: list[np.ndarray]  # bool [N_i, H, W] per image: the segments `reme label` keeps
    embeddings: list[np.ndarray]  # float32 [N_i, D]
    truth: list[np.ndarray]  # int [H, W] ground-truth label maps


def index_models(reference: Path):
    """The resolved models `reme label` uses for this index (its manifest's, no overrides)."""
    return resolve_models(resolve_label_models(ReferenceSet.open(str(reference)), ModelChoices()))


def segment_and_embed(split: Path, reference: Path, device: str = "cpu") -> Features:
    models = index_models(reference)
    # As transforms.masks: the masker sees every segment, then those under min_area are not kept.
    masker = build_masker(dataclasses.replace(models.masker, min_area=0), device=device)
    encoder = VisualEncoder(dataclasses.replace(models.visual, device=device))
    names, masks, truth, images = [], [], [], []
    for path in sorted((Path(split) / "images").glob("*.png")):
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(Path(split) / "labels" / path.name) as im:
            truth.append(np.asarray(im).astype(np.int64))
        segments = masker(image)
        kept = segments.masks[segments.areas >= max(int(models.masker.min_area), 1)]
        names.append(path.stem)
        masks.append(kept)
        images.append(image)
    embeddings = encoder.embed_segments(images, masks)
    return Features(names, masks, embeddings, truth)


def labeller_for(reference: Path | ReferenceSet, request: LabelRequest, text_encoder=None) -> Labeller:
    ref = reference if isinstance(reference, ReferenceSet) else ReferenceSet.open(str(reference))
    if text_encoder is None:
        text_encoder = build_text_encoder(dataclasses.replace(index_models(Path(ref.root)).text, device="cpu"))
    return Labeller.from_text_encoder(ref, text_encoder, request)


def evaluate(reference, features: Features, request: LabelRequest, text_encoder=None,
             class_names: tuple[str, ...] = CLASSES) -> dict:
    """mIoU summary (inference.metrics) of the label maps the labeller paints for `features`."""
    labeller = labeller_for(reference, request, text_encoder)
    results = labeller.label_batch(features.masks, features.embeddings)
    cm = ConfusionMatrix(len(class_names), IGNORE)
    for result, truth in zip(results, features.truth, strict=True):
        cm.update(result.label_map, truth)
    return cm.summary(list(class_names))
