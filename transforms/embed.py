"""Embedding stages as RunInference ModelHandlers, batched across images.

* VisualModelHandler — the retrieval key and filtering signal: one forward of the visual encoder per image
  (images are resized to its fixed square input, so images of any size batch together), segment masks
  mask-pooled from the patch tokens (models.visual.VisualEncoder.embed_segments).
* PairingModelHandler — for the caption sources only: CLIP embeddings of the segments (masked crops) and CLIP
  text embeddings of the image's candidate labels (prompt ensemble), the two sides of the paper's pairing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from models.clip import ClipEncoder
from models.config import ModelsConfig, TextEncoderConfig
from models.rle import decode_masks
from models.text import build_text_encoder
from models.visual import VisualEncoder
from transforms.handlers import ItemModelHandler, ModelBundle


def kept_masks(item: dict) -> np.ndarray:
    """Dense bool [n_kept,H,W] of the segments that passed the area filter, decoded from RLE just for the forward."""
    keep = np.flatnonzero(item["keep"])
    return decode_masks([item["rles"][i] for i in keep], item["height"], item["width"])


def has_segments(item: dict) -> bool:
    return bool(np.any(item.get("keep", ())))


class VisualModelHandler(ItemModelHandler):
    stage = "embed"
    metrics_name = "visual"

    def build(self, models: ModelsConfig):
        return VisualEncoder(models.visual)

    def wants(self, item: dict) -> bool:
        return has_segments(item)

    def apply(self, items: list[dict], encoder) -> None:
        embeddings = encoder.embed_segments([it["image"] for it in items], [kept_masks(it) for it in items])
        for item, emb in zip(items, embeddings, strict=True):
            item["visual"] = np.asarray(emb, dtype=np.float32)


def clip_text_config(models: ModelsConfig) -> TextEncoderConfig:
    """The CLIP text tower of the pairing model (same checkpoint as the CLIP image side, so S·Lᵀ is meaningful)."""
    return dataclasses.replace(
        models.text, kind="clip", model_id=models.clip.model_id, revision=models.clip.revision, device=models.clip.device
    )


class PairingModelHandler(ItemModelHandler):
    """CLIP segment and label embeddings for pairing.

    Both are computed so that a value never depends on which other images shared its batch (a resumed run must
    reproduce an uninterrupted one bit for bit, and batched matmuls of other shapes differ in the last bits):
    segment crops are embedded image by image (an image's crops still form large batches), and each label text is
    embedded on its own once per worker and then served from a cache (a caption vocabulary saturates quickly).
    """

    stage = "embed"
    metrics_name = "pairing"
    LABEL_CACHE_SIZE = 50_000

    def build(self, models: ModelsConfig):
        return ModelBundle(clip=ClipEncoder(models.clip), text=build_text_encoder(clip_text_config(models)),
                           label_cache={})

    def wants(self, item: dict) -> bool:
        return has_segments(item) and bool(item.get("labels"))

    def label_embedding(self, model, label: str) -> np.ndarray:
        cache = model.label_cache
        if label not in cache:
            if len(cache) >= self.LABEL_CACHE_SIZE:
                cache.clear()
            cache[label] = np.asarray(model.text.encode([label]), dtype=np.float32)[0]
        return cache[label]

    def apply(self, items: list[dict], model) -> None:
        for item in items:
            (segment_embeddings,) = model.clip.embed_segments([item["image"]], [kept_masks(item)])
            item["clip"] = np.asarray(segment_embeddings, dtype=np.float32)
            item["label_embeddings"] = np.stack([self.label_embedding(model, label) for label in item["labels"]])
