"""Golden label-mask tests: the decoded trained tokens are exactly the assistant turns (plus each turn's end)."""

from __future__ import annotations

import pytest

from conftest import text_processor
from scitune.data.conversation import Message
from scitune.data.templates import CHAT_TEMPLATES, get_template
from scitune.data.tokenize import IGNORE_INDEX
from scitune.model.builders import tiny_tokenizer

MESSAGES = [
    Message("user", "<image>\nWhat type of figure is this?"),
    Message("assistant", "Graph Plot Accuracy versus epochs."),
    Message("user", "And the trend?"),
    Message("assistant", "It increases."),
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def encode_conversation(msgs, tok, template, n=3):
    return text_processor(tok, template.name, n).encode(msgs)


def encode_prompt(msgs, tok, template, n=3):
    return text_processor(tok, template.name, n).encode(msgs, prompt=True)


def _trained_spans(ids, labels):
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


EXPECTED_ENDS = {"scitune": "###", "vicuna-v1": "</s>", "plain": "\n", "chat-template": "</s>\n"}
"""Templates that train exactly each assistant turn + its end; the LLaVA-v0 ones also train the role prefix
(tests/unit/data/test_llava_v0_templates.py)."""


def test_every_template_has_label_tests():
    assert set(CHAT_TEMPLATES.names()) == set(EXPECTED_ENDS) | {"llava-v0", "llava-v0-simple"}


@pytest.mark.parametrize("name", sorted(EXPECTED_ENDS))
def test_trained_tokens_are_exactly_the_assistant_text(name, tok):
    template = get_template(name)
    msgs = MESSAGES[:2] if name == "plain" else MESSAGES
    enc = encode_conversation(msgs, tok, template)
    spans = _trained_spans(enc.input_ids, enc.labels)
    decoded = [tok.decode(s) for s in spans]
    join = template.reply_join  # the space after "ROLE:" is the reply's (LLaVA trains the token that holds it)
    want = [join + m.content + EXPECTED_ENDS[name] for m in msgs if m.role == "assistant"]
    assert decoded == want
    # image tokens are present, expanded, and never trained
    img = tok.convert_tokens_to_ids("<image>")
    assert enc.input_ids.count(img) == 3 and enc.n_images == 1
    assert all(lab != img for lab in enc.labels)


@pytest.mark.parametrize("name", sorted(EXPECTED_ENDS))
def test_generation_prompt_is_the_untrained_prefix(name, tok):
    template = get_template(name)
    msgs = MESSAGES[:2] if name == "plain" else MESSAGES
    full = encode_conversation(msgs, tok, template)
    prompt = encode_prompt(msgs[:-1], tok, template)
    first_trained_of_last = max(i for i, lab in enumerate(full.labels) if lab == IGNORE_INDEX) + 1
    # the prompt is exactly the tokens before the last assistant reply
    assert prompt.input_ids == full.input_ids[: len(prompt.input_ids)]
    assert len(prompt.input_ids) == first_trained_of_last or name == "plain" and len(msgs) == 2


def test_scitune_template_renders_table6_layout(tok):
    text = "".join(s.text for s in get_template("scitune").render(MESSAGES[:2], tok))
    assert text == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions.###Human: <image>\nWhat type of figure is this?"
        "###Assistant: Graph Plot Accuracy versus epochs.###"
    )


def test_record_system_message_overrides_default(tok):
    msgs = [Message("system", "You are a figure expert.")] + MESSAGES[:2]
    text = "".join(s.text for s in get_template("scitune").render(msgs, tok))
    assert text.startswith("You are a figure expert.###Human:")


def test_image_in_assistant_turn_is_rejected(tok):
    bad = [Message("user", "hi"), Message("assistant", "look <image>")]
    with pytest.raises(ValueError, match="assistant turn contains the image"):
        encode_conversation(bad, tok, get_template("scitune"))


THREE_TURNS = [
    Message("user", "<image>\nWhat type of figure is this?"),
    Message("assistant", "Bar Chart"),
    Message("user", "Which bar is tallest?"),
    Message("assistant", "The bar labelled B."),
    Message("user", "How many bars?"),
    Message("assistant", "Four."),
]


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED_ENDS) if n != "plain"])
def test_multi_turn_every_assistant_turn_and_its_stop_is_trained(name, tok):
    enc = encode_conversation(THREE_TURNS, tok, get_template(name))
    decoded = [tok.decode(s) for s in _trained_spans(enc.input_ids, enc.labels)]
    join = get_template(name).reply_join
    assert decoded == [join + m.content + EXPECTED_ENDS[name] for m in THREE_TURNS if m.role == "assistant"]


def test_image_placement_is_seeded_per_record():
    from scitune.data.conversation import place_image_tokens

    recs = [
        {
            "id": f"r{i}",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}],
        }
        for i in range(40)
    ]
    placed = [place_image_tokens(r, "random", seed=1)["conversations"][0]["value"] for r in recs]
    assert placed == [place_image_tokens(r, "random", seed=1)["conversations"][0]["value"] for r in recs]
    assert {"<image>\nQ?", "Q?\n<image>"} == set(placed)  # both placements occur
    assert place_image_tokens(recs[0], "before")["conversations"][0]["value"] == "<image>\nQ?"
    assert place_image_tokens(recs[0], "after")["conversations"][0]["value"] == "Q?\n<image>"
    assert place_image_tokens(recs[0], "as-is") is recs[0]
    marked = {**recs[0], "conversations": [{"from": "human", "value": "<image> Q?"}, recs[0]["conversations"][1]]}
    assert place_image_tokens(marked, "random") is marked  # records that mark their image are never changed
