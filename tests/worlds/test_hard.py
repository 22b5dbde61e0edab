"""The hard world has the properties it promises, checked on the files it writes (label PNGs and images)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from tests.worlds.hard import (
    CLASSES,
    FREQUENT,
    HELD_OUT,
    IGNORE,
    OBJECTS,
    STUFF,
    class_stats,
    make_world,
    object_stats,
)


def _pairs(split):
    for path in sorted((split / "images").glob("*.png")):
        with Image.open(path) as im, Image.open(split / "labels" / path.name) as lab:
            yield path.stem, np.asarray(im.convert("RGB")).astype(float), np.asarray(lab)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("w") / "w", seed=5, n_train=40, n_test=12)


def test_layout_and_classes(world):
    for split in (world.train, world.test):
        assert (split / "classes.txt").read_text().splitlines() == list(CLASSES)
        stems = sorted(p.stem for p in (split / "images").glob("*.png"))
        assert stems == sorted(p.stem for p in (split / "labels").glob("*.png")) and stems
    assert len(CLASSES) >= 10
    stats = class_stats(world.train)
    assert all(stats["segments"][c] > 0 for c in CLASSES)  # every class is in the reference split
    assert sum(v > 0 for v in class_stats(world.test)["segments"].values()) >= 10


def test_objects_are_small(world):
    for split in (world.train, world.test):
        shares = object_stats(split)
        assert set(shares) == set(OBJECTS)
        assert all(0 < v["max"] <= 0.02 for v in shares.values()), shares
        assert min(v["median"] for v in shares.values()) <= 0.006  # some objects are much smaller still


def test_frequent_class_is_five_times_the_rarest(world):
    stats = class_stats(world.train)
    for kind in ("segments", "pixels"):
        counts = stats[kind]
        assert counts[FREQUENT] >= 5 * min(counts.values()), (kind, counts)


def test_similar_colours_told_apart_by_texture(world):
    """Sky and water (and road and building) have about the same mean colour; every other pair of stuff
    classes is far apart. Water's waves make it much rougher than the sky's gradient."""
    colour = {c: [] for c in STUFF}
    roughness = {c: [] for c in ("sky", "water")}
    for _, image, label in _pairs(world.train):
        dy = np.abs(np.diff(image, axis=0)).mean(axis=2)  # vertical change: waves vs a smooth gradient
        for name in STUFF:
            region = label == CLASSES.index(name)
            if region.sum() > 200:
                colour[name].append(image[region].mean(axis=0))
            if name in roughness and region.sum() > 200:
                roughness[name].append(np.median(dy[region[1:] & region[:-1]]))
    mean = {c: np.mean(v, axis=0) for c, v in colour.items()}
    similar = {("sky", "water"), ("road", "building")}
    for a, b in itertools.combinations(STUFF, 2):
        distance = float(np.linalg.norm(mean[a] - mean[b]))
        assert distance < 40 if (a, b) in similar else distance > 60, (a, b, distance)
    assert np.median(roughness["water"]) > 3 * np.median(roughness["sky"])


def test_deterministic_and_seeded(tmp_path):
    a = make_world(tmp_path / "a", seed=3, n_train=3, n_test=2)
    b = make_world(tmp_path / "b", seed=3, n_train=3, n_test=2)
    c = make_world(tmp_path / "c", seed=4, n_train=3, n_test=2)
    for split in ("train/images", "train/labels", "test/images", "test/labels"):
        for path in sorted((a.root / split).glob("*.png")):
            assert path.read_bytes() == (b.root / split / path.name).read_bytes()
    assert (a.train / "images" / "train0000.png").read_bytes() != (c.train / "images" / "train0000.png").read_bytes()


def test_imbalance_multiplies_only_the_frequent_class(tmp_path):
    base = make_world(tmp_path / "x1", seed=2, n_train=8, n_test=1)
    heavy = make_world(tmp_path / "x10", seed=2, n_train=8, n_test=1, imbalance=10)
    for path in sorted((base.train / "images").glob("*.png")):  # the base images are untouched
        assert path.read_bytes() == (heavy.train / "images" / path.name).read_bytes()
    one, ten = class_stats(base.train), class_stats(heavy.train)
    assert ten["segments"][FREQUENT] == 10 * one["segments"][FREQUENT]
    assert 7 <= ten["pixels"][FREQUENT] / one["pixels"][FREQUENT] <= 13
    for name in CLASSES:
        if name != FREQUENT:
            assert ten["segments"][name] == one["segments"][name] and ten["pixels"][name] == one["pixels"][name]
    extra = [lab for stem, _, lab in _pairs(heavy.train) if stem.startswith("extra")]
    assert len(extra) == heavy.extra_images == 72
    assert all(set(np.unique(lab)) <= {CLASSES.index(FREQUENT), IGNORE} for lab in extra)


def test_label_noise_relabels_the_listed_regions_only(tmp_path):
    clean = make_world(tmp_path / "clean", seed=6, n_train=10, n_test=1)
    noisy = make_world(tmp_path / "noisy", seed=6, n_train=10, n_test=1, label_noise=0.3)
    regions = sum(class_stats(clean.train)["segments"].values())
    assert len(noisy.flipped) == round(0.3 * regions)
    listed = {(stem, true): given for stem, true, given in noisy.flipped}
    assert json.loads((noisy.root / "world.json").read_text())["flipped"] == [list(f) for f in noisy.flipped]
    for (stem, _, truth), (_, _, given) in zip(_pairs(clean.train), _pairs(noisy.train), strict=True):
        for cls in np.unique(truth):
            name = CLASSES[cls]
            expected = CLASSES.index(listed.get((stem, name), name))
            assert (given[truth == cls] == expected).all()
    assert all(true != given for _, true, given in noisy.flipped)


def test_held_out_variant_differs_in_look(tmp_path):
    dev = make_world(tmp_path / "dev", seed=0, n_train=12, n_test=1)
    held = make_world(tmp_path / "held", n_train=12, n_test=1, **HELD_OUT)
    assert HELD_OUT["seed"] != 0
    dev_objects, held_objects = object_stats(dev.train), object_stats(held.train)
    assert np.mean([v["median"] for v in held_objects.values()]) < np.mean([v["median"] for v in dev_objects.values()])
