"""Caption -> label quality and speed of both noun-phrase paths (rule chunker, spaCy noun_chunks), side by side.

Quality on the two hand-labelled caption sets in tests/models/data (the development set and the held-out set,
see its README): micro precision/recall/F1 over head nouns (the last word of each label, per caption), and F1
over exact labels. Speed: captions/s of each path over the same captions in one run (rules one by one; spaCy one
by one and as a stream through nlp.pipe), after one warm-up pass, and the spaCy pipeline's load time.
JSON lines, one per (path, set), then one speed line:

    python -m bench.nouns [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models import nlp

DATA = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"
SETS = {"dev": DATA / "captions_gold.jsonl", "heldout": DATA / "captions_heldout.jsonl"}


def read_gold(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def scores(predicted: list[list[str]], expected: list[list[str]], key=lambda label: label.split()[-1]) -> dict:
    """Micro precision/recall/F1 over per-caption sets of key(label) (head nouns by default)."""
    tp = fp = fn = 0
    for pred, gold in zip(predicted, expected, strict=True):
        p, g = {key(x) for x in pred}, {key(x) for x in gold}
        tp, fp, fn = tp + len(p & g), fp + len(p - g), fn + len(g - p)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-12), "tp": tp, "fp": fp, "fn": fn}


def rate(fn, captions: list[str]) -> float:
    fn(captions[:50])  # warm-up: caches, lazy imports
    start = time.perf_counter()
    fn(captions)
    return len(captions) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="times the captions are repeated for the speed line")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    spacy_ready = nlp.spacy_pipeline() is not None
    spacy_load_s = time.perf_counter() - start
    backends = ["rules"] + (["spacy"] if spacy_ready else [])
    all_captions = []
    for name, path in SETS.items():
        rows = read_gold(path)
        all_captions += [r["caption"] for r in rows]
        expected = [r["labels"] for r in rows]
        for backend in backends:
            predicted = [nlp.labels_from_caption(r["caption"], backend) for r in rows]
            head, exact = scores(predicted, expected), scores(predicted, expected, key=lambda label: label)
            print(json.dumps({"bench": "nouns", "backend": backend, "set": name, "captions": len(rows),
                              **{k: round(v, 4) if isinstance(v, float) else v for k, v in head.items()},
                              "exact_f1": round(exact["f1"], 4)}), flush=True)

    captions = all_captions * args.repeats
    speed = {"rules": rate(lambda cs: [nlp.labels_from_caption(c, "rules") for c in cs], captions)}
    if spacy_ready:
        speed["spacy"] = rate(lambda cs: [nlp.labels_from_caption(c, "spacy") for c in cs], captions)
        speed["spacy_pipe"] = rate(lambda cs: nlp.labels_from_captions(cs, "spacy"), captions)
    line = {"bench": "nouns", "captions": len(captions),
            "captions_per_s": {k: round(v, 1) for k, v in speed.items()},
            "spacy_model": nlp.spacy_pipeline().meta["name"] if spacy_ready else None,
            "spacy_load_s": round(spacy_load_s, 2) if spacy_ready else None}
    if spacy_ready:
        line["rules_over_spacy_pipe"] = round(speed["rules"] / speed["spacy_pipe"], 2)
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
