"""Group-based filtering (ReME's data enhancing, first step): judge each pair by visual consistency in its label.

For one label's pairs with unit visual embeddings e_i:
  1. mean_1 = normalised mean of all e_i; q1_i = cos(e_i, mean_1)
  2. trimming round: survivors = pairs with q1 >= mu(q1) - trim_std * sd(q1); mean_2 = normalised mean of
     the survivors; quality_i = cos(e_i, mean_2) for every pair
  3. the cut is group-relative: mu(quality over survivors) - outlier_std * sd(quality over survivors); pairs
     below it are dropped as "outlier"
Labels with fewer than `min_label_count` pairs are dropped whole as "rare_label" (no mean is trustworthy).

Sums are accumulated in fixed point (int64, 2**-30 resolution), which makes them exact and independent of the
order Beam combines partial results in: a resumed run and an uninterrupted one produce bit-identical means,
qualities and decisions. The pure `filter_group` and the Beam combiners share these helpers, so the Beam path
computes exactly what the tests check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from transforms.records import drop_row

FIXED_SCALE = float(2**30)
# Qualities within this of the cut are kept: the cut is a float from exact integer moments, a quality is a dot
# product; a group of identical members (sd = 0) must not lose everyone to rounding.
CUT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class GroupFilterConfig:
    outlier_std: float = 2.0  # final cut: mean - outlier_std * std of the survivors' qualities
    trim_std: float = 1.0  # trimming round: members below mean - trim_std * std do not shape the mean
    min_label_count: int = 3  # labels with fewer pairs are dropped as rare_label


def to_fixed(values: np.ndarray) -> np.ndarray:
    """float [.., d] in [-1, 1] -> int64 fixed point (exact integer sums in any order)."""
    return np.rint(np.asarray(values, dtype=np.float64) * FIXED_SCALE).astype(np.int64)


def unit_mean(fixed_sum: np.ndarray) -> np.ndarray:
    """Direction of a fixed-point sum of unit vectors, as float64 unit vector (zero vector stays zero)."""
    vec = np.asarray(fixed_sum, dtype=np.float64) / FIXED_SCALE
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def qualities(embeddings: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Cosine of each unit embedding to a unit mean, float32 (row by row so one row or many agree exactly)."""
    embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, len(mean))
    return np.array([float(np.dot(row.astype(np.float64), mean)) for row in embeddings], dtype=np.float32)


def moments_of(values: np.ndarray) -> tuple[int, int, int]:
    """(count, fixed sum, fixed sum of squares) of scalar values in [-1, 1]."""
    values = np.asarray(values, dtype=np.float64)
    return len(values), int(to_fixed(values).sum()), int(to_fixed(values * values).sum())


def cut_from_moments(moments: tuple[int, int, int], k: float) -> float:
    n, s, s2 = moments
    if n == 0:
        return -math.inf
    mu = s / FIXED_SCALE / n
    var = max(s2 / FIXED_SCALE / n - mu * mu, 0.0)
    return mu - k * math.sqrt(var)


def below(quality: float, cut: float) -> bool:
    return quality < cut - CUT_TOLERANCE


def filter_group(embeddings: np.ndarray, config: GroupFilterConfig) -> tuple[np.ndarray, np.ndarray]:
    """One label's pairs -> (quality float32 [n] or NaN when rare, reason per pair: "" kept, "outlier", "rare_label")."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    if n < config.min_label_count:
        return np.full(n, np.nan, dtype=np.float32), np.array(["rare_label"] * n, dtype=object)
    mean_1 = unit_mean(to_fixed(embeddings).sum(axis=0))
    q1 = qualities(embeddings, mean_1)
    cut_1 = cut_from_moments(moments_of(q1), config.trim_std)
    survivors = np.array([not below(q, cut_1) for q in q1])
    mean_2 = unit_mean(to_fixed(embeddings[survivors]).sum(axis=0))
    quality = qualities(embeddings, mean_2)
    cut_2 = cut_from_moments(moments_of(quality[survivors]), config.outlier_std)
    reasons = np.array(["outlier" if below(q, cut_2) else "" for q in quality], dtype=object)
    return quality, reasons


class FixedMeanFn(beam.CombineFn):
    """CombineFn over unit embeddings: (count, int64 fixed-point sum). Exact, so the merge order is irrelevant."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, acc, embedding):
        count, total = acc
        fixed = to_fixed(embedding)
        return count + 1, fixed if total is None else total + fixed

    def merge_accumulators(self, accumulators):
        count, total = 0, None
        for c, t in accumulators:
            count += c
            if t is not None:
                total = t.copy() if total is None else total + t
        return count, total

    def extract_output(self, acc):
        return acc


class FixedMomentsFn(beam.CombineFn):
    """CombineFn over scalar qualities: (count, fixed sum, fixed sum of squares)."""

    def create_accumulator(self):
        return 0, 0, 0

    def add_input(self, acc, value):
        n, s, s2 = moments_of(np.array([value]))
        return acc[0] + n, acc[1] + s, acc[2] + s2

    def merge_accumulators(self, accumulators):
        n = s = s2 = 0
        for a, b, c in accumulators:
            n, s, s2 = n + a, s + b, s2 + c
        return n, s, s2

    def extract_output(self, acc):
        return acc


# ---------------------------------------------------------------------------------------------------------
# Pure per-row decisions the Beam shell applies (same helpers as filter_group)
# ---------------------------------------------------------------------------------------------------------
def duplicate_key(row: dict) -> str:
    """Exact duplicate segments: same label and bit-identical visual embedding (e.g. one photo under two names)."""
    import hashlib

    digest = hashlib.sha1(np.asarray(row["visual_embedding"], dtype=np.float32).tobytes())
    digest.update(row["label"].encode("utf-8"))
    return digest.hexdigest()


def split_duplicates(rows: list[dict]) -> tuple[dict, list[dict]]:
    """The row with the smallest segment_id is kept; the others are duplicates of it."""
    ordered = sorted(rows, key=lambda r: (r["segment_id"], r["label"]))
    return ordered[0], ordered[1:]


def decide(row: dict, count: int, mean_2: np.ndarray | None, moments_2, config: GroupFilterConfig) -> tuple[float | None, str]:
    """(quality, reason) of one pair given its group's statistics; reason "" means kept."""
    if count < config.min_label_count:
        return None, "rare_label"
    quality = float(qualities(row["visual_embedding"], mean_2)[0])
    return quality, ("outlier" if below(quality, cut_from_moments(moments_2, config.outlier_std)) else "")


# ---------------------------------------------------------------------------------------------------------
# Beam shell
# ---------------------------------------------------------------------------------------------------------
class _Decide(beam.DoFn):
    def __init__(self, config: GroupFilterConfig):
        self.config = config
        self.kept = beam.metrics.Metrics.counter("reme", "pairs_kept")
        self.outliers = beam.metrics.Metrics.counter("reme", "dropped_outlier")
        self.rare = beam.metrics.Metrics.counter("reme", "dropped_rare_label")

    def process(self, row, means_1, means_2, moments_2):
        label = row["label"]
        count = means_1[label][0]
        mean_2 = unit_mean(means_2[label][1]) if label in means_2 else None
        quality, reason = decide(row, count, mean_2, moments_2.get(label, (0, 0, 0)), self.config)
        if reason:
            (self.rare if reason == "rare_label" else self.outliers).inc()
            yield beam.pvalue.TaggedOutput(
                "dropped", drop_row(row, reason, label=label, pair_score=row["pair_score"], quality=quality)
            )
        else:
            self.kept.inc()
            yield {**row, "quality": quality}


class GroupFilter(beam.PTransform):
    """Pairs (rows with label + visual_embedding) -> kept rows with `quality`, and tagged `dropped` rows.

    Steps: exact duplicates out -> per-label mean (CombinePerKey) -> per-label quality moments -> trimmed mean on
    survivors -> their quality moments -> decide every pair. Group statistics reach the per-pair steps as
    side inputs (labels x dim), so pairs never need to be grouped in memory by label.
    """

    def __init__(self, config: GroupFilterConfig):
        super().__init__()
        self.config = config

    def expand(self, pairs):
        config = self.config
        grouped = (
            pairs
            | "KeyByContent" >> beam.Map(lambda r: (duplicate_key(r), r))
            | "GroupDuplicates" >> beam.GroupByKey()
            | "SplitDuplicates" >> beam.FlatMap(_split_duplicates_tagged).with_outputs("duplicates", main="unique")
        )
        unique = grouped.unique
        duplicates = grouped.duplicates | "DuplicateRows" >> beam.Map(
            lambda r: drop_row(r, "duplicate", label=r["label"], pair_score=r["pair_score"])
        )

        def by_label(r):
            return r["label"], r["visual_embedding"]

        means_1 = unique | "Label1" >> beam.Map(by_label) | "Mean1" >> beam.CombinePerKey(FixedMeanFn())
        means_1_side = beam.pvalue.AsDict(means_1)

        def q1(row, means):
            return row["label"], float(qualities(row["visual_embedding"], unit_mean(means[row["label"]][1]))[0])

        def is_frequent(row, means):
            return means[row["label"]][0] >= config.min_label_count

        frequent = unique | "Frequent" >> beam.Filter(is_frequent, means_1_side)
        moments_1 = (
            frequent | "Quality1" >> beam.Map(q1, means_1_side) | "Moments1" >> beam.CombinePerKey(FixedMomentsFn())
        )

        def survives(row, means, moments):
            _, q = q1(row, means)
            return not below(q, cut_from_moments(moments[row["label"]], config.trim_std))

        survivors = frequent | "Trim" >> beam.Filter(survives, means_1_side, beam.pvalue.AsDict(moments_1))
        means_2 = survivors | "Label2" >> beam.Map(by_label) | "Mean2" >> beam.CombinePerKey(FixedMeanFn())

        def q2(row, means):
            return row["label"], float(qualities(row["visual_embedding"], unit_mean(means[row["label"]][1]))[0])

        moments_2 = (
            survivors
            | "Quality2" >> beam.Map(q2, beam.pvalue.AsDict(means_2))
            | "Moments2" >> beam.CombinePerKey(FixedMomentsFn())
        )
        decided = unique | "Decide" >> beam.ParDo(
            _Decide(config), means_1_side, beam.pvalue.AsDict(means_2), beam.pvalue.AsDict(moments_2)
        ).with_outputs("dropped", main="kept")
        dropped = (duplicates, decided.dropped) | "AllDropped" >> beam.Flatten()
        return decided.kept, dropped


def _split_duplicates_tagged(element):
    _, rows = element
    kept, duplicates = split_duplicates(list(rows))
    yield kept
    for row in duplicates:
        yield beam.pvalue.TaggedOutput("duplicates", row)
