"""A hard synthetic world for measuring label quality: generated, small, deterministic (seeded).

Twelve classes drawn as textures and shapes, in the annotations layout the index job reads (`images/` +
`labels/` greyscale label-map PNGs with the same stems + `classes.txt`), in two splits (`train/`, `test/`):

    stuff (large regions, wavy or skyline boundaries)   sky, water, grass, road, sand, brick wall, building
    objects (shapes, each <= 2% of the image)           car, person, boat, ball, bird

What makes it hard, on purpose:
- *similar colours*: sky and water share one mean blue and differ only by texture (smooth gradient vs wave
  stripes); road and building are both grey (asphalt speckle vs a window grid); a grey car sits on a grey road.
- *small objects*: ball and bird cover about 0.5% of an image, person about 1%, car and boat 1.5-2%
  (`object_stats`); the masker cuts each into parts (wheels, windows, head, sail) that are labelled one by one.
- *imbalance*: sky is in every image and covers about a third of it; the ball is in about 15% of images at
  under 1% of their pixels, so sky is >= 5x as frequent as the rarest class by segments and >100x by pixels.
  `imbalance=f` multiplies the frequent class (`FREQUENT`, sky) f-fold in the train split, by segments and by
  pixels, without touching anything else: (f-1) x (train images holding sky) extra scenes are added in which
  every non-sky pixel is `IGNORE` (255), so the index job (given `--ignore_index 255`) gains only sky segments.
  The base train images are byte-identical whatever `imbalance` is.
- *textures*: bricks, windows, waves, ripples, grass streaks, asphalt speckle; Felzenszwalb cuts them into many
  superpixels, each of which must be labelled on its own.
- *label noise* (optional): `label_noise=p` relabels a share p of the train split's class regions to a wrong
  class (listed in world.json), as captions or careless annotation would; the group filter is measured on it.

Judging a method, not tuning to the world: `make_world(root, seed, ...)` gives independent worlds per seed (dev
seeds: `DEV_SEEDS`), and `HELD_OUT` is a variant (another seed, shifted colours, larger textures, smaller
objects, more noise) to be evaluated only once a method has been chosen on the dev seeds.

    from tests.worlds.hard import make_world, HELD_OUT
    world = make_world(tmp / "w", seed=0, n_train=48, n_test=24)              # world.train, world.test: dirs
    world = make_world(tmp / "w10", seed=0, n_train=48, n_test=24, imbalance=10)
    held = make_world(tmp / "held", **HELD_OUT, n_train=48, n_test=24)
    noisy = make_world(tmp / "noisy", seed=0, label_noise=0.3)   # 30% of train regions relabelled wrongly

The index job reads a split with `--label_source annotations --annotations <world.train> --ignore_index 255`;
`reme evaluate --dataset folder <world.test>` scores label maps against the test split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("sky", "water", "grass", "road", "sand", "brick wall", "building",
           "car", "person", "boat", "ball", "bird")
STUFF = CLASSES[:7]
OBJECTS = CLASSES[7:]
(SKY, WATER, GRASS, ROAD, SAND, BRICK, BUILDING, CAR, PERSON, BOAT, BALL, BIRD) = range(len(CLASSES))
FREQUENT = "sky"
IGNORE = 255
# Names a user might ask for instead of the reference set's labels (the synonyms figure).
SYNONYMS = {"sky": "heavens", "water": "lake", "grass": "lawn", "road": "street", "sand": "beach",
            "brick wall": "brickwork", "building": "office block", "car": "automobile", "person": "pedestrian",
            "boat": "ship", "ball": "football", "bird": "seagull"}
DEV_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Style:
    """Appearance knobs (the held-out variant shifts them)."""

    size: tuple[int, int] = (192, 256)  # (height, width)
    colour_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to every base colour
    texture_scale: float = 1.0  # wavelengths, brick, window and streak sizes
    object_scale: float = 1.0  # object sizes
    noise_scale: float = 1.0  # per-pixel noise amplitude


DEFAULT_STYLE = Style()
HELD_OUT = {"seed": 1000, "style": Style(colour_shift=(9.0, -7.0, 5.0), texture_scale=1.3, object_scale=0.85,
                                          noise_scale=1.25)}

# Scene types and how often they occur; objects per type with the share of eligible images that get one.
SCENES = {"coast": 0.30, "street": 0.30, "park": 0.25, "lake": 0.15}
OBJECT_RATES = {
    "coast": {BOAT: 0.7, BIRD: 0.4, PERSON: 0.4, BALL: 0.25},  # person and ball only where there is sand
    "street": {CAR: 0.85, PERSON: 0.5, BIRD: 0.25},
    "park": {PERSON: 0.6, BALL: 0.4, BIRD: 0.35},
    "lake": {BOAT: 0.5, BIRD: 0.4, PERSON: 0.3},
}


@dataclass
class World:
    root: Path
    train: Path  # annotations directory of the train split
    test: Path  # annotations directory of the test split
    seed: int
    imbalance: float
    style: Style
    extra_images: int  # imbalance scenes added to train (sky only, the rest IGNORE)
    classes: tuple[str, ...] = field(default=CLASSES)
    flipped: list[tuple[str, str, str]] = field(default_factory=list)  # label noise: (stem, true, given)


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------
def make_world(root, seed: int = 0, n_train: int = 48, n_test: int = 24, imbalance: float = 1.0,
               style: Style = DEFAULT_STYLE, label_noise: float = 0.0) -> World:
    """Write a world's train and test splits under `root` (deterministic in seed, sizes and style).

    label_noise: the share of the train split's class regions (segments, as the annotations source makes them)
    relabelled to a wrong class, one not present in that image, chosen by quota; the flips are listed in
    world.json ("flipped": [stem, true class, given class]). The test split is never noisy.
    """
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1, got {imbalance}")
    if not 0 <= label_noise < 1:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    root = Path(root)
    train = write_split(root / "train", seed, "train", n_train, style)
    test = write_split(root / "test", seed, "test", n_test, style)
    flipped = _add_label_noise(train, seed, label_noise) if label_noise else []
    frequent = CLASSES.index(FREQUENT)
    holding = sum(1 for p in sorted((train / "labels").glob("*.png")) if (_read(p) == frequent).any())
    extra = int(round((imbalance - 1.0) * holding))
    for i in range(extra):
        image, label = make_scene(np.random.default_rng([seed, _SPLITS["extra"], i]), _plan_extra(seed, i), style)
        label = np.where(label == frequent, frequent, IGNORE).astype(np.uint8)
        _save(train, f"extra{i:05d}", image, label)
    (root / "world.json").write_text(json.dumps({
        "seed": seed, "n_train": n_train, "n_test": n_test, "imbalance": imbalance, "extra_images": extra,
        "label_noise": label_noise, "style": asdict(style), "classes": list(CLASSES), "frequent": FREQUENT,
        "ignore": IGNORE, "flipped": flipped}, indent=1))
    return World(root, train, test, seed, imbalance, style, extra, flipped=flipped)


def _add_label_noise(split: Path, seed: int, share: float) -> list[tuple[str, str, str]]:
    """Relabel round(share x regions) class regions of the base train images to a class absent from the image."""
    paths = sorted((split / "labels").glob("*.png"))
    maps = [_read(p).copy() for p in paths]
    regions = [(i, int(c)) for i, m in enumerate(maps) for c in np.unique(m) if c != IGNORE]
    rng = np.random.default_rng([seed, _SPLITS["train"], 2_000_000])
    chosen = sorted(regions[j] for j in rng.permutation(len(regions))[: int(round(share * len(regions)))])
    flipped = []
    for i, true in chosen:
        absent = [c for c in range(len(CLASSES)) if not (maps[i] == c).any()]
        if not absent:
            continue
        given = int(rng.choice(absent))
        maps[i][maps[i] == true] = given
        flipped.append((paths[i].stem, CLASSES[true], CLASSES[given]))
    for path, label in zip(paths, maps, strict=True):
        Image.fromarray(label, mode="L").save(path)
    return flipped


_SPLITS = {"train": 0, "test": 1, "extra": 2}


def write_split(out: Path, seed: int, split: str, count: int, style: Style = DEFAULT_STYLE) -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    plans = plan_split(seed, split, count)
    for i, plan in enumerate(plans):
        image, label = make_scene(np.random.default_rng([seed, _SPLITS[split], i]), plan, style)
        _save(out, f"{split}{i:04d}", image, label)
    return out


def _save(out: Path, stem: str, image: np.ndarray, label: np.ndarray) -> None:
    Image.fromarray(image).save(out / "images" / f"{stem}.png")
    Image.fromarray(label, mode="L").save(out / "labels" / f"{stem}.png")


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# --------------------------------------------------------------------------------------------------------------
# What each image holds: scene types and objects by quota, so class frequencies do not drift with the seed
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    scene: str
    objects: tuple[int, ...]
    sand: bool = True  # coast: a sand beach at the bottom


def _quota(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """A bool mask with exactly round(rate * n) True entries at random places."""
    chosen = np.zeros(n, bool)
    chosen[rng.permutation(n)[: int(round(rate * n))]] = True
    return chosen


def plan_split(seed: int, split: str, count: int) -> list[Plan]:
    rng = np.random.default_rng([seed, _SPLITS[split], 1_000_000])
    names = list(SCENES)
    quotas = np.floor(np.array([SCENES[s] for s in names]) * count).astype(int)
    for j in np.argsort(-(np.array([SCENES[s] for s in names]) * count - quotas))[: count - quotas.sum()]:
        quotas[j] += 1
    scenes = np.array(sum(([s] * q for s, q in zip(names, quotas, strict=True)), []))[rng.permutation(count)]
    sand = np.ones(count, bool)
    coast = np.flatnonzero(scenes == "coast")
    sand[coast] = _quota(rng, len(coast), 0.8)
    objects: list[list[int]] = [[] for _ in range(count)]
    for scene, rates in OBJECT_RATES.items():
        for obj, rate in rates.items():
            eligible = np.flatnonzero((scenes == scene) & (sand if obj in (PERSON, BALL) and scene == "coast" else True))
            for i in eligible[_quota(rng, len(eligible), rate)]:
                objects[i].append(obj)
    return [Plan(str(s), tuple(o), bool(b)) for s, o, b in zip(scenes, objects, sand, strict=True)]


def _plan_extra(seed: int, i: int) -> Plan:
    rng = np.random.default_rng([seed, _SPLITS["extra"], 1_000_000, i])
    return Plan(str(rng.choice(list(SCENES), p=list(SCENES.values()))), (), bool(rng.random() < 0.8))


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------
BASE_COLOURS = {
    SKY: (122, 166, 221), WATER: (114, 160, 216), GRASS: (72, 146, 58), ROAD: (102, 102, 107), SAND: (206, 186, 140),
    BRICK: (158, 72, 52), BUILDING: (138, 136, 134),
}


def _colour(rng, cls: int, style: Style, jitter: float = 10.0) -> np.ndarray:
    return np.array(BASE_COLOURS[cls], float) + np.array(style.colour_shift) + rng.normal(0, jitter, 3)


def _wavy(rng, width: int, base: float, amplitude: float) -> np.ndarray:
    """A boundary row per column: base + two random sines."""
    x = np.arange(width)
    p1, p2 = rng.uniform(60, 160), rng.uniform(20, 50)
    return (base + amplitude * np.sin(2 * np.pi * x / p1 + rng.uniform(0, 6.3))
            + 0.35 * amplitude * np.sin(2 * np.pi * x / p2 + rng.uniform(0, 6.3)))


def _texture(rng, cls: int, shape: tuple[int, int], style: Style, horizon: float) -> np.ndarray:
    """A full-frame texture of one stuff class (float RGB)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(float)
    ts, ns = style.texture_scale, style.noise_scale
    base = _colour(rng, cls, style)
    noise = rng.normal(0, 1, (h, w, 1))
    if cls == SKY:  # smooth, lighter towards the horizon, sometimes soft clouds
        t = np.clip(y / max(horizon, 1.0), 0, 1.2)[..., None]
        img = base + t * np.array([28, 22, 12]) + 2.5 * ns * noise
        if rng.random() < 0.4:
            blobs = np.zeros((h, w))
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0, horizon * 0.8), rng.uniform(0, w)
                sy, sx = rng.uniform(4, 9) * ts, rng.uniform(15, 35) * ts
                blobs += np.exp(-(((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2))
            alpha = 0.55 * np.clip(blobs, 0, 1)[..., None]
            img = img * (1 - alpha) + 240 * alpha
        return img
    if cls == WATER:  # the sky's blue, with wave stripes and glints
        lam = rng.uniform(4.0, 6.0) * ts
        phase = 1.6 * np.sin(2 * np.pi * x / (rng.uniform(5, 8) * lam * 4) + rng.uniform(0, 6.3))
        waves = np.sin(2 * np.pi * y / lam + phase)[..., None]
        img = base + 22 * waves * np.array([1.0, 1.0, 0.8]) + 5 * ns * noise
        glints = rng.random((h, w)) < 0.008
        img[glints] = 245
        return img
    if cls == GRASS:  # green noise with vertical streaks
        streak = ndimage.uniform_filter1d(rng.normal(0, 1, (h, w)), size=max(2, int(round(6 * ts))), axis=0)
        return base + 14 * ns * noise + 45 * streak[..., None] * np.array([0.5, 1.0, 0.4])
    if cls == ROAD:  # asphalt speckle with a dashed lane line (part of the road)
        img = base + 11 * ns * noise
        speck = rng.random((h, w)) < 0.03
        img[speck] -= 35
        return img
    if cls == SAND:  # fine grain with diagonal ripples
        theta, lam = rng.uniform(0.3, 1.2), rng.uniform(7, 11) * ts
        ripples = np.sin(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / lam)[..., None]
        return base + 6 * ns * noise + 9 * ripples
    if cls == BRICK:  # running bond with light mortar, each brick its own shade
        bw, bh = max(6, int(round(rng.uniform(12, 16) * ts))), max(3, int(round(rng.uniform(5, 7) * ts)))
        row = (y // bh).astype(int)
        shifted = x + (row % 2) * (bw // 2)
        col = (shifted // bw).astype(int)
        shades = rng.normal(0, 13, (row.max() + 1, col.max() + 1, 3))
        img = base + shades[row, col] + 4 * ns * noise
        mortar = (y % bh < 1) | (shifted % bw < 1)
        img[mortar] = np.array([198, 192, 182]) + np.array(style.colour_shift)
        return img
    if cls == BUILDING:  # grey facade with a grid of dark windows
        cw, ch = max(6, int(round(rng.uniform(11, 14) * ts))), max(7, int(round(rng.uniform(13, 16) * ts)))
        ox, oy = rng.integers(0, cw), rng.integers(0, ch)
        window = (((x + ox) % cw) >= 3) & (((x + ox) % cw) < cw - 3) & (((y + oy) % ch) >= 3) & (((y + oy) % ch) < ch - 4)
        img = base + 4 * ns * noise
        img[window] = np.array([62, 72, 92]) + rng.normal(0, 6, 3) + 4 * ns * noise[window]
        return img
    raise ValueError(cls)


def _stuff_layout(rng, plan: Plan, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The label map of the stuff classes, and the mean horizon row."""
    h, w = shape
    rows = np.arange(h)[:, None]
    label = np.full((h, w), SKY, np.uint8)
    horizon = rng.uniform(0.25, 0.45) * h
    if plan.scene == "street":
        ground = rng.uniform(0.58, 0.7) * h
        x = 0
        while x < w:  # a skyline of blocks: buildings and brick walls of random width and height
            bw = int(rng.uniform(30, 75))
            top = int(rng.uniform(0.12, 0.45) * h)
            label[top:int(ground), x:x + bw] = BRICK if rng.random() < 0.35 else BUILDING
            x += bw
        label[rows >= _wavy(rng, w, ground, 1.5)[None, :]] = ROAD
        return label, float(horizon)
    first = _wavy(rng, w, horizon, rng.uniform(2, 7))
    if plan.scene == "coast":
        label[rows >= first[None, :]] = WATER
        if plan.sand:
            label[rows >= _wavy(rng, w, rng.uniform(0.68, 0.85) * h, rng.uniform(2, 6))[None, :]] = SAND
    elif plan.scene == "park":
        grass_line = rng.uniform(0.5, 0.65) * h
        if rng.random() < 0.4:
            label[rows >= first[None, :]] = BRICK
            label[rows >= _wavy(rng, w, grass_line, 1.0)[None, :]] = GRASS
        else:
            label[rows >= first[None, :]] = GRASS
    else:  # lake: grass band, then water (or the other way round)
        second = _wavy(rng, w, rng.uniform(0.55, 0.75) * h, rng.uniform(2, 5))
        near, far = (GRASS, WATER) if rng.random() < 0.5 else (WATER, GRASS)
        label[rows >= first[None, :]] = far
        label[rows >= second[None, :]] = near
    return label, float(horizon)


def _disc(y, x, cy, cx, r):
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _object_shape(rng, obj: int, cy: float, cx: float, s: float, y, x) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, colour) parts of one object centred near (cy, cx); s = object scale."""
    def jitter(c, j=12.0):
        return np.array(c, float) + rng.normal(0, j, 3)

    parts = []
    if obj == CAR:
        bw, bh = rng.uniform(38, 46) * s, rng.uniform(13, 16) * s
        top = (np.abs(x - cx) <= bw * 0.3) & (y >= cy - bh * 0.95) & (y < cy - bh * 0.4)
        body = (np.abs(x - cx) <= bw / 2) & (np.abs(y - cy) <= bh / 2 - 1)
        palette = [(178, 32, 30), (32, 62, 168), (228, 228, 226), (32, 32, 34), (218, 188, 42), (118, 118, 124)]
        paint = jitter(palette[rng.integers(len(palette))])
        parts += [(body | top, paint), (top & (y > cy - bh * 0.85), jitter((150, 188, 218), 8))]
        r = bh * 0.3
        for wx in (cx - bw * 0.3, cx + bw * 0.3):
            parts.append((_disc(y, x, cy + bh * 0.45, wx, r), jitter((22, 22, 24), 4)))
    elif obj == PERSON:
        hr, tw, th, ll = rng.uniform(5, 6) * s, rng.uniform(12, 15) * s, rng.uniform(19, 24) * s, rng.uniform(16, 20) * s
        head_y = cy - th / 2 - hr
        torso = (np.abs(x - cx) <= tw / 2) & (np.abs(y - cy) <= th / 2)
        legs = ((np.abs(x - (cx - tw * 0.25)) <= tw * 0.18) | (np.abs(x - (cx + tw * 0.25)) <= tw * 0.18)) & \
               (y > cy + th / 2) & (y <= cy + th / 2 + ll)
        shirts = [(200, 40, 40), (40, 90, 200), (240, 240, 240), (250, 200, 40), (40, 150, 70), (150, 60, 160)]
        parts += [(legs, jitter((42, 52, 92), 8)), (torso, jitter(shirts[rng.integers(len(shirts))])),
                  (_disc(y, x, head_y, cx, hr), jitter((226, 186, 152), 8))]
    elif obj == BOAT:
        hw, hh = rng.uniform(42, 56) * s, rng.uniform(10, 13) * s
        t = np.clip((y - (cy - hh / 2)) / hh, 0, 1)
        hull = (np.abs(x - cx) <= hw / 2 * (1 - 0.35 * t)) & (np.abs(y - cy) <= hh / 2)
        sail_h, sail_b = rng.uniform(24, 32) * s, rng.uniform(16, 22) * s
        u = (cy - hh / 2 - y) / sail_h  # 0 at the deck, 1 at the top
        sail = (u >= 0) & (u <= 1) & (x >= cx) & (x <= cx + sail_b * (1 - u))
        mast = (np.abs(x - cx) <= 0.8) & (u >= 0) & (u <= 1.05)
        hulls = [(236, 236, 234), (172, 40, 38), (40, 44, 60)]
        parts += [(hull, jitter(hulls[rng.integers(len(hulls))], 8)), (sail, jitter((246, 244, 238), 5)),
                  (mast, jitter((90, 70, 50), 5))]
    elif obj == BALL:
        r = rng.uniform(9, 12) * s
        ball = _disc(y, x, cy, cx, r)
        if rng.random() < 0.5:
            parts.append((ball, jitter((240, 140, 30), 10)))
        else:
            patches = ball & (np.sin((x - cx) * 1.3 / s) * np.sin((y - cy) * 1.3 / s) > 0.45)
            parts += [(ball, jitter((242, 242, 240), 5)), (patches, jitter((30, 30, 30), 5))]
    elif obj == BIRD:
        span, thick = rng.uniform(36, 46) * s, rng.uniform(5, 6) * s
        dx = x - cx
        wing = (np.abs(dx) <= span / 2) & (np.abs((y - cy) - (0.45 * np.abs(dx) - span * 0.12)) <= thick / 2)
        body = _disc(y, x, cy - span * 0.08, cx, thick * 0.9)
        parts.append((wing | body, jitter((36, 36, 46) if rng.random() < 0.6 else (238, 238, 238), 6)))
    else:
        raise ValueError(obj)
    return parts


# Where each object stands: the stuff classes it may be placed on.
_GROUND = {CAR: (ROAD,), PERSON: (ROAD, SAND, GRASS), BOAT: (WATER,), BALL: (GRASS, SAND), BIRD: (SKY,)}


def make_scene(rng: np.random.Generator, plan: Plan, style: Style = DEFAULT_STYLE) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 [H,W,3]) and its label map (uint8 [H,W], ids into CLASSES)."""
    h, w = style.size
    label, horizon = _stuff_layout(rng, plan, (h, w))
    image = np.zeros((h, w, 3))
    for cls in np.unique(label):
        region = label == cls
        image[region] = _texture(rng, int(cls), (h, w), style, horizon)[region]
    if plan.scene == "street" or (ROAD in label):
        lane = int(np.clip(rng.uniform(0.75, 0.88) * h, 0, h - 3))
        dash, gap = int(16 * style.texture_scale), int(12 * style.texture_scale)
        xs = np.arange(w)
        on = ((xs + rng.integers(0, dash + gap)) % (dash + gap)) < dash
        rows = slice(lane, lane + 2)
        stripe = (label[rows] == ROAD) & on[None, :]
        image[rows][stripe] = np.array([232, 230, 220]) + rng.normal(0, 5, (stripe.sum(), 3))
    y, x = np.mgrid[0:h, 0:w].astype(float)
    taken = np.zeros((h, w), bool)
    for obj in plan.objects:
        for _ in range(30):  # a free spot on the object's ground class
            ground = np.isin(label, _GROUND[obj]) & ~taken
            candidates = np.flatnonzero(ground)
            if len(candidates) == 0:
                break
            cy, cx = np.unravel_index(candidates[rng.integers(len(candidates))], (h, w))
            parts = _object_shape(rng, obj, float(cy), float(cx), style.object_scale, y, x)
            mask = np.logical_or.reduce([m for m, _ in parts])
            grown = ndimage.binary_dilation(mask, iterations=3)
            inside = (ground[mask].mean() if mask.any() else 0) > 0.9
            if mask.sum() > 0 and inside and not (grown & taken).any():
                for part, colour in parts:
                    image[part] = colour + 6 * style.noise_scale * rng.normal(0, 1, (part.sum(), 3))
                label[mask] = obj
                taken |= grown
                break
    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0))  # a camera's slight blur at edges
    return np.clip(image, 0, 255).astype(np.uint8), label


# --------------------------------------------------------------------------------------------------------------
# Statistics (computed from the written label maps)
# --------------------------------------------------------------------------------------------------------------
def class_stats(split: Path) -> dict:
    """Per class: pixels and segments (images holding it, as the annotations source makes one segment per class
    present), from the label PNGs of a split; IGNORE pixels are not counted."""
    pixels = np.zeros(len(CLASSES), np.int64)
    segments = np.zeros(len(CLASSES), np.int64)
    images = 0
    for path in sorted((Path(split) / "labels").glob("*.png")):
        label = _read(path)
        counts = np.bincount(label[label != IGNORE].ravel(), minlength=len(CLASSES))[: len(CLASSES)]
        pixels += counts
        segments += counts > 0
        images += 1
    return {"images": images, "pixels": dict(zip(CLASSES, pixels.tolist(), strict=True)),
            "segments": dict(zip(CLASSES, segments.tolist(), strict=True))}


def object_stats(split: Path) -> dict:
    """Per object class: the largest and the median share of an image one object class covers."""
    shares: dict[str, list[float]] = {CLASSES[o]: [] for o in range(len(CLASSES)) if CLASSES[o] in OBJECTS}
    for path in sorted((Path(split) / "labels").glob("*.png")):
        label = _read(path)
        for name in shares:
            n = int((label == CLASSES.index(name)).sum())
            if n:
                shares[name].append(n / label.size)
    return {name: {"max": max(v) if v else 0.0, "median": float(np.median(v)) if v else 0.0, "images": len(v)}
            for name, v in shares.items()}
