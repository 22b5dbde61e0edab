"""The paper's initial pairing (ReME §3): each label takes the segment most similar to it.

S (m x d) segment embeddings and L (n x d) label embeddings, both unit vectors; sim = S·Lᵀ; label j is paired
with i* = argmax_i sim[i, j] and the pair score is that cosine. Segments no label picked are dropped as
"unpaired". A segment picked by several labels yields one pair per label (the paper pairs labels, not
segments); those pairs share the segment's id and are told apart by their label.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from refset import staging
from transforms import records


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


def image_results(item: dict, annotated: bool) -> dict[str, list[dict]]:
    """One processed image item -> its staging rows by kind: pairs, drops, failures, images.

    Accounting: every segment the masker (or the annotation) produced ends up as a pair or a drop;
    a failed image is one failure row and nothing else.
    """
    out: dict[str, list[dict]] = {kind: [] for kind in staging.KINDS}
    if item.get("failure") is not None:
        out["failures"].append(item["failure"])
        return out
    uri, width, height = item["uri"], item["width"], item["height"]
    rles = item.get("rles", [])
    out["images"].append({"uri": uri, "width": width, "height": height, "segments": len(rles)})
    keys = [
        records.segment_keys(uri, i, width, height, item["bboxes"][i], item["areas"][i], rles[i])
        for i in range(len(rles))
    ]
    kept = np.flatnonzero(item["keep"]) if len(rles) else np.zeros(0, dtype=np.int64)
    for i in np.flatnonzero(~np.asarray(item["keep"], dtype=bool)) if len(rles) else []:
        label = item["segment_labels"][i] if annotated else None
        out["drops"].append(records.drop_row(keys[i], "too_small", label=label))
    if len(kept) == 0:
        return out
    visual = item["visual"]
    if annotated:
        for row, i in enumerate(kept):
            out["pairs"].append({**keys[i], "label": item["segment_labels"][i], "pair_score": 1.0,
                                 "visual_embedding": visual[row]})
        return out
    labels = item.get("labels") or []
    if not labels:
        for i in kept:
            out["drops"].append(records.drop_row(keys[i], "unlabelled"))
        return out
    pairing = pair_segments(item["clip"], item["label_embeddings"])
    for seg, lab, score in zip(pairing.segment, pairing.label, pairing.score, strict=True):
        i = kept[seg]
        out["pairs"].append({**keys[i], "label": labels[lab], "pair_score": float(score),
                             "visual_embedding": visual[seg]})
    for seg in pairing.unpaired:
        out["drops"].append(records.drop_row(keys[kept[seg]], "unpaired"))
    return out



# ---------------------------------------------------------------------------------------------------------
# Beam shell
# ---------------------------------------------------------------------------------------------------------
class FinishImage(beam.DoFn):
    """item -> (shard, (kind, row)) for every staging row of the image; counts what happened to it."""

    def __init__(self, annotated: bool):
        self.annotated = annotated
        counter = beam.metrics.Metrics.counter
        self.images_failed = counter("reme", "images_failed")
        self.images_done = counter("reme", "images_processed")
        self.masks = counter("reme", "masks")
        self.pairs = counter("reme", "pairs")
        self.dropped = {}

    def process(self, item):
        results = image_results(item, self.annotated)
        if results["failures"]:
            self.images_failed.inc()
        else:
            self.images_done.inc()
            self.masks.inc(len(item.get("rles", ())))
        self.pairs.inc(len(results["pairs"]))
        for row in results["drops"]:
            reason = row["reason"]
            if reason not in self.dropped:
                self.dropped[reason] = beam.metrics.Metrics.counter("reme", f"dropped_{reason}")
            self.dropped[reason].inc()
        shard = item["shard"]
        for kind, rows in results.items():
            for row in rows:
                yield shard, (kind, row)
