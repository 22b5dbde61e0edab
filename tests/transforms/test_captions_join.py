"""The captions join inside the Beam graph (DirectRunner, small files): COCO in any key order and JSONL give every
input image exactly its own captions; what does not join is counted; JSONL is read with a splittable source."""

from __future__ import annotations

import gzip
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.textio import ReadFromText
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from refset.staging import shard_of
from tests.support.coco_captions import COCO_KEY_ORDER, coco_spec, write_coco_captions, write_jsonl_captions
from transforms.captions import COCO, JSONL, ReadCaptionedImages, StreamCocoCaptions, caption_key, sniff_captions

SHUFFLED_KEYS = ("images", "annotations", "info", "licenses")[::-1]
NUM_SHARDS = 4


def world(tmp_path: Path):
    """300 COCO images, 1,500 captions; 6 of the images are input files (two listed under a folder, one with no
    caption), plus one input file the captions never name."""
    on_disk = {11: "train2017/000000000011.jpg", 12: "000000000012.jpg", 13: "val/000000000013.png",
               14: "000000000014.jpg", 15: "000000000015.jpg", 16: "000000000016.jpg"}
    spec = coco_spec(300, 1500, seed=3, file_names=on_disk, uncaptioned=(16,))
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.zeros((6, 6, 3), np.uint8)
    for name in [*on_disk.values(), "not_in_captions.png"]:
        Image.fromarray(pixels).save(images / caption_key(name))
    expected = {caption_key(on_disk[i]): sorted(spec.captions_of(i)) for i in on_disk}
    expected["not_in_captions.png"] = []
    absent = [i for i in spec.image_ids if i not in on_disk]
    return spec, images, expected, absent


def join(images: Path, captions: Path, fmt: str, expected: dict[str, list[str]], done_shards=()) -> dict:
    """Run the join and check its items against `expected` {file name: sorted captions}; returns the counters."""
    with beam.Pipeline() as p:
        items = p | ReadCaptionedImages([str(images)], str(captions), fmt, NUM_SHARDS, done_shards)
        got = items | beam.Map(lambda item: (caption_key(item["uri"]), tuple(item["captions"]), item["failure"]))
        assert_that(got, equal_to([(name, tuple(c), None) for name, c in expected.items()]))
    return {c.key.metric.name: c.committed for c in p.result.metrics().query()["counters"]}


@pytest.mark.parametrize("fmt, key_order", [(COCO, COCO_KEY_ORDER), (COCO, SHUFFLED_KEYS), (JSONL, None)],
                         ids=["coco-order", "coco-shuffled", "jsonl"])
def test_every_input_image_gets_exactly_its_captions(tmp_path, fmt, key_order):
    spec, images, expected, absent = world(tmp_path)
    if fmt == COCO:
        path = write_coco_captions(tmp_path / "c.json", spec, key_order, reverse_fields=key_order != COCO_KEY_ORDER,
                                   orphans=5)
    else:
        path = write_jsonl_captions(tmp_path / "c.jsonl", spec)
    counters = join(images, path, fmt, expected)
    assert counters["images_read"] == len(expected)
    assert counters["captions_without_image"] == sum(len(spec.captions_of(i)) for i in absent)
    assert counters["captioned_names_without_image"] == len(absent)
    assert counters.get("captions_unknown_image_id", 0) == (5 if fmt == COCO else 0)


def test_committed_shards_are_skipped_and_their_captions_not_counted_as_absent(tmp_path):
    spec, images, expected, absent = world(tmp_path)
    path = write_coco_captions(tmp_path / "c.json", spec)
    done = shard_of(str(images / "000000000012.jpg"), NUM_SHARDS)
    kept = {name: c for name, c in expected.items() if shard_of(str(images / name), NUM_SHARDS) != done}
    assert "000000000012.jpg" not in kept and len(kept) < len(expected)
    counters = join(images, path, COCO, kept, done_shards=(done,))
    assert counters["captions_without_image"] == sum(len(spec.captions_of(i)) for i in absent)


def test_malformed_jsonl_lines_are_counted_and_skipped(tmp_path):
    spec, images, expected, _ = world(tmp_path)
    path = write_jsonl_captions(tmp_path / "c.jsonl", spec)
    path.write_text(path.read_text() + '{"image": "000000000012.jpg"}\nnot json\n\n')
    counters = join(images, path, JSONL, expected)
    assert counters["caption_records_malformed"] == 2


def transforms_of(fmt: str, captions: Path, images: Path) -> list:
    p = beam.Pipeline()
    _ = p | ReadCaptionedImages([str(images)], str(captions), fmt, NUM_SHARDS)
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            found.append(node.transform)

        def visit_transform(self, node):
            found.append(node.transform)

    p.visit(Visitor())
    return found


def test_jsonl_is_read_by_a_splittable_source_in_independent_byte_ranges(tmp_path):
    """The graph reads JSONL with ReadFromText; its source splits the file into byte ranges that workers read
    independently (here 8 ranges of a 150 kB file), together every line exactly once."""
    spec, images, _, _ = world(tmp_path)
    path = write_jsonl_captions(tmp_path / "c.jsonl", spec)
    steps = transforms_of(JSONL, path, images)
    assert any(isinstance(t, ReadFromText) for t in steps)
    assert not any(isinstance(getattr(t, "fn", None), StreamCocoCaptions) for t in steps)
    (read,) = [t for t in steps if isinstance(t, beam.io.Read)]
    size = path.stat().st_size
    bundles = list(read.source.split(desired_bundle_size=size // 8))
    assert len(bundles) >= 8
    lines_per_bundle = []
    for bundle in bundles:
        tracker = bundle.source.get_range_tracker(bundle.start_position, bundle.stop_position)
        lines_per_bundle.append(list(bundle.source.read(tracker)))
    every = [line for lines in lines_per_bundle for line in lines]
    assert sorted(every) == sorted(path.read_text().splitlines())
    assert max(map(len, lines_per_bundle)) < len(every) / 4


def test_coco_is_streamed_by_one_step_and_joined_by_id_in_the_graph(tmp_path):
    spec, images, _, _ = world(tmp_path)
    path = write_coco_captions(tmp_path / "c.json", spec)
    steps = transforms_of(COCO, path, images)
    assert any(isinstance(getattr(t, "fn", None), StreamCocoCaptions) for t in steps)
    assert sum(isinstance(t, beam.CoGroupByKey) for t in steps) == 2  # by image id, then by file name
    assert not any(isinstance(t, ReadFromText) for t in steps)


@pytest.mark.parametrize("fmt", [COCO, JSONL])
def test_gzipped_captions_are_recognised_and_joined(tmp_path, fmt):
    """A .gz captions file: the launcher sniffs the decompressed head, the graph decompresses as it reads."""
    spec, images, expected, _ = world(tmp_path)
    plain = (write_coco_captions(tmp_path / "c.json", spec) if fmt == COCO
             else write_jsonl_captions(tmp_path / "c.jsonl", spec))
    packed = plain.with_name(plain.name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert sniff_captions(str(packed)) == fmt
    counters = join(images, packed, fmt, expected)
    assert counters["images_read"] == len(expected)
