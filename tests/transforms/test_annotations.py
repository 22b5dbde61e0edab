"""Annotation label maps: the three real encodings (VOC palette, ADE20K 0-ignore, CamVid 11-ignore) and made-up ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from transforms.annotations import (
    AnnotationError,
    decode_label_map,
    label_path_for,
    load_annotation,
    parse_classes,
    read_classes,
    resize_nearest,
    segments_from_label_map,
)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_partition(label_map, names, masks, class_names, ignore):
    """Every non-ignored pixel is in exactly one segment, the one named after its class id."""
    assert masks.dtype == bool and masks.shape[1:] == label_map.shape
    assert (masks.sum(axis=0) <= 1).all()
    covered = masks.any(axis=0)
    np.testing.assert_array_equal(covered, ~np.isin(label_map, list(ignore)))
    for name, mask in zip(names, masks, strict=True):
        ids = np.unique(label_map[mask])
        assert len(ids) == 1 and class_names[ids[0]] == name


@pytest.mark.parametrize(
    "dataset, ignore, mode",
    [("voc2012", (255,), "P"), ("ade20k", (0,), "L"), ("camvid", (11,), "L")],
)
def test_real_label_maps(real_data, dataset, ignore, mode):
    root = real_data / dataset
    class_names = read_classes(str(root))
    labels = sorted((root / "labels").glob("*.png"))
    assert labels
    for path in labels[:4]:
        assert Image.open(path).mode == mode
        label_map = decode_label_map(path.read_bytes())
        names, masks = segments_from_label_map(label_map, class_names, ignore)
        assert len(names) >= 1
        check_partition(label_map, names, masks, class_names, ignore)
        if dataset == "voc2012":  # palette indices, not the palette's colours, are the class ids
            assert label_map.max() <= 255 and set(np.unique(label_map)) <= set(range(21)) | {255}
    image = sorted((root / "images").iterdir())[0]
    assert label_path_for(str(image), str(root)) == str(root / "labels" / (image.stem + ".png"))


def test_made_up_sixteen_bit_id_map():
    label_map = np.zeros((6, 8), dtype=np.uint16)
    label_map[:, 4:] = 300
    label_map[0, 0] = 7
    class_names = [f"c{i}" for i in range(301)]
    decoded = decode_label_map(png(Image.fromarray(label_map)))
    names, masks = segments_from_label_map(decoded, class_names, ignore_index=(7,))
    assert names == ["c0", "c300"]
    assert masks[0].sum() == 23 and masks[1].sum() == 24


def test_unknown_class_id_is_an_error_not_a_silent_label():
    with pytest.raises(AnnotationError, match=r"label ids \[5\] are not named"):
        segments_from_label_map(np.array([[0, 5]]), ["a", "b"])


def test_colour_label_maps_are_refused():
    with pytest.raises(AnnotationError, match="mode RGB"):
        decode_label_map(png(Image.new("RGB", (4, 4), (128, 0, 0))))


def test_all_ignored_gives_no_segments():
    names, masks = segments_from_label_map(np.full((3, 3), 255), ["a"], (255,))
    assert names == [] and masks.shape == (0, 3, 3)


def test_classes_file_keeps_line_indices():
    assert parse_classes("background\ncat\n\ndog\n\n") == ["background", "cat", "", "dog"]
    with pytest.raises(AnnotationError):  # id 2 is a blank line: not a class
        segments_from_label_map(np.array([[2]]), ["background", "cat", "", "dog"])


def test_resize_nearest_never_invents_ids():
    label_map = np.array([[1, 2], [3, 4]])
    big = resize_nearest(label_map, 4, 6)
    assert big.shape == (4, 6) and set(np.unique(big)) == {1, 2, 3, 4}
    assert (big[:2, :3] == 1).all() and (big[2:, 3:] == 4).all()


def test_load_annotation_missing_file(tmp_path):
    (tmp_path / "labels").mkdir()
    with pytest.raises(AnnotationError, match="no label map"):
        load_annotation(str(tmp_path / "images" / "x.jpg"), str(tmp_path), 4, 4)


def test_annotate_image_marks_only_the_broken_item(tmp_path):
    """The DoFn's failure rule: a missing label map fails that image at stage "label"; failed items pass as is."""
    from transforms.annotations import AnnotateImage

    (tmp_path / "labels").mkdir()
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[:, 2:] = 1
    Image.fromarray(labels).save(tmp_path / "labels" / "ok.png")
    fn = AnnotateImage(str(tmp_path), ["wall", "grass"])
    base = {"height": 4, "width": 4, "image": np.zeros((4, 4, 3), np.uint8)}

    (ok,) = fn.process({**base, "uri": str(tmp_path / "images" / "ok.jpg")})
    assert ok.get("failure") is None and sorted(ok["segment_labels"]) == ["grass", "wall"]

    (missing,) = fn.process({**base, "uri": str(tmp_path / "images" / "missing.jpg")})
    assert missing["failure"]["stage"] == "label" and "no label map" in missing["failure"]["message"]

    earlier = {"uri": "x.jpg", "failure": {"uri": "x.jpg", "stage": "decode", "error_type": "E", "message": "m"}}
    (passed,) = fn.process(earlier)
    assert passed is earlier
