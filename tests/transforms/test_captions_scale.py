"""Captions at COCO's real size (slow): a generated captions_train2017.json-shaped file (118,287 images, 591,753
captions, ~90 MB, "annotations" after the whole images list) is accepted at launch from its first bytes, streamed
in flat memory, and joined to the input images in the graph; the same captions as JSONL join identically."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from tests.support.coco_captions import (
    COCO_TRAIN2017_CAPTIONS,
    COCO_TRAIN2017_IMAGES,
    coco_spec,
    write_coco_captions,
    write_jsonl_captions,
)
from transforms.captions import COCO, JSONL, caption_key, captions_identity, coco_records, sniff_captions

from .test_captions_join import join

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The file, its spec, and 12 input images: 10 of the listed ones (2 under a folder) and 2 it never names."""
    tmp = tmp_path_factory.mktemp("coco-size")
    spec = coco_spec(COCO_TRAIN2017_IMAGES, COCO_TRAIN2017_CAPTIONS, seed=7)
    ours = spec.image_ids[:: COCO_TRAIN2017_IMAGES // 10][:10]
    for image_id in ours[:2]:
        spec.file_names[image_id] = f"train2017/{spec.file_names[image_id]}"
    path = write_coco_captions(tmp / "captions_train2017.json", spec)
    images = tmp / "images"
    images.mkdir()
    pixels = np.zeros((6, 6, 3), np.uint8)
    for name in [*(caption_key(spec.file_names[i]) for i in ours), "999999999991.jpg", "999999999992.jpg"]:
        Image.fromarray(pixels).save(images / name)
    expected = {caption_key(spec.file_names[i]): sorted(spec.captions_of(i)) for i in ours}
    expected |= {"999999999991.jpg": [], "999999999992.jpg": []}
    return spec, path, images, expected, ours


def test_the_full_size_file_is_coco_shaped_and_accepted_from_its_first_bytes(full_size):
    spec, path, _, _, _ = full_size
    size = path.stat().st_size
    assert 85 * 2**20 < size < 100 * 2**20
    with open(path, "rb") as f:
        data = f.read()
    # COCO's shape: "images" opens the document and its list spans tens of MB before "annotations" starts
    assert data.index(b'"images"') < 2**10 and data.index(b'"annotations"') > 30 * 2**20
    del data
    assert sniff_captions(str(path)) == COCO
    assert captions_identity(str(path))["size"] == size


def test_streaming_the_full_file_keeps_python_memory_flat(full_size):
    spec, path, _, _, _ = full_size
    counts = {"image": 0, "caption": 0, "malformed": 0}
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            for kind, _, _ in coco_records(f):
                counts[kind] += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts == {"image": COCO_TRAIN2017_IMAGES, "caption": COCO_TRAIN2017_CAPTIONS, "malformed": 0}
    assert peak < 8 * 2**20, f"streaming peak {peak / 2**20:.1f} MiB for a {path.stat().st_size / 2**20:.0f} MiB file"


@pytest.mark.parametrize("fmt", [COCO, JSONL])
def test_the_full_size_captions_join_their_images_in_the_graph(full_size, tmp_path, fmt):
    spec, path, images, expected, ours = full_size
    if fmt == JSONL:
        path = write_jsonl_captions(tmp_path / "captions.jsonl", spec)
    counters = join(images, path, fmt, expected)
    ours_captions = sum(len(spec.captions_of(i)) for i in ours)
    assert counters["captions_without_image"] == COCO_TRAIN2017_CAPTIONS - ours_captions
    assert counters["captioned_names_without_image"] == COCO_TRAIN2017_IMAGES - len(ours)
    assert counters["images_read"] == len(expected)
