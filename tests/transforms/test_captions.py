"""Captions files without Beam: the format from the first bytes, COCO records streamed in any key order, JSONL lines,
the bounded reads of the launcher, the file identity of the resume fingerprint, and batched labels."""

from __future__ import annotations

import io
import json
import os

import pytest

from tests.support.coco_captions import COCO_KEY_ORDER, coco_spec, write_coco_captions, write_jsonl_captions
from transforms import captions as captions_module
from transforms.captions import (
    COCO,
    HEAD_BYTES,
    IDENTITY_BLOCK,
    JSONL,
    CaptionLabelsHandler,
    caption_key,
    captions_identity,
    coco_records,
    jsonl_record,
    read_captions,
    sniff_captions,
    union_labels,
)

SHUFFLED_KEYS = ("annotations", "licenses", "images", "info")


def joined(records) -> dict[str, list[str]]:
    """A plain in-test join of coco_records by image id (the reference the Beam join is held to elsewhere)."""
    names, by_id = {}, {}
    for kind, key, value in records:
        if kind == "image":
            names[key] = value
        elif kind == "caption":
            by_id.setdefault(key, []).append(value)
    return {names[i]: sorted(c) for i, c in by_id.items() if i in names}


def truth(spec) -> dict[str, list[str]]:
    return {caption_key(spec.file_names[i]): sorted(spec.captions_of(i)) for i in spec.image_ids
            if spec.captions_of(i)}


def test_caption_key_is_the_base_name():
    assert caption_key("gs://bucket/train2017/000000000009.jpg") == "000000000009.jpg"
    assert caption_key("train2017\\a.png") == caption_key("/x/y/a.png") == "a.png"


@pytest.mark.parametrize("key_order", [COCO_KEY_ORDER, SHUFFLED_KEYS], ids=["coco-order", "shuffled"])
def test_coco_is_recognised_from_its_first_bytes_in_any_key_order(tmp_path, key_order):
    spec = coco_spec(600, 3000)  # the images list alone is > 64 KiB, as in COCO
    path = write_coco_captions(tmp_path / "c.json", spec, key_order)
    head = path.read_bytes()[:HEAD_BYTES]
    if key_order == COCO_KEY_ORDER:
        assert b'"annotations"' not in head  # the shape today's launcher refused
    assert sniff_captions(str(path)) == COCO


def test_pretty_printed_coco_and_jsonl_are_recognised(tmp_path):
    doc = {"info": {}, "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": "x"}]}
    (tmp_path / "pretty.json").write_text(json.dumps(doc, indent=2))
    assert sniff_captions(str(tmp_path / "pretty.json")) == COCO
    (tmp_path / "one.json").write_text(json.dumps(doc))
    assert sniff_captions(str(tmp_path / "one.json")) == COCO
    (tmp_path / "c.jsonl").write_text('\ufeff{"image": "a.jpg", "caption": "a cat"}\n{"image": "b.jpg"}\n')
    assert sniff_captions(str(tmp_path / "c.jsonl")) == JSONL  # line 2 is the graph's business (counted)


@pytest.mark.parametrize("text, reason", [
    ("", "holds no captions"),
    ("\n \n\t\n", "holds no captions"),
    ("image,caption\na.jpg,a cat\n", "neither COCO captions JSON nor JSONL"),
    ('{"img": "a.jpg", "text": "a cat"}\n', "line 1 has neither"),
    ('{"info": {}, "licenses": []}', "line 1 has neither"),
    ('{"image": "a.jpg", "caption": \n', "line 1 is not valid JSON"),
    ('{"info": "' + "x" * HEAD_BYTES + '", "images": []}', "first 64 KiB"),
    (" " * (HEAD_BYTES + 10) + '{"image": "a.jpg", "caption": "x"}', "first 64 KiB (blank)"),
])
def test_unrecognisable_files_are_refused_with_one_line(tmp_path, text, reason):
    path = tmp_path / "captions.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")) as caught:
        sniff_captions(str(path))
    assert "\n" not in str(caught.value)


class CountingFile(io.RawIOBase):
    def __init__(self, raw, counter):
        self.raw, self.counter = raw, counter

    def read(self, n=-1):
        data = self.raw.read(n)
        self.counter["bytes"] += len(data)
        return data

    def seek(self, offset, whence=0):
        return self.raw.seek(offset, whence)

    def close(self):
        self.raw.close()


def test_launch_reads_are_bounded(tmp_path, monkeypatch):
    """The format check reads 64 KiB and the fingerprint 2 MiB of a file of any size (here 12 MB)."""
    spec = coco_spec(15_000, 75_000)
    path = write_coco_captions(tmp_path / "c.json", spec)
    assert path.stat().st_size > 10 * 2**20
    real = captions_module.storage.filesystem(str(path))
    counter = {"bytes": 0}

    class Spy:
        def open(self, p, mode="rb", **kwargs):
            return CountingFile(real.open(p, mode, **kwargs), counter)

        def info(self, p):
            return real.info(p)

    monkeypatch.setattr(captions_module.storage, "filesystem", lambda p: Spy())
    assert sniff_captions(str(path)) == COCO
    assert counter["bytes"] <= HEAD_BYTES + 1
    counter["bytes"] = 0
    captions_identity(str(path))
    assert counter["bytes"] <= 2 * IDENTITY_BLOCK


def test_identity_changes_with_the_content_and_only_then(tmp_path):
    spec = coco_spec(20_000, 100_000)  # > 2 MiB, so a change in the middle is outside the hashed blocks
    path = write_coco_captions(tmp_path / "c.json", spec)
    stamp = (1_700_000_000, 1_700_000_000)
    os.utime(path, stamp)
    first = captions_identity(str(path))
    data = path.read_bytes()
    path.write_bytes(data)  # rewritten unchanged, same time: the same file
    os.utime(path, stamp)
    assert captions_identity(str(path)) == first
    middle = len(data) // 2
    changed = data[:middle] + (b"Y" if data[middle:middle + 1] != b"Y" else b"Z") + data[middle + 1:]
    path.write_bytes(changed)  # one byte in the middle, same size: caught by the modification time
    assert captions_identity(str(path)) != first
    os.utime(path, stamp)
    assert captions_identity(str(path)) == first  # ... and only by it; the hashed blocks are unchanged
    path.write_bytes(b"[" + data[1:])  # the first block changed, size and time restored
    os.utime(path, stamp)
    assert captions_identity(str(path)) != first


@pytest.mark.parametrize("key_order, reverse", [(COCO_KEY_ORDER, False), (SHUFFLED_KEYS, True)],
                         ids=["coco-order", "shuffled-keys-and-fields"])
def test_coco_records_stream_joins_to_the_truth(tmp_path, key_order, reverse):
    spec = coco_spec(300, 1500, file_names={7: "train2017/000000000007.jpg"})
    path = write_coco_captions(tmp_path / "c.json", spec, key_order, reverse_fields=reverse, orphans=4)
    with open(path, "rb") as f:
        records = list(coco_records(f))
    assert sum(kind == "image" for kind, _, _ in records) == 300
    assert sum(kind == "caption" for kind, _, _ in records) == 1504
    assert joined(records) == truth(spec)
    assert "000000000007.jpg" in joined(records)


def test_coco_records_skip_nested_fields_and_flag_malformed_records():
    doc = {"annotations": [{"image_id": 1, "caption": "a cat"}, {"image_id": 2}, {"caption": "lost"},
                           {"image_id": 1, "caption": "on a mat", "extra": {"image_id": 9, "caption": "no"}}],
           "images": [{"id": 1, "file_name": "x/a.jpg", "meta": {"id": 5, "file_name": "b.jpg"}},
                      {"file_name": "c.jpg"}, {"id": 3, "file_name": 4}]}
    records = list(coco_records(io.BytesIO(json.dumps(doc).encode())))
    assert records == [("caption", 1, "a cat"), ("malformed", "annotations", None),
                       ("malformed", "annotations", None), ("caption", 1, "on a mat"), ("image", 1, "a.jpg"),
                       ("malformed", "images", None), ("malformed", "images", None)]


def test_coco_without_annotations_is_an_error_at_the_end():
    stream = io.BytesIO(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}]}).encode())
    with pytest.raises(ValueError, match="no 'annotations' key"):
        list(coco_records(stream))


def test_jsonl_record():
    assert jsonl_record('{"image": "imgs/a.png", "caption": "a cat"}') == ("a.png", "a cat")
    for bad in ('{"img": "b.png", "caption": "x"}', '{"image": "b.png", "caption": 3}', "not json", "[1, 2]",
                '{"image": "b.png"'):
        assert jsonl_record(bad) is None


def test_read_captions_gives_the_same_map_for_coco_and_jsonl(tmp_path):
    spec = coco_spec(200, 1000)
    coco = read_captions(str(write_coco_captions(tmp_path / "c.json", spec, SHUFFLED_KEYS)))
    jsonl = read_captions(str(write_jsonl_captions(tmp_path / "c.jsonl", spec)))
    assert {k: sorted(v) for k, v in coco.items()} == {k: sorted(v) for k, v in jsonl.items()} == truth(spec)


def test_labels_union_first_seen_order():
    assert union_labels([["dog", "cat"], ["cat", "grass"], [""]]) == ["dog", "cat", "grass"]


def test_caption_labels_are_extracted_once_per_batch():
    calls = []

    def extract(captions):
        calls.append(list(captions))
        return [caption.split() for caption in captions]

    items = [{"uri": "a", "captions": ["dog cat", "cat grass"]}, {"uri": "b", "captions": []},
             {"uri": "c", "captions": ["sky"]}]
    handler = CaptionLabelsHandler(models=None)
    handler.apply(items, type("Bundle", (), {"extract": staticmethod(extract)}))
    assert calls == [["dog cat", "cat grass", "sky"]]
    assert [item["labels"] for item in items] == [["dog", "cat", "grass"], [], ["sky"]]
