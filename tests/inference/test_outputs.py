import io
import posixpath

import numpy as np
from PIL import Image

from inference import outputs
from pipeline.label_job import output_names


def test_output_names_stay_inside_the_output():
    cases = {
        ("/data/in/a.jpg", "/data/in"): "a",
        ("/data/in/sub/b.png", "/data/in"): "sub__b",
        ("/data/in/../../etc/passwd.png", "/data/in"): "etc__passwd",
        ("/elsewhere/..hidden.png", "/data/in"): "hidden",
        ("gs://bucket/x/y z é.jpg", "gs://bucket/x"): "y_z_é",
        ("/data/in/..", "/data/in"): "image",
    }
    for (uri, root), expected in cases.items():
        name = outputs.output_name(uri, root)
        assert name == expected, (uri, name)
        path = posixpath.normpath(posixpath.join("/out", name + ".png"))
        assert path.startswith("/out/") and "/" not in name


def test_colliding_names_keep_the_extension():
    names = output_names(["/in/a.jpg", "/in/a.png", "/in/b.jpg"], ["/in"])
    assert names == ["a_jpg", "a_png", "b"]


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


def test_long_multibyte_names_fit_a_file_name():
    name = outputs.output_name("/in/" + "é" * 300 + ".jpg", "/in")
    assert len(name.encode("utf-8")) <= 200 and name.startswith("é")


def test_names_that_collide_after_cleaning_are_made_unique():
    uris = ["/in/with space.jpg", "/in/with_space.jpg", "/in/with_space.png"]
    names = output_names(uris, ["/in"])
    assert len(set(names)) == 3 and names[2] == "with_space_png"
    assert all(n.startswith("with_space_jpg_") for n in names[:2])
