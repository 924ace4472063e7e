"""Chat templates: render messages as text segments, each marked trainable (assistant) or not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN
from scitune.data.conversation import Message
from scitune.registry import Registry

LLAVA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; only trainable pieces get labels."""

    text: str
    trainable: bool = False


class ChatTemplate:
    """Base class: ``render`` for training, ``render_prompt`` for generation, ``stop`` strings."""

    name = ""

    def _segments(self, messages: list[Message], tokenizer: Any, prompt: bool) -> list[Segment]:
        raise NotImplementedError

    def render(self, messages: list[Message], tokenizer: Any = None) -> list[Segment]:
        """Segments of a whole conversation, for training."""
        return self._segments(messages, tokenizer, prompt=False)

    def render_prompt(self, messages: list[Message], tokenizer: Any = None) -> list[Segment]:
        """Segments for generation: ``messages`` end with a user turn; the assistant prefix is appended.

        ``messages`` may instead end with an assistant turn: a reply in progress, the text the model generated for
        the messages before it (as the generator returns it, stripped). The prompt is then those messages' prompt,
        segment for segment (so token for token), followed by `reply_join` and that text, untrained: the model
        continues text it has already seen (the ScienceQA answer prompter's second pass).
        """
        if messages and messages[-1].role == "assistant":
            head = self._segments(messages[:-1], tokenizer, prompt=True)
            return [*head, Segment(self.reply_join + messages[-1].content)]
        return self._segments(messages, tokenizer, prompt=True)

    def stop(self, tokenizer: Any = None) -> list[str]:
        raise NotImplementedError

    add_bos = True
    """Prepend the tokenizer's BOS token (templates that render it themselves set False)."""
    placeholder = DEFAULT_IMAGE_TOKEN
    """The image placeholder in message texts (the processor sets its own image token here)."""
    reply_join = ""
    """What the training text puts between the generation prompt and the reply, when the generator strips it from
    the generated text (a space after LLaVA-v0's ``### Assistant:``)."""


CHAT_TEMPLATES: Registry[type[ChatTemplate]] = Registry("chat template")


class SeparatorTemplate(ChatTemplate):
    """``system SEP user_role: text SEP assistant_role: text END`` (LLaVA's SINGLE/TWO separator styles)."""

    system = ""
    system_sep = ""
    user_prefix = ""
    user_suffix = ""
    assistant_prefix = ""
    assistant_end = ""
    """Closes each assistant turn; trained. ``<eos>`` = the tokenizer's EOS token."""

    def _end(self, tokenizer: Any) -> str:
        if self.assistant_end == "<eos>":
            if tokenizer is None or tokenizer.eos_token is None:
                raise ValueError(f"template {self.name!r} needs a tokenizer with an EOS token")
            return tokenizer.eos_token
        return self.assistant_end

    def _segments(self, messages: list[Message], tokenizer: Any, prompt: bool) -> list[Segment]:
        system = self.system
        if messages and messages[0].role == "system":
            system, messages = messages[0].content, messages[1:]
        segs = [Segment(system + self.system_sep)] if system or self.system_sep else []
        for m in messages:
            if m.role == "user":
                segs.append(Segment(self.user_prefix + m.content + self.user_suffix))
            else:  # "ROLE:" untrained, then " reply END" trained (the space too: LLaVA trains the token holding it)
                segs.append(Segment(self.assistant_prefix.rstrip()))
                segs.append(Segment(self.reply_join + m.content + self._end(tokenizer), trainable=True))
        if prompt:  # LLaVA's get_prompt: the open turn is "ROLE:", the reply brings its own leading space
            segs.append(Segment(self.assistant_prefix.rstrip()))
        return [s for s in segs if s.text]

    @property
    def reply_join(self) -> str:  # type: ignore[override]
        return self.assistant_prefix[len(self.assistant_prefix.rstrip()) :]

    def stop(self, tokenizer: Any = None) -> list[str]:
        return [self._end(tokenizer)]


@CHAT_TEMPLATES.register("scitune")
class SciTuneTemplate(SeparatorTemplate):
    """LLaVA-v0 as in SciTune's Table 6: ``SYSTEM###Human: ...###Assistant: ...###``."""

    name = "scitune"
    system = LLAVA_V0_SYSTEM
    system_sep = "###"
    user_prefix = "Human: "
    user_suffix = "###"
    assistant_prefix = "Assistant: "
    assistant_end = "###"


@CHAT_TEMPLATES.register("vicuna-v1")
class VicunaV1Template(SeparatorTemplate):
    """LLaVA-1.5 / Vicuna v1: ``SYSTEM USER: ... ASSISTANT: ...</s>``."""

    name = "vicuna-v1"
    system = VICUNA_V1_SYSTEM
    system_sep = " "
    user_prefix = "USER: "
    user_suffix = " "
    assistant_prefix = "ASSISTANT: "
    assistant_end = "<eos>"


@CHAT_TEMPLATES.register("plain")
class PlainTemplate(SeparatorTemplate):
    """LLaVA caption pretraining: the image tokens, then the caption and a newline; the question is dropped."""

    name = "plain"
    assistant_end = "\n"

    def _segments(self, messages: list[Message], tokenizer: Any, prompt: bool) -> list[Segment]:
        segs: list[Segment] = []
        for m in messages:
            if m.role == "user":
                segs.append(Segment(self.placeholder * m.content.count(self.placeholder)))
            elif m.role == "assistant":
                segs.append(Segment(m.content + self.assistant_end, trainable=True))
        return [s for s in segs if s.text]


@CHAT_TEMPLATES.register("chat-template")
class TokenizerChatTemplate(ChatTemplate):
    """The tokenizer's own Jinja chat template; per-turn segments come from rendering growing prefixes."""

    name = "chat-template"
    add_bos = False

    @staticmethod
    def _apply(tokenizer: Any, msgs: list[Message], gen: bool) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat-template' needs a tokenizer that has a chat_template")
        if not msgs:
            return ""
        dicts = [{"role": m.role, "content": m.content} for m in msgs]
        return tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=gen)

    def _segments(self, messages: list[Message], tokenizer: Any, prompt: bool) -> list[Segment]:
        segs: list[Segment] = []
        prev = ""
        for i, m in enumerate(messages):
            if m.role == "assistant":
                head = self._apply(tokenizer, messages[:i], gen=True)
                if not head.startswith(prev):
                    raise ValueError("the tokenizer's chat template does not render prefixes stably")
                segs.append(Segment(head[len(prev) :]))
                prev = head
            full = self._apply(tokenizer, messages[: i + 1], gen=False)
            if not full.startswith(prev):
                raise ValueError("the tokenizer's chat template does not render prefixes stably")
            segs.append(Segment(full[len(prev) :], trainable=m.role == "assistant"))
            prev = full
        if prompt:
            head = self._apply(tokenizer, messages, gen=True)
            segs.append(Segment(head[len(prev) :]))
        return [s for s in segs if s.text]

    def stop(self, tokenizer: Any = None) -> list[str]:
        return [tokenizer.eos_token] if tokenizer is not None and tokenizer.eos_token else []


class LlavaV0Base(ChatTemplate):
    """The SciTune authors' LLaVA-v0 fork: the ``Human``/``Assistant`` roles, LLaVA-v0's system line, stop ``###``."""

    system = LLAVA_V0_SYSTEM
    prompt_end = ""
    """Appended after the turns for generation (the assistant's cue, if any)."""
    trailer = ""
    """Trained text after the last turn (training only)."""

    def header(self, system: str) -> str:
        """The masked text before the first turn."""
        raise NotImplementedError

    def turn(self, message: Message) -> Segment:
        """One turn: a masked human turn or a trained assistant turn."""
        raise NotImplementedError

    def stop(self, tokenizer: Any = None) -> list[str]:
        return ["###"]

    def _segments(self, messages: list[Message], tokenizer: Any, prompt: bool) -> list[Segment]:
        system = self.system
        if messages and messages[0].role == "system":
            system, messages = messages[0].content, messages[1:]
        segs = [Segment(self.header(system)), *(self.turn(m) for m in messages)]
        segs.append(Segment(self.prompt_end) if prompt else Segment(self.trailer, trainable=True))
        return [s for s in segs if s.text]


@CHAT_TEMPLATES.register("llava-v0")
class LlavaV0Template(LlavaV0Base):
    """The SciTune authors' training text (LLaVA-v0 ``--version v0``, stage 1 and stage 2):
    ``SYSTEM\\n\\n### Human: ...\\n### Assistant: ...\\n### ``.

    Every turn is ``### Role: value\\n`` and the text ends with a bare ``### ``. The system header and the human
    turns are masked; every assistant turn, its ``### Assistant: `` prefix included, and the trailing ``### `` are
    trained. (The authors' code also trains the first two tokens of each human turn, an off-by-one of tokenizing
    the turns separately; that is not reproduced, see docs/methods.md.) The generation prompt ends with
    ``### Assistant:`` and no space, as LLaVA-v0's ``get_prompt`` writes an empty assistant turn (a reply in
    progress continues it after a space). Stops at ``###``.
    """

    name = "llava-v0"
    prompt_end = "### Assistant:"
    reply_join = " "
    trailer = "### "

    def header(self, system: str) -> str:
        return system + "\n\n"

    def turn(self, message: Message) -> Segment:
        if message.role == "user":
            return Segment(f"### Human: {message.content}\n")
        return Segment(f"### Assistant: {message.content}\n", trainable=True)


@CHAT_TEMPLATES.register("llava-v0-simple")
class LlavaV0SimpleTemplate(LlavaV0Base):
    """The SciTune authors' evaluation prompt (LLaVA-v0 ``--conv-mode simple``):
    ``SYSTEM###Human: Hi!###Assistant: Hi there! How can I help you today?###Human: {question}###``.

    A one-shot greeting follows the system line, and the generation prompt ends with the human turn's ``###``: there
    is no ``Assistant:`` cue, the model writes the role itself (so a reply in progress, the generated text, starts
    with ``Assistant:`` and follows the ``###`` directly). Training (``render``) is this layout's natural extension, which the
    authors never trained on: system and greeting masked, human turns ``Human: value###`` masked, assistant turns
    ``Assistant: value###`` trained, role included. Stops at ``###``.
    """

    name = "llava-v0-simple"
    greeting = (("Human", "Hi!"), ("Assistant", "Hi there! How can I help you today?"))
    """The one-shot exchange of LLaVA-v0's ``simple`` conversation, part of the masked header."""

    def header(self, system: str) -> str:
        return system + "###" + "".join(f"{role}: {text}###" for role, text in self.greeting)

    def turn(self, message: Message) -> Segment:
        if message.role == "user":
            return Segment(f"Human: {message.content}###")
        return Segment(f"Assistant: {message.content}###", trainable=True)


def get_template(name: str) -> ChatTemplate:
    """An instance of the template registered as ``name``."""
    return CHAT_TEMPLATES.get(name)()
