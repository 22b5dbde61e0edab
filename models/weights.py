"""Weights loading: transformers `from_pretrained` (hub id or local dir) and SAM checkpoints (local or gs://).

Every failure to find weights becomes `WeightsUnavailable`, a one-line message that names the model, what it is
for, and the fix. `HF_HUB_OFFLINE=1` is respected by transformers itself; we only translate its errors.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import pickle
from pathlib import Path

import fsspec
import torch

OFFLINE_HINT = "or run offline with the tiny random models: PRESET=tiny-random (make) / --preset tiny-random"

log = logging.getLogger(__name__)

SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


class WeightsUnavailable(RuntimeError):
    """Weights could not be found or fetched. The message is one line: model, purpose, fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # guarantee a single line


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub import errors as hub_errors

        errors += [hub_errors.HfHubHTTPError, hub_errors.HFValidationError, hub_errors.LocalEntryNotFoundError]
    except ImportError:  # pragma: no cover - huggingface_hub always ships with transformers
        pass
    return tuple(errors)


def load_pretrained(cls, model_id: str, revision: str | None = None, what: str = "visual encoder", **kwargs):
    """`cls.from_pretrained(model_id, revision=...)` with a clear one-line error when the weights are missing.

    `cls` is any transformers class with `from_pretrained` (a model, processor or tokenizer class).
    `model_id` is a hub id ("facebook/dinov2-base") or a local directory written by `save_pretrained`.
    """
    if not Path(model_id).is_dir() and not hub_reachable():
        # Without this, huggingface_hub retries an unreachable hub with backoff for ~25 s per file before
        # failing; weights already in the local cache still load.
        kwargs.setdefault("local_files_only", True)
    try:
        return _from_pretrained_quietly(cls, model_id, revision, what, **kwargs)
    except _hub_errors() as exc:
        if Path(model_id).is_dir():
            fix = f"the local directory {model_id} is incomplete or not a {cls.__name__} checkpoint; re-save it"
        else:
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            where = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the hub is unreachable or the id is wrong"
            fix = (
                f"{where}; download it (huggingface-cli download {model_id}) or pass a local directory, "
                f"{OFFLINE_HINT}"
            )
        raise WeightsUnavailable(
            f"cannot load {what} '{model_id}'" + (f" (revision {revision})" if revision else "")
            + f" with {cls.__name__}: {fix} [{type(exc).__name__}: {_one_line(exc)}]"
        ) from exc


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub ($HF_ENDPOINT) answers a TCP connect; False at once when HF_HUB_OFFLINE is set."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True  # behind a proxy a direct connect says nothing; let huggingface_hub go through it
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_transformers():
    """No per-load progress bars or multi-line reports from transformers (pipelines load models per worker)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained_quietly(cls, model_id, revision, what, **kwargs):
    """from_pretrained without transformers' multi-line load report; weights it could not find are one warning.

    Unexpected keys are normal here (e.g. CLIPVisionModel from a full CLIP checkpoint); missing keys mean some
    weights stay random, which is worth a line in the log.
    """
    from transformers import PreTrainedModel

    is_model = isinstance(cls, type) and issubclass(cls, PreTrainedModel)
    with quiet_transformers():
        if not is_model:
            return cls.from_pretrained(model_id, revision=revision, **kwargs)
        model, info = cls.from_pretrained(model_id, revision=revision, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    if missing:
        log.warning("%s '%s': %d weights not in the checkpoint and left at initialisation (e.g. %s)",
                    what, model_id, len(missing), missing[0])
    return model


def _build_sam_module():
    # `segment_anything.build_sam` the attribute is a function; the module holds `_build_sam` and the registry.
    return importlib.import_module("segment_anything.build_sam")


def build_tiny_sam(checkpoint=None):
    """A SAM with a tiny ViT image encoder, built by segment-anything's own `_build_sam` (tests, offline runs).

    Prompt encoder and mask decoder are SAM's real ones; only the image encoder is shrunk.
    """
    return _build_sam_module()._build_sam(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        checkpoint=checkpoint,
    )


def sam_registry() -> dict:
    """segment-anything's registry plus our "tiny" type."""
    registry = dict(_build_sam_module().sam_model_registry)
    registry["tiny"] = build_tiny_sam
    return registry


def read_state_dict(checkpoint: str, what: str = "SAM checkpoint") -> dict:
    """torch.load(weights_only=True) from a local path or any fsspec URL (gs://, s3://, ...)."""
    try:
        with fsspec.open(checkpoint, "rb") as f:
            return torch.load(f, weights_only=True, map_location="cpu")
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise WeightsUnavailable(f"{what} not found at '{checkpoint}' [{type(exc).__name__}]") from exc
    except pickle.UnpicklingError as exc:
        raise WeightsUnavailable(
            f"{what} '{checkpoint}' is not a plain tensor state dict and was refused by "
            f"torch.load(weights_only=True); use an official checkpoint [{_one_line(exc, 120)}]"
        ) from exc


def load_sam(model_type: str, checkpoint: str | None):
    """Build a SAM model of `model_type` (vit_b | vit_l | vit_h | tiny) and load its checkpoint (local or gs://)."""
    registry = sam_registry()
    if model_type not in registry:
        raise ValueError(f"unknown SAM model_type '{model_type}'; choose one of {sorted(registry)}")
    url = SAM_CHECKPOINT_URLS.get("vit_h" if model_type == "default" else model_type)
    get = f"download {url} and pass its path (local or gs://)" if url else "build it with PRESET=tiny-random"
    if not checkpoint:
        raise WeightsUnavailable(
            f"SAM masker '{model_type}' needs a checkpoint and none was given: {get} as the SAM checkpoint "
            f"(--sam_checkpoint / MaskerConfig.sam.checkpoint), or use the felzenszwalb masker, {OFFLINE_HINT}"
        )
    try:
        state = read_state_dict(checkpoint)
    except WeightsUnavailable as exc:
        if not isinstance(exc.__cause__, OSError):
            raise
        raise WeightsUnavailable(
            f"SAM checkpoint for the '{model_type}' masker not found: '{checkpoint}'; {get}, {OFFLINE_HINT}"
        ) from exc.__cause__
    sam = registry[model_type]()
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsUnavailable(
            f"SAM checkpoint '{checkpoint}' does not match model_type '{model_type}': pass the matching "
            f"model_type or checkpoint [{_one_line(exc, 120)}]"
        ) from exc
    return sam.eval()
