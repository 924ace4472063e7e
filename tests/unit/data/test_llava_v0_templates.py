"""The SciTune authors' LLaVA-v0 templates: byte-exact against the strings their code builds
(``shared/data/scitune_prompts``), golden label masks, and a reply in progress that continues a prompt token for
token (every template)."""

from __future__ import annotations

import json

import pytest

from scitune.data.conversation import Message
from scitune.data.templates import CHAT_TEMPLATES, get_template
from scitune.data.tokenize import IGNORE_INDEX, ImageSlots, encode_segments
from scitune.model.builders import tiny_tokenizer

PATCHES = "<im_patch>" * 3
"""The reference strings were made with 3 image patch tokens."""
START_END = "<im_start>" + PATCHES + "<im_end>"


@pytest.fixture(scope="module")
def ref(shared_data):
    return json.loads((shared_data / "scitune_prompts" / "scitune_authors_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _text(segments, image: str) -> str:
    """All segments joined, the placeholder replaced as the tokenizer side expands it (BOS not included)."""
    return "".join(s.text for s in segments).replace("<image>", image)


def _record(ref) -> list[Message]:
    return [Message("user", ref["record_human"]), Message("assistant", ref["record_gpt"])]


# ---------------------------------------------------------------- byte-exact against the authors' strings
@pytest.mark.parametrize(("key", "image"), [("train_v0", PATCHES), ("train_v0_start_end", START_END)])
def test_llava_v0_training_text_is_the_authors(ref, key, image):
    assert _text(get_template("llava-v0").render(_record(ref)), image) == ref[key]


@pytest.mark.parametrize(("key", "image"), [("eval_simple", PATCHES), ("eval_simple_start_end", START_END)])
def test_llava_v0_simple_prompt_is_the_authors_eval_prompt(ref, key, image):
    assert _text(get_template("llava-v0-simple").render_prompt(_record(ref)[:1]), image) == ref[key]


@pytest.mark.parametrize(
    ("key", "image"),
    [
        ("eval_simple_answer_prompter_second_pass_given_reasoning", PATCHES),
        ("eval_simple_start_end_answer_prompter_second_pass_given_reasoning", START_END),
    ],
)
def test_reply_in_progress_gives_the_answer_prompter_second_prompt(ref, key, image):
    given = ref[key]
    msgs = [*_record(ref)[:1], Message("assistant", given["reasoning"] + " ###\nANSWER:")]
    assert _text(get_template("llava-v0-simple").render_prompt(msgs), image) == given["prompt"]


@pytest.mark.parametrize(
    ("start_end", "train_key", "eval_key"),
    [(False, "train_v0", "eval_simple"), (True, "train_v0_start_end", "eval_simple_start_end")],
)
def test_processor_tokens_decode_to_the_authors_text(ref, start_end, train_key, eval_key):
    """Through the processor, which expands the placeholder (3 image tokens, optionally between <im_start> and
    <im_end>): the ids after BOS decode to the authors' strings, the image token standing for <im_patch>."""
    from scitune.processor import ImageTokenRule, Processor

    for name, prompt, key in (("llava-v0", False, train_key), ("llava-v0-simple", True, eval_key)):
        tok = tiny_tokenizer()
        proc = Processor(tok, None, name, ImageTokenRule(3, start_end=start_end))
        ids = proc.encode(_record(ref)[: 1 if prompt else 2], [(32, 32)], prompt=prompt).input_ids
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids[1:], skip_special_tokens=False) == ref[key].replace("<im_patch>", "<image>")


def test_llava_v0_generation_prompt_ends_with_the_assistant_cue(ref):
    t = get_template("llava-v0")
    prompt = _text(t.render_prompt(_record(ref)[:1]), PATCHES)
    assert prompt.endswith("\n### Assistant:") and ref["train_v0"].startswith(prompt)
    assert ref["train_v0"][len(prompt)] == " "  # the reply follows after a space: the reply_join
    assert t.reply_join == " " and t.stop() == ["###"] == get_template("llava-v0-simple").stop()


# ---------------------------------------------------------------- label masks
def _slots(tok):
    return ImageSlots("<image>", tok.convert_tokens_to_ids("<image>"), 3)


def encode_conversation(messages, tok, template, slots):
    return encode_segments(template.render(messages, tok), tok, slots, template.add_bos)


def encode_prompt(messages, tok, template, slots):
    return encode_segments(template.render_prompt(messages, tok), tok, slots, template.add_bos)


def _spans(ids, labels, trained: bool):
    """Runs of consecutive trained (or untrained) token ids."""
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if (lab != IGNORE_INDEX) == trained:
            assert not trained or lab == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    return [*spans, cur] if cur else spans


TURNS = [
    Message("user", "<image>\nWhat type of figure is this?"),
    Message("assistant", "LECTURE: Graph Plot.\n###\nANSWER: A."),
    Message("user", "And the trend?"),
    Message("assistant", "It increases."),
]
SYSTEM = get_template("llava-v0").system


def test_llava_v0_trains_assistant_turns_with_their_prefix_and_the_trailing_signal(tok):
    enc = encode_conversation(TURNS, tok, get_template("llava-v0"), _slots(tok))
    trained = [tok.decode(s) for s in _spans(enc.input_ids, enc.labels, True)]
    assert trained == [
        "### Assistant: LECTURE: Graph Plot.\n###\nANSWER: A.\n",
        "### Assistant: It increases.\n### ",
    ]
    # the system header and every human turn are masked whole: the authors' code would also train the first two
    # tokens of each human turn (an off-by-one), which is deliberately not reproduced
    masked = [tok.decode(s[1:] if s[0] == tok.bos_token_id else s) for s in _spans(enc.input_ids, enc.labels, False)]
    assert masked == [
        SYSTEM + "\n\n### Human: " + "<image>" * 3 + "\nWhat type of figure is this?\n",
        "### Human: And the trend?\n",
    ]
    assert enc.input_ids[0] == tok.bos_token_id and enc.labels[0] == IGNORE_INDEX


def test_llava_v0_simple_trains_assistant_turns_with_role_and_masks_the_greeting(tok):
    enc = encode_conversation(TURNS, tok, get_template("llava-v0-simple"), _slots(tok))
    trained = [tok.decode(s) for s in _spans(enc.input_ids, enc.labels, True)]
    assert trained == ["Assistant: LECTURE: Graph Plot.\n###\nANSWER: A.###", "Assistant: It increases.###"]
    masked = [tok.decode(s[1:] if s[0] == tok.bos_token_id else s) for s in _spans(enc.input_ids, enc.labels, False)]
    greeting = "###Human: Hi!###Assistant: Hi there! How can I help you today?###"
    question = "Human: " + "<image>" * 3 + "\nWhat type of figure is this?###"
    assert masked == [SYSTEM + greeting + question, "Human: And the trend?###"]


def test_llava_v0_simple_prompt_is_the_untrained_prefix_of_the_training_text(tok):
    t = get_template("llava-v0-simple")
    full = encode_conversation(TURNS, tok, t, _slots(tok))
    prompt = encode_prompt(TURNS[:-1], tok, t, _slots(tok))
    assert prompt.input_ids == full.input_ids[: len(prompt.input_ids)]
    assert full.labels[len(prompt.input_ids) - 1] == IGNORE_INDEX != full.labels[len(prompt.input_ids)]


def test_record_system_message_replaces_the_system_line():
    msgs = [Message("system", "You read figures."), *TURNS[:2]]
    assert _text(get_template("llava-v0").render(msgs), "<image>").startswith("You read figures.\n\n### Human: ")
    assert _text(get_template("llava-v0-simple").render_prompt(msgs[:2]), "<image>").startswith(
        "You read figures.###Human: Hi!###"
    )


# ---------------------------------------------------------------- a reply in progress continues the prompt
@pytest.mark.parametrize("name", CHAT_TEMPLATES.names())
def test_reply_in_progress_keeps_the_prompt_tokens(name, tok):
    t = get_template(name)
    msgs = TURNS[:3]
    first = encode_prompt(msgs, tok, t, _slots(tok))
    second = encode_prompt([*msgs, Message("assistant", "It rises. ###\nANSWER:")], tok, t, _slots(tok))
    assert second.input_ids[: len(first.input_ids)] == first.input_ids
    assert tok.decode(second.input_ids[len(first.input_ids) :]) == t.reply_join + "It rises. ###\nANSWER:"
    assert set(second.labels[len(first.input_ids) :]) == {IGNORE_INDEX}  # context, never trained
