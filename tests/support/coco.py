"""COCO-shaped ground truth made up for tests, in COCO's layout under ROOT:

    <split>/000000000100.jpg ...                 the images
    annotations/instances_<split>.json           things (polygons) and crowds (uncompressed RLE), as COCO ships
    annotations/stuff_<split>.json               stuff and the "other" placeholder (compressed RLE), as COCO-Stuff
    annotations/panoptic_<split>.json + panoptic_<split>/*.png

Every image has the same cast at shifted places, drawn as rectangles so that every region's pixels are known here:

    sky      stuff, the top rows                                  (stuff JSON: compressed RLE)
    grass    stuff, the bottom rows minus the things on them       (stuff JSON: compressed RLE)
    person   thing, a rectangle                                   (instances JSON: one polygon)
    person   thing, two rectangles: one object in two parts       (instances JSON: two polygons)
    dog      thing, a rectangle                                   (instances JSON: one polygon)
    person   crowd, a rectangle                                   (instances JSON: uncompressed RLE)
    other    COCO-Stuff's placeholder: the things' pixels          (stuff JSON: compressed RLE)

A rectangle [x0, x1) x [y0, y1) is (x1 - x0) * (y1 - y0) pixels, as a polygon too (pycocotools rasterises integer
rectangles exactly). `expected` lists, per image file name, the (label, area, bbox) of each region the index job
should keep: crowd and placeholder regions are skipped, names are the readable ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

HEIGHT, WIDTH = 48, 64
SKY_ROWS = 18

# COCO / COCO-Stuff category ids and names (panoptic stuff ids and names are the merged ones)
INSTANCE_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
]
STUFF_CATEGORIES = [
    {"id": 124, "name": "grass", "supercategory": "plant"},
    {"id": 157, "name": "sky-other", "supercategory": "sky"},
    {"id": 183, "name": "other", "supercategory": "other"},
]
PANOPTIC_CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 18, "name": "dog", "supercategory": "animal", "isthing": 1},
    {"id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0},
    {"id": 193, "name": "grass-merged", "supercategory": "plant", "isthing": 0},
]
COLOURS = {"sky": (90, 150, 230), "grass": (50, 160, 60), "person": (200, 120, 90), "dog": (120, 80, 40)}


@dataclass(frozen=True)
class Region:
    label: str  # the readable label the index job should give it
    kind: str  # thing | stuff | crowd | placeholder
    rects: tuple[tuple[int, int, int, int], ...]  # (x0, y0, x1, y1), half-open

    def mask(self) -> np.ndarray:
        mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for x0, y0, x1, y1 in self.rects:
            mask[y0:y1, x0:x1] = True
        return mask


def scene(i: int) -> list[Region]:
    """The regions of image i; things sit on the grass, nothing overlaps except the placeholder."""
    dx = 2 * (i % 3)
    person = Region("person", "thing", ((4 + dx, 22, 16 + dx, 40),))
    parts = Region("person", "thing", ((20 + dx, 24, 28 + dx, 32), (30 + dx, 24, 34 + dx, 44)))
    dog = Region("dog", "thing", ((38 + dx, 30, 50 + dx, 42),))
    crowd = Region("person", "crowd", ((54, 20, 62, 30),))
    return [
        Region("sky", "stuff", ((0, 0, WIDTH, SKY_ROWS),)),
        person, parts, dog, crowd,
        Region("grass", "stuff", ((0, SKY_ROWS, WIDTH, HEIGHT),)),  # minus the things: see masks()
    ]


def masks(regions: list[Region]) -> list[np.ndarray]:
    """Each region's pixels; stuff gives way to the things and crowds drawn on it."""
    out = [r.mask() for r in regions]
    on_top = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for r, m in zip(regions, out, strict=True):
        if r.kind in ("thing", "crowd"):
            on_top |= m
    return [m & ~on_top if r.kind == "stuff" else m for r, m in zip(regions, out, strict=True)]


def bbox_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def draw(regions: list[Region], region_masks: list[np.ndarray], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float64)
    for r, m in zip(regions, region_masks, strict=True):
        image[m] = COLOURS[r.label]
    image += rng.normal(0, 10, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, written out here: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [HEIGHT, WIDTH], "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def polygons(region: Region) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1] for x0, y0, x1, y1 in region.rects]


@dataclass
class CocoWorld:
    root: Path
    images: Path  # the image directory (what --input points at)
    instances: Path  # instances JSON: things (polygons) and a crowd (uncompressed RLE)
    stuff: Path  # stuff JSON: stuff and the placeholder (compressed RLE)
    panoptic: Path  # panoptic JSON; its PNGs in panoptic.with_suffix("")
    regions: dict[str, list[tuple[Region, np.ndarray]]]  # file name -> each region with its pixels
    expected: dict[str, list[tuple[str, int, list[float]]]]  # file name -> sorted (label, area, bbox) kept
    expected_with_crowd: dict[str, list[tuple[str, int, list[float]]]]


def make_coco(root: Path, n_images: int = 3, split: str = "train") -> CocoWorld:
    images_dir = root / split
    ann_dir = root / "annotations"
    png_dir = ann_dir / f"panoptic_{split}"
    for d in (images_dir, png_dir):
        d.mkdir(parents=True, exist_ok=True)
    ids = {c["name"]: c["id"] for c in INSTANCE_CATEGORIES + STUFF_CATEGORIES}
    panoptic_ids = {"person": 1, "dog": 18, "sky": 187, "grass": 193}
    images, instances, stuff, panoptic = [], [], [], []
    expected, expected_with_crowd, all_regions = {}, {}, {}
    for i in range(n_images):
        name = f"{100 + i:012d}.jpg"
        image_id = 100 + i
        regions = scene(i)
        region_masks = masks(regions)
        all_regions[name] = list(zip(regions, region_masks, strict=True))
        # PNG, not JPEG: lossless pixels keep the test's colours exact (the file name is COCO's).
        Image.fromarray(draw(regions, region_masks, seed=i)).save(images_dir / name, format="PNG")
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})

        # instances JSON: polygons for things, uncompressed RLE for the crowd; stuff JSON: RLE for stuff and the
        # placeholder
        for r, m in zip(regions, region_masks, strict=True):
            category = ids["sky-other"] if r.label == "sky" else ids[r.label]
            if r.kind == "thing":
                segmentation = polygons(r)
            elif r.kind == "crowd":
                segmentation = uncompressed_rle(m)
            else:
                segmentation = compressed_rle(m)
            (stuff if r.kind == "stuff" else instances).append({
                "id": 1000 * image_id + len(instances) + len(stuff), "image_id": image_id, "category_id": category,
                "iscrowd": int(r.kind == "crowd"), "segmentation": segmentation, "area": float(m.sum()),
                "bbox": bbox_of(m)})
        things = np.any([m for r, m in zip(regions, region_masks, strict=True) if r.kind != "stuff"], axis=0)
        stuff.append({"id": 1000 * image_id + 999, "image_id": image_id, "category_id": ids["other"], "iscrowd": 0,
                      "segmentation": compressed_rle(things), "area": float(things.sum()), "bbox": bbox_of(things)})

        # panoptic: one RGB PNG of segment ids (some above 256 and 65536, so every channel counts) + segments_info
        id_map = np.zeros((HEIGHT, WIDTH), dtype=np.int64)  # 0 = unlabelled
        segments_info = []
        for k, (r, m) in enumerate(zip(regions, region_masks, strict=True)):
            segment_id = [300 + k, 70000 + k][k % 2]
            id_map[m] = segment_id
            segments_info.append({"id": segment_id, "category_id": panoptic_ids[r.label],
                                  "iscrowd": int(r.kind == "crowd"), "area": int(m.sum()), "bbox": bbox_of(m)})
        id_map[HEIGHT - 1, :] = 0  # an unlabelled bottom row, as panoptic PNGs have
        for info in segments_info:
            info["area"] = int((id_map == info["id"]).sum())
        rgb = np.stack([id_map % 256, (id_map // 256) % 256, id_map // 65536], axis=-1).astype(np.uint8)
        png_name = name.replace(".jpg", ".png")
        Image.fromarray(rgb, mode="RGB").save(png_dir / png_name)
        panoptic.append({"image_id": image_id, "file_name": png_name, "segments_info": segments_info})

        # what the job should keep: the panoptic and instance regions are the same except the bottom row
        kept = [(r.label, int(m.sum()), bbox_of(m)) for r, m in zip(regions, region_masks, strict=True)
                if r.kind in ("thing", "stuff")]
        crowd = [(r.label, int(m.sum()), bbox_of(m)) for r, m in zip(regions, region_masks, strict=True)
                 if r.kind == "crowd"]
        expected[name] = sorted(kept)
        expected_with_crowd[name] = sorted(kept + crowd)

    paths = {}
    for kind, anns, categories in (("instances", instances, INSTANCE_CATEGORIES),
                                          ("stuff", stuff, STUFF_CATEGORIES),
                                          ("panoptic", panoptic, PANOPTIC_CATEGORIES)):
        paths[kind] = ann_dir / f"{kind}_{split}.json"
        paths[kind].write_text(json.dumps({"info": {}, "images": images, "annotations": anns,
                                           "categories": categories}))
    return CocoWorld(root, images_dir, paths["instances"], paths["stuff"], paths["panoptic"], all_regions,
                     expected, expected_with_crowd)


def only(expected: dict, labels: set[str]) -> dict:
    """The expected rows of some labels only (e.g. the things of the instances file alone)."""
    return {name: [row for row in rows if row[0] in labels] for name, rows in expected.items()}


def panoptic_expected(world: CocoWorld) -> dict[str, list[tuple[str, int, list[float]]]]:
    """The panoptic PNGs leave the bottom row unlabelled: grass loses one row of width, the rest is the same."""
    out = {}
    for name, rows in world.expected.items():
        fixed = []
        for label, area, bbox in rows:
            if label == "grass":
                area -= WIDTH
                bbox = [bbox[0], bbox[1], bbox[2], bbox[3] - 1]
            fixed.append((label, area, bbox))
        out[name] = sorted(fixed)
    return out
