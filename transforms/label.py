"""The labelling job's Label and Write steps: retrieval + class scoring (inference.labeller), then painting and
writing each image's outputs (inference.outputs).

    Label   RunInference(LabelModelHandler): the "model" is a Labeller (the reference set's FAISS index and the
            labels x classes table), loaded once per worker; one retrieval covers every segment of a batch.
    Write   WriteImageOutputs: paint the label map from the image's masks and write its outputs; the label map
            is written last, so its presence marks the image done.

Both have the per-item failure rule of every stage (transforms.handlers): an image that fails here carries a
failure row (stage `label` or `write`) and costs no other image its outputs.
"""

from __future__ import annotations

import numpy as np

from inference import outputs
from inference.labeller import Labeller, LabelRequest, paint_image
from inference.scoring import Decision
from models.config import ModelsConfig
from models.text import build_text_encoder
from refset.reader import ReferenceSet
from transforms.embed import masks_of
from transforms.handlers import ItemDoFn, ItemModelHandler


class LabelModelHandler(ItemModelHandler):
    """item with `to_embed` segments and their `visual` embeddings -> `decision`: class id and confidence per
    embedded segment."""

    stage = "label"
    metrics_name = "labeller"

    def __init__(self, index: str, request: LabelRequest, models: ModelsConfig, **kwargs):
        super().__init__(models, **kwargs)
        self.index, self.request = index, request

    def build(self, models: ModelsConfig) -> Labeller:
        return Labeller.from_text_encoder(ReferenceSet.open(self.index), build_text_encoder(models.text), self.request)

    def apply(self, items: list[dict], labeller: Labeller) -> None:
        dim = int(labeller.reference.index.d)
        embeddings = [item.get("visual", np.zeros((0, dim), np.float32)) for item in items]
        for item, decision in zip(items, labeller.decide_batch(embeddings), strict=True):
            item["decision"] = decision


class WriteImageOutputs(ItemDoFn):
    """item with `decision` -> its label map, segments table (and overlay) under the output directory."""

    stage = "write"

    def __init__(self, output: str, names: dict[str, str], request: LabelRequest, overlay: bool):
        self.output, self.names, self.request, self.overlay = output, names, request, overlay

    def apply(self, item: dict) -> None:
        segments = item.get("to_embed", np.zeros(0, np.int64))
        decision = item.get("decision") or Decision(np.zeros(0, np.int64), np.zeros(0, np.float32))
        labels = paint_image(masks_of(item, segments), decision, self.request)
        outputs.write_image_outputs(
            self.output, self.names[item["uri"]], item["uri"], item["image"], labels,
            [item["rles"][i] for i in segments], list(self.request.class_names), self.request.ignore_value,
            self.overlay)
