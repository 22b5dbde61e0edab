from html.parser import HTMLParser

import numpy as np
from PIL import Image

from inference.report import build_report

EVIL = "<script>alert(1)</script>"


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.stack_errors = [], [], 0
        self.images = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


def test_report_parses_contains_every_label_and_escapes(tmp_path):
    from tests.inference.refsets import write_reference_set

    # One real source image (thumbnails are cut from it) and one unreachable image (placeholder, no crash).
    photo = tmp_path / "photo.png"
    Image.fromarray((np.arange(8 * 8 * 3).reshape(8, 8, 3) % 255).astype(np.uint8)).save(photo)
    names = ["cat", "dog", EVIL, "tree & bush"]
    labels = [0, 0, 1, 2, 2, 3, 3, 3]
    uris = [str(photo)] * 6 + ["/no/such/image.jpg"] * 2
    rng = np.random.default_rng(0)
    root = write_reference_set(
        tmp_path / "ref", rng.normal(size=(8, 8)), labels, names, rng.normal(size=(4, 4)), image_uris=uris,
        dropped=[{"segment_id": "x-1", "image_uri": "u", "width": 8, "height": 8, "bbox": [0, 0, 1, 1], "area": 1,
                  "mask_rle": b"", "label": None, "pair_score": None, "quality": None, "reason": "too_small"},
                 {"segment_id": "x-2", "image_uri": "u", "width": 8, "height": 8, "bbox": [0, 0, 1, 1], "area": 9,
                  "mask_rle": b"", "label": EVIL, "pair_score": 0.1, "quality": 0.2, "reason": "outlier"}],
        failures=[{"uri": "/bad.jpg", "stage": "decode", "error_type": "ImageDecodeError", "message": "truncated"}],
    )
    page = build_report(str(root))
    parser = _Collector()
    parser.feed(page)
    parser.close()
    text = "".join(parser.text)
    assert "script" not in parser.tags  # the caption label did not become markup
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for name in names:
        assert name in text  # parsed text holds every label, unescaped back
    assert "too_small" in text and "outlier" in text and "decode (ImageDecodeError)" in text
    assert "no image" in text  # unreachable source image
    thumbs = [s for s in parser.images if s.startswith("data:image/png;base64,")]
    assert len(thumbs) >= 6  # every segment of the readable photo got a thumbnail
    assert "<svg" in page and "pair_score" in text and "quality" in text
