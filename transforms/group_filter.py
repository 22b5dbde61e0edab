"""Dedup and group-based filtering (ReME's data enhancing, first step): judge each pair by its label's group.

Dedup: pairs with the same *content* — the decoded image's pixels (records.image_digest), the mask (COCO RLE
counts) and the label — are one pair; the copy whose file name sorts first is kept, the others are dropped as
"duplicate". No float is involved, so batch composition, hardware and precision cannot change the key.

Group filter, the rule chosen by measurement (bench/filter_quality.py; README "group filter"): a pair is an
outlier when it is atypical of its own label AND another label claims it.

  support   s_L(x) = mean of the `neighbours` highest cosines of x to members of label L (x itself excluded).
            Neighbours, not one mean: a label may have several looks ("man"); each look only has to be shared
            by a few members to support them.
  own       s_own(x) against the label's reference sample: its members of the `sample_size` smallest stable
            ranks (sha1 of segment_id + label) — the whole group unless larger; joined to the pairs BY KEY.
  typical   the label's cut = median - outlier_mads * 1.4826 * MAD of its reference members' own supports
            (leave-one-out). Median and MAD ignore up to half of the group being wrong, so a contaminated group
            does not hide its wrong members (the mean - k*sd cut of the first design did).
  claimed   max over other labels L of s_L(x) exceeds s_own(x) by `claim_margin`, s_L taken over the *bank*: the
            `bank_size` pairs of smallest stable rank over the whole run (a fixed-size sample, one side input
            of bank_size x dim floats whatever the number of labels).
  outlier   s_own(x) < cut and claimed. Atypical pairs that no other label claims are kept (a rare look), and
            typical ones are kept whatever else they resemble (look-alike labels: "sofa" / "couch").
  rare      a label with fewer than `min_label_count` pairs is dropped whole as "rare_label".

The pure `filter_pairs`/`filter_group` and the Beam `GroupFilter` are assembled from the same step functions
(`rank_of`, `smallest`, `make_bank`, `label_model`, `support`, `claim`, `decide`), so the Beam path computes exactly
what the tests check. Every score is computed row by row from the pair's own embedding, its label's model and the
bank (float64, members in rank order), so the result does not depend on bundle order, on which worker sees a
pair, or on a resume: a resumed run and an uninterrupted one make bit-identical decisions.

Scale (50k labels): per-label statistics (count, reference sample, cut) are joined to the pairs by key
(CoGroupByKey on the label), never shipped to every worker; a worker holds one label's model at a time
(<= sample_size x dim) plus the bank (bank_size x dim), both independent of the number of labels. With more pairs
than bank_size, rare labels have few or no bank members, so they claim less often (the filter errs towards
keeping pairs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from transforms.records import drop_row

MAD_TO_SD = 1.4826  # MAD of a normal distribution x this = its standard deviation


@dataclass(frozen=True)
class GroupFilterConfig:
    neighbours: int = 8  # support of a pair by a label: mean cosine to its this many nearest members of it
    outlier_mads: float = 2.0  # atypical: own support below median - this many robust sd (1.4826 * MAD)
    claim_margin: float = 0.05  # claimed: another label's support exceeds the own one by this much (cosine)
    sample_size: int = 2048  # reference members per label (smallest stable ranks); bounds one label's model
    bank_size: int = 16384  # pairs of the whole run other labels are judged by; bounds the cross-label signal
    min_label_count: int = 3  # labels with fewer pairs are dropped as rare_label


@dataclass(frozen=True)
class LabelModel:
    """What a label's pairs are judged against: its size, reference members (rank order) and cut."""

    label: str
    count: int
    ids: tuple[str, ...]  # segment_ids of the reference members, in rank order
    reference: np.ndarray | None  # float64 [m, dim], rows in rank order (None for a rare label)
    cut: float

    @property
    def row_of(self) -> dict[str, int]:
        if "_row_of" not in self.__dict__:
            object.__setattr__(self, "_row_of", {sid: i for i, sid in enumerate(self.ids)})
        return self.__dict__["_row_of"]


@dataclass(frozen=True)
class Bank:
    """The run's pairs of smallest stable rank (at most bank_size), in rank order: what other labels look like."""

    ids: tuple[str, ...]
    labels: tuple[str, ...]
    reference: np.ndarray  # float64 [b, dim]

    @property
    def codes(self) -> tuple[list[str], np.ndarray]:
        """(sorted label names, code of each bank row)."""
        if "_codes" not in self.__dict__:
            names = sorted(set(self.labels))
            index = {name: i for i, name in enumerate(names)}
            object.__setattr__(self, "_codes", (names, np.array([index[x] for x in self.labels], dtype=np.int64)))
        return self.__dict__["_codes"]

    @property
    def code_of(self) -> dict[str, int]:
        if "_code_of" not in self.__dict__:
            object.__setattr__(self, "_code_of", {name: i for i, name in enumerate(self.codes[0])})
        return self.__dict__["_code_of"]

    @property
    def rows_of(self) -> dict[str, list[int]]:
        """segment_id -> its bank rows (one per label it was paired with)."""
        if "_rows_of" not in self.__dict__:
            rows: dict[str, list[int]] = {}
            for i, sid in enumerate(self.ids):
                rows.setdefault(sid, []).append(i)
            object.__setattr__(self, "_rows_of", rows)
        return self.__dict__["_rows_of"]


# ---------------------------------------------------------------------------------------------------------
# Step functions (shared by filter_pairs and the Beam shell)
# ---------------------------------------------------------------------------------------------------------
def rank_of(segment_id: str, label: str = "") -> str:
    """Stable sampling rank of a pair: the same on every run, worker and bundle order."""
    return hashlib.sha1(f"{segment_id}\0{label}".encode()).hexdigest()


def smallest(entries: list[tuple], size: int) -> list[tuple]:
    """Entries (rank, unique id, ...) -> the `size` of smallest (rank, id), sorted: any order in, one result out."""
    return sorted(entries, key=lambda t: (t[0], t[1]))[:size]


def member_entry(segment_id: str, label: str, embedding) -> tuple:
    """A pair as a sampling entry: (rank, segment_id, label, float32 embedding). The embedding is copied, so an
    entry never keeps a larger array alive (a view into a batch would pin the whole batch in the sample)."""
    return rank_of(segment_id, label), segment_id, label, np.array(embedding, dtype=np.float32)


def make_bank(entries: list[tuple]) -> Bank:
    """Sorted member entries (from `smallest`) -> Bank."""
    if not entries:
        return Bank((), (), np.zeros((0, 0)))
    return Bank(tuple(e[1] for e in entries), tuple(e[2] for e in entries),
                np.stack([e[3] for e in entries]).astype(np.float64))


def support(embedding, segment_id: str, model: LabelModel, neighbours: int) -> float:
    """Mean of the `neighbours` highest cosines of one pair to its label's reference members (itself excluded)."""
    sims = model.reference @ np.asarray(embedding, dtype=np.float64)
    row = model.row_of.get(segment_id)
    if row is not None:
        sims = np.delete(sims, row)
    if len(sims) == 0:
        return 1.0  # nothing to disagree with
    k = min(neighbours, len(sims))
    return float(np.sort(sims)[-k:].mean())


def claim(embedding, segment_id: str, label: str, bank: Bank, neighbours: int) -> float:
    """The highest support any *other* label of the bank gives this pair (-inf when the bank has none)."""
    if len(bank.ids) == 0:
        return -math.inf
    _, codes = bank.codes
    sims = bank.reference @ np.asarray(embedding, dtype=np.float64)
    own = bank.code_of.get(label)
    usable = codes != own if own is not None else np.ones(len(codes), dtype=bool)
    usable[bank.rows_of.get(segment_id, [])] = False  # the segment itself (under another label) claims nothing
    if not usable.any():
        return -math.inf
    sims, codes = sims[usable], codes[usable]
    order = np.lexsort((-sims, codes))  # by label, then most similar first
    sims, codes = sims[order], codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    position = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    top = position < neighbours
    totals = np.add.reduceat(np.where(top, sims, 0.0), starts)
    counts = np.add.reduceat(top.astype(np.int64), starts)
    return float((totals / counts).max())


def robust_cut(supports: np.ndarray, outlier_mads: float) -> float:
    supports = np.asarray(supports, dtype=np.float64)
    if len(supports) == 0:
        return -math.inf
    median = float(np.median(supports))
    mad = float(np.median(np.abs(supports - median)))
    return median - outlier_mads * MAD_TO_SD * mad


def label_model(label: str, count: int, sample: list[tuple], config: GroupFilterConfig) -> LabelModel:
    """A label's count and reference sample (sorted member entries) -> its LabelModel (cut from the reference
    members' leave-one-out supports)."""
    if count < config.min_label_count:
        return LabelModel(label, count, (), None, -math.inf)
    ids = tuple(e[1] for e in sample)
    reference = np.stack([e[3] for e in sample]).astype(np.float64)
    partial = LabelModel(label, count, ids, reference, -math.inf)
    supports = [support(e[3], e[1], partial, config.neighbours) for e in sample]
    return LabelModel(label, count, ids, reference, robust_cut(np.array(supports), config.outlier_mads))


def decide(embedding, segment_id: str, model: LabelModel, bank: Bank, config: GroupFilterConfig
           ) -> tuple[float | None, str]:
    """(quality, reason) of one pair given its label's model and the bank; reason "" means kept.
    quality = the pair's support by its own label."""
    if model.count < config.min_label_count:
        return None, "rare_label"
    quality = support(embedding, segment_id, model, config.neighbours)
    if quality >= model.cut:
        return quality, ""
    claimed = claim(embedding, segment_id, model.label, bank, config.neighbours) - quality > config.claim_margin
    return quality, ("outlier" if claimed else "")


def filter_pairs(rows: list[dict], config: GroupFilterConfig) -> dict[tuple[str, str], tuple[float | None, str]]:
    """Every (unique) pair of a run -> {(segment_id, label): (quality, reason)}: the pure group filter."""
    bank = make_bank(smallest([member_entry(r["segment_id"], r["label"], r["visual_embedding"]) for r in rows],
                              config.bank_size))
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out = {}
    for label, group in by_label.items():
        entries = [member_entry(r["segment_id"], label, r["visual_embedding"]) for r in group]
        model = label_model(label, len(group), smallest(entries, config.sample_size), config)
        for r in group:
            out[(r["segment_id"], label)] = decide(r["visual_embedding"], r["segment_id"], model, bank, config)
    return out


def filter_group(embeddings: np.ndarray, segment_ids, config: GroupFilterConfig, label: str = "label",
                 others: list[dict] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One label's pairs (with the run's `others` pairs, for claims) -> (quality float32 [n] or NaN when rare,
    reason per pair: "" kept, "outlier", "rare_label")."""
    segment_ids = [str(s) for s in segment_ids]
    rows = [{"segment_id": sid, "label": label, "visual_embedding": emb} for sid, emb in zip(segment_ids, embeddings,
                                                                                              strict=True)]
    decided = filter_pairs(rows + [r for r in others if r["label"] != label], config)
    decisions = [decided[(sid, label)] for sid in segment_ids]
    quality = np.array([np.nan if q is None else q for q, _ in decisions], dtype=np.float32)
    return quality, np.array([why for _, why in decisions], dtype=object)


# ---------------------------------------------------------------------------------------------------------
# Dedup (content key)
# ---------------------------------------------------------------------------------------------------------
def content_key(row: dict) -> str:
    """Same picture (decoded pixels), same mask (RLE counts), same label -> same key. Staging written before
    image digests existed falls back to the image URI."""
    digest = hashlib.sha1((row.get("image_digest") or "uri:" + row["image_uri"]).encode("utf-8"))
    digest.update(b"\0")
    digest.update(bytes(row["mask_rle"]))
    digest.update(b"\0")
    digest.update(row["label"].encode("utf-8"))
    return digest.hexdigest()


def split_duplicates(rows: list[dict]) -> tuple[dict, list[dict]]:
    """One row is kept, the others are its duplicates: the one whose file name sorts first (then full URI, then
    segment_id), so a dataset copied to another place (local, gs://) keeps the same copies."""
    ordered = sorted(rows, key=lambda r: (r["image_uri"].rsplit("/", 1)[-1], r["image_uri"], r["segment_id"]))
    return ordered[0], ordered[1:]


def dedup_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Pure Dedup: (unique rows, duplicate rows), grouped by content_key."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(content_key(row), []).append(row)
    unique, duplicates = [], []
    for group in groups.values():
        kept, dups = split_duplicates(group)
        unique.append(kept)
        duplicates.extend(dups)
    return unique, duplicates


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
class Dedup(beam.PTransform):
    """Pairs -> (unique pairs, dropped rows with reason "duplicate"), by content_key."""

    def expand(self, pairs):
        split = (
            pairs
            | "KeyByContent" >> beam.Map(lambda r: (content_key(r), r))
            | "GroupByContent" >> beam.GroupByKey()
            | "SplitDuplicates" >> beam.FlatMap(_split_duplicates_tagged).with_outputs("duplicates", main="unique")
        )
        dropped = split.duplicates | "DuplicateRows" >> beam.Map(
            lambda r: drop_row(r, "duplicate", label=r["label"], pair_score=r["pair_score"])
        )
        return split.unique, dropped


def _split_duplicates_tagged(element):
    _, rows = element
    kept, duplicates = split_duplicates(list(rows))
    yield kept
    for row in duplicates:
        yield beam.pvalue.TaggedOutput("duplicates", row)
    if duplicates:
        beam.metrics.Metrics.counter("reme", "dropped_duplicate").inc(len(duplicates))


class SmallestFn(beam.CombineFn):
    """Member entries -> (count, the `size` of smallest rank, sorted). Bounded accumulator; the result is the same
    whatever the merge order (ranks are unique)."""

    def __init__(self, size: int):
        self.size = size

    def create_accumulator(self):
        return 0, []

    def add_input(self, acc, entry):
        count, sample = acc
        sample.append(entry)
        if len(sample) >= self.size + max(self.size // 4, 1):  # amortised: truncate at 1.25 x size
            sample = smallest(sample, self.size)
        return count + 1, sample

    def merge_accumulators(self, accumulators):
        count, sample = 0, []
        for c, s in accumulators:
            count += c
            sample = smallest(sample + list(s), self.size)
        return count, sample

    def compact(self, acc):
        return acc[0], smallest(acc[1], self.size)

    def extract_output(self, acc):
        return acc[0], smallest(acc[1], self.size)


class _DecideGroup(beam.DoFn):
    """(label, {"model": [LabelModel], "pairs": rows}) + bank -> kept rows with quality, tagged dropped rows."""

    def __init__(self, config: GroupFilterConfig):
        self.config = config
        self.kept = beam.metrics.Metrics.counter("reme", "pairs_kept")
        self.outliers = beam.metrics.Metrics.counter("reme", "dropped_outlier")
        self.rare = beam.metrics.Metrics.counter("reme", "dropped_rare_label")

    def process(self, element, bank):
        label, joined = element
        (model,) = list(joined["model"])
        for row in joined["pairs"]:  # streamed: only the label's model (and the bank) is held
            quality, reason = decide(row["visual_embedding"], row["segment_id"], model, bank, self.config)
            if reason:
                (self.rare if reason == "rare_label" else self.outliers).inc()
                yield beam.pvalue.TaggedOutput(
                    "dropped", drop_row(row, reason, label=label, pair_score=row["pair_score"], quality=quality))
            else:
                self.kept.inc()
                yield {**row, "quality": quality}


class GroupFilter(beam.PTransform):
    """Unique pairs (rows with label + visual_embedding) -> kept rows with `quality`, and tagged `dropped` rows.

    Steps: the bank (CombineGlobally, bank_size entries) and, per label, count + reference sample (CombinePerKey,
    bounded accumulators) -> label_model -> joined to the label's pairs by key (CoGroupByKey) -> decide every pair
    against its label's model and the bank. Same step functions as filter_pairs.
    """

    def __init__(self, config: GroupFilterConfig):
        super().__init__()
        self.config = config

    def expand(self, pairs):
        config = self.config
        entries = pairs | "Entries" >> beam.Map(
            lambda r: (r["label"], member_entry(r["segment_id"], r["label"], r["visual_embedding"])))
        bank = (
            entries
            | "BankEntries" >> beam.Values()
            | "Bank" >> beam.CombineGlobally(SmallestFn(config.bank_size))
            | "MakeBank" >> beam.Map(lambda acc: make_bank(acc[1]))
        )
        models = (
            entries
            | "ReferenceSample" >> beam.CombinePerKey(SmallestFn(config.sample_size))
            | "LabelModel" >> beam.MapTuple(lambda label, acc: (label, label_model(label, acc[0], acc[1], config)))
        )
        keyed = pairs | "KeyByLabel" >> beam.Map(lambda r: (r["label"], r))
        decided = (
            {"model": models, "pairs": keyed}
            | "JoinByLabel" >> beam.CoGroupByKey()
            | "Decide" >> beam.ParDo(_DecideGroup(config), beam.pvalue.AsSingleton(bank)).with_outputs(
                "dropped", main="kept")
        )
        return decided.kept, decided.dropped
