"""Batched generation (left padding, KV cache, greedy or sampling, stop strings) and a chat session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from scitune.config.schema import DEFAULT_IMAGE_TOKEN, GenerationConfig
from scitune.data.collate import collate
from scitune.data.conversation import Message
from scitune.images import open_image  # noqa: F401 (re-exported: generate, chat and eval open images here)
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import Processor


@dataclass
class Prompt:
    """One generation request: a conversation ending with a user turn, and its images in order."""

    messages: list[Message]
    images: list[Image.Image] = field(default_factory=list)

    @classmethod
    def single(
        cls, text: str, images: list[Image.Image] | None = None, image_token: str = DEFAULT_IMAGE_TOKEN
    ) -> Prompt:
        """A one-turn prompt; an image placeholder is prepended for each image the text does not mark."""
        images = images or []
        missing = len(images) - text.count(image_token)
        if missing > 0:
            text = (image_token + "\n") * missing + text
        return cls([Message("user", text)], images)


def _cut_at_stop(text: str, stops: list[str]) -> str:
    cut = len(text)
    for s in stops:
        if s and (i := text.find(s)) >= 0:
            cut = min(cut, i)
    return text[:cut]


class Generator:
    """Generates text for batches of prompts with one model and its processor."""

    def __init__(self, model: VisionLanguageModel, processor: Processor):
        self.model, self.processor = model, processor
        self.stops = processor.stop_strings()

    def _batch(self, prompts: list[Prompt], max_new_tokens: int = 0) -> dict[str, Any]:
        items = []
        context = self.model.context_length
        for p in prompts:
            item = self.processor(p.messages, p.images, prompt=True)
            n = len(item["input_ids"])
            if context and n + max_new_tokens > context:
                raise ValueError(
                    f"--gen.max_new_tokens: the prompt is {n} tokens (images included) and {max_new_tokens} new "
                    f"tokens would make {n + max_new_tokens}, over the model's context of {context} tokens; "
                    "shorten the prompt or lower --gen.max_new_tokens"
                )
            items.append(item)
        return collate(items, self.processor.pad_token_id, padding_side="left")

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], cfg: GenerationConfig | None = None, use_cache: bool = True) -> list[str]:
        """Complete each prompt; the text is cut at the template's stop string and any ``cfg.stop``."""
        cfg = cfg or GenerationConfig()
        if not prompts:
            return []
        batch = self._batch(prompts, cfg.max_new_tokens)
        dev = self.model.device
        tok = self.processor.tokenizer
        stops = self.stops + list(cfg.stop)
        kwargs: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "use_cache": use_cache,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
        }
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        pv = None if batch["pixel_values"] is None else batch["pixel_values"].to(dev)
        grids = batch.get("image_grids")
        out = self.model.generate(
            batch["input_ids"].to(dev),
            batch["attention_mask"].to(dev),
            pv,
            None if grids is None else grids.to(dev),
            **kwargs,
        )
        texts = tok.batch_decode(out, skip_special_tokens=True)
        return [_cut_at_stop(t, stops).strip() for t in texts]


class ChatSession:
    """A multi-turn conversation with one model; images attach to the turn they are sent with."""

    def __init__(
        self,
        model: VisionLanguageModel,
        processor: Processor,
        cfg: GenerationConfig | None = None,
        system: str | None = None,
    ):
        self.gen = Generator(model, processor)
        self.cfg = cfg or GenerationConfig()
        self.messages: list[Message] = [Message("system", system)] if system else []
        self.images: list[Image.Image] = []

    def ask(self, text: str, image: Image.Image | None = None) -> str:
        token = self.gen.processor.image_token
        if image is not None:
            self.images.append(image)
            if token not in text:
                text = token + "\n" + text
        self.messages.append(Message("user", text))
        reply = self.gen.generate([Prompt(list(self.messages), list(self.images))], self.cfg)[0]
        self.messages.append(Message("assistant", reply))
        return reply

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m.role == "system"]
        self.images = []
