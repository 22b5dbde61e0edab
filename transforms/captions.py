"""Labels from captions: COCO captions JSON or JSONL `{"image": ..., "caption": ...}`, matched by file name.

Captions become candidate labels through the models layer's noun-phrase extraction (models.nlp); several
captions of one image contribute the union of their labels, in first-seen order.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable

import apache_beam as beam

from models.captioner import Captioner
from models.config import ModelsConfig
from models.nlp import labels_from_caption
from refset import storage
from transforms.handlers import ItemDoFn, ItemModelHandler, ModelBundle


def caption_key(uri_or_name: str) -> str:
    """Captions are matched by file name: the base name of the image URI or of the caption's image field."""
    return posixpath.basename(str(uri_or_name).replace("\\", "/"))


def parse_captions(text: str) -> dict[str, list[str]]:
    """COCO captions JSON ({"images": [...], "annotations": [...]}) or JSONL -> {file name: [captions]}."""
    stripped = text.lstrip()
    out: dict[str, list[str]] = {}
    if stripped.startswith("{") and '"annotations"' in stripped[:200_000] and '"images"' in stripped:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and "annotations" in doc and "images" in doc:
            names = {img["id"]: caption_key(img["file_name"]) for img in doc["images"]}
            for ann in doc["annotations"]:
                name = names.get(ann.get("image_id"))
                if name is None:
                    raise ValueError(f"caption annotation refers to unknown image_id {ann.get('image_id')!r}")
                out.setdefault(name, []).append(str(ann["caption"]))
            return out
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.setdefault(caption_key(row["image"]), []).append(str(row["caption"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"captions line {number} is not COCO captions JSON nor JSONL with 'image' and 'caption': {exc}"
            ) from exc
    return out


def read_captions(path: str) -> dict[str, list[str]]:
    return parse_captions(storage.read_bytes(path).decode("utf-8"))


def labels_from_captions(captions: list[str], extract: Callable[[str], list[str]]) -> list[str]:
    """Union of the labels of every caption, first-seen order, no repeats."""
    seen: dict[str, None] = {}
    for caption in captions:
        for label in extract(caption):
            if label:
                seen.setdefault(label, None)
    return list(seen)


# ---------------------------------------------------------------------------------------------------------
# Beam shells
# ---------------------------------------------------------------------------------------------------------
class AttachCaptionLabels(ItemDoFn):
    """item -> item with `captions` and candidate `labels` from the captions file (read once per worker)."""

    stage = "label"

    def __init__(self, captions_path: str):
        self.captions_path = captions_path
        self.uncaptioned = beam.metrics.Metrics.counter("reme", "images_without_caption")

    def setup(self):
        self.captions = read_captions(self.captions_path)
        self.extract = labels_from_caption

    def apply(self, item: dict) -> None:
        item["captions"] = self.captions.get(caption_key(item["uri"]), [])
        item["labels"] = labels_from_captions(item["captions"], self.extract)
        if not item["captions"]:
            self.uncaptioned.inc()


class CaptionerModelHandler(ItemModelHandler):
    """Generated captions (models.captioner) -> candidate labels, batched across images."""

    stage = "label"
    metrics_name = "captioner"

    def build(self, models: ModelsConfig):
        return ModelBundle(captioner=Captioner(models.captioner), extract=labels_from_caption)

    def apply(self, items: list[dict], model) -> None:
        captioner, extract = model.captioner, model.extract
        for item, caption in zip(items, captioner.caption([it["image"] for it in items]), strict=True):
            item["captions"] = [caption]
            item["labels"] = labels_from_captions([caption], extract)
