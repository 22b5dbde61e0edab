"""Group-based filtering: planted mislabelled pairs are removed, true ones survive, Beam computes the pure result."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.group_filter import GroupFilter, GroupFilterConfig, filter_group, to_fixed


def cluster(rng, center, n, noise=0.6):
    points = center + noise * rng.standard_normal((n, len(center))) / np.sqrt(len(center))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def unit(v):
    return v / np.linalg.norm(v)


def planted_rows(seed=0, dim=32, per_label=100, planted_fraction=0.2):
    """5 visually distinct labels; 20% of "dog"'s pairs are really "car" segments relabelled as dog."""
    rng = np.random.default_rng(seed)
    names = ["dog", "car", "sky", "tree", "road"]
    centers = {name: unit(rng.standard_normal(dim)) for name in names}
    rows, planted = [], set()
    for name in names:
        n_planted = int(per_label * planted_fraction) if name == "dog" else 0
        true = cluster(rng, centers[name], per_label - n_planted)
        fake = cluster(rng, centers["car"], n_planted)
        for i, emb in enumerate(np.concatenate([true, fake])):
            segment_id = f"{name}-{i:04d}"
            if i >= len(true):
                planted.add(segment_id)
            rows.append({"segment_id": segment_id, "image_uri": f"/img/{segment_id}.png", "width": 8, "height": 8,
                         "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1, "mask_rle": b"", "label": name, "pair_score": 0.3,
                         "visual_embedding": emb})
    return rows, planted


def test_planted_mislabelled_pairs_are_dropped_as_outliers():
    rows, planted = planted_rows()
    dog = [r for r in rows if r["label"] == "dog"]
    quality, reasons = filter_group(np.stack([r["visual_embedding"] for r in dog]), GroupFilterConfig())
    dropped = {r["segment_id"] for r, why in zip(dog, reasons, strict=True) if why == "outlier"}
    true_ids = {r["segment_id"] for r in dog} - planted
    assert planted <= dropped, f"{len(planted - dropped)} planted pairs survived"
    assert len(true_ids - dropped) >= 0.9 * len(true_ids), f"only {len(true_ids - dropped)} of {len(true_ids)} true kept"
    # the planted pairs score lowest: quality really measures consistency with the label's group
    planted_q = [q for r, q in zip(dog, quality, strict=True) if r["segment_id"] in planted]
    true_q = [q for r, q in zip(dog, quality, strict=True) if r["segment_id"] not in planted]
    assert max(planted_q) < np.median(true_q)


def test_without_trimming_round_the_contaminated_mean_hides_outliers():
    """The trimming round matters: one pass with the same cut keeps planted pairs (the mean leans towards them)."""
    rows, planted = planted_rows(planted_fraction=0.3)
    dog = np.stack([r["visual_embedding"] for r in rows if r["label"] == "dog"])
    ids = [r["segment_id"] for r in rows if r["label"] == "dog"]
    _, trimmed = filter_group(dog, GroupFilterConfig(outlier_std=2.0, trim_std=1.0))
    _, untrimmed = filter_group(dog, GroupFilterConfig(outlier_std=2.0, trim_std=1e9))  # nobody trimmed
    caught_trimmed = sum(1 for i, why in zip(ids, trimmed, strict=True) if i in planted and why == "outlier")
    caught_untrimmed = sum(1 for i, why in zip(ids, untrimmed, strict=True) if i in planted and why == "outlier")
    assert caught_trimmed == len(planted) and caught_untrimmed < len(planted)


def test_rare_labels_and_identical_groups():
    emb = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (2, 1))
    quality, reasons = filter_group(emb, GroupFilterConfig(min_label_count=3))
    assert list(reasons) == ["rare_label", "rare_label"] and np.isnan(quality).all()
    same = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (5, 1))
    quality, reasons = filter_group(same, GroupFilterConfig(min_label_count=3))
    assert list(reasons) == [""] * 5  # zero spread: nobody is an outlier of an identical group
    np.testing.assert_allclose(quality, 1.0, atol=1e-6)


def test_result_does_not_depend_on_row_order():
    rows, _ = planted_rows(seed=3)
    emb = np.stack([r["visual_embedding"] for r in rows if r["label"] == "dog"])
    perm = np.random.default_rng(1).permutation(len(emb))
    q1, r1 = filter_group(emb, GroupFilterConfig())
    q2, r2 = filter_group(emb[perm], GroupFilterConfig())
    np.testing.assert_array_equal(q1[perm], q2)  # bit-identical: fixed-point sums are exact
    assert list(r1[perm]) == list(r2)
    assert to_fixed(emb).sum(0).tolist() == to_fixed(emb[perm]).sum(0).tolist()


def test_beam_group_filter_matches_pure_function():
    rows, _ = planted_rows(seed=5, per_label=30)
    rows.append({**rows[0], "segment_id": "zzz-duplicate"})  # exact duplicate content of rows[0]
    rows.append({**rows[1], "label": "lonely", "segment_id": "lonely-0"})  # a label with one pair
    config = GroupFilterConfig(min_label_count=2)
    expected = {"zzz-duplicate": (None, "duplicate"), "lonely-0": (None, "rare_label")}
    unique = [r for r in rows if r["segment_id"] not in expected]
    for label in {r["label"] for r in unique}:
        group = [r for r in unique if r["label"] == label]
        quality, reasons = filter_group(np.stack([r["visual_embedding"] for r in group]), config)
        expected.update({r["segment_id"]: (float(q), why) for r, q, why in zip(group, quality, reasons, strict=True)})
    assert sum(why == "outlier" for _, why in expected.values()) >= 1  # the comparison covers every decision
    with BeamTestPipeline() as p:
        kept, dropped = p | beam.Create(rows) | GroupFilter(config)
        decisions = (
            (kept | "k" >> beam.Map(lambda r: (r["segment_id"], (r["quality"], ""))),
             dropped | "d" >> beam.Map(lambda r: (r["segment_id"], (r["quality"], r["reason"]))))
            | beam.Flatten()
        )
        assert_that(decisions, equal_to(sorted(expected.items())))
