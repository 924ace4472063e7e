"""lm-evaluation-harness against ``scitune serve``: requests shaped exactly as its ``local-chat-completions`` and
``local-completions`` models send them (always), and, when ``lm_eval`` is installed, ``lm_eval.simple_evaluate`` itself
on two local tasks (a generation task and a multiple-choice one, scored by loglikelihood), with ``seed`` set."""

from __future__ import annotations

import json
from operator import itemgetter

import pytest
import torch
from serve_testkit import MODEL, raw_request, running_server, tiny_checkpoint, tiny_model

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")

AUTH = {"Content-Type": "application/json", "Authorization": "Bearer "}  # lm_eval's header without OPENAI_API_KEY
QUESTION = "Question: What is shown in a bar chart?\nAnswer:"


@pytest.fixture(scope="module")
def server():
    with running_server(max_wait_ms=20) as (base, app):
        yield base, app


def post(base: str, path: str, payload: dict) -> dict:
    status, _, body = raw_request(base, "POST", path, json.dumps(payload).encode(), AUTH)
    assert status == 200, body
    return body


# The payloads below are lm_eval's `_create_payload` results (lm_eval/models/openai_completions.py, versions 0.4.9 and
# 0.4.13: LocalChatCompletion and LocalCompletionsAPI), written out as data. `seed` is always there (1234 unless the
# model_args set it); `stop` is the task's `until` plus the tokenizer's EOS string when lm_eval has a tokenizer.


def chat_payload(messages: list[dict], seed: int = 1234, temperature: float = 0) -> dict:
    return {
        "messages": messages,
        "model": MODEL,
        "max_tokens": 6,
        "temperature": temperature,
        "stop": ["\n\n"],
        "seed": seed,
    }


def parse_chat(out: dict) -> list[str]:
    """As LocalChatCompletion.parse_generations: the message contents in choice-index order."""
    res = [None] * len(out["choices"])
    for c in out["choices"]:
        res[c["index"]] = c["message"]["content"]
    return res


def parse_logprobs(out: dict, ctxlens: list[int]) -> list[tuple[float, bool]]:
    """As LocalCompletionsAPI.parse_logprobs: the continuation's summed log-probability (the prompt tokens after the
    context, not the one generated token) and whether each continuation token was the most likely one."""
    res = []
    for choice, ctxlen in zip(sorted(out["choices"], key=itemgetter("index")), ctxlens):
        lps = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        res.append((sum(lps), all(lp == max(top.values()) for lp, top in zip(lps, tops))))
    return res


def reference_loglikelihood(context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """The continuation's log-probability and greediness from one plain forward of the tiny model."""
    ids = context + continuation
    with torch.no_grad():
        lp = tiny_model()[0].llm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    rows = lp[len(context) - 1 : len(ids) - 1]
    target = torch.tensor(continuation)
    return rows.gather(1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all())


def test_chat_requests_as_lm_eval_sends_them(server):
    base, _ = server
    v049 = [{"role": "user", "content": QUESTION, "type": "text"}]  # 0.4.9 tags every message with "type"
    v0413 = [{"role": "user", "content": QUESTION}]
    greedy = parse_chat(post(base, "/v1/chat/completions", chat_payload(v049)))
    assert greedy == parse_chat(post(base, "/v1/chat/completions", chat_payload(v0413)))
    assert isinstance(greedy[0], str) and greedy[0]
    # a sampling task (temperature > 0): the same seed gives the same answer, another seed another one
    sampled = [parse_chat(post(base, "/v1/chat/completions", chat_payload(v0413, s, 1.0)))[0] for s in (7, 7, 8)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_completions_requests_as_lm_eval_sends_them(server):
    base, _ = server
    tok = tiny_model()[1].tokenizer
    # generate_until with tokenized requests: a batch of token lists
    prompts = [tok(QUESTION).input_ids, tok("Question: What type of figure is this?\nAnswer:").input_ids]
    payload = {
        "prompt": prompts,
        "model": MODEL,
        "max_tokens": 6,
        "temperature": 0,
        "stop": ["\n\n", tok.eos_token],
        "seed": 1234,
    }
    out = post(base, "/v1/completions", payload)
    texts = [None] * len(out["choices"])
    for c in out["choices"]:
        texts[c["index"]] = c["text"]
    assert all(isinstance(t, str) for t in texts) and len(texts) == 2
    # loglikelihood: context + continuation tokens, echo, one generated token, logprobs=1
    pairs = [(prompts[0], tok(" bars").input_ids), (prompts[0], tok(" lines").input_ids), (prompts[1], [5])]
    payload = {
        "model": MODEL,
        "prompt": [c + k for c, k in pairs],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    got = parse_logprobs(post(base, "/v1/completions", payload), [len(c) for c, _ in pairs])
    for (ll, greedy), (context, continuation) in zip(got, pairs):
        want_ll, want_greedy = reference_loglikelihood(context, continuation)
        assert ll == pytest.approx(want_ll, abs=1e-3) and greedy == want_greedy


@pytest.fixture(scope="module")
def lm_eval(tmp_path_factory):
    try:
        import lm_eval
        from lm_eval.models import openai_completions  # noqa: F401
    except ImportError:
        pytest.skip("lm_eval is not installed (pip install 'lm_eval[api]')")
    except Exception as e:  # e.g. lm_eval 0.4.9 needs transformers' AutoModelForVision2Seq (gone in 5.x)
        pytest.skip(f"lm_eval does not import with this transformers: {type(e).__name__}: {e}")
    return lm_eval


TASKS = {
    "scitune_tiny_gen": r"""
output_type: generate_until
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\n\n"], max_gen_toks: 6, do_sample: true, temperature: 1.0}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
""",
    "scitune_tiny_mc": r"""
output_type: multiple_choice
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]
""",
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """Two tasks on a local JSON file (no download): lm_eval's `json` dataset path with `data_files`."""
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    docs = [
        {"question": "What is shown in a bar chart?", "answer": "bars", "choices": ["bars", "lines"], "label": 0},
        {"question": "What type of figure is this?", "answer": "plot", "choices": ["plot", "table"], "label": 1},
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    for name, body in TASKS.items():
        head = (
            f"task: {name}\ndataset_path: json\n"
            f"dataset_kwargs: {{data_files: {{test: {root / 'data.jsonl'}}}, cache_dir: {root / 'hf-datasets'}}}\n"
            'test_split: test\ndoc_to_text: "Question: {{question}}\\nAnswer:"\nmetadata: {version: 1}\n'
        )
        (root / f"{name}.yaml").write_text(head + body)
    return root, docs


def test_lm_eval_runs_tasks_against_the_server_with_a_seed(server, lm_eval, task_dir):
    from lm_eval.tasks import TaskManager

    base, app = server
    root, docs = task_dir
    tasks = TaskManager(include_path=str(root), include_defaults=False)  # indexing lm_eval's own tasks takes 20 s

    def chat(seed: int) -> dict:
        args = f"base_url={base}/v1/chat/completions,model={MODEL},seed={seed},tokenizer_backend=none"
        return lm_eval.simple_evaluate(
            model="local-chat-completions",
            model_args=args,
            tasks=["scitune_tiny_gen"],
            task_manager=tasks,
            apply_chat_template=True,
            log_samples=True,
        )

    before = app.state.batcher.stats.requests
    runs = [chat(7), chat(7), chat(8)]
    assert app.state.batcher.stats.requests - before == 3 * len(docs)  # one request per document and run
    answers = [[s["resps"][0][0] for s in r["samples"]["scitune_tiny_gen"]] for r in runs]
    assert all(isinstance(a, str) for a in answers[0])
    assert answers[0] == answers[1] != answers[2]  # sampled (temperature 1): the seed decides
    assert "exact_match,none" in runs[0]["results"]["scitune_tiny_gen"]

    # loglikelihood through local-completions: token requests, echo + logprobs, scored as lm_eval scores them
    args = (
        f"base_url={base}/v1/completions,model={MODEL},seed=1234,tokenizer_backend=huggingface,"
        f"tokenizer={tiny_checkpoint() / 'tokenizer'},max_length=1024"
    )
    r = lm_eval.simple_evaluate(
        model="local-completions", model_args=args, tasks=["scitune_tiny_mc"], task_manager=tasks, log_samples=True
    )
    tok = tiny_model()[1].tokenizer
    for sample, doc in zip(sorted(r["samples"]["scitune_tiny_mc"], key=itemgetter("doc_id")), docs):
        context = f"Question: {doc['question']}\nAnswer:"
        for (ll, greedy), choice in zip([resp[0] for resp in sample["resps"]], doc["choices"]):
            ctx = tok(context, add_special_tokens=False).input_ids
            whole = tok(context + " " + choice, add_special_tokens=False).input_ids
            want_ll, want_greedy = reference_loglikelihood(ctx, whole[len(ctx) :])
            assert ll == pytest.approx(want_ll, abs=1e-3) and greedy == want_greedy
    assert 0.0 <= r["results"]["scitune_tiny_mc"]["acc,none"] <= 1.0
