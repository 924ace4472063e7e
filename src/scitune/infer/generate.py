"""Offline generation on top of `scitune.infer.engine`: prompts (messages + images) in, texts out, and a chat
session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from scitune.config.schema import DEFAULT_IMAGE_TOKEN, GenerationConfig
from scitune.data.collate import collate
from scitune.data.conversation import Message
from scitune.images import open_image  # noqa: F401 (re-exported: generate, chat and eval open images here)
from scitune.infer.engine import GenerationEngine, GenerationRequest
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


class Generator:
    """Generates text for batches of prompts with one model and its processor (through `GenerationEngine`)."""

    def __init__(self, model: VisionLanguageModel, processor: Processor):
        self.model, self.processor = model, processor
        self.stops = processor.stop_strings()

    def _encode(self, p: Prompt, max_new_tokens: int) -> dict[str, Any]:
        item = self.processor(p.messages, p.images, prompt=True)
        n, context = len(item["input_ids"]), self.model.context_length
        if context and n + max_new_tokens > context:
            raise ValueError(
                f"--gen.max_new_tokens: the prompt is {n} tokens (images included) and {max_new_tokens} new "
                f"tokens would make {n + max_new_tokens}, over the model's context of {context} tokens; "
                "shorten the prompt or lower --gen.max_new_tokens"
            )
        return item

    def _batch(self, prompts: list[Prompt], max_new_tokens: int = 0) -> dict[str, Any]:
        """The prompts encoded and left-padded as one batch (what the engine's prefill of them sees)."""
        items = [self._encode(p, max_new_tokens) for p in prompts]
        return collate(items, self.processor.pad_token_id, padding_side="left")

    def requests(
        self, prompts: list[Prompt], cfg: GenerationConfig, on_delta: Callable[[str], None] | None = None
    ) -> list[GenerationRequest]:
        """Engine requests for ``prompts`` with the settings of ``cfg`` (greedy when its temperature is 0)."""
        out = []
        for p in prompts:
            item = self._encode(p, cfg.max_new_tokens)
            out.append(
                GenerationRequest(
                    item["input_ids"].tolist(),
                    item["pixel_values"],
                    item.get("image_grids"),
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    stops=list(cfg.stop),
                    on_delta=on_delta,
                )
            )
        return out

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig | None = None, use_cache: bool = True) -> list[str]:
        """Complete each prompt, all in one batch; the text ends at EOS, the template's stop string or ``cfg.stop``.

        Sampled rows (``cfg.temperature > 0``) draw from torch's global generator: ``torch.manual_seed`` first makes
        a run repeatable.
        """
        cfg = cfg or GenerationConfig()
        if not prompts:
            return []
        engine = GenerationEngine(self.model, self.processor, max_batch_size=0, admission="static", use_cache=use_cache)
        return [c.text for c in engine.run(self.requests(prompts, cfg))]


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

    def ask(self, text: str, image: Image.Image | None = None, on_delta: Callable[[str], None] | None = None) -> str:
        """The reply to ``text`` (and ``image``); ``on_delta`` receives it piece by piece while it is generated."""
        token = self.gen.processor.image_token
        if image is not None:
            self.images.append(image)
            if token not in text:
                text = token + "\n" + text
        self.messages.append(Message("user", text))
        prompt = Prompt(list(self.messages), list(self.images))
        engine = GenerationEngine(self.gen.model, self.gen.processor, max_batch_size=1)
        reply = engine.run(self.gen.requests([prompt], self.cfg, on_delta))[0].text
        self.messages.append(Message("assistant", reply))
        return reply

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m.role == "system"]
        self.images = []
