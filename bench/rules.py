"""Candidate scoring rules side by side on the hard world, against the criterion of issue 9.3: the default rule
must be at least as good as the better of k=1 and prototypes at every k from 1 to 32, and lose at most 2 mIoU
points when the frequent class is 10x as frequent. JSON lines.

Each world's reference sets (clean, 5% label noise, 10x sky) are built by the real index job, the test split's
masks and embeddings once with the index's own models, and the 32 nearest reference segments of every test segment
are retrieved once per reference set; every rule then scores the first k of them (exact top-k: the prefix of the
top 32) and the labeller paints, so a rule costs numpy time only. Reference sets already in --workdir are reused
(bench.quality and bench.classes lay them out the same way).

    python -m bench.rules --workdir W --seeds 0,1,2            # dev seeds
    python -m bench.rules --workdir W --held_out               # the held-out variant
    python -m bench.rules --workdir W --skip x10               # without the (slow to build) 10x reference sets

Rules (inference/scoring.py has the shipped ones):
- per_label: the default (m=2, missing segments counted as s_k, softmax at the neighbours' spread)
- k1: the nearest segment's label (per_label with m=1; identical decisions at every k)
- neighbours: the first rule, softmax(sim / 0.1) votes
- per_label_floor4: per_label with missing segments counted as s_min(k,4) instead of s_k (k-independent from 4 on)
- quality_k1: the nearest segment among those whose group-filter quality is at least their label's median minus
  twice its median absolute deviation (every neighbour when none is), i.e. k=1 that skips atypical references
- prototype: one figure
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from bench.worlds import add_world_args, chosen_worlds, work_dir
from inference import retrieval, scoring
from inference.labeller import LabelRequest
from inference.metrics import ConfusionMatrix
from models.text import build_text_encoder
from refset.reader import ReferenceSet
from tests.worlds import hard
from tests.worlds.measure import build_reference, evaluate, index_models, labeller_for, segment_and_embed

KS = tuple(range(1, 33))


def emit(row: dict) -> None:
    print(json.dumps({"bench": "rules", **row}), flush=True)


def reference(train: Path, out: Path, cache: str) -> ReferenceSet:
    if not (out / "manifest.json").is_file():
        build_reference(train, out, cache)
    return ReferenceSet.open(str(out))


def typical(ref: ReferenceSet) -> np.ndarray:
    """bool per index position: the segment's quality is within 2 MADs under its label's median."""
    table = ref.segments_table(["label_id", "quality"])
    labels = np.asarray(table.column("label_id").to_numpy(), np.int64)
    quality = np.asarray(table.column("quality").to_numpy(), np.float64)
    ok = np.ones(len(labels), bool)
    for label in np.unique(labels):
        rows = labels == label
        med = np.median(quality[rows])
        mad = np.median(np.abs(quality[rows] - med))
        ok[rows] = quality[rows] >= med - 2 * mad
    by_position = np.ones(int(ref.index.ntotal), bool)
    by_position[np.asarray(table.column("position").to_numpy(), np.int64)] = ok
    return by_position


def floor_rank_scores(sims, labels, table, to_class, rank: int):
    """per_label with missing segments counted as s_min(k, rank): a neighbour beyond `rank` counts as s_rank."""
    r = min(sims.shape[1], rank)
    return scoring.per_label_scores(np.maximum(sims, sims[:, r - 1:r]), labels, table, 2, to_class)


def quality_k1_scores(sims, labels, positions, typical_mask, table, to_class):
    valid = labels >= 0
    good = valid & typical_mask[np.where(valid, positions, 0)]
    use = np.where(good.any(axis=1, keepdims=True), good, valid)
    first = use.argmax(axis=1)
    rows = np.arange(len(sims))
    one_sims = sims[rows, first][:, None]
    one_labels = np.where(use[rows, first], labels[rows, first], -1)[:, None]
    return scoring.per_label_scores(one_sims, one_labels, table, 1, to_class)


def sweep(ref: ReferenceSet, feats, text) -> dict:
    labeller = labeller_for(ref, LabelRequest(hard.CLASSES), text)
    table, to_class = labeller.table, labeller.label_to_class
    counts = [len(e) for e in feats.embeddings]
    hits = retrieval.search(ref.index, np.concatenate(feats.embeddings), max(KS), ref.position_label_rows())
    mask = typical(ref)

    def miou(scores):
        decision = labeller.decide(scores)
        cm = ConfusionMatrix(len(hard.CLASSES), hard.IGNORE)
        bounds = np.cumsum([0] + counts)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            d = scoring.Decision(decision.class_ids[lo:hi], decision.confidence[lo:hi])
            cm.update(labeller.paint(feats.masks[i], d).label_map, feats.truth[i])
        return round(float(cm.miou()) * 100, 2)

    out = {name: [] for name in ("per_label", "k1", "neighbours", "per_label_floor4", "quality_k1")}
    for k in KS:
        s, lab, pos = hits.sims[:, :k], hits.label_ids[:, :k], hits.positions[:, :k]
        out["per_label"].append(miou(scoring.per_label_scores(s, lab, table, 2, to_class)))
        out["k1"].append(miou(scoring.per_label_scores(s, lab, table, 1, to_class)))
        out["neighbours"].append(miou(scoring.neighbour_scores(s, lab, table, 0.1)))
        out["per_label_floor4"].append(miou(floor_rank_scores(s, lab, table, to_class, 4)))
        out["quality_k1"].append(miou(quality_k1_scores(s, lab, pos, mask, table, to_class)))
    out["prototype"] = round(float(evaluate(ref, feats, LabelRequest(hard.CLASSES, strategy="prototype"),
                                            text)["mIoU"]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_args(ap)
    ap.add_argument("--skip", default="", help="comma list of: noisy, x10")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    with work_dir(args.workdir, "reme-rules-") as work:
        cache = str(work / "cache")
        for tag, seed, style in chosen_worlds(args):
            root = work / f"{tag}-{seed}"
            variants = {"x1": {}, "noisy": {"label_noise": 0.05}, "x10": {"imbalance": 10.0}}
            refs = {}
            for name, extra in variants.items():
                if name in skip:
                    continue
                w = hard.make_world(root / name, seed, args.n_train, args.n_test, style=style, **extra)
                refs[name] = reference(w.train, root / name / "ref", cache)
                if name == "x1":
                    test = w.test
            feats = segment_and_embed(test, root / "x1" / "ref")
            text = build_text_encoder(dataclasses.replace(index_models(root / "x1" / "ref").text, device="cpu"))
            for name, ref in refs.items():
                emit({"figure": "k_sweep", "world": tag, "seed": seed, "reference": name, "k": list(KS),
                      **sweep(ref, feats, text)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
