"""Captions files: COCO captions JSON and JSONL, matched by file name; labels are the union over captions."""

from __future__ import annotations

import json

import pytest

from transforms.captions import caption_key, labels_from_captions, parse_captions


def test_coco_captions_json():
    doc = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "train2017/b.jpg"}],
        "annotations": [
            {"image_id": 1, "caption": "A dog on the grass."},
            {"image_id": 1, "caption": "Two dogs play."},
            {"image_id": 2, "caption": "A red bus."},
        ],
    }
    captions = parse_captions(json.dumps(doc))
    assert captions == {"000000000001.jpg": ["A dog on the grass.", "Two dogs play."], "b.jpg": ["A red bus."]}


def test_jsonl_and_matching_by_file_name():
    text = '{"image": "imgs/a.png", "caption": "a cat"}\n\n{"image": "b.png", "caption": "a dog"}\n'
    captions = parse_captions(text)
    assert captions[caption_key("gs://bucket/photos/a.png")] == ["a cat"]
    assert captions[caption_key("/x/y/b.png")] == ["a dog"]


def test_bad_line_names_the_line():
    with pytest.raises(ValueError, match="line 2"):
        parse_captions('{"image": "a.png", "caption": "x"}\n{"img": "b.png"}\n')


def test_labels_union_first_seen_order():
    extract = {"a dog and a cat": ["dog", "cat"], "the cat on grass": ["cat", "grass"]}.get
    assert labels_from_captions(["a dog and a cat", "the cat on grass"], extract) == ["dog", "cat", "grass"]
