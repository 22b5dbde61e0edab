"""Image captioning over transformers image-to-text models: BLIP (default) and LLaVA-1.5.

Captions feed models.nlp.labels_from_caption. Generation is batched (`batch_size`), greedy by default (so
captions are deterministic), and the prompt is stripped from what is returned.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.config import CaptionerConfig
from models.device import resolve_device, resolve_dtype
from models.weights import load_pretrained

LLAVA_DEFAULT_PROMPT = "USER: <image>\nDescribe the image in one sentence. ASSISTANT:"


class Captioner:
    def __init__(self, config: CaptionerConfig):
        from transformers import AutoProcessor

        self.config = config
        self.device = resolve_device(config.device)
        dtype = resolve_dtype(config.precision, self.device)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if config.kind == "blip":
            from transformers import BlipForConditionalGeneration as cls
            self.prompt = config.prompt
        elif config.kind == "llava":
            from transformers import LlavaForConditionalGeneration as cls
            self.prompt = config.prompt or LLAVA_DEFAULT_PROMPT
        else:
            raise ValueError(f"unknown captioner kind '{config.kind}'; choose 'blip' or 'llava'")
        self.model = load_pretrained(cls, config.model_id, config.revision, what=f"{config.kind} captioner", **kwargs)
        self.model.eval().to(self.device)
        self.processor = load_pretrained(AutoProcessor, config.model_id, config.revision, what=f"{config.kind} processor")
        tokenizer = getattr(self.processor, "tokenizer", None)
        if config.kind == "llava" and tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding

    @property
    def info(self) -> dict:
        return {"model_id": self.config.model_id, "revision": self.config.revision, "kind": self.config.kind,
                "prompt": self.prompt, "max_new_tokens": self.config.max_new_tokens}

    def caption(self, images: list[np.ndarray]) -> list[str]:
        out: list[str] = []
        bs = max(1, self.config.batch_size)
        for start in range(0, len(images), bs):
            out += self._caption_batch(images[start : start + bs])
        return out

    def _caption_batch(self, images: list[np.ndarray]) -> list[str]:
        pil = [Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB") for img in images]
        kwargs = {"return_tensors": "pt"}
        if self.prompt is not None:
            kwargs["text"] = [self.prompt] * len(pil)
            kwargs["padding"] = True
        inputs = self.processor(images=pil, **kwargs).to(self.device)
        if "pixel_values" in inputs and self.model.dtype != inputs["pixel_values"].dtype:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        if self.config.kind == "llava":
            generated = generated[:, inputs["input_ids"].shape[1] :]  # decoder-only: output repeats the prompt
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [self._strip_prompt(t) for t in texts]

    def _strip_prompt(self, text: str) -> str:
        text = text.strip()
        if self.prompt and self.config.kind == "blip":
            # BLIP continues a text prefix ("a picture of") and returns it; drop it case-insensitively.
            prefix = self.prompt.strip().lower()
            if text.lower().startswith(prefix):
                text = text[len(prefix) :].strip()
        return " ".join(text.split())
