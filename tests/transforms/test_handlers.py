"""RunInference batching: the handlers batch at the configured size, so a GPU sees the batch size we measured."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.util import assert_that, equal_to

from models.config import ModelsConfig
from transforms.handlers import ItemModelHandler, ModelBundle

SEEN_BATCHES: list[int] = []


class RecordingHandler(ItemModelHandler):
    """No model: records the size of every batch RunInference hands it."""

    def load_model(self):
        return ModelBundle()

    def apply(self, items, model):
        SEEN_BATCHES.append(len(items))
        for item in items:
            item["done"] = True


def test_batch_elements_kwargs_fix_the_configured_size():
    handler = RecordingHandler(ModelsConfig(), max_batch_size=16)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 16, "max_batch_size": 16}


def test_run_inference_reaches_the_configured_batch_size():
    SEEN_BATCHES.clear()
    items = [{"uri": f"img-{i:02d}"} for i in range(20)]
    with beam.Pipeline() as p:
        out = (
            p
            | beam.Create(items, reshuffle=False)
            | RunInference(RecordingHandler(ModelsConfig(), max_batch_size=8))
            | beam.Map(lambda item: (item["uri"], item.get("done")))
        )
        assert_that(out, equal_to([(item["uri"], True) for item in items]))
    assert sum(SEEN_BATCHES) == 20
    assert max(SEEN_BATCHES) == 8
    assert SEEN_BATCHES.count(8) >= 2  # full batches, not an adaptive ramp 1, 2, 4, ...
