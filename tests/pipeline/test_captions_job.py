"""The index job with a COCO-shaped captions file: launch checks that read only the first bytes, a reference set
built end to end from a few images among thousands of captioned ones, and a resume fingerprint that follows the
captions file's content."""

from __future__ import annotations

import os

import pytest

from pipeline import build_index
from pipeline.command import UsageError
from tests.support.coco_captions import coco_spec, write_coco_captions

from .helpers import CLASSES, make_annotated_dataset, rows

# The classes each made-up image shows, named in its captions (helpers.make_annotated_dataset draws 3 of 4).
CAPTIONS = {0: ["brick and grass under the water", "a wall of brick by some sand"],
            1: ["sand next to the water", "grass by the water"],
            2: ["a brick wall"]}


def argv(tiny_models, output, images, captions, *flags):
    return ["--output", str(output), "--preset", "tiny-random", "--cache_dir", tiny_models.cache_dir,
            "--input", str(images), "--captions", str(captions), "--torch_threads", "1", *flags]


@pytest.mark.parametrize("text, reason", [
    ("", "holds no captions"),
    ("image,caption\n", "neither COCO captions JSON nor JSONL"),
    ('{"info": "' + "x" * 70_000 + '"}', "without an 'images' or 'annotations' key"),
])
def test_a_captions_file_that_is_empty_or_unrecognisable_is_refused_in_one_line(tmp_path, text, reason):
    root = make_annotated_dataset(tmp_path / "data", n_images=1)
    captions = tmp_path / "captions.json"
    captions.write_text(text)
    config, _ = build_index.parse(["--output", str(tmp_path / "out"), "--input", str(root / "images"),
                                   "--captions", str(captions), "--preset", "tiny-random"])
    with pytest.raises(UsageError, match=reason) as caught:
        build_index.prepare(config)
    assert str(caught.value).startswith(f"--captions {captions} ") and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_coco_shaped_captions_build_a_reference_set(tiny_models, tmp_path):
    """4 images on disk; the COCO file lists 2,000 images with 10,000 captions: 3 of ours (one under a folder), the
    rest absent. The fourth image has no caption: its segments are unlabelled."""
    root = make_annotated_dataset(tmp_path / "data", n_images=4)
    ours = {101: "train2017/img_000.png", 102: "img_001.png", 103: "img_002.png"}
    spec = coco_spec(2000, 10_000, seed=5, file_names=ours,
                     texts={101: CAPTIONS[0], 102: CAPTIONS[1], 103: CAPTIONS[2]})
    captions = write_coco_captions(tmp_path / "captions_train2017.json", spec)
    output = tmp_path / "reference"
    manifest = build_index.run(argv(tiny_models, output, root / "images", captions, "--max_side", "64",
                                    "--min_label_count", "1", "--felzenszwalb_min_size", "40", "--skip_index"),
                               save_main_session=False)
    counts, metrics = manifest["counts"], manifest["run_metrics"]
    assert counts["images_in"] == 4 and counts["images_failed"] == 0
    assert metrics["captions_without_image"] == 10_000 - sum(len(t) for t in CAPTIONS.values())
    assert metrics["captioned_names_without_image"] == 2000 - 3
    assert metrics["images_without_caption"] == 1
    assert manifest["params"]["captions_format"] == "coco"

    segments, dropped = rows(output / "segments"), rows(output / "dropped")
    assert segments
    uncaptioned = str(root / "images" / "img_003.png")
    assert "unlabelled" in {r["reason"] for r in dropped if r["image_uri"] == uncaptioned}
    assert {r["reason"] for r in dropped if r["image_uri"] == uncaptioned} <= {"unlabelled", "too_small"}
    assert not [r for r in segments if r["image_uri"] == uncaptioned]
    for r in segments:  # each label comes from the captions of its own image, never another's
        index = int(r["image_uri"].rsplit("_", 1)[1][:3])
        words = " ".join(CAPTIONS[index]).split()
        assert r["label"].split()[-1] in words, (r["label"], CAPTIONS[index])
    assert {r["label"] for r in segments} <= set(CLASSES) | {"wall", "brick wall"}
    line = build_index.captions_summary(manifest)
    assert "1 images without a caption" in line and f"{metrics['captions_without_image']} captions of 1997" in line


def test_resume_is_refused_when_the_captions_file_changed(tiny_models, tmp_path):
    root = make_annotated_dataset(tmp_path / "data", n_images=2)
    spec = coco_spec(50, 250, file_names={1: "img_000.png", 2: "img_001.png"})
    captions = write_coco_captions(tmp_path / "c.json", spec)
    config, _ = build_index.parse(argv(tiny_models, tmp_path / "out", root / "images", captions))
    build_index.prepare(config)
    build_index.prepare(config)  # unchanged file: the run resumes
    stat = captions.stat()
    data = captions.read_bytes()
    captions.write_bytes(data.replace(b"picture", b"photo  ", 1))  # same size; one caption edited
    os.utime(captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(UsageError, match="label settings differ"):
        build_index.prepare(config)
