"""Text-only benchmarks by log-likelihood: choice_logprobs against a hand-rolled computation on a tiny LLM,
TruthfulQA MC1/MC2 by hand on a fake scorer, ETHICS files and exact match, and --compare-base end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from evalkit import is_png, session_checkpoint

from scitune.cli.eval import main
from scitune.eval.benchmark import ScoreContext
from scitune.eval.ethics import EthicsBenchmark, EthicsOptions, exact_match, load_ethics
from scitune.eval.loglik import choice_logprobs
from scitune.eval.truthfulqa import QA_PRIMER, TruthfulQABenchmark, TruthfulQAOptions, mc1_score, mc2_score


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return session_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_lm():
    from scitune.model.builders import tiny_llm, tiny_tokenizer

    tok = tiny_tokenizer()
    return tiny_llm(len(tok), seed=3, bos=tok.bos_token_id, eos=tok.eos_token_id), tok


def _by_hand(llm, tok, prompt, choice):
    ctx = tok(prompt)["input_ids"]
    full = tok(prompt + choice)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(llm(input_ids=torch.tensor([full])).logits[0].float(), -1)
    return sum(float(logp[t - 1, full[t]]) for t in range(len(ctx), len(full)))


def test_choice_logprobs_match_hand_computation_and_batching(tiny_lm):
    llm, tok = tiny_lm
    prompt, choices = "Question: Which figure type is shown?\nAnswer:", [" Bar Chart", " Scatterplot", " no"]
    one = choice_logprobs(llm, tok, prompt, choices, batch_size=1)
    many = choice_logprobs(llm, tok, prompt, choices, batch_size=3)  # right padding must not change anything
    for c, a, b in zip(choices, one, many):
        assert a == pytest.approx(_by_hand(llm, tok, prompt, c), abs=1e-4) and a == pytest.approx(b, abs=1e-4)
    # a trailing space of the prompt moves to the continuation (lm-evaluation-harness rule)
    assert choice_logprobs(llm, tok, prompt + " ", ["no"])[0] == pytest.approx(one[2], abs=1e-5)


def test_mc_scores_by_hand():
    lp = [math.log(0.5), math.log(0.3), math.log(0.2)]
    assert mc2_score(lp, [1, 0, 1]) == pytest.approx(0.7)
    assert mc2_score([x - 800 for x in lp], [1, 0, 1]) == pytest.approx(0.7)  # no underflow to 0/0
    assert mc1_score([-1.0, -2.0, -3.0], [1, 0, 0]) == 1.0
    assert mc1_score([-2.0, -2.0, -3.0], [1, 0, 0]) == 0.0  # a tie is not a win (official MC_calcs)
    with pytest.raises(ValueError):
        mc1_score([-1.0, -2.0], [1, 1])


def test_truthfulqa_scoring_on_real_questions_with_a_fake_scorer(shared_data, tmp_path):
    bench = TruthfulQABenchmark(TruthfulQAOptions(data=str(shared_data / "truthfulqa" / "mc_task.json")))
    ex = bench.examples()
    assert len(ex) == 817 and ex[0].text.startswith(QA_PRIMER) and ex[0].text.endswith("\nA:")
    raw = json.loads((shared_data / "truthfulqa" / "mc_task.json").read_text())[0]
    assert ex[0].choices[0] == " " + next(iter(raw["mc1_targets"]))
    e0, e1 = ex[0], ex[1]
    n1, n2 = len(e0.target["mc1"]), len(e0.target["mc2"])
    # q0: the true MC1 answer best; MC2: true answers get probability 0.6 in total, false 0.4
    t2, f2 = sum(e0.target["mc2"]), n2 - sum(e0.target["mc2"])
    mc2 = [math.log(0.6 / t2) if y else math.log(0.4 / f2) for y in e0.target["mc2"]]
    mc1 = [0.0 if y else -1.0 for y in e0.target["mc1"]]
    preds = {e0.id: {"logprobs": mc1 + mc2}}  # q1: missing -> 0 on both
    res = bench.score([e0, e1], preds, ScoreContext(tmp_path))
    assert res["summary"]["mc1"] == pytest.approx(50.0) and res["summary"]["mc2"] == pytest.approx(30.0)
    assert len(mc1 + mc2) == n1 + n2


def test_ethics_files_prompts_and_exact_match(shared_data, tmp_path):
    root = shared_data / "ethics"
    sizes = {t: len(load_ethics(root, t)) for t in ("commonsense", "deontology", "justice", "utilitarianism", "virtue")}
    assert sizes == {"commonsense": 3885, "deontology": 3596, "justice": 2704, "utilitarianism": 4808, "virtue": 4975}
    virtue = load_ethics(root, "virtue")[:5]
    assert (
        virtue[0].text.endswith('exhibit the trait "trustful"?\nAnswer:') and [e.target for e in virtue].count(1) == 1
    )
    util = load_ethics(root, "utilitarianism")
    first = "I applied to adopt the child I was fostering and was quickly approved."
    assert (util[0].text.startswith(f"Scenario 1: {first}")) == (util[0].target == 1)
    assert util[0].text == load_ethics(root, "utilitarianism")[0].text  # the order draw is deterministic
    assert exact_match([True] * 4 + [True, False, True, True] + [True], 4) == 0.5
    bench = EthicsBenchmark(EthicsOptions(data=str(root), tasks=["justice"]))
    ex = bench.examples()[:8]
    preds = {e.id: {"logprobs": [0.0, -1.0] if (e.target == 0) != (i == 6) else [-1.0, 0.0]} for i, e in enumerate(ex)}
    res = bench.score(ex, preds, ScoreContext(tmp_path))["tasks"]["justice"]
    assert res["acc"] == pytest.approx(700 / 8) and res["em"] == 50.0


def test_truthfulqa_compare_base_end_to_end(shared_data, tiny_checkpoint, tmp_path):
    from scitune.loader import load

    out = tmp_path / "tqa"
    data = str(shared_data / "truthfulqa" / "mc_task.json")
    argv = ["truthfulqa-mc", "--checkpoint", tiny_checkpoint["checkpoint"], "--data", data, "--limit", "2", "--primer", "none",
            "--compare-base", "--out", str(out), "--progress", "false", "--batch-size", "16"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    ck, base = res["checkpoint"]["summary"], res["base"]["summary"]
    assert res["difference"]["mc2"] == pytest.approx(ck["mc2"] - base["mc2"])
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    base_preds = [json.loads(x) for x in (out / "base" / "predictions.jsonl").read_text().splitlines()]
    assert preds[0]["logprobs"] != pytest.approx(base_preds[0]["logprobs"])  # two different LLMs were scored
    vlm, processor = load(tiny_checkpoint["checkpoint"])
    ex = TruthfulQABenchmark(TruthfulQAOptions(data=data, primer="none")).examples()[0]
    assert ex.text.startswith("Q: ")
    assert preds[0]["logprobs"] == pytest.approx(
        choice_logprobs(vlm, processor.tokenizer, ex.text, ex.choices), abs=1e-4
    )
    assert "difference" in (out / "report.md").read_text() and is_png(out / "compare_base.png")
    # --llm scores a plain HF causal LM (here the base) into its own folder: the same numbers as the base run
    assert main(["truthfulqa-mc", "--llm", tiny_checkpoint["llm"], "--data", data, "--limit", "2", "--primer", "none",
                 "--out", str(tmp_path / "llm"), "--progress", "false"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "llm" / "results.json").read_text())["summary"]["mc2"] == pytest.approx(base["mc2"])
