"""Class scoring from retrieved reference segments (SPEC §1, labelling steps 3-4). Pure numpy.

Neighbour-weighted rule (default): with T = cos(reference-label text, class text) computed once per request
(labels x classes), a query segment s with neighbours j (similarity sim_j, label l_j) scores

    score[s, c] = sum_j w_j * T[l_j, c],   w = softmax(sim / tau) over the k neighbours.

Prototype rule (FreeDA-style alternative): each class gets a visual prototype, the count-weighted mean visual
embedding of the references whose labels match the class best; a segment scores cos(segment, prototype).

Background: when a segment's best score is below the threshold it becomes the background class (benchmarks that
have one) or unlabelled (`ignore_value`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("neighbours", "prototype")


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def text_table(label_text: np.ndarray, class_text: np.ndarray) -> np.ndarray:
    """T [L, C] = cosine between each reference label and each class name (both embedded by the same encoder)."""
    return l2_normalise(label_text) @ l2_normalise(class_text).T


def softmax_weights(sims: np.ndarray, valid: np.ndarray, tau: float) -> np.ndarray:
    """Row-wise softmax of sims / tau over the valid neighbours; rows with no valid neighbour are all zero."""
    if tau <= 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    logits = np.where(valid, sims.astype(np.float64) / tau, -np.inf)
    row_max = logits.max(axis=1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(valid, np.exp(logits - row_max), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return (e / np.where(total > 0, total, 1.0)).astype(np.float32)


def neighbour_scores(sims: np.ndarray, neighbour_labels: np.ndarray, table: np.ndarray, tau: float = 0.07) -> np.ndarray:
    """score [S, C] from neighbour similarities [S, k], their label ids [S, k] (-1 = no neighbour) and T [L, C]."""
    sims = np.asarray(sims, dtype=np.float32)
    neighbour_labels = np.asarray(neighbour_labels)
    if sims.shape != neighbour_labels.shape:
        raise ValueError(f"sims {sims.shape} and neighbour labels {neighbour_labels.shape} differ")
    valid = neighbour_labels >= 0
    w = softmax_weights(sims, valid, tau)  # [S, k]
    gathered = table[np.where(valid, neighbour_labels, 0)]  # [S, k, C]
    return np.einsum("sk,skc->sc", w, gathered).astype(np.float32)


def class_prototypes(
    label_means: np.ndarray, label_counts: np.ndarray, table: np.ndarray, labels_per_class: int = 1
) -> np.ndarray:
    """Visual prototype per class [C, D] (unit): count-weighted mean of the mean visual embeddings of the
    `labels_per_class` reference labels whose text is closest to the class name.

    label_means: [L, D] mean visual embedding of each label's reference segments; label_counts: [L].
    """
    num_labels, num_classes = table.shape
    m = max(1, min(labels_per_class, num_labels))
    top = np.argsort(-table, axis=0, kind="stable")[:m]  # [m, C] best labels per class
    counts = np.asarray(label_counts, dtype=np.float64)
    protos = np.zeros((num_classes, label_means.shape[1]), dtype=np.float64)
    for c in range(num_classes):  # loop over classes (tens to hundreds), vector work inside
        idx = top[:, c]
        protos[c] = (counts[idx, None] * label_means[idx]).sum(axis=0)
    return l2_normalise(protos.astype(np.float32))


def prototype_scores(queries: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """score [S, C] = cos(segment embedding, class prototype)."""
    return l2_normalise(queries) @ l2_normalise(prototypes).T


@dataclass(frozen=True)
class Decision:
    class_ids: np.ndarray  # int64 [S]: index into the request's class list, or background / ignore value
    confidence: np.ndarray  # float32 [S]: the best score (what painting ranks segments by)


def decide(
    scores: np.ndarray,
    class_columns: np.ndarray | None = None,
    threshold: float | None = None,
    background_id: int | None = None,
    ignore_value: int = 255,
) -> Decision:
    """Pick each segment's class from its scores [S, C'].

    class_columns maps score columns to class ids in the request's list (the background class, when present, has
    no column: it is what a segment becomes when its best score is under `threshold`). Without a background class
    such a segment is unlabelled (`ignore_value`). threshold None = always take the best class.
    """
    scores = np.asarray(scores, dtype=np.float32)
    num_segments, num_columns = scores.shape
    columns = np.arange(num_columns) if class_columns is None else np.asarray(class_columns)
    if num_columns == 0:
        fallback = ignore_value if background_id is None else background_id
        return Decision(np.full(num_segments, fallback, dtype=np.int64), np.zeros(num_segments, dtype=np.float32))
    best = scores.argmax(axis=1)
    confidence = scores[np.arange(num_segments), best]
    class_ids = columns[best].astype(np.int64)
    if threshold is not None:
        low = confidence < threshold
        class_ids[low] = ignore_value if background_id is None else background_id
    return Decision(class_ids, confidence.astype(np.float32))
