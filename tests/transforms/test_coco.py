"""COCO ground truth as segments: decoding (panoptic PNG ids, polygons, RLE, uncompressed RLE), the per-image Label
step, and the graph that streams a COCO JSON and joins it to images by file name."""

from __future__ import annotations

import io
import json
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from inference import coco
from models.rle import decode_rle
from tests.support.coco import HEIGHT, WIDTH, make_coco, only, panoptic_expected, scene, uncompressed_rle
from transforms.coco import (
    AnnotateCocoImage,
    ReadCategories,
    ReadCocoAnnotations,
    check_size,
    default_panoptic_dir,
    image_key,
    merge_categories,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("coco"), n_images=3)


def load(path):
    return json.loads(path.read_text())


def test_rgb_ids_use_all_three_channels():
    rgb = np.array([[[44, 1, 0], [112, 17, 1], [0, 0, 0]]], dtype=np.uint8)
    assert coco.rgb_to_id(rgb).tolist() == [[44 + 256, 112 + 17 * 256 + 65536, 0]]


def test_panoptic_png_must_be_rgb():
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG")
    with pytest.raises(coco.CocoError, match="mode L"):
        coco.decode_panoptic_png(buffer.getvalue())


def test_polygons_compressed_and_uncompressed_rle_decode_to_the_drawn_pixels():
    rect = np.zeros((HEIGHT, WIDTH), dtype=bool)
    rect[5:9, 10:30] = True  # 4 x 20
    polygon = [[10, 5, 30, 5, 30, 9, 10, 9]]
    np.testing.assert_array_equal(coco.segmentation_mask(polygon, HEIGHT, WIDTH), rect)
    np.testing.assert_array_equal(coco.segmentation_mask(uncompressed_rle(rect), HEIGHT, WIDTH), rect)
    from tests.support.coco import compressed_rle

    np.testing.assert_array_equal(coco.segmentation_mask(compressed_rle(rect), HEIGHT, WIDTH), rect)
    # Two parts of one object are one mask; a degenerate polygon (a line: 4 numbers) has no pixel, and is never
    # mistaken for a box.
    two = coco.segmentation_mask([[0, 0, 2, 0, 2, 2, 0, 2], [10, 10, 13, 10, 13, 11, 10, 11]], HEIGHT, WIDTH)
    assert two.sum() == 4 + 3
    assert coco.segmentation_mask([[0, 0, 40, 40]], HEIGHT, WIDTH).sum() == 0
    with pytest.raises(coco.CocoError, match="RLE size"):
        coco.segmentation_mask({"size": [2, 2], "counts": [4]}, HEIGHT, WIDTH)
    with pytest.raises(coco.CocoError, match="neither polygons nor RLE"):
        coco.segmentation_mask("oops", HEIGHT, WIDTH)


def test_readable_names():
    assert [coco.readable_name(n) for n in ("sky-other-merged", "wall-brick", "door-stuff", "traffic light",
                                            "playingfield", "tree-merged", "other")] == [
        "sky", "wall brick", "door", "traffic light", "playingfield", "tree", "other"]


def test_sniff_tells_panoptic_from_instances(world, tmp_path):
    with open(world.panoptic, "rb") as f:
        assert coco.sniff_format(f) == coco.PANOPTIC
    with open(world.instances, "rb") as f:
        assert coco.sniff_format(f) == coco.INSTANCES
    (tmp_path / "captions.jsonl").write_text('{"image": "a.jpg", "caption": "a dog"}\n')
    with open(tmp_path / "captions.jsonl", "rb") as f, pytest.raises(coco.CocoError):
        coco.sniff_format(f)
    (tmp_path / "none.json").write_text('{"annotations": []}')
    with open(tmp_path / "none.json", "rb") as f, pytest.raises(coco.CocoError, match="no images"):
        coco.sniff_format(f)
    assert default_panoptic_dir("gs://b/annotations/panoptic_val2017.json") == "gs://b/annotations/panoptic_val2017"


def records_of(paths) -> dict[str, list[dict]]:
    """What the graph gives the Label step, built here from the files directly: a multimap from file name to one
    record per file that lists the image (an unknown name has no record)."""
    records = defaultdict(list)
    for source, path in enumerate(paths):
        doc = load(path)
        by_image = {}
        for ann in doc["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for image in doc["images"]:
            records[image["file_name"]].append({"file_name": image["file_name"], "height": image["height"],
                                                "width": image["width"], "source": source,
                                                "annotations": by_image.get(image["id"], [])})
    return records


def annotate(world, paths, fmt, crowd="skip", name="000000000100.jpg", height=HEIGHT, width=WIDTH):
    paths = paths if isinstance(paths, list) else [paths]
    fn = AnnotateCocoImage(fmt, default_panoptic_dir(str(paths[0])) if fmt == coco.PANOPTIC else None, crowd)
    categories = merge_categories([c for path in paths for c in load(path)["categories"]])
    item = {"uri": str(world.images / name), "height": height, "width": width, "failure": None,
            "image": np.zeros((height, width, 3), np.uint8)}
    (out,) = fn.process(item, records_of(paths), categories)
    return out


def segments_of(item) -> list[tuple[str, int, list[float]]]:
    """(label, area, bbox) per segment, the area counted on the decoded RLE."""
    rows = []
    for label, rle, bbox in zip(item["segment_labels"], item["rles"], item["bboxes"], strict=True):
        mask = decode_rle(rle, item["height"], item["width"])
        rows.append((label, int(mask.sum()), [float(v) for v in bbox]))
    return sorted(rows)


@pytest.mark.parametrize("files", ["instances+stuff", "panoptic", "instances", "stuff"])
def test_each_region_is_one_segment_with_its_label_and_area(world, files):
    """COCO-Stuff (things from the instances file + stuff from the stuff file), panoptic, and each file alone."""
    paths, fmt, expected = {
        "instances+stuff": ([world.instances, world.stuff], coco.INSTANCES, world.expected),
        "panoptic": ([world.panoptic], coco.PANOPTIC, panoptic_expected(world)),
        "instances": ([world.instances], coco.INSTANCES, only(world.expected, {"person", "dog"})),
        "stuff": ([world.stuff], coco.INSTANCES, only(world.expected, {"sky", "grass"})),
    }[files]
    for name in expected:
        item = annotate(world, paths, fmt, name=name)
        assert item["failure"] is None, item["failure"]
        assert segments_of(item) == expected[name]
    if files != "stuff":
        assert item["segment_labels"].count("person") == 2  # two people, two segments


def test_crowd_regions_are_kept_on_request(world):
    name = "000000000100.jpg"
    item = annotate(world, [world.instances, world.stuff], coco.INSTANCES, crowd="keep", name=name)
    assert segments_of(item) == world.expected_with_crowd[name]


def test_one_category_id_named_two_ways_is_refused():
    with pytest.raises(ValueError, match="category id 7 is 'cat' in one annotations file and 'dog'"):
        merge_categories([{"id": 7, "name": "cat"}, {"id": 7, "name": "dog"}])
    assert merge_categories([{"id": 7, "name": "cat"}, {"id": 7, "name": "cat"}]) == {7: {"id": 7, "name": "cat"}}


def test_a_resized_image_gets_resized_masks_and_a_wrong_size_fails(world):
    item = annotate(world, world.stuff, coco.INSTANCES, height=HEIGHT // 2, width=WIDTH // 2)
    assert item["failure"] is None
    sky = next(r for r in segments_of(item) if r[0] == "sky")
    assert sky[1] == (WIDTH // 2) * (scene(0)[0].rects[0][3] // 2)  # 18 rows of 64 -> 9 rows of 32
    rotated = annotate(world, world.instances, coco.INSTANCES, height=WIDTH, width=HEIGHT)
    assert rotated["failure"]["stage"] == "label" and "64x48 image" in rotated["failure"]["message"]
    check_size({"height": 480, "width": 640}, 767, 1024)  # 640x480 -> max side 1024 rounds to 767 or 768


def test_images_the_file_does_not_list_fail_alone(world):
    item = annotate(world, world.instances, coco.INSTANCES, name="not_in_coco.jpg")
    assert item["failure"]["stage"] == "label" and "lists no image named not_in_coco.jpg" in item["failure"]["message"]


def test_a_panoptic_png_that_disagrees_with_its_json_fails_that_image(world, tmp_path):
    doc = load(world.panoptic)
    doc["annotations"][0]["segments_info"][0]["id"] = 123456  # no pixel has this id
    broken = tmp_path / "panoptic_train.json"
    broken.write_text(json.dumps(doc))
    (tmp_path / "panoptic_train").symlink_to(default_panoptic_dir(str(world.panoptic)))
    item = annotate(world, broken, coco.PANOPTIC)
    assert "has no pixel" in item["failure"]["message"]


def test_the_graph_streams_the_file_and_joins_by_file_name(world):
    """ReadCocoAnnotations + the categories side input, on the DirectRunner: one record per listed image, with
    exactly its annotations; an annotation of an unlisted image id goes nowhere."""
    doc = load(world.stuff)
    doc["annotations"].append({"id": 999, "image_id": 424242, "category_id": 1, "iscrowd": 0,
                               "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "area": 16.0, "bbox": [0, 0, 4, 4]})
    path = world.stuff.with_name("with_orphan.json")
    path.write_text(json.dumps(doc))
    expected, categories = [], []
    for source, d in enumerate([load(world.instances), doc]):
        per_image = {}
        for ann in d["annotations"]:
            per_image.setdefault(ann["image_id"], []).append(ann["id"])
        expected += [(image["file_name"], source, sorted(per_image[image["id"]])) for image in d["images"]]
        categories += [(c["id"], c["name"]) for c in d["categories"]]
    files = [str(world.instances), str(path)]
    with BeamTestPipeline() as p:
        records = p | ReadCocoAnnotations(files)
        summary = records | beam.Map(lambda kv: (kv[0], kv[1]["source"], sorted(a["id"] for a in kv[1]["annotations"])))
        assert_that(summary, equal_to(expected))
        merged = p | "Categories" >> ReadCategories(files)
        names = merged | beam.Map(lambda c: sorted((k, v["name"]) for k, v in c.items()))
        assert_that(names, equal_to([sorted(categories)]), label="CheckCategories")
    assert image_key("gs://b/train2017/000000000100.jpg") == "000000000100.jpg"
