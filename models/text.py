"""Text encoders for label embeddings (labels.parquet) and class names at labelling time.

* `clip` — CLIP's text tower with prompt-template ensembling: each text is embedded once per template
  (TextEncoderConfig.templates), the unit vectors are averaged and renormalised (Radford et al., 2021). Every
  (text, template) prompt of an `encode` call goes through the tower in batches of `batch_size` prompts: n labels
  x 8 templates cost ceil(8n / batch_size) forward passes, not 8n.
* `sentence` — any sentence-embedding model in transformers format (e.g. all-MiniLM-L6-v2): attention-mask mean
  pooling over the last hidden state, unit-norm.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.config import TextEncoderConfig
from models.device import resolve_device
from models.weights import load_pretrained


def text_info(config: TextEncoderConfig, model_config) -> dict:
    """What a reference set records about its text encoder, from the configs alone (no weights loaded)."""
    info = {"model_id": config.model_id, "revision": config.revision, "kind": config.kind}
    if config.kind == "clip":
        return {**info, "dim": int(model_config.projection_dim), "templates": list(config.templates or ("{}",))}
    return {**info, "dim": int(model_config.hidden_size), "pooling": "mean"}


def describe_text(config: TextEncoderConfig) -> dict:
    """text_info of a configured encoder, reading only its config.json."""
    from transformers import AutoConfig, CLIPTextConfig

    cls = CLIPTextConfig if config.kind == "clip" else AutoConfig
    return text_info(config, load_pretrained(cls, config.model_id, config.revision, what="text encoder"))


class _Base:
    config: TextEncoderConfig
    dim: int

    @property
    def info(self) -> dict:
        return text_info(self.config, self.model.config)

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [n, dim] unit vectors, all texts in batched forward passes. A text's vector may differ in the
        last bits with the other texts of the call (padding, batch shapes); `encode_each` is independent of them."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode_all(texts).cpu().numpy().astype(np.float32)

    def encode_each(self, texts: list[str]) -> np.ndarray:
        """`encode`, one text per call: each vector depends on its own text only (bit for bit), whatever else is
        embedded around it (the pairing step needs that: a resumed run must pair exactly as an uninterrupted one)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self.encode([t]) for t in texts])

    def _encode_all(self, texts: list[str]) -> torch.Tensor:
        bs = max(1, self.config.batch_size)
        return torch.cat([self._encode_batch(texts[i : i + bs]) for i in range(0, len(texts), bs)])


class ClipTextEncoder(_Base):
    def __init__(self, config: TextEncoderConfig):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        self.config = config
        self.device = resolve_device(config.device)
        self.model = load_pretrained(CLIPTextModelWithProjection, config.model_id, config.revision,
                                     what="CLIP text encoder").eval().to(self.device)
        self.tokenizer = load_pretrained(AutoTokenizer, config.model_id, config.revision, what="CLIP tokenizer")
        self.templates = tuple(config.templates) or ("{}",)
        self.max_length = min(int(self.model.config.max_position_embeddings),
                              int(getattr(self.tokenizer, "model_max_length", 77) or 77))
        self.dim = int(self.model.config.projection_dim)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            return F.normalize(self.model(**batch).text_embeds.float(), dim=-1)

    def _encode_all(self, texts: list[str]) -> torch.Tensor:
        """Every (text, template) prompt in batches of `batch_size` prompts; per text, the template vectors are
        summed (in template order) and renormalised."""
        prompts = [template.format(text) for text in texts for template in self.templates]
        bs = max(1, self.config.batch_size)
        embedded = torch.cat([self._embed(prompts[i : i + bs]) for i in range(0, len(prompts), bs)])
        per_text = embedded.reshape(len(texts), len(self.templates), -1)
        total = per_text[:, 0]
        for k in range(1, len(self.templates)):
            total = total + per_text[:, k]
        return F.normalize(total, dim=-1)


class SentenceTextEncoder(_Base):
    def __init__(self, config: TextEncoderConfig, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.device = resolve_device(config.device)
        self.model = load_pretrained(AutoModel, config.model_id, config.revision,
                                     what="sentence text encoder").eval().to(self.device)
        self.tokenizer = load_pretrained(AutoTokenizer, config.model_id, config.revision, what="sentence tokenizer")
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


TextEncoder = ClipTextEncoder | SentenceTextEncoder


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    if config.kind == "clip":
        return ClipTextEncoder(config)
    if config.kind == "sentence":
        return SentenceTextEncoder(config)
    raise ValueError(f"unknown text encoder kind '{config.kind}'; choose 'clip' or 'sentence'")
