"""`reme label --format coco`: one COCO JSON for the run that pycocotools, and the tools that import COCO, read back
as exactly the pixels of the PNG label maps."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from inference import outputs
from inference.labeller import ImageLabels
from pipeline import cli
from refset import storage
from tests.inference.label_inputs import INPUT_NAMES, UPRIGHT_SIZES
from tests.inference.scenes import CLASSES
from tests.support.gcs import gcs_emulator, gcs_prefix  # noqa: F401  (pytest fixtures)


def _png(out, image: dict) -> np.ndarray:
    return np.asarray(Image.open(out / image["label_map"]))


def _box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def test_coco_json_round_trips_the_label_maps_through_pycocotools(labelled_inputs):
    _, inputs, out = labelled_inputs
    coco = COCO(str(out / "coco.json"))
    # Categories: the class list, ids = position + 1, in order.
    assert [(c["id"], c["name"]) for c in coco.dataset["categories"]] == [(i + 1, n) for i, n in enumerate(CLASSES)]
    images = coco.dataset["images"]
    assert sorted(im["file_name"] for im in images) == sorted(INPUT_NAMES)  # relative to the input root
    assert [im["id"] for im in images] == list(range(1, len(images) + 1))
    segments = pq.read_table(out / "segments").to_pylist()
    # The same annotations as a results file (loadRes rewrites the dicts it is given: hand it copies).
    results = coco.loadRes(copy.deepcopy(coco.dataset["annotations"]))
    checked = 0
    for image in images:
        png = _png(out, image)
        assert (image["height"], image["width"]) == png.shape == UPRIGHT_SIZES.get(image["file_name"], (96, 128))
        assert (inputs / image["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert sorted(a["category_id"] for a in anns) == [c + 1 for c in np.unique(png) if c != 255]
        rows = [r for r in segments if r["image"] == str(inputs / image["file_name"])]
        for ann in anns:
            expected = png == ann["category_id"] - 1
            assert np.array_equal(coco.annToMask(ann).astype(bool), expected)
            assert ann["area"] == int(expected.sum()) and ann["bbox"] == _box(expected) and ann["iscrowd"] == 0
            mine = [r for r in rows if r["class_id"] == ann["category_id"] - 1]
            weighted = sum(r["area"] * r["score"] for r in mine) / sum(r["area"] for r in mine)
            assert ann["score"] == pytest.approx(weighted, abs=1e-5)
            res = results.anns[ann["id"]]
            assert np.array_equal(results.annToMask(res).astype(bool), expected) and res["score"] == ann["score"]
            checked += 1
        covered = sum(coco.annToMask(a).astype(int) for a in anns)
        assert np.array_equal(covered, (png != 255).astype(int))  # every labelled pixel in exactly one annotation
    assert checked == len(coco.dataset["annotations"]) > len(images)


def test_a_rerun_skips_done_images_and_reassembles_the_same_file(labelled_inputs, tmp_path, capsys):
    ref, inputs, out = labelled_inputs
    again = tmp_path / "out"
    shutil.copytree(out, again)
    (again / "img001.png").unlink()  # as if killed between the COCO fragment and the label map
    (again / "sub" / "mosaic.png").unlink()
    (again / "coco" / "sub" / "mosaic.json").unlink()  # ... and before the fragment
    (again / "coco.json").unlink()
    capsys.readouterr()
    assert cli.main(["label", "--index", str(ref), "--classes", ",".join(CLASSES), "--format", "coco",
                     "--max_side", "64", "--no_progress", str(inputs), str(again)]) == 0
    printed = capsys.readouterr().out
    assert "labelled 2 images, skipped 4 already done" in printed and "(6 images," in printed
    first, second = (json.loads((d / "coco.json").read_text()) for d in (out, again))
    first["info"].pop("date_created"), second["info"].pop("date_created")
    assert second == first


def test_coco_after_a_png_only_run_labels_the_images_again(scene_index, labelled_inputs, tmp_path, capsys):
    """Images done without a COCO fragment are not done for --format coco: they are labelled again."""
    ref, inputs, _ = labelled_inputs
    out = tmp_path / "out"
    argv = ["label", "--index", str(ref), "--classes", ",".join(CLASSES), "--max_side", "64", "--no_progress",
            str(inputs), str(out)]
    assert cli.main(argv) == 0 and not (out / "coco.json").exists() and not (out / "coco").exists()
    capsys.readouterr()
    assert cli.main(argv + ["--format", "png,coco"]) == 0
    assert "labelled 6 images, skipped 0" in capsys.readouterr().out
    assert len(json.loads((out / "coco.json").read_text())["images"]) == 6


def test_an_unknown_format_stops_before_any_work(labelled_inputs, tmp_path, capsys):
    ref, inputs, _ = labelled_inputs
    out = tmp_path / "never"
    assert cli.main(["label", "--index", str(ref), "--classes", "a,b", "--format", "png,tiff", str(inputs),
                     str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown format 'tiff'" in err[0] and not out.exists()


def test_class_regions_of_a_made_up_map():
    """RLE, area, box and score per class present, against numpy on a map whose answer is known."""
    label_map = np.full((40, 30), 255, np.uint8)
    label_map[:10] = 0
    label_map[10:25, 5:20] = 2
    labels = ImageLabels(label_map, class_ids=np.array([0, 2, 2, 1]), scores=np.array([0.5, 0.9, 0.6, 0.99]),
                         areas=np.array([300, 100, 50, 7]))
    regions = outputs.class_regions(labels, 255)
    assert [r["class_id"] for r in regions] == [0, 2]  # class 1 decided but painted nowhere: no annotation
    for r in regions:
        rle = dict(r["rle"], counts=r["rle"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), label_map == r["class_id"])
    assert [r["area"] for r in regions] == [300, 225]
    assert [r["bbox"] for r in regions] == [[0, 0, 30, 10], [5, 10, 15, 15]]
    assert regions[1]["score"] == pytest.approx((100 * 0.9 + 50 * 0.6) / 150)


def test_datumaro_imports_it_as_cvat_does(labelled_inputs, tmp_path):
    """CVAT's dataset framework reads the file as the README's recipe lays it out (annotations/instances_default.json,
    the format CVAT's "COCO 1.0" import takes): one mask per image and class, equal to the PNG."""
    dm = pytest.importorskip("datumaro", reason="datumaro is in the dev extra; this venv lacks it")
    _, inputs, out = labelled_inputs
    (tmp_path / "annotations").mkdir()
    shutil.copy(out / "coco.json", tmp_path / "annotations" / "instances_default.json")
    shutil.copytree(inputs, tmp_path / "images" / "default")  # Datumaro's layout; CVAT takes the task's images
    dataset = dm.Dataset.import_from(str(tmp_path), "coco_instances")
    names = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
    assert names == list(CLASSES)
    images = {im["file_name"].rsplit(".", 1)[0]: im for im in json.loads((out / "coco.json").read_text())["images"]}
    masks = 0
    for item in dataset:
        png = _png(out, images[item.id])
        for ann in item.annotations:
            if ann.type == dm.AnnotationType.mask:
                assert np.array_equal(ann.image.astype(bool), png == ann.label)
                masks += 1
    assert len(dataset) == len(images) and masks == len(json.loads((out / "coco.json").read_text())["annotations"])


def test_class_pixels_counts_block_by_block(monkeypatch):
    rng = np.random.default_rng(3)
    label_map = rng.integers(0, 6, (37, 23)).astype(np.uint8)
    label_map[5, 5] = 255
    monkeypatch.setattr(outputs, "HISTOGRAM_ROWS_PIXELS", 50)  # two rows a block: 19 blocks
    assert outputs.class_pixels(label_map).tolist() == np.bincount(label_map.ravel()).tolist()


def test_assembly_on_gcs_gives_the_local_file(labelled_inputs, gcs_prefix):  # noqa: F811
    """The fragments and label maps of the run, in a bucket: one listing, fragments fetched in batches, the file
    uploaded whole; the same annotations as the local run's."""
    _, _, out = labelled_inputs
    remote = gcs_prefix.rstrip("/") + "/out"
    fs = storage.filesystem(remote)
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and (rel.startswith("coco/") or (rel.endswith(".png") and not rel.startswith("segments"))):
            fs.pipe_file(f"{remote}/{rel}", path.read_bytes())
    summary = outputs.assemble_coco(remote, list(CLASSES))
    assert summary == {"path": f"{remote}/coco.json", "images": 6, "annotations": summary["annotations"]}
    here, there = json.loads((out / "coco.json").read_text()), storage.read_json(f"{remote}/coco.json")
    here["info"].pop("date_created"), there["info"].pop("date_created")
    assert there == here and summary["annotations"] == len(here["annotations"])
