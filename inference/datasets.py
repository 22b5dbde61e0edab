"""Benchmark dataset readers for `reme evaluate`: class names, directory layouts, background/ignore conventions.

Every reader yields (key, image path, label path) and turns a raw label PNG/TIFF into *evaluation ids*: 0..C-1 for
the dataset's class list, `ignore_index` for pixels that do not count. Conventions follow the standard
open-vocabulary benchmarks (mmsegmentation / GroupViT / SAN):

    voc21        0 = background (a class), 1..20 objects, 255 ignore
    voc20        background ignored; objects 0..19
    context60    0 = background (a class), 1..59; mmseg's converted SegmentationClassContext PNGs
    context59    background ignored; ids shifted by -1
    coco-object  0 = background (all stuff), 1..80 objects; from *_instanceTrainIds.png or COCO-Stuff train ids,
                 or COCO's own JSON (instances_val2017.json, or panoptic_val2017.json + its PNGs)
    coco-stuff   171 classes (*_labelTrainIds.png, or raw stuffthingmaps 0..181 mapped to train ids, or COCO's JSON:
                 instances_val2017.json for things + stuff_val2017.json for stuff), 255 ignore
    ade150       0 = "other" ignored; ids shifted by -1
    ade847       ADE20K-full, detectron2 layout (annotations_detectron2/*.tif, 65535 ignore); names from classes.txt
    pc459        PASCAL Context full, detectron2 layout (annotations_detectron2/pc459_val/*.tif, 65535 ignore);
                 names from classes.txt
    cityscapes   19 trainIds (gtFine *_labelTrainIds.png, or *_labelIds.png mapped), 255 ignore
    folder       ROOT/images + ROOT/labels (same stems) + ROOT/classes.txt, --ignore_index

Each standard dataset also accepts the plain folder layout (ROOT/images + ROOT/labels) with its own label
convention, which is how small samples are usually shipped.

COCO's JSON layouts (ROOT/val2017 or ROOT/images/val2017 + ROOT/annotations/*.json) are painted into the same
evaluation ids (inference.coco decodes the regions): stuff first, then things from the largest to the smallest, so
a small object on a larger one stays visible. Crowd regions (a group of objects, no single outline) count as
ignore, as does everything no annotation covers, except on coco-object's instances-only layout, where every pixel
that no thing covers is background (that file knows nothing else).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from inference import coco

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
)

CONTEXT59_CLASSES = (
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky",
    "snow", "sofa", "table", "track", "train", "tree", "truck", "tv monitor", "wall", "water", "window", "wood",
)

COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
COCO_STUFF_CLASSES = COCO_THINGS + COCO_STUFF
COCO_OBJECT_CLASSES = ("background",) + COCO_THINGS
# COCO category ids (1..182) that are used; stuffthingmaps PNGs store id-1, 255 = unlabelled.
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}
COCO_USED_IDS = tuple(i for i in range(1, 183) if i not in _COCO_UNUSED_IDS)

ADE150_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# Cityscapes labelIds -> trainIds (cityscapesScripts labels.py); everything else is 255.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

# The benchmarks' class-name files, as the field ships them (SCLIP, NACLIP, ProxyCLIP, Trident, CorrCLIP:
# configs/cls_<benchmark>.txt): one line per class, a class scoring the max over the names on its line. Ours keep
# our class name first (the per-class IoU's key) and the field's names after it; the background class is
# "background" followed by the stuff names the field lists for it.
BACKGROUND_STUFF = (
    "sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed", "building",
    "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair", "floor", "hill", "rail",
    "fence",
)
PERSON_ALIASES = ("person in shirt", "person in jeans", "person in dress", "person in sweater", "person in skirt",
                  "person in jacket")
VOC_ALIASES = {"boat": ("ship",), "dining table": ("table",), "person": PERSON_ALIASES,
               "tv monitor": ("television monitor", "monitor", "television", "screen")}
CLASS_ALIASES = {  # benchmark -> {class: its other names}; a benchmark not listed has one name per class
    "voc21": {"background": BACKGROUND_STUFF, **VOC_ALIASES},
    "voc20": VOC_ALIASES,
    # COCO-Object: the same line less "bed", which is one of its object classes
    "coco-object": {"background": tuple(n for n in BACKGROUND_STUFF if n not in COCO_THINGS),
                    "person": (*PERSON_ALIASES, "body")},
    "context60": {},  # its background line is the plain word (threshold only)
}
# The default background threshold of the benchmarks that have a background class (`reme evaluate` without
# --threshold): a segment whose best class score is under it becomes background. The value is the field's (SCLIP's
# prob_thd for all three), checked on our score scale by `python -m bench.classes` (the hard world laid out as
# VOC21, tiny-random CLIP and all-MiniLM-L6-v2 text; bench/results/classes_background_*.jsonl): mIoU is nearly flat
# from 0 to 0.4, and 0.1 is within 0.7 points of the best threshold there (dev seeds: 0.09 CLIP, 0.69 MiniLM;
# held-out: 0.05, 0.0), because the background line's own column decides almost every background segment
# (background IoU 0 -> 95.6, mIoU 4.2 -> 27.9 on the dev seeds with CLIP text); from 0.5 on, the threshold starts
# painting objects as background. Context60 (plain "background", threshold only) and COCO-Object are unmeasured.
BACKGROUND_THRESHOLDS = {"voc21": 0.1, "context60": 0.1, "coco-object": 0.1}

DATASETS = ("voc20", "voc21", "context59", "context60", "coco-object", "coco-stuff", "ade150", "ade847", "pc459",
            "cityscapes", "folder")


class DatasetError(ValueError):
    """A dataset root that does not match any known layout; the message is one line."""


def standard_class_aliases(name: str, class_names: list[str] | tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each class's names for benchmark `name`: the class name, then the aliases the field's class file gives it."""
    extra = CLASS_ALIASES.get(name, {})
    return [(c, *extra.get(c, ())) for c in class_names]


def class_file(name: str) -> str:
    """The standard class file of a benchmark whose classes are built in (one class per line, aliases after
    commas): the lines `reme evaluate` scores by default, to copy and edit for --classes-file."""
    if name in ("ade847", "pc459", "folder"):
        raise DatasetError(f"{name} reads its class names from the dataset's classes.txt")
    names, *_ = _spec(name, Path("."), None)
    return "".join(", ".join(names) + "\n" for names in standard_class_aliases(name, names))


def read_classes_file(path: str | os.PathLike) -> list[str]:
    """One class name per line (blank lines skipped); plain text, parsed as data."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label map as stored: palette PNGs give palette indices, greyscale/16-bit PNG or TIFF give their values."""
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            raise DatasetError(f"{path}: label maps must be palette or single-channel images, got mode {im.mode}")
        return np.asarray(im).astype(np.int64)


def _lut_map(raw: np.ndarray, lut: np.ndarray, ignore: int) -> np.ndarray:
    out = np.full(raw.shape, ignore, dtype=np.int64)
    ok = (raw >= 0) & (raw < len(lut))
    out[ok] = lut[raw[ok]]
    return out


def _shift_down(ignore_raw: int, ignore: int) -> Callable[[np.ndarray], np.ndarray]:
    """reduce_zero_label: raw 0 -> ignore, k -> k-1, the raw ignore stays ignored."""

    def convert(raw: np.ndarray) -> np.ndarray:
        out = raw - 1
        out[(raw == 0) | (raw == ignore_raw)] = ignore
        return out

    return convert


def _identity(ignore_raw: int, ignore: int) -> Callable[[np.ndarray], np.ndarray]:
    def convert(raw: np.ndarray) -> np.ndarray:
        out = raw.copy()
        out[raw == ignore_raw] = ignore
        return out

    return convert


def _coco_raw_to_train() -> np.ndarray:
    lut = np.full(256, 255, dtype=np.int64)
    for train_id, coco_id in enumerate(COCO_USED_IDS):
        lut[coco_id - 1] = train_id
    return lut


def _coco_object_from_stuff_train(raw: np.ndarray) -> np.ndarray:
    out = np.where(raw < len(COCO_THINGS), raw + 1, 0)  # things keep their order after background; stuff -> 0
    out[raw == 255] = 255
    return out


@dataclass(frozen=True)
class Layout:
    """Where images and labels live under ROOT, and how label file names follow from image names."""

    images: str
    labels: str
    label_suffix: str  # appended to the image key (path relative to images/, without extension)
    image_suffix: str = ""  # stripped from the image stem before the label suffix is added
    split_file: str | None = None  # optional list of keys (e.g. ImageSets/Segmentation/val.txt)
    convert: Callable[[np.ndarray], np.ndarray] | None = None  # overrides the dataset's converter for this layout


@dataclass
class Dataset:
    name: str
    root: Path
    class_names: list[str]
    ignore_index: int
    convert: Callable[[np.ndarray], np.ndarray]
    layout: Layout
    has_background: bool = False  # class 0 is "background": predicted by its aliases and the threshold
    # (key, image, label reference): a label file, or what `reader` takes (a COCO image id for the JSON layouts)
    pairs: list[tuple[str, Path, Path | int]] = field(default_factory=list)
    reader: Callable[[Path | int], np.ndarray] | None = None  # raw label of a reference; default: read_label

    @property
    def class_aliases(self) -> list[tuple[str, ...]]:
        """Each class's names as the benchmark's standard class file lists them (CLASS_ALIASES)."""
        return standard_class_aliases(self.name, self.class_names)

    @property
    def background_threshold(self) -> float | None:
        """The default threshold under which a segment becomes background, on benchmarks that have one."""
        return BACKGROUND_THRESHOLDS.get(self.name) if self.has_background else None

    def __len__(self) -> int:
        return len(self.pairs)

    def label(self, ref: Path | int) -> np.ndarray:
        return self.convert(self.reader(ref) if self.reader is not None else read_label(ref))

    def __iter__(self) -> Iterator[tuple[str, Path, Path]]:
        return iter(self.pairs)


def _find_pairs(root: Path, layout: Layout) -> list[tuple[str, Path, Path]]:
    images_dir, labels_dir = root / layout.images, root / layout.labels
    wanted = None
    if layout.split_file and (root / layout.split_file).is_file():
        wanted = set(read_classes_file(root / layout.split_file))
    pairs = []
    for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        key = image.relative_to(images_dir).with_suffix("").as_posix()
        if wanted is not None and key not in wanted and image.stem not in wanted:
            continue
        stem = key[: -len(layout.image_suffix)] if layout.image_suffix and key.endswith(layout.image_suffix) else key
        candidates = [labels_dir / f"{stem}{layout.label_suffix}"]
        if layout.label_suffix in LABEL_SUFFIXES:  # plain "same stem" layouts accept any label extension
            candidates += [labels_dir / f"{stem}{s}" for s in LABEL_SUFFIXES]
        label = next((c for c in candidates if c.is_file()), None)
        if label is not None:
            pairs.append((key, image, label))
    return pairs


def _plain(convert=None) -> Layout:
    return Layout("images", "labels", ".png", convert=convert)


def _voc_layouts(images: str, labels: str, split: str, year: str) -> list[Layout]:
    prefixes = ["", f"VOC{year}/", f"VOCdevkit/VOC{year}/"]
    return [Layout(p + images, p + labels, ".png", split_file=p + split) for p in prefixes]


def _spec(name: str, root: Path, ignore_index: int | None) -> tuple[list[str], int, Callable, list[Layout], bool]:
    """(class names, eval ignore value, raw->eval converter, candidate layouts, has_background) per dataset."""
    if name in ("voc21", "voc20"):
        layouts = _voc_layouts("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/val.txt", "2012") + [_plain()]
        if name == "voc21":
            return list(VOC_CLASSES), 255, _identity(255, 255), layouts, True
        return list(VOC_CLASSES[1:]), 255, _shift_down(255, 255), layouts, False
    if name in ("context60", "context59"):
        layouts = _voc_layouts("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext/val.txt", "2010")
        layouts.append(_plain())
        if name == "context60":
            return ["background", *CONTEXT59_CLASSES], 255, _identity(255, 255), layouts, True
        return list(CONTEXT59_CLASSES), 255, _shift_down(255, 255), layouts, False
    if name == "coco-stuff":
        lut = _coco_raw_to_train()
        layouts = [
            Layout("images/val2017", "annotations/val2017", "_labelTrainIds.png"),
            Layout("images/val2017", "annotations/val2017", ".png", convert=lambda raw: _lut_map(raw, lut, 255)),
            _plain(),
        ]
        return list(COCO_STUFF_CLASSES), 255, _identity(255, 255), layouts, False
    if name == "coco-object":
        layouts = [
            Layout("images/val2017", "annotations/val2017", "_instanceTrainIds.png"),
            Layout("images/val2017", "annotations/val2017", "_labelTrainIds.png", convert=_coco_object_from_stuff_train),
            _plain(),
        ]
        return list(COCO_OBJECT_CLASSES), 255, _identity(255, 255), layouts, True
    if name == "ade150":
        layouts = [Layout(p + "images/validation", p + "annotations/validation", ".png")
                   for p in ("", "ADEChallengeData2016/")] + [_plain()]
        return list(ADE150_CLASSES), 255, _shift_down(255, 255), layouts, False
    if name in ("ade847", "pc459"):
        classes_txt = root / "classes.txt"
        if not classes_txt.is_file():
            raise DatasetError(f"{name}: put the class names, one per line in label-id order, in {classes_txt}")
        if name == "ade847":
            layouts = [Layout(p + "images_detectron2/validation", p + "annotations_detectron2/validation", ".tif")
                       for p in ("", "ADE20K_2021_17_01/")]
        else:
            layouts = [Layout(p + "JPEGImages", p + "annotations_detectron2/pc459_val", ".tif")
                       for p in ("", "VOC2010/", "VOCdevkit/VOC2010/")]
        layouts.append(_plain())
        return read_classes_file(classes_txt), 65535, _identity(65535, 65535), layouts, False
    if name == "cityscapes":
        lut = np.full(256, 255, dtype=np.int64)
        for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
            lut[label_id] = train_id
        layouts = [
            Layout("leftImg8bit/val", "gtFine/val", "_gtFine_labelTrainIds.png", image_suffix="_leftImg8bit"),
            Layout("leftImg8bit/val", "gtFine/val", "_gtFine_labelIds.png", image_suffix="_leftImg8bit",
                   convert=lambda raw: _lut_map(raw, lut, 255)),
            _plain(),
        ]
        return list(CITYSCAPES_CLASSES), 255, _identity(255, 255), layouts, False
    if name == "folder":
        classes_txt = root / "classes.txt"
        if not classes_txt.is_file():
            raise DatasetError(f"folder dataset needs {classes_txt} (one class name per line, in label-id order)")
        raw_ignore = 255 if ignore_index is None else int(ignore_index)
        names = read_classes_file(classes_txt)
        if not 0 <= raw_ignore < len(names):
            return names, raw_ignore, _identity(raw_ignore, raw_ignore), [_plain()], False
        # classes.txt names the ignore id itself (ADE's "unlabeled" at 0, CamVid's "Unlabelled" at 11): it is not
        # a class, so it leaves the list and the ids above it move down by one.
        names = names[:raw_ignore] + names[raw_ignore + 1:]
        ignore = ignore_value_for(len(names))

        def convert(raw: np.ndarray) -> np.ndarray:
            out = raw - (raw > raw_ignore)
            out[raw == raw_ignore] = ignore
            return out

        return names, ignore, convert, [_plain()], False
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_dataset(name: str, root: str | os.PathLike, ignore_index: int | None = None) -> Dataset:
    """Find the first layout under `root` that holds image/label pairs for dataset `name`."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    names, ignore, convert, layouts, has_background = _spec(name, root, ignore_index)
    tried = []
    for layout in layouts:
        if not (root / layout.images).is_dir() or not (root / layout.labels).is_dir():
            tried.append(f"{layout.images} + {layout.labels}")
            continue
        pairs = _find_pairs(root, layout)
        if pairs:
            return Dataset(name, root, names, ignore, layout.convert or convert, layout, has_background, pairs)
        tried.append(f"{layout.images} + {layout.labels} (no matching pairs)")
    if name in ("coco-object", "coco-stuff"):
        found = _coco_json_dataset(name, root, names, has_background, tried)
        if found is not None:
            return found
    raise DatasetError(f"{name}: no image/label pairs under {root}; looked for {'; '.join(tried)}")


def ignore_value_for(num_classes: int) -> int:
    """The 'unlabelled' id in label maps: 255 while classes fit in 8 bits, else 65535 (16-bit maps)."""
    return 255 if num_classes < 255 else 65535


# ---------------------------------------------------------------------------------------------------------
# COCO's own JSON layouts (coco-object, coco-stuff)
# ---------------------------------------------------------------------------------------------------------
COCO_SPLIT = "val2017"
COCO_TRAIN_IDS = {coco_id: train_id for train_id, coco_id in enumerate(COCO_USED_IDS)}  # COCO id -> 0..170
COCO_STUFF_PLACEHOLDER = 183  # COCO-Stuff's "other": the pixels of things, no class


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError(f"{path} is no COCO annotations file (no \"images\" list)")
    return doc


def _check_coco_categories(doc: dict, path: Path, things_only: bool = False) -> None:
    """The ids must be COCO's: each named as COCO names it (panoptic stuff, merged classes, is left out)."""
    for category in doc.get("categories", []):
        cid, name = int(category["id"]), str(category["name"])
        if cid == COCO_STUFF_PLACEHOLDER or (things_only and not category.get("isthing", cid <= 90)):
            continue
        expected = COCO_STUFF_CLASSES[COCO_TRAIN_IDS[cid]] if cid in COCO_TRAIN_IDS else None
        if expected != name:
            raise DatasetError(f"{path}: category {cid} is {name!r}, COCO's is {expected!r}; these are not COCO's ids")


def _by_image(doc: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        out.setdefault(int(ann["image_id"]), []).append(ann)
    return out


def _paint(label: np.ndarray, regions: list[coco.Region], value_of: Callable[[coco.Region], int]) -> None:
    """Stuff in file order, then things largest first (a small object on a larger one stays visible); crowds
    paint ignore values, given by value_of."""
    things = sorted((r for r in regions if int(r.category_id) <= 90), key=lambda r: -int(r.mask.sum()))
    for region in [r for r in regions if int(r.category_id) > 90] + things:
        label[region.mask] = value_of(region)


def coco_object_label(regions: list[coco.Region], height: int, width: int, background_everywhere: bool) -> np.ndarray:
    """coco-object ids: 0 background, 1..80 things, 255 ignore (crowds; unannotated pixels of a panoptic map)."""
    label = np.full((height, width), 0 if background_everywhere else 255, dtype=np.int64)

    def value_of(region: coco.Region) -> int:
        if region.category_id > 90:
            return 0 if region.category_id != COCO_STUFF_PLACEHOLDER else 255
        return 255 if region.iscrowd else COCO_TRAIN_IDS[region.category_id] + 1

    _paint(label, regions, value_of)
    return label


def coco_stuff_label(regions: list[coco.Region], height: int, width: int) -> np.ndarray:
    """coco-stuff train ids 0..170, 255 ignore (unannotated pixels, crowds, the placeholder)."""
    label = np.full((height, width), 255, dtype=np.int64)

    def value_of(region: coco.Region) -> int:
        if region.iscrowd or region.category_id == COCO_STUFF_PLACEHOLDER:
            return 255
        return COCO_TRAIN_IDS[region.category_id]

    _paint(label, regions, value_of)
    return label


def _coco_json_dataset(name: str, root: Path, names: list[str], has_background: bool,
                       tried: list[str]) -> Dataset | None:
    """coco-object or coco-stuff from COCO's JSON files under ROOT, or None (what was looked for goes to `tried`)."""
    images_dir = next((d for d in (f"images/{COCO_SPLIT}", COCO_SPLIT) if (root / d).is_dir()), None)
    annotations = root / "annotations"
    instances, stuff = annotations / f"instances_{COCO_SPLIT}.json", annotations / f"stuff_{COCO_SPLIT}.json"
    panoptic = annotations / f"panoptic_{COCO_SPLIT}.json"
    panoptic_dir = annotations / f"panoptic_{COCO_SPLIT}"
    if name == "coco-stuff":
        wanted = [instances, stuff]
    else:
        wanted = [instances] if instances.is_file() or not panoptic.is_file() else [panoptic]
    is_panoptic = wanted == [panoptic]
    needed = [p.relative_to(root).as_posix() + ("/" if p.suffix != ".json" else "")
              for p in wanted + ([panoptic_dir] if is_panoptic else [])]
    if images_dir is None or not all(p.is_file() for p in wanted) or (is_panoptic and not panoptic_dir.is_dir()):
        tried.append(f"{COCO_SPLIT} + {' + '.join(needed)}")
        return None
    docs = [_read_json(p) for p in wanted]
    for doc, path in zip(docs, wanted, strict=True):
        _check_coco_categories(doc, path, things_only=is_panoptic)
    images = {int(image["id"]): image for image in docs[0]["images"]}
    annotations_of = [_by_image(doc) for doc in docs]

    def read(image_id: int) -> np.ndarray:
        image = images[image_id]
        height, width = int(image["height"]), int(image["width"])
        try:
            if is_panoptic:
                (ann,) = annotations_of[0].get(image_id, [{"file_name": None, "segments_info": []}])
                if ann["file_name"] is None:
                    return np.full((height, width), 255, dtype=np.int64)
                id_map = coco.decode_panoptic_png((panoptic_dir / ann["file_name"]).read_bytes())
                regions = coco.panoptic_regions(id_map, ann["segments_info"])
            else:
                regions = [r for anns in annotations_of for r in coco.instance_regions(anns.get(image_id, []),
                                                                                     height, width)]
        except (OSError, coco.CocoError) as exc:
            raise DatasetError(f"{image['file_name']}: {exc}") from exc
        if name == "coco-stuff":
            return coco_stuff_label(regions, height, width)
        return coco_object_label(regions, height, width, background_everywhere=not is_panoptic)

    pairs = []
    for image_id, image in sorted(images.items(), key=lambda kv: str(kv[1]["file_name"])):
        path = root / images_dir / str(image["file_name"])
        if path.is_file():
            pairs.append((Path(str(image["file_name"])).stem, path, image_id))
    if not pairs:
        tried.append(f"{images_dir} + {' + '.join(needed)} (none of the JSON's images)")
        return None
    layout = Layout(images_dir, str(wanted[0].relative_to(root)), "")
    return Dataset(name, root, names, 255, _identity(255, 255), layout, has_background, pairs, reader=read)
