"""The Pair step, the paper's initial pairing (ReME §3): each label takes the segment most similar to it.

S (m x d) segment embeddings and L (n x d) label embeddings, both unit vectors; sim = S·Lᵀ; label j is paired
with i* = argmax_i sim[i, j] and the pair score is that cosine. Segments no label picked are dropped as
"unpaired". A segment picked by several labels yields one pair per label (the paper pairs labels, not
segments); those pairs share the segment's id and are told apart by their label.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.clip import ClipEncoder
from models.config import ModelsConfig, TextEncoderConfig
from models.text import build_text_encoder
from transforms.embed import masks_of
from transforms.handlers import ItemModelHandler, ModelBundle


@dataclass(frozen=True)
class Pairing:
    segment: np.ndarray  # int64 [n_pairs]: index into S of each label's segment
    label: np.ndarray  # int64 [n_pairs]: index into L (pairs are in label order)
    score: np.ndarray  # float32 [n_pairs]: cosine of the pair
    unpaired: np.ndarray  # int64: segment indices no label picked (ascending)


def pair_segments(segments: np.ndarray, labels: np.ndarray) -> Pairing:
    """Pair every label with its best segment. Empty inputs give empty pairings (all segments unpaired)."""
    segments = np.asarray(segments, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.float32)
    m, n = len(segments), len(labels)
    if m == 0 or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairing(empty, empty, np.zeros(0, dtype=np.float32), np.arange(m, dtype=np.int64))
    if segments.shape[1] != labels.shape[1]:
        raise ValueError(f"segment dim {segments.shape[1]} != label dim {labels.shape[1]}: use the same CLIP model")
    sim = segments @ labels.T  # [m, n]
    best = sim.argmax(axis=0)  # first maximum on ties: deterministic
    label_idx = np.arange(n, dtype=np.int64)
    picked = np.zeros(m, dtype=bool)
    picked[best] = True
    return Pairing(
        segment=best.astype(np.int64),
        label=label_idx,
        score=sim[best, label_idx].astype(np.float32),
        unpaired=np.flatnonzero(~picked).astype(np.int64),
    )


def paired_with_segments(pairing: Pairing, candidates: np.ndarray) -> Pairing:
    """A pairing over `candidates` (indices of the image's segments) re-expressed in the image's own indices."""
    candidates = np.asarray(candidates, dtype=np.int64)
    return dataclasses.replace(pairing, segment=candidates[pairing.segment], unpaired=candidates[pairing.unpaired])


# ---------------------------------------------------------------------------------------------------------
# Beam shell
# ---------------------------------------------------------------------------------------------------------
def clip_text_config(models: ModelsConfig) -> TextEncoderConfig:
    """The CLIP text tower of the pairing model (same checkpoint as the CLIP image side, so S·Lᵀ is meaningful)."""
    return dataclasses.replace(
        models.text, kind="clip", model_id=models.clip.model_id, revision=models.clip.revision, device=models.clip.device
    )


class PairingModelHandler(ItemModelHandler):
    """item with segments and candidate `labels` -> `pairing` (in the image's segment indices) and `to_embed`
    narrowed to the paired segments, from CLIP embeddings of the segments (masked crops) and of the labels.

    Both embeddings are computed so that a value never depends on which other images shared its batch (a resumed
    run must reproduce an uninterrupted one bit for bit, and batched matmuls of other shapes differ in the last
    bits): segment crops are embedded image by image (an image's crops still form large batches), and each label
    text is embedded on its own (its prompt templates in one forward pass: TextEncoder.encode_each) once per worker
    and then served from a cache (a caption vocabulary saturates). The labels a batch needs that the cache lacks are
    embedded together in that one call.
    """

    stage = "pair"
    metrics_name = "pairing"
    LABEL_CACHE_SIZE = 50_000

    def build(self, models: ModelsConfig):
        return ModelBundle(clip=ClipEncoder(models.clip), text=build_text_encoder(clip_text_config(models)),
                           label_cache={})

    def wants(self, item: dict) -> bool:
        return bool(np.any(item.get("keep", ()))) and bool(item.get("labels"))

    def label_embeddings(self, model, labels: list[str]) -> dict[str, np.ndarray]:
        """{label: text embedding} for the labels of a batch; the ones not cached are embedded in one call."""
        cache = model.label_cache
        missing = sorted({label for label in labels if label not in cache})
        if missing:
            if len(cache) + len(missing) > self.LABEL_CACHE_SIZE:
                cache.clear()
            cache.update(zip(missing, np.asarray(model.text.encode_each(missing), dtype=np.float32), strict=True))
        return {label: cache[label] for label in labels}

    def label_embedding(self, model, label: str) -> np.ndarray:
        return self.label_embeddings(model, [label])[label]

    def apply(self, items: list[dict], model) -> None:
        self.label_embeddings(model, [label for item in items for label in item["labels"]])
        for item in items:
            kept = np.flatnonzero(item["keep"])
            (segment_embeddings,) = model.clip.embed_segments([item["image"]], [masks_of(item, kept)])
            labels = np.stack([self.label_embedding(model, label) for label in item["labels"]])
            item["pairing"] = paired_with_segments(pair_segments(segment_embeddings, labels), kept)
            item["to_embed"] = np.unique(item["pairing"].segment)
