"""Label quality on the hard world, held-out scenes: the default scoring against k=1 and prototypes at every k,
under a 10x imbalance of the reference set, and under label noise. Reference sets are built by the real index
job; the test split's masks and embeddings are computed once with the index's own models and re-scored by the
labeller (the code `reme label` runs).

Seed 21 is none of the dev seeds the rule was chosen on. The default (per_label, m=1) decides by each label's
nearest segment, so it must never fall below the better of k=1 and prototypes, at any k (the issue's rule, exactly).
Imbalance: measured on the dev seeds (bench/quality.py, 3 seeds, 64 train / 32 test) the default fell by at most
0.5 mIoU points at 10x sky; this world is smaller (48 / 16), hence noisier, so the margin below is the issue's
2 points. With 5% of the train regions relabelled wrongly the default must do no worse than the k=1 decision.
"""

from __future__ import annotations

import pytest

from inference.labeller import LabelRequest
from refset.reader import ReferenceSet
from tests.worlds.hard import CLASSES, make_world
from tests.worlds.measure import build_reference, evaluate, segment_and_embed

pytestmark = pytest.mark.slow

SEED, N_TRAIN, N_TEST = 21, 48, 16
KS = (1, 2, 4, 8, 16, 32)
MARGIN = 2.0  # mIoU points


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("quality")
    cache = tiny_models.cache_dir
    world = make_world(root / "x1", SEED, N_TRAIN, N_TEST)
    heavy = make_world(root / "x10", SEED, N_TRAIN, N_TEST, imbalance=10)
    noisy = make_world(root / "noisy", SEED, N_TRAIN, N_TEST, label_noise=0.05)
    refs = {name: ReferenceSet.open(str(build_reference(w.train, root / name / "ref", cache)))
            for name, w in (("x1", world), ("x10", heavy), ("noisy", noisy))}
    feats = segment_and_embed(world.test, root / "x1" / "ref")

    def miou(ref: str, **request) -> float:
        return float(evaluate(refs[ref], feats, LabelRequest(CLASSES, **request))["mIoU"])

    table = {ref: {"per_label": [miou(ref, k=k) for k in KS],
                   "neighbours": [miou(ref, strategy="neighbours", k=k) for k in KS],
                   "prototype": miou(ref, strategy="prototype")} for ref in refs}
    print("quality (mIoU %):", table)
    return table


def test_default_is_as_good_as_k1_and_prototypes_at_every_k(measured):
    clean = measured["x1"]
    best = max(clean["neighbours"][0], clean["prototype"])  # the k=1 decision and the prototype rule
    for k, got in zip(KS, clean["per_label"], strict=True):
        assert got >= best - 0.01, (k, got, best)  # the rule, exactly (0.01: rounding of the mIoU)
    # The first rule loses ground as k grows; the default does not (measured: 39.5 vs 47.3 at k=32, seed 0).
    assert clean["per_label"][-1] >= clean["neighbours"][-1]


def test_default_holds_when_the_frequent_class_is_ten_times_as_frequent(measured):
    for k, one, ten in zip(KS, measured["x1"]["per_label"], measured["x10"]["per_label"], strict=True):
        assert one - ten <= MARGIN, (k, one, ten)


def test_default_is_no_worse_than_k1_with_five_percent_wrong_reference_labels(measured):
    noisy = measured["noisy"]
    assert noisy["per_label"][KS.index(16)] >= noisy["neighbours"][0], noisy


def test_quality_bench_prints_every_figure(tmp_path, capsys):
    """bench/quality.py at a toy size: every figure line is printed with the keys the README quotes."""
    import json

    from bench import quality

    assert quality.main(["--seeds", "3", "--n_train", "6", "--n_test", "2", "--imbalance", "2", "--ks", "1,4",
                         "--label_noise", "0.2", "--workdir", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    figures = {r["figure"]: r for r in rows}
    assert set(figures) == {"scoring_cost", "world", "end_to_end", "k_sweep", "imbalance", "label_noise", "synonyms",
                            "summary"}
    assert figures["end_to_end"]["exit"] == 0 and 0 <= figures["end_to_end"]["mIoU"] <= 100
    assert set(figures["k_sweep"]) >= {"neighbours", "per_label", "per_label_m2", "prototype"}
    assert len(figures["k_sweep"]["per_label"]) == 2
    assert figures["imbalance"]["sky_segments_10x"] > figures["imbalance"]["sky_segments_1x"]
    assert {"exact", "synonyms", "gap"} <= set(figures["synonyms"]["per_label"])
    assert "per_label_at_least_best_baseline_every_k" in figures["summary"]
