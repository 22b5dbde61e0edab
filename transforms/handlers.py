"""The common shape of our RunInference ModelHandlers.

Elements are per-image item dicts (see transforms.records); a handler loads its model on the worker from the
typed ModelsConfig (`load_model`, so weights never travel in the job graph), runs one batched call across the
images of a batch, and writes its results into copies of the items. An input-specific error does not fail the
batch: the batch is retried image by image and the offending image carries a failure row (stage, reason, kind) to
the failures output; everything else continues. Transient errors (I/O, timeouts, out of memory) are tried again
with the job's RetryPolicy before an image is given up (transforms.failures). Missing weights are not
input-specific and fail the job with the models layer's one-line message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from models.config import ModelsConfig
from models.presets import resolve_models
from transforms.failures import ONE_TRY, RetryPolicy, call_with_retries, failure_row, is_out_of_memory

log = logging.getLogger(__name__)


def set_torch_threads(threads: int) -> None:
    """Intra-op threads per worker process: with N DirectRunner processes on C cores, C/N each avoids thrashing."""
    if threads and threads > 0:
        import torch

        torch.set_num_threads(threads)


def free_accelerator_memory(exc: BaseException) -> None:
    """Before trying again after running out of GPU memory: hand the allocator's cached blocks back."""
    if is_out_of_memory(exc):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def apply_isolated(items: list[dict], stage: str, apply: Callable[[list[dict]], None],
                   retry: RetryPolicy = ONE_TRY) -> None:
    """The failure rule of every per-item stage: run `apply` on the items together; if that raises, run it item by
    item, and an item that still raises carries a failure row (uri, stage, error, kind) instead of its results.
    Transient errors are tried again (`retry`: attempts with exponential backoff) first, except that a batch that ran
    out of memory is split at once. Items that already failed never reach a stage; one bad input never costs the
    others their results."""
    if not items:
        return
    if len(items) > 1:
        try:
            call_with_retries(lambda: apply(items), stage, retry, free_accelerator_memory, give_up=is_out_of_memory)
            return
        except Exception as exc:
            log.info("%s batch of %d failed (%s); retrying item by item", stage, len(items), exc)
    for item in items:  # isolate the item that broke the batch
        try:
            call_with_retries(lambda one=item: apply([one]), stage, retry, free_accelerator_memory)
        except Exception as exc:
            item["failure"] = failure_row(item["uri"], stage, exc)


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
        retry: RetryPolicy = ONE_TRY,
    ):
        # min == max: RunInference batches at the configured size (the best one measured with
        # bench/embed_throughput.py) instead of BatchElements' adaptive ramp from 1, which on short bundles never
        # reaches it; the last batch of a bundle may be smaller.
        batch = max(1, max_batch_size)
        super().__init__(min_batch_size=batch, max_batch_size=batch, large_model=large_model,
                         model_copies=model_copies)
        self.models = models
        self.torch_threads = torch_threads
        self.retry = retry

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
        apply_isolated([item for item in items if item.get("failure") is None and self.wants(item)], self.stage,
                       lambda some: self.apply(some, model), self.retry)
        return items

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        # The default pickles the whole batch just to measure it; the decoded image dominates anyway.
        return sum(getattr(item.get("image"), "nbytes", 0) for item in batch)

    def get_metrics_namespace(self) -> str:
        return f"reme_{self.metrics_name}"


class ItemDoFn(beam.DoFn):
    """A per-image stage outside RunInference, with the handlers' failure rule (apply_isolated). Subclasses
    implement `apply(item)`, which fills fields of a copy of the item. `retrying(policy)` sets how transient errors
    are tried again (default: once)."""

    stage = "label"
    retry: RetryPolicy = ONE_TRY

    def retrying(self, policy: RetryPolicy) -> ItemDoFn:
        self.retry = policy
        return self

    def apply(self, item: dict) -> None:
        raise NotImplementedError

    def process(self, item):
        if item.get("failure") is None:
            item = dict(item)
            apply_isolated([item], self.stage, lambda some: self.apply(some[0]), self.retry)
        yield item
