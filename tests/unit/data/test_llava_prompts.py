"""LLaVA's released GPT-4 prompt folders (system_message.txt + NNN_caps.txt / NNN_conv.txt) read by --examples."""

from __future__ import annotations

import pytest

from scitune.io import DataError
from scitune.sources.instruct_gen import build_messages, load_fewshot
from scitune.sources.instruct_gen.context import Context


def _folder(root, name, pairs, system="You are an AI visual assistant."):
    d = root / name
    d.mkdir(parents=True)
    (d / "system_message.txt").write_text(system + "\n")
    for i, (caps, conv) in enumerate(pairs):
        (d / f"{i:03d}_caps.txt").write_text(caps)
        (d / f"{i:03d}_conv.txt").write_text(conv)
    return d


def test_llava_layout_is_read_as_released(tmp_path):
    prompts = tmp_path / "playground" / "data" / "prompts"
    _folder(prompts, "conversation", [("A dog on grass.", "Question:\nWhat animal?\n===\nAnswer:\nA dog."),
                                      ("Two cats.", "Question:\nHow many?\n===\nAnswer:\nTwo.")])  # fmt: skip
    _folder(prompts, "detail_description", [("A red car.", "The image shows a red car.")], "Describe in detail.")
    conv = load_fewshot("conversation", "natural", prompts)
    assert conv.system == "You are an AI visual assistant." and conv.source.endswith("conversation")
    assert conv.examples == (("A dog on grass.", "Question:\nWhat animal?\n===\nAnswer:\nA dog."),
                             ("Two cats.", "Question:\nHow many?\n===\nAnswer:\nTwo."))  # fmt: skip
    detail = load_fewshot("detail", "figure", prompts)
    assert detail.system == "Describe in detail." and detail.examples == (("A red car.", "The image shows a red car."),)
    msgs = build_messages(conv, Context("x", "natural", "A boat."))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    # a type the folder lacks falls back to the shipped defaults
    assert load_fewshot("complex", "natural", prompts).source.startswith("scitune:")


def test_unpaired_file_is_named(tmp_path):
    d = _folder(tmp_path, "complex_reasoning", [("ctx", "resp")])
    (d / "001_caps.txt").write_text("more")
    with pytest.raises(DataError, match=r"001_caps\.txt: few-shot file without its 001_conv\.txt"):
        load_fewshot("complex", "natural", tmp_path)
