"""The common shape of our RunInference ModelHandlers.

Elements are per-image item dicts (see transforms.records); a handler loads its model on the worker from the
typed ModelsConfig (`load_model`, so weights never travel in the job graph), runs one batched call across the
images of a batch, and writes its results into copies of the items. An input-specific error does not fail the
batch: the batch is retried image by image and the offending image carries a failure row (stage + reason) to
the failures output; everything else continues. Missing weights are not input-specific and fail the job with
the models layer's one-line message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from models.config import ModelsConfig
from models.presets import resolve_models
from transforms.failures import failure_row

log = logging.getLogger(__name__)


def set_torch_threads(threads: int) -> None:
    """Intra-op threads per worker process: with N DirectRunner processes on C cores, C/N each avoids thrashing."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(threads)


class ModelBundle:
    """Several models loaded together (RunInference keeps a weak reference to the model, so no bare tuple)."""

    def __init__(self, **models):
        self.__dict__.update(models)


class ItemModelHandler(ModelHandler[dict, dict, Any]):
    """Base: subclasses set `stage`, implement `build(resolved_config)` and `apply(items, model)`."""

    stage = "embed"  # failure stage (schema.FAILURE_STAGES)
    metrics_name = "embed"  # RunInference metrics namespace: reme_<metrics_name>

    def __init__(
        self,
        models: ModelsConfig,
        *,
        max_batch_size: int = 8,
        torch_threads: int = 0,
        large_model: bool = False,
        model_copies: int | None = None,
    ):
        # min == max: RunInference batches at the configured size (the best one measured with
        # bench/embed_throughput.py) instead of BatchElements' adaptive ramp from 1, which on short bundles never
        # reaches it; the last batch of a bundle may be smaller.
        batch = max(1, max_batch_size)
        super().__init__(min_batch_size=batch, max_batch_size=batch, large_model=large_model,
                         model_copies=model_copies)
        self.models = models
        self.torch_threads = torch_threads

    # --- subclass API -------------------------------------------------------------------------------------
    def build(self, models: ModelsConfig):
        raise NotImplementedError

    def wants(self, item: dict) -> bool:
        """Whether this stage has work for an item (failed items always pass through untouched)."""
        return True

    def apply(self, items: list[dict], model) -> None:
        raise NotImplementedError

    # --- ModelHandler -------------------------------------------------------------------------------------
    def load_model(self):
        set_torch_threads(self.torch_threads)
        return self.build(resolve_models(self.models))

    def run_inference(self, batch: Sequence[dict], model, inference_args=None) -> Iterable[dict]:
        items = [dict(item) for item in batch]
        live = [item for item in items if item.get("failure") is None and self.wants(item)]
        if live:
            try:
                self.apply(live, model)
            except Exception as batch_exc:  # isolate the image that broke the batch
                log.info("%s batch of %d failed (%s); retrying image by image", self.stage, len(live), batch_exc)
                for item in live:
                    try:
                        self.apply([item], model)
                    except Exception as exc:
                        item["failure"] = failure_row(item["uri"], self.stage, exc)
        return items

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        # The default pickles the whole batch just to measure it; the decoded image dominates anyway.
        return sum(getattr(item.get("image"), "nbytes", 0) for item in batch)

    def get_metrics_namespace(self) -> str:
        return f"reme_{self.metrics_name}"


class ItemDoFn(beam.DoFn):
    """A per-image stage outside RunInference, with the handlers' failure rule: items that already failed pass
    through untouched; an error marks only this item as failed at `stage`. Subclasses implement `apply(item)`,
    which fills fields of a copy of the item."""

    stage = "label"

    def apply(self, item: dict) -> None:
        raise NotImplementedError

    def process(self, item):
        if item.get("failure") is None:
            item = dict(item)
            try:
                self.apply(item)
            except Exception as exc:
                item["failure"] = failure_row(item["uri"], self.stage, exc)
        yield item
