import io
import posixpath

import numpy as np
import pytest
from PIL import Image

from inference import outputs


def test_names_mirror_the_input_path_and_keep_stems_verbatim():
    cases = {
        ("/data/in/a.jpg", "/data/in"): "a",
        ("/data/in/sub/b.png", "/data/in"): "sub/b",
        # Cityscapes' city folders and ADE20K's nested layout stay as they are.
        ("/cs/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png", "/cs/leftImg8bit/val"):
            "frankfurt/frankfurt_000000_000294_leftImg8bit",
        ("/ade/images/training/a/abbey/ADE_train_00000970.jpg", "/ade/images"): "training/a/abbey/ADE_train_00000970",
        ("gs://bucket/x/y z é.jpg", "gs://bucket/x"): "y z é",  # spaces and unicode verbatim
        ("/data/in/IMG 0001 (copy).JPG", "/data/in/"): "IMG 0001 (copy)",
        ("/data/in/../../etc/passwd.png", "/data/in"): "passwd",  # outside the root after '..': its file name
        ("/elsewhere/photo.jpg", "/data/in"): "photo",
    }
    for (uri, root), expected in cases.items():
        [name] = outputs.output_names([uri], [root])
        assert name == expected, (uri, name)
        assert outputs.label_map_path("/out", name) == f"/out/{expected}.png"
        assert outputs.overlay_path("/out", name) == f"/out/overlays/{expected}.png"
        assert outputs.segments_path("/out", name) == f"/out/segments/{expected}.parquet"


def test_the_longest_matching_root_wins():
    assert outputs.output_names(["/d/a/b/c.jpg"], ["/d", "/d/a"]) == ["b/c"]


def test_colliding_stems_keep_their_extension_only_where_they_collide():
    uris = ["/in/a.jpg", "/in/a.png", "/in/b.jpg", "/in/sub/a.jpg", "/in/c.jpg", "/in/c.jpg.png"]
    # c.jpg.png's stem is the full name of c.jpg: it keeps its extension, c.jpg need not.
    assert outputs.output_names(uris, ["/in"]) == ["a.jpg", "a.png", "b", "sub/a", "c", "c.jpg.png"]


def test_folders_named_like_output_folders_cannot_mix_with_overlays():
    uris = ["/in/overlays/x.jpg", "/in/overlays_/x.jpg", "/in/segments/y.png", "/in/deep/overlays/z.jpg"]
    names = outputs.output_names(uris, ["/in"])
    assert names == ["overlays_/x", "overlays__/x", "segments_/y", "deep/overlays/z"]


def test_names_are_one_to_one_on_random_folders():
    """Whatever the file names, two inputs never share an output, and each name is its stem or its file name,
    the stem wherever no other file of the folder has that stem or that full name."""
    rng = np.random.default_rng(0)
    stems, exts = ["a", "b", "a.jpg", "a.png", "b.JPG", "c d"], [".jpg", ".png", ".JPG", ".jpeg", ".tif"]
    for _ in range(200):
        uris = sorted({f"/in/{folder}{stem}{ext}" for folder, stem, ext in zip(
            rng.choice(["", "x/", "x/y/"], 8), rng.choice(stems, 8), rng.choice(exts, 8), strict=True)})
        names = outputs.output_names(uris, ["/in"])
        assert len(set(names)) == len(uris), list(zip(uris, names, strict=True))
        for uri, name in zip(uris, names, strict=True):
            folder, filename = posixpath.split(uri[len("/in/"):])
            stem = posixpath.splitext(filename)[0]
            others = [posixpath.split(u[len("/in/"):]) for u in uris if u != uri]
            clash = any(f == folder and (posixpath.splitext(o)[0] == stem or o == stem) for f, o in others)
            assert name == posixpath.join(folder, filename if clash else stem), (uri, name, uris)


def test_paths_that_cannot_name_an_output_are_refused_with_a_reason():
    for uri, reason in (("/in/bad\nname.jpg", "control character"), ("/in/a\\b.jpg", "path separator"),
                        ("/in/.tmp-x.jpg", "temporary"), ("/in/" + "é" * 200 + ".jpg", "byte limit")):
        with pytest.raises(outputs.UnsafeName, match=reason):
            outputs.collision_key(uri, ["/in"])
        assert outputs.output_names([uri, "/in/ok.jpg"], ["/in"]) == [None, "ok"]


def test_finished_names_come_from_one_listing(tmp_path):
    for rel in ("a.png", "sub/b.png", "overlays/a.png", "overlays/sub/c.png", "segments/a.parquet",
                "segments/x.png", ".tmp-123-d.png", "overlays_/e.png", "classes.json", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert outputs.finished_names(str(tmp_path), overlay=False) == {"a", "sub/b", "overlays_/e"}
    assert outputs.finished_names(str(tmp_path), overlay=True) == {"a"}
    assert outputs.finished_names(str(tmp_path / "missing"), overlay=False) == set()
    assert outputs.scan_output(str(tmp_path)).temp_files == (str(tmp_path / ".tmp-123-d.png"),)


def test_label_png_is_a_palette_image_of_the_ids():
    ids = np.array([[0, 1], [20, 255]], dtype=np.uint8)
    with Image.open(io.BytesIO(outputs.encode_label_png(ids))) as im:
        assert im.mode == "P" and (np.asarray(im) == ids).all()
        assert im.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    wide = np.array([[0, 800]], dtype=np.uint16)
    with Image.open(io.BytesIO(outputs.encode_label_png(wide))) as im:
        assert (np.asarray(im) == wide).all()


def test_overlay_has_a_legend_column():
    image = np.full((20, 30, 3), 200, np.uint8)
    label = np.zeros((20, 30), np.uint8)
    label[:, 15:] = 1
    out = outputs.render_overlay(image, label, ["wall", "<b>floor</b>"], 255)
    assert out.shape[0] == 20 or out.shape[0] > 20
    assert out.shape[1] > 30 and out.shape[2] == 3




def test_outputs_of_one_image_land_under_its_mirrored_path_at_their_sizes(tmp_path):
    import pyarrow.parquet as pq

    from inference.labeller import ImageLabels
    from models.rle import encode_masks

    working = np.zeros((4, 6), np.uint8)
    working[:, 3:] = 1
    label_map = np.repeat(np.repeat(working, 10, axis=0), 10, axis=1)  # the input is 40 x 60
    labels = ImageLabels(label_map, np.array([0, 1]), np.array([0.9, 0.8], np.float32), np.array([12, 12]), working)
    rles = encode_masks(np.stack([working == 0, working == 1]))
    out = str(tmp_path / "out")
    outputs.write_image_outputs(out, "city/a b", "/in/city/a b.jpg", np.zeros((4, 6, 3), np.uint8), labels, rles,
                                ["x", "y"], 255, overlay=True)
    with Image.open(tmp_path / "out" / "city" / "a b.png") as im:
        assert im.size == (60, 40) and (np.asarray(im) == label_map).all()
    with Image.open(tmp_path / "out" / "overlays" / "city" / "a b.png") as im:
        # Drawn at the working size: 6 pixels wide plus the legend column (whose width a full-size overlay shows).
        legend = outputs.render_overlay(np.zeros((40, 60, 3), np.uint8), label_map, ["x", "y"], 255).shape[1] - 60
        assert im.size[0] == 6 + legend
    table = pq.read_table(tmp_path / "out" / "segments").to_pylist()
    assert [(r["height"], r["width"], r["source_height"], r["source_width"]) for r in table] == [(4, 6, 40, 60)] * 2
    assert outputs.finished_names(out, overlay=True) == {"city/a b"}
