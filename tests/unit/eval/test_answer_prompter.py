"""ScienceQA's answer prompter (the SciTune authors' two-pass evaluation): the second prompt byte-exact against the
authors' string, and end to end with a tiny checkpoint (both passes, the continued prompt's tokens, the predictions
written and scored, seeded sampling)."""

from __future__ import annotations

import json

import pytest
from evalkit import session_checkpoint
from PIL import Image

from scitune.cli.eval import main
from scitune.data.conversation import Message
from scitune.data.templates import get_template
from scitune.eval.benchmark import Example
from scitune.eval.scienceqa_benchmark import ANSWER_CUE, ScienceQABenchmark, ScienceQAOptions

PATCHES = "<im_patch>" * 3
START_END = "<im_start>" + PATCHES + "<im_end>"


def _bench(**kw) -> ScienceQABenchmark:
    return ScienceQABenchmark(ScienceQAOptions(answer_prompter=True, **kw))


@pytest.mark.parametrize(
    ("key", "image"),
    [
        ("eval_simple_answer_prompter_second_pass_given_reasoning", PATCHES),
        ("eval_simple_start_end_answer_prompter_second_pass_given_reasoning", START_END),
    ],
)
def test_second_prompt_is_the_authors(shared_data, key, image):
    ref = json.loads((shared_data / "scitune_prompts" / "scitune_authors_prompts.json").read_text(encoding="utf-8"))
    first = [Message("user", ref["record_human"])]
    up = _bench().follow_up(Example("1"), first, ref[key]["reasoning"])
    text = "".join(s.text for s in get_template("llava-v0-simple").render_prompt(up.messages))
    assert text.replace("<image>", image) == ref[key]["prompt"]
    assert up.max_new_tokens == 64 and up.prefix == ref[key]["reasoning"] + "\n The answer is "


def test_reasoning_is_cut_at_the_separator_and_the_option_gates_it():
    first = [Message("user", "Q?")]
    up = _bench().follow_up(Example("1"), first, "Assistant: LECTURE: l.\n###\nANSWER: B.")
    assert up.messages == [*first, Message("assistant", "Assistant: LECTURE: l." + ANSWER_CUE)]
    assert ScienceQABenchmark(ScienceQAOptions()).follow_up(Example("1"), first, "x") is None
    assert _bench(image_position="after").prompt_text(Example("1", "Q?", ["a.png"])) == "Q?\n<image>"
    assert _bench().prompt_text(Example("1", "Q?", ["a.png"])) == "Q?"  # placed before it by the runner
    with pytest.raises(ValueError, match="--temperature"):
        ScienceQAOptions(temperature=-1)
    with pytest.raises(ValueError, match="--template"):
        ScienceQAOptions(template="llava-v9")


# ---------------------------------------------------------------- end to end with a tiny checkpoint
FIELDS = {
    "hint": "",
    "task": "closed choice",
    "grade": "grade3",
    "subject": "natural science",
    "topic": "colors",
    "category": "Colors",
    "skill": "",
    "lecture": "Colors are seen.",
    "solution": "It is red.",
    "split": "test",
}
"""The ScienceQA fields the tiny problems share."""


def _problem(question: str, answer: int, image: str | None) -> dict:
    return {"question": question, "choices": ["red", "blue", "green"], "answer": answer, "image": image, **FIELDS}


@pytest.fixture(scope="module")
def sqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqa")
    problems = {
        "11": _problem("Which color?", 0, "image.png"),
        "12": _problem("Sky?", 1, None),
        "13": _problem("Grass?", 2, "image.png"),
    }
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": list(problems)}))
    for pid, color in (("11", "red"), ("13", "green")):
        (root / "images" / "test" / pid).mkdir(parents=True)
        Image.new("RGB", (32, 32), color).save(root / "images" / "test" / pid / "image.png")
    return root


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return session_checkpoint(tmp_path_factory)["checkpoint"]


OPTIONS = (
    "--split test --answer_prompter true --template llava-v0-simple --image_position after --max_new_tokens 6 "
    "--batch_size 2 --progress false --device cpu"
)


def _argv(sqa, ck, out, *extra):
    return ["scienceqa", "--checkpoint", ck, "--data", str(sqa), "--out", str(out), *OPTIONS.split(), *extra]


@pytest.fixture
def spy(monkeypatch):
    """Every Generator.generate call: (processor template name, prompts, cfg, texts), the real model answering."""
    from scitune.infer.generate import Generator

    real, calls = Generator.generate, []

    def generate(self, prompts, cfg=None, use_cache=True):
        texts = real(self, prompts, cfg, use_cache)
        calls.append((self.processor.template_name, prompts, cfg, texts))
        return texts

    monkeypatch.setattr(Generator, "generate", generate)
    return calls


def _records(out) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def test_two_passes_continue_the_first_prompt_and_write_predictions(sqa, ck, tmp_path, spy):
    from scitune.loader import load

    out = tmp_path / "ap"
    assert main(_argv(sqa, ck, out)) == 0
    # batches of 2 then 1: first pass, then its answer pass (greedy, at most 64 new tokens)
    assert [len(p) for _, p, _, _ in spy] == [2, 2, 1, 1]
    assert [(c.max_new_tokens, c.temperature) for _, _, c, _ in spy] == [(6, 0.0), (64, 0.0)] * 2
    assert {name for name, _, _, _ in spy} == {"llava-v0-simple"}
    processor = load(ck, template="llava-v0-simple").processor
    recs = _records(out)
    for (_, firsts, _, texts), (_, seconds, _, answers) in zip(spy[::2], spy[1::2]):
        for p1, t1, p2, t2 in zip(firsts, texts, seconds, answers):
            reasoning = t1.split("###")[0].strip()
            assert p2.messages == [*p1.messages, Message("assistant", reasoning + ANSWER_CUE)]
            assert p2.images == p1.images
            sizes = [im.size for im in p1.images]
            ids1 = processor.encode(p1.messages, sizes, prompt=True).input_ids
            ids2 = processor.encode(p2.messages, sizes, prompt=True).input_ids
            assert ids2[: len(ids1)] == ids1  # the model continues the very tokens it saw
            pid = next(k for k, r in recs.items() if r["first_text"] == t1 and r["text"].endswith(t2))
            assert recs[pid]["text"] == reasoning + "\n The answer is " + t2
    assert spy[0][1][0].messages[0].content.endswith("\n<image>")  # --image_position after
    assert json.loads((out / "results.json").read_text())["input"]["predictions"] == 3


def test_answers_are_parsed_from_the_combined_text(sqa, ck, tmp_path, monkeypatch):
    from scitune.infer.generate import Generator

    def generate(self, prompts, cfg=None, use_cache=True):
        if prompts[0].messages[-1].role == "assistant":  # the answer pass: right for the first problem only
            return ["A." if "Which color?" in p.messages[0].content else "C." for p in prompts]
        return ["Assistant: LECTURE: Colors are seen.\nSOLUTION: It is red." for _ in prompts]

    monkeypatch.setattr(Generator, "generate", generate)
    out = tmp_path / "parsed"
    assert main(_argv(sqa, ck, out)) == 0
    recs = _records(out)
    assert recs["11"]["text"] == "Assistant: LECTURE: Colors are seen.\nSOLUTION: It is red.\n The answer is A."
    res = json.loads((out / "results.json").read_text())
    assert (res["accuracy"]["correct"], res["accuracy"]["count"], res["unparsable"]) == (2, 3, 0)  # 11 and 13


def test_sampling_is_seeded(sqa, ck, tmp_path, spy):
    runs = []
    for name in ("a", "b"):
        assert main(_argv(sqa, ck, tmp_path / name, "--temperature", "0.7", "--seed", "3")) == 0
        runs.append({k: r["text"] for k, r in _records(tmp_path / name).items()})
    assert runs[0] == runs[1]
    assert {c.temperature for _, _, c, _ in spy} == {0.7}
