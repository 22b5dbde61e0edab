from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import datasets as D


def _img(path: Path, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _label(path: Path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if mode == "P":
        im = Image.fromarray(array.astype(np.uint8), mode="P")
        im.putpalette([i % 256 for i in range(768)])
    elif mode == "I;16":
        im = Image.fromarray(array.astype(np.uint16))
    else:
        im = Image.fromarray(array.astype(np.uint8), mode="L")
    im.save(path)


def test_class_lists_are_complete():
    assert len(D.VOC_CLASSES) == 21 and D.VOC_CLASSES[0] == "background"
    assert len(D.CONTEXT59_CLASSES) == 59 and len(set(D.CONTEXT59_CLASSES)) == 59
    assert len(D.COCO_THINGS) == 80 and len(D.COCO_STUFF_CLASSES) == 171 and len(set(D.COCO_STUFF_CLASSES)) == 171
    assert len(D.COCO_USED_IDS) == 171
    assert len(D.ADE150_CLASSES) == 150
    assert len(D.CITYSCAPES_CLASSES) == 19 and sorted(D.CITYSCAPES_ID_TO_TRAINID.values()) == list(range(19))


def test_ade150_names_match_the_official_list(real_data):
    official = D.read_classes_file(real_data / "ade20k" / "classes.txt")
    assert official[0] == "unlabeled" and tuple(official[1:]) == D.ADE150_CLASSES


def test_voc_layout_with_split_and_conventions(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    raw = np.array([[0, 1, 20, 255], [15, 15, 0, 0]])
    for stem in ("a", "b", "c"):
        _img(root / "JPEGImages" / f"{stem}.jpg", (4, 2))
        _label(root / "SegmentationClass" / f"{stem}.png", raw, mode="P")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nc\n")
    v21 = D.load_dataset("voc21", tmp_path)
    assert [k for k, _, _ in v21] == ["a", "c"]
    assert v21.has_background and v21.class_names[0] == "background"
    assert v21.label(v21.pairs[0][2]).tolist() == [[0, 1, 20, 255], [15, 15, 0, 0]]
    v20 = D.load_dataset("voc20", tmp_path)
    assert len(v20.class_names) == 20 and not v20.has_background
    assert v20.label(v20.pairs[0][2]).tolist() == [[255, 0, 19, 255], [14, 14, 255, 255]]


def test_ade150_shift_and_context59(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    _img(root / "images" / "validation" / "ADE_val_1.jpg", (3, 1))
    _label(root / "annotations" / "validation" / "ADE_val_1.png", [[0, 1, 150]])
    ds = D.load_dataset("ade150", tmp_path)
    assert ds.label(ds.pairs[0][2]).tolist() == [[255, 0, 149]]
    croot = tmp_path / "ctx"
    _img(croot / "JPEGImages" / "x.jpg", (3, 1))
    _label(croot / "SegmentationClassContext" / "x.png", [[0, 1, 59]])
    assert D.load_dataset("context59", croot).label(croot / "SegmentationClassContext" / "x.png").tolist() == [[255, 0, 58]]
    c60 = D.load_dataset("context60", croot)
    assert len(c60.class_names) == 60 and c60.label(c60.pairs[0][2]).tolist() == [[0, 1, 59]]


def test_coco_stuff_raw_ids_and_coco_object_from_train_ids(tmp_path):
    root = tmp_path / "coco"
    _img(root / "images" / "val2017" / "000001.jpg", (5, 1))
    # Raw stuffthingmaps store COCO id - 1: person (id 1) -> 0, bicycle (2) -> 1, stop sign (13) -> 11,
    # "banner" (id 92) -> 91, 255 unlabelled.
    _label(root / "annotations" / "val2017" / "000001.png", [[0, 1, 12, 91, 255]])
    ds = D.load_dataset("coco-stuff", root)
    assert ds.label(ds.pairs[0][2]).tolist() == [[0, 1, 11, 80, 255]]
    assert ds.class_names[11] == "stop sign" and ds.class_names[80] == "banner"
    obj_root = tmp_path / "coco2"
    _img(obj_root / "images" / "val2017" / "000002.jpg", (4, 1))
    _label(obj_root / "annotations" / "val2017" / "000002_labelTrainIds.png", [[0, 79, 80, 255]])
    obj = D.load_dataset("coco-object", obj_root)
    assert obj.has_background and len(obj.class_names) == 81
    assert obj.label(obj.pairs[0][2]).tolist() == [[1, 80, 0, 255]]


def test_cityscapes_label_ids_are_mapped(tmp_path):
    _img(tmp_path / "leftImg8bit" / "val" / "frankfurt" / "f_000_leftImg8bit.png", (4, 1))
    _label(tmp_path / "gtFine" / "val" / "frankfurt" / "f_000_gtFine_labelIds.png", [[7, 26, 0, 33]])
    ds = D.load_dataset("cityscapes", tmp_path)
    assert ds.pairs[0][0] == "frankfurt/f_000_leftImg8bit"
    assert ds.label(ds.pairs[0][2]).tolist() == [[0, 13, 255, 18]]


def test_folder_dataset_drops_the_ignore_name(tmp_path):
    _img(tmp_path / "images" / "p.jpg", (3, 1))
    _label(tmp_path / "labels" / "p.png", [[0, 1, 2]])
    (tmp_path / "classes.txt").write_text("unlabeled\ncat\ndog\n")
    ds = D.load_dataset("folder", tmp_path, ignore_index=0)
    assert ds.class_names == ["cat", "dog"]
    assert ds.label(ds.pairs[0][2]).tolist() == [[255, 0, 1]]
    plain = D.load_dataset("folder", tmp_path)  # default ignore 255: every name is a class
    assert plain.class_names == ["unlabeled", "cat", "dog"]


def test_sixteen_bit_pc459_needs_classes_txt(tmp_path):
    with pytest.raises(D.DatasetError, match="classes.txt"):
        D.load_dataset("pc459", tmp_path)
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(459)))
    _img(tmp_path / "JPEGImages" / "2008_000001.jpg", (3, 1))
    _label(tmp_path / "annotations_detectron2" / "pc459_val" / "2008_000001.tif", [[0, 458, 65535]], mode="I;16")
    ds = D.load_dataset("pc459", tmp_path)
    assert ds.ignore_index == 65535 and len(ds.class_names) == 459
    assert ds.label(ds.pairs[0][2]).tolist() == [[0, 458, 65535]]


def test_no_pairs_is_a_one_line_error(tmp_path):
    with pytest.raises(D.DatasetError) as err:
        D.load_dataset("ade150", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(D.DatasetError, match="unknown dataset"):
        D.load_dataset("imagenet", tmp_path)


# ---------------------------------------------------------------------------------------------------------
# COCO's own JSON layouts: the maps a benchmark should score against, written out from the generator's regions
# ---------------------------------------------------------------------------------------------------------
# Train ids by hand: COCO id - 1 - (COCO's unused ids below it): person 1 -> 0, dog 18 -> 16 (12 unused),
# grass 124 -> 112 and sky-other 157 -> 145 (11 unused ids below each).
STUFF_IDS = {"person": 0, "dog": 16, "grass": 112, "sky": 145}
OBJECT_IDS = {"person": 1, "dog": 17}


@pytest.fixture()
def coco_root(tmp_path):
    from tests.support.coco import make_coco

    return make_coco(tmp_path / "coco", n_images=2, split="val2017")


def expected_map(world, name: str, benchmark: str, panoptic: bool = False) -> np.ndarray:
    from tests.support.coco import HEIGHT, WIDTH

    base = 0 if benchmark == "coco-object" and not panoptic else 255
    label = np.full((HEIGHT, WIDTH), base, dtype=np.int64)
    for region, mask in world.regions[name]:
        if region.kind == "crowd":
            label[mask] = 255
        elif benchmark == "coco-stuff":
            label[mask] = STUFF_IDS[region.label]
        else:
            label[mask] = OBJECT_IDS.get(region.label, 0)  # stuff is background
    if panoptic:
        label[HEIGHT - 1, :] = 255  # the panoptic PNGs leave the bottom row unlabelled
    return label


def test_coco_stuff_names_match_the_generators_ids():
    assert [D.COCO_STUFF_CLASSES[STUFF_IDS[n]] for n in ("person", "dog", "grass", "sky")] == [
        "person", "dog", "grass", "sky-other"]
    assert [D.COCO_OBJECT_CLASSES[OBJECT_IDS[n]] for n in ("person", "dog")] == ["person", "dog"]


def test_coco_stuff_from_instances_and_stuff_json(coco_root):
    ds = D.load_dataset("coco-stuff", coco_root.root)
    assert len(ds) == 2 and ds.layout.images == "val2017" and not ds.has_background
    for key, image, ref in ds:
        assert image.name == key + ".jpg"
        np.testing.assert_array_equal(ds.label(ref), expected_map(coco_root, image.name, "coco-stuff"))


def test_coco_object_from_instances_json_and_from_panoptic(coco_root):
    ds = D.load_dataset("coco-object", coco_root.root)
    assert ds.has_background and ds.layout.labels == "annotations/instances_val2017.json"
    for _, image, ref in ds:
        np.testing.assert_array_equal(ds.label(ref), expected_map(coco_root, image.name, "coco-object"))
    coco_root.instances.unlink()  # only the panoptic files left
    ds = D.load_dataset("coco-object", coco_root.root)
    assert ds.layout.labels == "annotations/panoptic_val2017.json"
    for _, image, ref in ds:
        np.testing.assert_array_equal(ds.label(ref), expected_map(coco_root, image.name, "coco-object", True))


def test_coco_stuff_needs_both_json_files(coco_root):
    coco_root.stuff.unlink()
    with pytest.raises(D.DatasetError, match="stuff_val2017.json") as err:
        D.load_dataset("coco-stuff", coco_root.root)
    assert "\n" not in str(err.value)


def test_coco_json_with_foreign_category_ids_is_refused(coco_root):
    import json

    doc = json.loads(coco_root.instances.read_text())
    doc["categories"][1]["name"] = "cat"  # id 18 is COCO's dog
    coco_root.instances.write_text(json.dumps(doc))
    with pytest.raises(D.DatasetError, match="category 18 is 'cat', COCO's is 'dog'"):
        D.load_dataset("coco-object", coco_root.root)


def test_small_things_stay_visible_on_larger_ones():
    from inference.coco import Region

    big, small = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    big[:, :] = True
    small[1:3, 1:3] = True
    # listed small first: painting in file order would hide it under the big one
    label = D.coco_object_label([Region(18, False, small), Region(1, False, big)], 4, 4, background_everywhere=True)
    assert label.tolist() == [[1, 1, 1, 1], [1, 17, 17, 1], [1, 17, 17, 1], [1, 1, 1, 1]]


def test_evaluate_scores_maps_against_coco_json(coco_root, tmp_path, capsys):
    """`reme evaluate --dataset coco-stuff ROOT --predictions DIR` on the JSON layout: the true maps score 100,
    a map with the dog called a person loses exactly the dog."""
    import json

    from PIL import Image

    from pipeline import cli

    perfect, wrong = tmp_path / "perfect", tmp_path / "wrong"
    for directory in (perfect, wrong):
        directory.mkdir()
    for name in coco_root.regions:
        truth = expected_map(coco_root, name, "coco-stuff")
        Image.fromarray(truth.astype(np.uint8)).save(perfect / name.replace(".jpg", ".png"))
        Image.fromarray(np.where(truth == STUFF_IDS["dog"], STUFF_IDS["person"], truth).astype(np.uint8)).save(
            wrong / name.replace(".jpg", ".png"))
    scores = {}
    for directory in (perfect, wrong):
        out = tmp_path / f"{directory.name}.json"
        assert cli.main(["evaluate", "--dataset", "coco-stuff", str(coco_root.root), "--predictions", str(directory),
                         "--json", str(out), "--no_progress"]) == 0
        scores[directory.name] = json.loads(out.read_text())
    assert scores["perfect"]["mIoU"] == 100.0 and scores["perfect"]["missing_predictions"] == 0
    per_class = scores["wrong"]["per_class_iou"]
    assert per_class["dog"] == 0.0 and per_class["sky-other"] == 100.0 and per_class["grass"] == 100.0
    assert 0 < per_class["person"] < 100.0
