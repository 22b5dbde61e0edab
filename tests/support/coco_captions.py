"""Captions files of COCO's real shape, generated (no download): `captions_train2017.json` has 118,287 images and
591,753 captions in ~92 MB, one line, keys in the order info, licenses, images, annotations, so "annotations"
starts after the whole images list (~37 MB in). Records look like COCO's: an image carries license, file_name,
coco_url, height, width, date_captured, flickr_url and id; an annotation carries image_id, id and caption.
Annotations come in no particular image order, as in COCO.

The truth of a generated file (which captions belong to which file name) comes from `CocoCaptionsSpec`, not
from parsing the file, so tests compare the code under test against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COCO_TRAIN2017_IMAGES = 118_287
COCO_TRAIN2017_CAPTIONS = 591_753
COCO_KEY_ORDER = ("info", "licenses", "images", "annotations")

SUBJECTS = ("man", "woman", "dog", "cat", "bus", "train", "horse", "bird", "pizza", "giraffe", "boat", "clock")
PLACES = ("street", "field", "kitchen", "beach", "park", "table", "station", "river", "grass", "road")
VERBS = ("standing on", "sitting next to", "walking along", "parked by", "lying on", "near")


def caption_text(image_id: int, j: int) -> str:
    """The j-th caption of an image: COCO-like wording, unique per (image, j) so a join error cannot hide."""
    subject = SUBJECTS[(image_id + j) % len(SUBJECTS)]
    place = PLACES[(image_id * 7 + j) % len(PLACES)]
    verb = VERBS[(image_id + 3 * j) % len(VERBS)]
    return f"A {subject} {verb} a {place} in picture {image_id} number {j}."


def file_name_of(image_id: int) -> str:
    return f"{image_id:012d}.jpg"


@dataclass
class CocoCaptionsSpec:
    """What a generated file holds: image ids, their file names, and how many captions each image has."""

    image_ids: list[int]
    captions_per_image: list[int]
    file_names: dict[int, str] = field(default_factory=dict)  # id -> file_name as written (may carry a folder)
    texts: dict[int, list[str]] = field(default_factory=dict)  # ids whose captions are given, not generated

    @property
    def num_captions(self) -> int:
        return int(sum(self.captions_per_image))

    def captions_of(self, image_id: int) -> list[str]:
        if image_id in self.texts:
            return list(self.texts[image_id])
        count = self.captions_per_image[self.image_ids.index(image_id)]
        return [caption_text(image_id, j) for j in range(count)]

    def pairs(self):
        """(image id, caption) for every caption, image by image."""
        for image_id, count in zip(self.image_ids, self.captions_per_image, strict=True):
            texts = self.texts.get(image_id) or [caption_text(image_id, j) for j in range(count)]
            yield from ((image_id, text) for text in texts)


def coco_spec(n_images: int, n_captions: int, seed: int = 0, file_names: dict[int, str] | None = None,
              uncaptioned: tuple[int, ...] = (), texts: dict[int, list[str]] | None = None) -> CocoCaptionsSpec:
    """`n_images` sparse ids (COCO's go up to 581,929) with `n_captions` spread evenly (5 per image at COCO's
    ratio), the remainder one more each on a random subset. Ids given in `file_names` come first; `uncaptioned` ones
    get none (images without captions); `texts` fixes the captions of some ids (counted in `n_captions`)."""
    rng = np.random.default_rng(seed)
    fixed = dict(file_names or {})
    texts = dict(texts or {})
    pool = np.setdiff1d(np.arange(1, max(600_000, 2 * n_images)), np.array(list(fixed), dtype=np.int64))
    ids = [*fixed, *(int(i) for i in rng.choice(pool, n_images - len(fixed), replace=False))]
    counts = np.zeros(n_images, dtype=np.int64)
    generated = np.array([i not in uncaptioned and i not in texts for i in ids])
    for k, image_id in enumerate(ids):
        counts[k] = len(texts.get(image_id, ()))
    left = n_captions - int(counts.sum())
    counts[generated] = left // int(generated.sum())
    extra = n_captions - int(counts.sum())
    counts[rng.choice(np.flatnonzero(generated), extra, replace=False)] += 1
    names = {i: fixed.get(i, file_name_of(i)) for i in ids}
    return CocoCaptionsSpec(image_ids=ids, captions_per_image=[int(c) for c in counts], file_names=names, texts=texts)


def _image_record(image_id: int, name: str, reverse: bool) -> str:
    record = {"license": 1 + image_id % 8, "file_name": name,
              "coco_url": f"http://images.cocodataset.org/train2017/{name}", "height": 360 + image_id % 280,
              "width": 640, "date_captured": "2013-11-14 11:18:45",
              "flickr_url": f"http://farm9.staticflickr.com/{image_id % 9000}/{image_id}_4e622c8349_z.jpg",
              "id": image_id}
    if reverse:
        record = dict(reversed(record.items()))
    return json.dumps(record)


def write_coco_captions(path: Path, spec: CocoCaptionsSpec, key_order=COCO_KEY_ORDER, reverse_fields: bool = False,
                        seed: int = 0, orphans: int = 0) -> Path:
    """Write `spec` as COCO captions JSON, streamed (the whole document never sits in memory), keys in `key_order`
    (any order of info, licenses, images, annotations); `reverse_fields` writes each record's fields in reverse;
    `orphans` extra annotations name image ids the images list lacks (ids from 700,000 up)."""
    rng = np.random.default_rng(seed + 1)
    owners = np.repeat(np.arange(len(spec.image_ids)), spec.captions_per_image)
    order = rng.permutation(len(owners))  # annotations in no image order, as in COCO
    nth = np.zeros(len(owners), dtype=np.int64)
    seen: dict[int, int] = {}
    for k, owner in enumerate(owners):
        nth[k] = seen.get(owner, 0)
        seen[owner] = nth[k] + 1

    def images(f) -> None:
        f.write("[")
        for n, image_id in enumerate(spec.image_ids):
            f.write(("," if n else "") + _image_record(image_id, spec.file_names[image_id], reverse_fields))
        f.write("]")

    def annotations(f) -> None:
        f.write("[")
        for n, k in enumerate(order):
            image_id = spec.image_ids[owners[k]]
            text = spec.texts[image_id][nth[k]] if image_id in spec.texts else caption_text(image_id, int(nth[k]))
            record = {"image_id": image_id, "id": int(k) + 1, "caption": text}
            if reverse_fields:
                record = dict(reversed(record.items()))
            f.write(("," if n else "") + json.dumps(record))
        for k in range(orphans):
            f.write(("," if len(order) or k else "") + json.dumps(
                {"image_id": 700_000 + k, "id": len(order) + k + 1, "caption": caption_text(700_000 + k, 0)}))
        f.write("]")

    parts = {
        "info": lambda f: f.write(json.dumps({"description": "COCO 2017 Dataset", "url": "http://cocodataset.org",
                                              "version": "1.0", "year": 2017, "contributor": "COCO Consortium",
                                              "date_created": "2017/09/01"})),
        "licenses": lambda f: f.write(json.dumps([{"url": f"http://creativecommons.org/licenses/{i}/", "id": i,
                                                   "name": f"License {i}"} for i in range(1, 9)])),
        "images": images,
        "annotations": annotations,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        for n, key in enumerate(key_order):
            f.write(("," if n else "") + json.dumps(key) + ":")
            parts[key](f)
        f.write("}")
    return path


def write_jsonl_captions(path: Path, spec: CocoCaptionsSpec, seed: int = 0) -> Path:
    """The same captions as JSONL lines {"image": file_name, "caption": ...}, in no image order."""
    rng = np.random.default_rng(seed + 2)
    rows = list(spec.pairs())
    with open(path, "w", encoding="utf-8") as f:
        for k in rng.permutation(len(rows)):
            image_id, caption = rows[k]
            f.write(json.dumps({"image": spec.file_names[image_id], "caption": caption}) + "\n")
    return path
