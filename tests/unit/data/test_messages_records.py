"""Records in the chat ``messages`` form (OpenAI's and Hugging Face's role/content, images as content parts) read as
their canonical LLaVA form, and a ``messages`` file trains exactly as the same records in LLaVA's form."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_run_config
from scitune.data.conversation import Message, from_messages, record_images, record_messages

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

OPENAI = {
    "id": "a",
    "messages": [
        {"role": "system", "content": "You are a careful scientist."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "img/p.png"}},
                {"type": "text", "text": "What is shown?"},
            ],
        },  # fmt: skip
        {"role": "assistant", "content": "A plot."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And here?"},
                {"type": "image_url", "image_url": {"url": "file://img/q.png"}},
            ],
        },  # fmt: skip
        {"role": "assistant", "content": [{"type": "text", "text": "A chart."}]},
    ],
}
HF = {
    "id": "b",
    "images": ["img/p.png"],
    "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ],
}


def test_openai_messages_become_canonical():
    rec = from_messages(OPENAI)
    assert rec == {
        "id": "a",
        "system": "You are a careful scientist.",
        "image": ["img/p.png", "img/q.png"],
        "conversations": [
            {"from": "user", "value": "<image>\nWhat is shown?"},
            {"from": "assistant", "value": "A plot."},
            {"from": "user", "value": "And here?\n<image>"},
            {"from": "assistant", "value": "A chart."},
        ],
    }
    assert record_images(OPENAI) == ["img/p.png", "img/q.png"]
    assert record_messages(OPENAI)[:2] == [Message("system", "You are a careful scientist."),
                                           Message("user", "<image>\nWhat is shown?")]  # fmt: skip


def test_hf_messages_take_paths_from_images_list():
    assert record_images(HF) == ["img/p.png"]
    assert [m.content for m in record_messages(HF)] == ["<image>\nDescribe it.", "Red."]
    assert from_messages(HF, token="<img>")["conversations"][0]["value"] == "<img>\nDescribe it."


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
                    }
                ]
            },
            "not data URLs",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "web addresses",
        ),  # fmt: skip
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "'images' list has only 0"),
        (
            {"images": ["a.png", "b.png"], "messages": [{"role": "user", "content": [{"type": "image"}]}]},
            "lists 2 images but its messages have 1",
        ),  # fmt: skip
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "text, image or image_url part"),
        ({"messages": [{"content": "hi"}]}, "string 'role'"),
        ({"messages": [{"role": "user", "content": 3}]}, "string or a list of parts"),
        ({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown role"),
        ({"text": "no turns"}, "'messages' list (role/content)"),
    ],
)
def test_bad_messages_records_say_what_is_wrong(record, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        record_messages(record)
        record_images(record)


def _to_messages(rec: dict) -> dict:
    """LLaVA's from/value record -> OpenAI messages with the image as a content part before the text."""
    msgs = []
    for turn in rec["conversations"]:
        role = {"human": "user", "gpt": "assistant"}[turn["from"]]
        text = turn["value"]
        if "<image>\n" in text:
            content = [{"type": "image_url", "image_url": {"url": rec["image"]}},
                       {"type": "text", "text": text.replace("<image>\n", "")}]  # fmt: skip
        else:
            content = text
        msgs.append({"role": role, "content": content})
    return {"id": rec["id"], "messages": msgs}


def test_a_messages_file_trains_as_its_llava_form(tmp_path, tiny_base, color_data):
    from scitune.train.loop import Trainer

    records = [json.loads(line) for line in color_data.read_text().splitlines()]
    msgs = color_data.parent / "messages.jsonl"
    msgs.write_text("".join(json.dumps(_to_messages(r)) + "\n" for r in records))
    losses = {}
    for name, path in (("llava", color_data), ("messages", msgs)):
        cfg = tiny_run_config(tiny_base, path, tmp_path / name, "finetune", max_steps=2,
                              data={"image_root": str(color_data.parent)})  # fmt: skip
        losses[name] = Trainer(cfg).run().losses
    assert len(losses["messages"]) == 2 and losses["messages"] == losses["llava"]
