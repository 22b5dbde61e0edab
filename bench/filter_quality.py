"""Group filter quality on the hard world (tests/worlds/hard.py): the first rule and the shipped rule side by side.
JSON lines.

For each world a GT reference set is built from the clean train split by the real index job (annotations source,
tiny-random preset); its staged pairs (`_staging/pairs`, every pair before Dedup/Filter, with its visual
embedding) are judged twice:

- clean: the annotations' own labels. "clean_drop" = share of pairs the rule drops (outlier or rare_label).
- noisy: the same segments with the labels of the world's `label_noise=0.3` twin (30% of the train split's class
  regions relabelled to a class absent from the image; hard.py lists the flips). A region's pixels and mask do not
  change with its label, so the noisy set's embeddings are the clean set's. precision / recall of the dropped pairs
  against the flipped ones.

Rules: "first" = the first design (cosine to a trimmed group mean, cut at mean - 2 sd; re-implemented here as the
baseline), "shipped" = transforms.group_filter.filter_pairs with the default GroupFilterConfig, and
"oracle_support" = an oracle that knows which members of each label are clean: every pair is scored by its
support among the clean members of its label (the shipped support, 8 neighbours), with one global threshold
swept — the best precision at recall 0.8 and the best recall at precision 0.9 that a threshold on visual support
reaches with these embeddings (a ceiling for within-label rules).

The rule was chosen on other worlds (n_train 48, dev seeds 0-2; 192-image seeds 0-1 as a check); the default
worlds here are its evaluation. bench/results/filter_quality.jsonl holds a full run.

"end_to_end": mIoU on the world's test split (`reme evaluate`'s labeller over the index's own masks and encoder,
tests/worlds/measure.py) from reference sets built by the index job from the 30%-noisy train split, with the
shipped filter and with it switched off (--outlier_mads 1e9 --min_label_count 1), and from the clean split.

    python -m bench.filter_quality                              # dev seeds 0,1,2 + held-out + a 192-image world
    python -m bench.filter_quality --worlds dev:0 --skip end_to_end      # quick
    python -m bench.filter_quality --workdir W                  # keep (and reuse) worlds and reference sets
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from bench.worlds import work_dir
from inference.labeller import LabelRequest
from refset import staging
from tests.worlds import hard
from tests.worlds.measure import build_reference, evaluate, segment_and_embed
from transforms.group_filter import GroupFilterConfig, filter_pairs

NOISE = 0.3
FILTER_OFF = ("--outlier_mads", "1e9", "--min_label_count", "1")


def emit(row: dict) -> None:
    print(json.dumps({"bench": "filter_quality", **row}), flush=True)


# ---------------------------------------------------------------------------------------------------------
# The first design, as the baseline (transforms/group_filter.py before the measured rule replaced it)
# ---------------------------------------------------------------------------------------------------------
def first_rule(embeddings: np.ndarray, outlier_std: float = 2.0, trim_std: float = 1.0) -> np.ndarray:
    """One label's embeddings -> outlier flags: cosine to the mean, one trimming round, mean - k sd cut."""
    e = np.asarray(embeddings, dtype=np.float64)

    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    q1 = e @ unit(e.sum(0))
    survivors = q1 >= q1.mean() - trim_std * q1.std() - 1e-6
    quality = e @ unit(e[survivors].sum(0))
    qs = quality[survivors]
    return quality < qs.mean() - outlier_std * qs.std() - 1e-6


def first_decisions(rows: list[dict], min_label_count: int = 1) -> dict:
    out = {}
    for label in sorted({r["label"] for r in rows}):
        group = [r for r in rows if r["label"] == label]
        if len(group) < min_label_count:
            out.update({(r["segment_id"], label): "rare_label" for r in group})
            continue
        flags = first_rule(np.stack([r["visual_embedding"] for r in group]))
        out.update({(r["segment_id"], label): ("outlier" if f else "") for r, f in zip(group, flags, strict=True)})
    return out


def shipped_decisions(rows: list[dict], config: GroupFilterConfig) -> dict:
    return {key: why for key, (_, why) in filter_pairs(rows, config).items()}


def oracle_ceiling(rows: list[dict], flipped: np.ndarray, neighbours: int) -> dict:
    """Support of every pair among the CLEAN members of its label (oracle), one global threshold swept."""
    emb = np.stack([r["visual_embedding"] for r in rows]).astype(np.float64)
    labels = np.array([r["label"] for r in rows])
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    score = np.empty(len(rows))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        clean = members[~flipped[members]]
        sub = np.sort(sims[np.ix_(members, clean)], axis=1)[:, ::-1]
        k = max(1, min(neighbours, len(clean) - 1))
        score[members] = np.where(np.isinf(sub[:, :k]), np.nan, sub[:, :k]).mean(1) if len(clean) else 0.0
    order = np.argsort(np.nan_to_num(score, nan=-1.0))
    tp = np.cumsum(flipped[order])
    precision = tp / np.arange(1, len(rows) + 1)
    recall = tp / max(flipped.sum(), 1)
    at_recall = precision[np.argmax(recall >= 0.8)] if (recall >= 0.8).any() else 0.0
    at_precision = recall[precision >= 0.9].max() if (precision >= 0.9).any() else 0.0
    return {"precision_at_recall_0.8": round(float(at_recall), 3),
            "recall_at_precision_0.9": round(float(at_precision), 3)}


def scores(decisions: dict, keys: list, flipped: np.ndarray | None) -> dict:
    dropped = np.array([bool(decisions[k]) for k in keys])
    if flipped is None:
        return {"dropped": int(dropped.sum()), "share": round(float(dropped.mean()), 4)}
    tp = int((dropped & flipped).sum())
    return {"dropped": int(dropped.sum()), "precision": round(tp / max(int(dropped.sum()), 1), 3),
            "recall": round(tp / max(int(flipped.sum()), 1), 3)}


# ---------------------------------------------------------------------------------------------------------
# Worlds
# ---------------------------------------------------------------------------------------------------------
def parse_worlds(text: str) -> list[tuple[str, int, int]]:
    """"dev:0,dev:1,held_out:1000,dev:7@192" -> [(tag, seed, n_train or 0 = default)]."""
    out = []
    for part in text.split(","):
        tag, rest = part.strip().split(":")
        seed, _, n = rest.partition("@")
        out.append((tag, int(seed), int(n) if n else 0))
    return out


def staged_pairs(ref: Path) -> list[dict]:
    rows = []
    for shard in staging.done_shards(str(ref)):
        rows += staging.read_staged_shard(str(ref), shard)["pairs"]
    return sorted(rows, key=lambda r: (r["segment_id"], r["label"]))


def reference(train: Path, out: Path, cache: str, *extra: str) -> Path:
    return out if (out / "manifest.json").is_file() else build_reference(train, out, cache, *extra)


def run_world(tag: str, seed: int, n_train: int, args, work: Path, cache: str) -> dict:
    style = hard.HELD_OUT["style"] if tag == "held_out" else hard.DEFAULT_STYLE
    root = work / f"{tag}-{seed}-{n_train}"
    clean = hard.make_world(root / "clean", seed, n_train, args.n_test, style=style)
    noisy = hard.make_world(root / "noisy", seed, n_train, args.n_test, style=style, label_noise=NOISE)
    ref = reference(clean.train, root / "clean" / "ref", cache)
    rows = staged_pairs(ref)
    flips = {(stem, true): given for stem, true, given in noisy.flipped}
    noisy_rows = [{**r, "label": flips.get((Path(r["image_uri"]).stem, r["label"]), r["label"])} for r in rows]
    flipped = np.array([a["label"] != b["label"] for a, b in zip(rows, noisy_rows, strict=True)])
    config = GroupFilterConfig()
    world = {"world": tag, "seed": seed, "n_train": n_train, "pairs": len(rows),
             "labels": len({r["label"] for r in rows}), "flipped_pairs": int(flipped.sum()), "label_noise": NOISE}
    out = {}
    rules = (("first", first_decisions), ("shipped", lambda rs: shipped_decisions(rs, config)))
    for name, decide in rules:
        clean_keys = [(r["segment_id"], r["label"]) for r in rows]
        noisy_keys = [(r["segment_id"], r["label"]) for r in noisy_rows]
        out[name] = {"clean_drop": scores(decide(rows), clean_keys, None)["share"],
                     **scores(decide(noisy_rows), noisy_keys, flipped)}
    out["oracle_support"] = oracle_ceiling(noisy_rows, flipped, config.neighbours)
    emit({"figure": "filter_quality", **world, **out, "config": dataclasses.asdict(config)})

    if "end_to_end" not in args.skip:
        feats = segment_and_embed(clean.test, ref)
        request = LabelRequest(hard.CLASSES)
        e2e = {"clean_filtered": evaluate(ref, feats, request)["mIoU"]}
        for name, extra in (("noisy_filtered", ()), ("noisy_unfiltered", FILTER_OFF)):
            built = reference(noisy.train, root / "noisy" / f"ref-{name}", cache, *extra)
            manifest = json.loads((built / "manifest.json").read_text())
            e2e[name] = evaluate(built, feats, request)["mIoU"]
            e2e[f"{name}_segments"] = manifest["counts"].get("segments_kept")
        emit({"figure": "end_to_end", **world, "strategy": request.strategy, "k": request.k,
              **{k: round(float(v), 2) if isinstance(v, float) else v for k, v in e2e.items()},
              "filter_gain": round(float(e2e["noisy_filtered"] - e2e["noisy_unfiltered"]), 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="dev:0,dev:1,dev:2,held_out:1000,dev:7@192",
                    help="tag:seed[@n_train], tag dev or held_out (hard.HELD_OUT's style)")
    ap.add_argument("--n_train", type=int, default=64)
    ap.add_argument("--n_test", type=int, default=24)
    ap.add_argument("--skip", default="", help="comma list of: end_to_end")
    ap.add_argument("--workdir", default=None, help="keep worlds and reference sets here and reuse them")
    args = ap.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = []
    with work_dir(args.workdir, "reme-filter-quality-") as work:
        for tag, seed, n_train in parse_worlds(args.worlds):
            results.append(run_world(tag, seed, n_train or args.n_train, args, work, str(work / "cache")))
        summary = {name: {metric: round(float(np.mean([r[name][metric] for r in results])), 3)
                          for metric in results[0][name]} for name in ("first", "shipped", "oracle_support")}
        emit({"figure": "summary", "worlds": args.worlds, **summary,
              "targets": {"clean_drop_max": 0.05, "precision_min": 0.9, "recall_min": 0.8}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
