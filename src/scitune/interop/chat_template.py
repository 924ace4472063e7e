"""Jinja chat templates for exported (llava-hf) processors that render exactly the text scitune's own template renders,
BOS included; each is checked against scitune's rendering before export, and a template that cannot be written
exactly is refused by name."""

from __future__ import annotations

from typing import Any

from scitune.data.conversation import Message
from scitune.processor import Processor

_SENTINEL = "\x00"


def _q(text: str) -> str:
    """``text`` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r") + "'"


def _lit(text: str) -> str:
    """An expression that outputs ``text``."""
    return "{{ " + _q(text) + " }}"


def _content_macro(image_token: str) -> str:
    """``text(content)``: a message's content as scitune's text. A string stays as it is; a list of content parts
    becomes its parts joined by newlines, each image part the image token (``[image, text T]`` -> ``<image>\\nT``,
    as `scitune serve` reads a request)."""
    return (
        "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c -%}"
        "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
        "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- else -%}" + _lit(image_token) + "{%- endif -%}"
        "{%- endfor -%}{%- endif -%}{%- endmacro -%}"
    )


def _system(default: str) -> str:
    """Sets ``ns.system`` (the first message's content if it is a system message) and ``ns.first`` (the first turn)."""
    return (
        "{%- set ns = namespace(system=" + _q(default) + ", first=0) -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set ns.system = text(messages[0]['content']) -%}{%- set ns.first = 1 -%}{%- endif -%}"
    )


def _turns(user: tuple[str, str], other: tuple[str, str]) -> str:
    """Every turn after the system message: a user turn as ``user[0] + text + user[1]``, any other as ``other``."""
    return (
        "{%- for m in messages[ns.first:] -%}{%- if m['role'] == 'user' -%}"
        + _lit(user[0])
        + "{{ text(m['content']) }}"
        + _lit(user[1])
        + "{%- else -%}"
        + _lit(other[0])
        + "{{ text(m['content']) }}"
        + _lit(other[1])
        + "{%- endif -%}{%- endfor -%}"
    )


def _split(text: str) -> tuple[str, str]:
    before, _, after = text.partition(_SENTINEL)
    return before, after


def _body(processor: Processor) -> str:
    """The template's rendering as Jinja (content already through ``text``); raises ValueError when there is none."""
    from scitune.data.templates import LlavaV0Base, PlainTemplate, SeparatorTemplate, TokenizerChatTemplate

    t, tok = processor.template, processor.tokenizer
    if isinstance(t, PlainTemplate):  # the image tokens of each user turn; the caption and a newline otherwise
        token = processor.image_token
        count = "(text(m['content']).split(" + _q(token) + ") | length - 1)"
        return (
            "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{{ " + _q(token) + " * " + count + " }}"
            "{%- elif m['role'] == 'assistant' -%}{{ text(m['content']) }}" + _lit(t.assistant_end) + "{%- endif -%}"
            "{%- endfor -%}"
        )
    if isinstance(t, SeparatorTemplate):
        end = tok.eos_token if t.assistant_end == "<eos>" else t.assistant_end
        return (
            _system(t.system)
            + "{{ ns.system }}"
            + _lit(t.system_sep)
            + _turns((t.user_prefix, t.user_suffix), (t.assistant_prefix, end))
            + "{%- if add_generation_prompt -%}"
            + _lit(t.assistant_prefix.rstrip())
            + "{%- endif -%}"
        )
    if isinstance(t, LlavaV0Base):
        head = _split(t.header(_SENTINEL))
        user = _split(t.turn(Message("user", _SENTINEL)).text)
        other = _split(t.turn(Message("assistant", _SENTINEL)).text)
        return (
            _system(t.system)
            + _lit(head[0])
            + "{{ ns.system }}"
            + _lit(head[1])
            + _turns(user, other)
            + "{%- if add_generation_prompt -%}"
            + _lit(t.prompt_end)
            + "{%- else -%}"
            + _lit(t.trailer)
            + "{%- endif -%}"
        )
    if isinstance(t, TokenizerChatTemplate) and getattr(tok, "chat_template", None):
        # the tokenizer's own template, given the messages with their content as scitune's text
        return (
            "{%- set conv = namespace(messages=[]) -%}{%- for m in messages -%}"
            "{%- set conv.messages = conv.messages + [{'role': m['role'], 'content': text(m['content'])}] -%}"
            "{%- endfor -%}{%- set messages = conv.messages -%}" + tok.chat_template
        )
    raise ValueError(
        f"chat template {processor.template_name!r} has no Jinja form that renders its text exactly: a llava-hf "
        "processor would prompt the model with other text than scitune trains and generates with, so it is not exported"
    )


def jinja_chat_template(processor: Processor) -> str:
    """A Jinja chat template for the exported processor that renders messages exactly as ``processor`` does.

    A user message ``[{"type": "image"}, {"type": "text", "text": T}]`` renders as scitune renders ``"<image>\\nT"``,
    the tokenizer's BOS first when the template adds one. The result is checked on probe conversations
    (`check_chat_template`).

    Raises:
        ValueError: naming the template, when it cannot be rendered exactly.
    """
    tok = processor.tokenizer
    bos = "{{ bos_token }}" if processor.template.add_bos and tok.bos_token_id is not None else ""
    jinja = _content_macro(processor.image_token) + bos + _body(processor)
    check_chat_template(processor, jinja)
    return jinja


def _probes(token: str) -> list[tuple[list[dict[str, Any]], bool]]:
    image_q = [{"type": "image"}, {"type": "text", "text": "What is shown?"}]
    two = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": image_q},
        {"role": "assistant", "content": "A bar chart."},
        {"role": "user", "content": "And the 'axes'?\nSay it."},
    ]
    return [
        ([{"role": "user", "content": image_q}], True),
        ([{"role": "user", "content": f"{token}\nWhat is shown?"}], True),
        (
            [{"role": "user", "content": [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}]}],
            True,
        ),
        (two, True),
        (two[:3], False),
        (two[1:3], False),
    ]


def _scitune_text(processor: Processor, messages: list[dict[str, Any]], prompt: bool) -> str:
    token = processor.image_token
    msgs = []
    for m in messages:
        c = m["content"]
        text = c if isinstance(c, str) else "\n".join(p["text"] if p["type"] == "text" else token for p in c)
        msgs.append(Message(m["role"], text))
    t = processor.template
    segments = (t.render_prompt if prompt else t.render)(msgs, processor.tokenizer)
    bos = processor.tokenizer.bos_token if t.add_bos and processor.tokenizer.bos_token_id is not None else ""
    return bos + "".join(s.text for s in segments)


def check_chat_template(processor: Processor, jinja: str) -> None:
    """Render probe conversations (with and without images, a system message, several turns, a generation prompt
    or not) with ``jinja`` and with scitune's template; raise ValueError naming the template at the first difference."""
    for messages, prompt in _probes(processor.image_token):
        want = _scitune_text(processor, messages, prompt)
        try:
            got = processor.tokenizer.apply_chat_template(
                messages, chat_template=jinja, tokenize=False, add_generation_prompt=prompt
            )
        except Exception as e:  # a tokenizer template that cannot take these messages
            got = f"<error {type(e).__name__}: {e}>"
        if got != want:
            raise ValueError(
                f"chat template {processor.template_name!r} cannot be exported exactly: the Jinja form renders "
                f"{got!r} where scitune renders {want!r}"
            )


class _Rendering:
    """What `check_chat_template` needs of a processor: a tokenizer, a registered template and the image token."""

    def __init__(self, tokenizer: Any, name: str, image_token: str):
        from scitune.data.templates import get_template

        self.tokenizer, self.template_name, self.image_token = tokenizer, name, image_token
        self.template = get_template(name)
        self.template.placeholder = image_token


def infer_template(jinja: str | None, tokenizer: Any, image_token: str) -> str | None:
    """The registered chat template whose rendering ``jinja`` (a llava-hf folder's template) reproduces on the probe
    conversations (`check_chat_template`), or None. ``chat-template`` (the tokenizer's own) is never inferred: with the
    folder's template as the tokenizer's it would match any folder."""
    from scitune.data.templates import CHAT_TEMPLATES

    if not jinja:
        return None
    for name in CHAT_TEMPLATES.names():
        if name == "chat-template":
            continue
        try:
            check_chat_template(_Rendering(tokenizer, name, image_token), jinja)  # type: ignore[arg-type]
        except ValueError:
            continue
        return name
    return None
