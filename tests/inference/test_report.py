"""`reme report`: the page's content (escaping, needs-a-look lists, thumbnails, bounds) and the page in Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage.segmentation import find_boundaries

from inference.report import (
    DEFAULT_THUMBNAIL_BUDGET,
    LOOK_N,
    build_report,
    head_word_issue,
    models_table,
    write_report,
)
from inference.report_html import histogram_svg, nice_ticks
from inference.report_images import PHOTO_FORMAT, THUMB_SIDE, ImageReader, render_thumbnail, scale_mask
from models.rle import encode_masks
from pipeline import cli
from refset import schema
from tests.support.browser import Browser
from tests.support.report_sets import EVIL, QUOTES, Columns, mask_info, sample_refset, synthetic_refset, write_refset

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "bench" / "results" / "report_first_screen.png"
FIXED_TIME = datetime(2025, 6, 2, 9, 30, tzinfo=timezone.utc)
SECTIONS = ("overview", "look", "labels", "scores", "models", "manifest")


class Page(HTMLParser):
    """Tags, text, scripts, the needs-a-look lists ({title: [label texts]}) and element ids of a report."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self.looks: dict[str, list[str]] = {}
        self._script: dict | None = None
        self._in_look = self._in_h3 = self._in_a = False
        self._title = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self._script = attrs
        if tag == "div" and "look-list" in (attrs.get("class") or ""):
            self._in_look = True
        self._in_h3 = self._in_look and tag == "h3"
        self._in_a = self._in_look and tag == "a"

    def handle_endtag(self, tag):
        if tag == "ol":
            self._in_look = False
        if tag == "a":
            self._in_a = False
        if tag == "h3":
            self._in_h3 = False

    def handle_data(self, data):
        if self._script is not None:
            self.scripts.append((self._script, data))
            self._script = None
            return
        self.text.append(data)
        if self._in_h3:
            self._title = data
            self.looks[data] = []
        elif self._in_a:
            self.looks[self._title].append(data)


def data_of(page: Page) -> dict:
    [(_, raw)] = [(a, d) for a, d in page.scripts if a.get("type") == "application/json"]
    return json.loads(raw)


def label_names(root: Path) -> list[str]:
    return pq.read_table(root / schema.LABELS, columns=["label"]).column("label").to_pylist()


# --- words ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, issue", [
    ("cat", ""), ("potted plant", ""), ("frisbee", ""), ("tree & bush", ""), ("man's hat", ""),
    ("red", "adjective"), ("man in red", "adjective"), ("wooden", "adjective"), ("walking", "verb"),
    ("on", "preposition"), ("the", "determiner"), ("2", "number"), ("two", "number"), ("quickly", "adverb"), ("!!", "no word"),
])
def test_head_word_issue(label, issue):
    assert head_word_issue(label) == issue


# --- thumbnails -------------------------------------------------------------------------------------------------

def _decode(src: str) -> np.ndarray:
    header, payload = src.split(",", 1)
    assert header in (f"data:image/{PHOTO_FORMAT.lower()};base64", "data:image/png;base64")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")).astype(int)


def test_thumbnail_outlines_the_segment_where_it_sits_on_its_image(tmp_path):
    h, w = 40, 60
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :30] = (200, 60, 60)
    image[:, 30:] = (60, 60, 200)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    mask = np.zeros((h, w), bool)
    mask[10:30, 15:45] = True
    reader = ImageReader(side=60)  # thumbnail at the image's own size: pixels compare one to one
    thumb = render_thumbnail(*reader.get(str(path), w, h), encode_masks(mask[None])[0], w, h, side=60)
    assert thumb.note == "" and thumb.src.startswith(f"data:image/{PHOTO_FORMAT.lower()};base64,")
    out = _decode(thumb.src)
    assert out.shape == (h, w, 3)
    luma = out @ [0.299, 0.587, 0.114]
    bright = luma > 160  # the photo's own colours are all darker than this (red ~100, blue ~63 luma)
    edge = find_boundaries(mask, mode="thick")
    assert bright[edge].mean() > 0.9  # a bright contour all around the segment...
    near_edge = np.zeros_like(edge)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_edge |= np.roll(np.roll(edge, dy, 0), dx, 1)
    assert not (bright & ~near_edge).any()  # ...and nowhere else
    assert (out[edge][:, 0] - out[edge][:, 2]).mean() > 60  # in a warm colour (yellow), also over the blue half
    inside, outside = out[20, 20], out[2, 2]
    assert abs(inside - [200, 60, 60]).max() < 30  # the segment keeps its colours
    assert outside.sum() < 0.7 * image[2, 2].astype(int).sum()  # the rest of the image is dimmed


def test_unreadable_image_gives_the_mask_alone_with_the_reason(tmp_path):
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    reader = ImageReader()
    thumb = render_thumbnail(*reader.get(str(tmp_path / "gone.jpg"), 40, 30), encode_masks(mask[None])[0], 40, 30)
    assert thumb.note == "image unreadable (FileNotFoundError)" and "gone.jpg" in thumb.detail
    assert thumb.src.startswith("data:image/png;base64,")
    out = _decode(thumb.src)
    assert out.shape[1] == THUMB_SIDE  # scaled to the thumbnail side
    not_image = tmp_path / "not-an-image.jpg"
    not_image.write_bytes(b"hello")
    thumb = render_thumbnail(*reader.get(str(not_image), 40, 30), encode_masks(mask[None])[0], 40, 30)
    assert thumb.note.startswith("image unreadable (")
    broken = render_thumbnail(None, ("", ""), b"not an rle", 40, 30)
    assert broken.note.startswith("mask unreadable")


def test_a_tiny_segment_of_a_large_image_stays_visible():
    mask = np.zeros((1500, 2000), bool)
    mask[700:702, 1000:1002] = True  # 4 pixels of 3 MP
    small = scale_mask(mask, (160, 120))
    assert small.sum() >= 1 and small[56, 80]


# --- charts -----------------------------------------------------------------------------------------------------

def test_nice_ticks_cover_the_range_in_round_steps():
    assert nice_ticks(0.11, 0.34, 5) == [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]
    assert nice_ticks(0, 7, 4, integer=True) == [0, 2, 4, 6, 8]


def test_histogram_has_axes_ticks_and_every_value_counted():
    rng = np.random.default_rng(0)
    kept, dropped = rng.uniform(0.2, 0.9, 137), rng.uniform(0.0, 0.3, 21)
    svg = histogram_svg([("kept", kept, "#0a0"), ("dropped", np.r_[dropped, np.nan], "#a00")], "quality", bins=10)
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert len(titles) == 10
    per_series = {"kept": 0, "dropped": 0}
    for t in titles:
        for name, count in re.findall(r"(kept|dropped): (\d+)", t):
            per_series[name] += int(count)
    assert per_series == {"kept": 137, "dropped": 21}  # every finite value is in exactly one bin
    ticks = re.findall(r'class="tick"[^>]*>([^<]*)<', svg)
    assert {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"} <= set(ticks)  # x axis
    assert "0" in ticks and "segments" in svg and "quality" in svg  # y axis counts from zero, both axes named


# --- the page ---------------------------------------------------------------------------------------------------

def small_set(tmp_path: Path) -> Path:
    """Labels whose needs-a-look answers are known by construction."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(photo)
    mask = np.zeros((20, 30), bool)
    mask[4:12, 6:20] = True
    info = mask_info(mask)
    kept, dropped = Columns(), Columns()
    plan = {"dog": [0.9] * 5, "cat": [0.2, 0.3, 0.35, 0.35], "bird": [0.5] * 3, "lamp": [0.15],
            "red": [0.6, 0.6], "walking": [0.7], EVIL: [0.8, 0.8, 0.8], QUOTES: [0.6, 0.7]}
    for label, qualities in plan.items():
        for q in qualities:
            kept.add(str(photo), info, label, 0.3, q)
    for label, n in (("cat", 3), ("dog", 1)):
        for _ in range(n):
            dropped.add(str(photo), info, label, 0.1, 0.05, "outlier")
    dropped.add("/no/such.jpg", info, None, None, None, "too_small")
    failures = [{"uri": "/in/bad.jpg", "stage": "decode", "error_type": "ImageDecodeError", "message": "<b>x</b>"}]
    return write_refset(tmp_path / "ref", kept.table(), dropped.table(), failures, list(plan), shards=2)


def test_first_screen_lists_the_labels_that_need_a_look(tmp_path):
    page = Page(build_report(str(small_set(tmp_path))))
    assert set(SECTIONS) <= page.ids
    assert page.looks["Lowest mean quality"][:2] == ["cat", "bird"]  # labels of 2+ segments: the lamp is not judged
    assert page.looks["Fewest members"][:2] == ["lamp", "walking"]
    assert page.looks["Most outliers"] == ["cat", "dog"]
    assert page.looks["Not nouns"] == ["red", "walking"]
    text = " ".join(page.text)
    assert "3 · 43%" in text  # cat: 3 of its 7 segments dropped as outliers
    assert "kept: 21 (81%)" in text  # 21 kept of 26 segments, then one bar per drop reason and failed stage
    assert "outlier: 4 (15%)" in text and "too_small: 1 (3.8%)" in text and "decode: 1" in text


def test_every_label_and_caption_is_escaped_and_nothing_is_fetched(tmp_path):
    root = sample_refset(tmp_path / "reference")
    raw = build_report(str(root))
    page = Page(raw)
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]  # only the page's two scripts
    assert EVIL not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<b>file</b>" not in raw  # a failure message is text too
    assert page.tags.count("script") == 2
    [(_, block)] = [(a, d) for a, d in page.scripts if a.get("type") == "application/json"]
    assert not set("<>&") & set(block)  # the data block cannot end its element early, whatever a label holds
    data = data_of(page)
    assert data["labels"]["name"] == label_names(root)  # every label, in labels.parquet order, unescaped back
    assert EVIL in " ".join(page.text)  # on the first screen (fewest members), as text
    # self-contained: no address outside the page (the SVG namespace is a name, not a fetch)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(|@import|<link""", raw)
    # galleries: real photos outlined (WebP, or JPEG), the deleted one as its mask alone (PNG) with the reason
    thumbs = [t for g in data["galleries"].values() for part in g.values() for t in part]
    photos = [t for t in thumbs if "deleted-since" not in t[3]]
    gone = [t for t in thumbs if "deleted-since" in t[3]]
    assert photos and all(t[0].startswith(f"data:image/{PHOTO_FORMAT.lower()};base64,") and t[4] == "" for t in photos)
    assert gone and all(t[0].startswith("data:image/png;base64,") and t[4].startswith("image unreadable") for t in gone)


def test_galleries_hold_the_most_and_least_typical_segments(tmp_path):
    root = sample_refset(tmp_path / "reference")
    data = data_of(Page(build_report(str(root), per_label=2)))
    names = data["labels"]["name"]
    segments = pq.read_table(root / schema.SEGMENTS_DIR, columns=["label", "quality"])
    for key, gallery in data["galleries"].items():
        mine = sorted(q for lbl, q in zip(segments.column("label").to_pylist(), segments.column("quality").to_pylist(),
                                          strict=True) if lbl == names[int(key)])
        assert [t[1] for t in gallery["top"]] == pytest.approx(mine[::-1][:2], abs=1e-4)
        rest = mine[:max(0, len(mine) - 2)]  # ascending, without the two shown as most typical
        assert [t[1] for t in gallery["low"]] == pytest.approx(rest[:2], abs=1e-4)  # worst first
    cup = str(names.index("cup"))
    dropped = pq.read_table(root / schema.DROPPED_DIR)
    outliers = pc.sum(pc.and_(pc.equal(dropped.column("label"), "cup"), pc.equal(dropped.column("reason"), "outlier")))
    assert len(data["galleries"][cup]["out"]) == min(2, outliers.as_py())


def test_thumbnails_stop_at_the_budget(tmp_path):
    root = sample_refset(tmp_path / "reference")
    full = data_of(Page(build_report(str(root))))
    sizes = sorted(sum(len(t[0]) for part in g.values() for t in part) for g in full["galleries"].values())
    budget = sum(sizes[:3]) + 1  # room for about three galleries
    data = data_of(Page(build_report(str(root), thumbnail_budget=budget)))
    used = sum(len(t[0]) for g in data["galleries"].values() for part in g.values() for t in part)
    assert 0 < used <= budget and 1 <= len(data["galleries"]) < len(full["galleries"])
    assert "left out" in data["gallery_note"]


def test_50k_labels_stay_within_the_stated_size_bound(tmp_path):
    """The bound in inference/report.py: thumbnails <= their budget, the rest ~50 B a label + ~100 kB."""
    n = 50_000
    root = synthetic_refset(tmp_path / "ref", n, n_images=2, image_size=(160, 120), mask_pool=8)
    raw = build_report(str(root), max_galleries=5)
    data = data_of(Page(raw))
    assert len(data["labels"]["name"]) == n
    assert len(data["galleries"]) <= 5 + 4 * LOOK_N
    thumbnails = sum(len(t[0]) for g in data["galleries"].values() for part in g.values() for t in part)
    assert thumbnails <= DEFAULT_THUMBNAIL_BUDGET
    rest = len(raw.encode("utf-8")) - thumbnails
    assert rest <= 50 * n + 100_000, rest
    assert raw.count("<li") < 100  # the label list is rendered from the data on demand, not as 50k elements


def test_models_table_shows_the_models_the_run_used():
    manifest = {"model_info": {"visual": {"model_id": "facebook/dinov2-base", "kind": "dinov2", "dim": 768,
                                          "image_size": 448},
                               "text": {"model_id": "openai/clip", "kind": "clip", "dim": 512,
                                        "templates": ["a {}.", "the {}.", "one {}."]}},
                "models": {"preset": "default", "visual": {"batch_size": 8}, "captioner": {"model_id": "blip"}}}
    html = models_table(manifest)
    rows = re.findall(r"<tr>(.*?)</tr>", html)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert [re.sub("<[^>]+>", "", c[0]) for c in cells] == ["visual", "text"]  # no captioner: the run used none
    assert re.sub("<[^>]+>", "", cells[0][1]) == "facebook/dinov2-base" and cells[0][3] == "768" and cells[0][4] == "448"
    assert "batch_size=8" in cells[0][6] and "3 prompt templates" in cells[1][6]


def test_an_empty_reference_set_still_renders(tmp_path):
    (tmp_path / schema.MANIFEST).write_text(json.dumps({"schema_version": 1}))
    page = Page(build_report(str(tmp_path)))
    assert set(SECTIONS) <= page.ids and data_of(page)["labels"]["name"] == []
    assert "No segments." in page.text


def test_report_on_a_missing_reference_set_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reference set"):
        build_report(str(tmp_path / "nothing"))


def test_cli_report_keeps_its_flags(tmp_path):
    root = small_set(tmp_path)
    out = tmp_path / "report.html"
    assert cli.main(["report", "--index", str(root), str(out), "--per_label", "1", "--max_galleries", "2"]) == 0
    data = data_of(Page(out.read_text(encoding="utf-8")))
    assert all(len(g["top"]) <= 1 and len(g["low"]) <= 1 for g in data["galleries"].values())


# --- in a browser -----------------------------------------------------------------------------------------------

LIST_NAMES = "Array.from(document.querySelectorAll('#label-list li .n')).map(e => e.firstChild.textContent)"


def _type(page, text: str) -> None:
    page.evaluate("(() => { const s = document.getElementById('label-search'); s.value = ''; "
                  "s.dispatchEvent(new Event('input')); })()")
    page.type_text("#label-search", text)


def test_report_in_headless_chromium(tmp_path, monkeypatch):
    with Browser.launch() as browser:
        root = sample_refset(tmp_path / "reference")
        names = label_names(root)
        monkeypatch.chdir(tmp_path)  # the header shows the path as given: a stable screenshot
        html = tmp_path / "report.html"
        write_report("reference", str(html), generated_at=FIXED_TIME)
        page = browser.open(html.as_uri())
        assert page.evaluate("document.documentElement.dataset.ready") == "1"
        for section in SECTIONS:
            assert page.evaluate(f"!!document.getElementById('{section}')"), section
        assert page.evaluate("document.querySelectorAll('.cards .card').length") == 6
        assert page.evaluate("document.querySelectorAll('#look .look-list').length") == 4
        assert page.evaluate("document.querySelectorAll('svg.chart').length") == 5  # 3 bar charts, 2 histograms
        assert page.evaluate("Array.from(document.querySelectorAll('#look .look-list')).at(-1)"
                             ".querySelectorAll('li a').length") == 4  # red, walking, on, two
        counts = pq.read_table(root / schema.LABELS, columns=["count"]).column("count").to_pylist()
        by_count = [names[i] for i in sorted(range(len(names)), key=lambda i: (-counts[i], i))]
        assert page.evaluate(LIST_NAMES) == by_count  # largest first
        assert page.evaluate("document.querySelectorAll('#label-list li').length") == len(names)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(SCREENSHOT)

        # search: the list filters to the labels containing the text (exact match first), case-insensitive
        _type(page, "CO")
        expected = {n for n in names if "co" in n.lower()}
        assert len(expected) >= 3 and set(page.evaluate(LIST_NAMES)) == expected
        _type(page, "cup")
        assert page.evaluate(LIST_NAMES) == ["cup"]
        _type(page, "<script")
        assert page.evaluate(LIST_NAMES) == [EVIL]  # shown as text: no element, no alert
        assert page.evaluate("document.querySelectorAll('script').length") == 2
        _type(page, '"bush"')
        assert page.evaluate(LIST_NAMES) == [QUOTES]
        _type(page, "no such label at all")
        assert page.evaluate(LIST_NAMES) == []
        assert "0 of 29" in page.evaluate("document.getElementById('label-summary').textContent")

        # opening a label shows its segments, each outlined on its own image, with scores
        _type(page, "cup")
        page.evaluate("document.querySelector('#label-list li button').click()")
        assert page.evaluate("document.querySelector('#label-detail h3').textContent") == "cup"
        segments = pq.read_table(root / schema.SEGMENTS_DIR, columns=["label"])
        dropped = pq.read_table(root / schema.DROPPED_DIR, columns=["label", "reason"])
        kept = segments.column("label").to_pylist().count("cup")
        outliers = sum(1 for lbl, r in zip(dropped.column("label").to_pylist(), dropped.column("reason").to_pylist(),
                                           strict=True) if lbl == "cup" and r == "outlier")
        expected_figures = min(kept, 4) + min(max(kept - 4, 0), 4) + min(outliers, 4)
        assert page.evaluate("document.querySelectorAll('#label-detail figure.thumb').length") == expected_figures
        assert page.evaluate("Promise.all(Array.from(document.querySelectorAll('#label-detail img'))"
                             ".map(i => i.decode())).then(() => Array.from(document.querySelectorAll("
                             "'#label-detail img')).every(i => i.naturalWidth > 0))")
        assert "quality" in page.evaluate("document.querySelector('#label-detail figcaption').textContent")

        # a needs-a-look link opens its label
        first_outlier = page.evaluate("document.querySelectorAll('#look .look-list')[2].querySelector('a')"
                                      ".textContent")
        opened = page.evaluate("new Promise(r => { addEventListener('hashchange', () => r(document.querySelector("
                               "'#label-detail h3').textContent), {once: true}); "
                               "document.querySelectorAll('#look .look-list')[2].querySelector('a').click(); })")
        assert opened == first_outlier == "cup"

        # the raw manifest is folded away
        assert page.evaluate("document.querySelector('#manifest details').open") is False
        page.drain()
        assert page.errors == []
        assert {url.split(":", 1)[0] for url in page.requests} <= {"file", "data"}


def test_report_pages_and_sorts_in_headless_chromium(tmp_path):
    with Browser.launch() as browser:
        root = synthetic_refset(tmp_path / "ref", 300, n_images=2, image_size=(160, 120), mask_pool=8)
        names = label_names(root)
        html = tmp_path / "report.html"
        write_report(str(root), str(html), max_galleries=2)
        page = browser.open(html.as_uri())
        first = page.evaluate(LIST_NAMES)
        assert len(first) == 50
        page.evaluate("document.getElementById('page-next').click()")
        second = page.evaluate(LIST_NAMES)
        assert len(second) == 50 and not set(first) & set(second)
        assert page.evaluate("document.getElementById('page-info').textContent") == "51–100 of 300"
        page.evaluate("(() => { const s = document.getElementById('label-sort'); s.value = 'name'; "
                      "s.dispatchEvent(new Event('change')); })()")
        assert page.evaluate(LIST_NAMES) == sorted(names, key=str.lower)[:50]
        _type(page, "bottle")
        assert set(page.evaluate(LIST_NAMES)) == {n for n in names if "bottle" in n}
        page.drain()
        assert page.errors == []


@pytest.mark.slow
def test_50k_label_report_in_headless_chromium(tmp_path):
    with Browser.launch() as browser:
        root = synthetic_refset(tmp_path / "ref", 50_000)
        names = label_names(root)
        html = tmp_path / "report.html"
        write_report(str(root), str(html))
        page = browser.open(html.as_uri())
        assert page.evaluate("document.querySelectorAll('#label-list li').length") == 50
        _type(page, "bottle bq")
        assert set(page.evaluate(LIST_NAMES)) == {n for n in names if "bottle bq" in n}
        page.drain()
        assert page.errors == []
