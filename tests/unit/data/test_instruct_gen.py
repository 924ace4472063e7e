"""`scitune data generate-instructions` against a stub OpenAI-compatible server on 127.0.0.1: the three response types
parsed into turns, contexts of natural images and figures, retries, per-item failures, and the cache (a rerun asks only
for what is not finished, counted in server hits)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scitune.cli import main
from scitune.io import DataError
from scitune.llm_client import ReplyError
from scitune.sources.instruct_gen import _DETAIL_INSTRUCTIONS, build_record, load_fewshot, parse_qa, parse_reply
from scitune.sources.instruct_gen.context import coco_records, context_of, load_contexts

CONV = (
    "Sure, here it is.\nQuestion:\nWhat is in the image?\n===\nAnswer:\nA dog.\n===\n**Question:** Where?\n===\n"
    "Answer:\nOn grass.\n==="
)
DETAIL = "A brown dog runs across a lawn.\n\nThe grass is short."
COMPLEX = "Question:\nWhy is the dog running?\n===\nAnswer:\nIt chases the ball."


class _LLM(BaseHTTPRequestHandler):
    """Replies by response type (read from the system prompt); items whose context holds a behaviour word misbehave."""

    hits: list[tuple[str, str]] = []
    requests: list[dict] = []
    healed = False
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def do_POST(self):
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        system, item = body["messages"][0]["content"], body["messages"][-1]["content"]
        rtype = (
            "conversation" if "conversation" in system else "detail" if "detailed description" in system else "complex"
        )
        word = next((w for w in ("flaky", "junk", "refuse", "slow", "unformatted") if w in item), "ok")
        with cls.lock:
            cls.hits.append((word, rtype))
            cls.requests.append({"auth": self.headers.get("Authorization"), "path": self.path, **body})
            n = sum(h == (word, rtype) for h in cls.hits)
        if word == "slow" and not cls.healed:
            time.sleep(1.0)
        if word == "flaky" and n <= 2:
            return self._send(503, b"")
        if word == "junk" and not cls.healed:
            return self._send(200, b"{not json")
        text = {"conversation": CONV, "detail": DETAIL, "complex": COMPLEX}[rtype]
        if word == "refuse" and not cls.healed:
            text = "I'm sorry, but I cannot help with that."
        if word == "unformatted" and n == 1:
            text = "What is in the image? A dog."
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode())


@pytest.fixture
def llm():
    _LLM.hits, _LLM.requests, _LLM.healed = [], [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LLM)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _natural(ident: str, word: str = "") -> dict:
    return {"id": ident, "image": f"{ident}.jpg", "width": 200, "height": 100,
            "captions": [f"A dog runs on grass {word}".strip(), "A brown dog outdoors."],
            "objects": [{"category": "dog", "bbox": [20, 10, 100, 50]}]}  # fmt: skip


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _argv(url, data, out, *extra):
    return ["data", "generate-instructions", "--data", str(data), "--out", str(out), "--llm-url", url, "--llm-model",
            "stub-gpt", "--workers", "3", "--backoff", "0.01", "--progress", "false", *extra]  # fmt: skip


def test_three_response_types_from_natural_and_figure_contexts(llm, tmp_path, monkeypatch, capsys):
    from scitune.sources.scifig import make_figure

    monkeypatch.setenv("SCITUNE_LLM_API_KEY", "sk-llm")
    monkeypatch.setenv("SCITUNE_JUDGE_API_KEY", "sk-judge")
    figure = make_figure(0, 0, "train", image_size=48).to_record()
    data = _write(tmp_path / "ctx.jsonl", [_natural("n1"), figure])
    out = tmp_path / "instruct.jsonl"
    assert main(_argv(llm, data, out)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 6 and summary["failed"] == 0 and summary["generated"] == 6
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [f"{i}-{t}" for i in ("n1", figure["id"]) for t in ("conversation", "detail",
                                                                                         "complex")]  # fmt: skip
    conv, detail, complex_ = recs[:3]
    assert conv["image"] == "n1.jpg" and conv["conversations"] == [
        {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "A dog."},
        {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On grass."}]  # fmt: skip
    assert detail["conversations"][0]["value"].startswith("<image>\n") and detail["conversations"][1]["value"] == DETAIL
    assert [t["value"] for t in complex_["conversations"]] == [
        "<image>\nWhy is the dog running?",
        "It chases the ball.",
    ]
    assert conv["meta"] == {"source": "generate-instructions", "source_id": "n1", "response_type": "conversation",
                            "context_kind": "natural", "llm_model": "stub-gpt"}  # fmt: skip
    assert recs[3]["meta"]["context_kind"] == "figure" and recs[3]["image"] == figure["image"]
    # the requests: LLaVA's layout (system, few-shot user/assistant pairs, the item), key from the LLM variable
    req = next(r for r in _LLM.requests if "n1" not in r["messages"][-1]["content"] and "Caption:" in
               r["messages"][-1]["content"])  # fmt: skip
    roles = [m["role"] for m in req["messages"]]
    assert roles[0] == "system" and roles[-1] == "user" and roles[1:-1] == ["user", "assistant"] * (len(roles) // 2 - 1)
    item = req["messages"][-1]["content"]
    assert f"Figure type: {figure['figure_type']}" in item and f"Caption: {figure['caption']}" in item
    assert figure["mentions"][0] in item and "Text in the figure (OCR):" in item
    nat = next(r["messages"][-1]["content"] for r in _LLM.requests if "A brown dog" in r["messages"][-1]["content"])
    assert nat == "A dog runs on grass\nA brown dog outdoors.\n\ndog: [0.100, 0.100, 0.600, 0.600]"
    assert {(r["auth"], r["path"], r["model"]) for r in _LLM.requests} == {
        ("Bearer sk-llm", "/v1/chat/completions", "stub-gpt")}  # fmt: skip
    assert json.loads(out.with_suffix(".summary.json").read_text())["by_type"] == {"conversation": 2, "detail": 2,
                                                                                    "complex": 2}  # fmt: skip


def test_retries_failures_reported_and_resume(llm, tmp_path, capsys):
    items = [_natural("a"), _natural("b", "flaky"), _natural("c", "junk"), _natural("d", "refuse"),
             _natural("e", "slow"), _natural("f", "unformatted")]  # fmt: skip
    data = _write(tmp_path / "ctx.jsonl", items)
    out = tmp_path / "o" / "instruct.jsonl"
    argv = _argv(llm, data, out, "--types", "conversation,complex", "--retries", "2", "--timeout", "0.3")
    start = time.monotonic()
    assert main(argv) == 1  # some items failed: reported, not raised
    assert time.monotonic() - start < 20
    summary = json.loads(capsys.readouterr().out)
    failed = {(f["id"], f["type"]): f["error"] for f in summary["failures"]}
    assert set(failed) == {(i, t) for i in "cde" for t in ("conversation", "complex")}
    assert "malformed reply" in failed[("c", "complex")] and "3 attempt(s)" in failed[("c", "complex")]
    assert "refusal" in failed[("d", "conversation")]
    assert "timed out" in failed[("e", "conversation")].lower()
    count = {w: sum(h[0] == w for h in _LLM.hits) for w in ("ok", "flaky", "junk", "refuse", "slow", "unformatted")}
    # flaky: 503, 503, ok per type; unformatted: a conversation reply without Q/A blocks, then a good one (the
    # complex reply also lacks its blocks on the first try); junk, refuse, slow: 1 + 2 retries per type
    assert count == {"ok": 2, "flaky": 6, "junk": 6, "refuse": 6, "slow": 6, "unformatted": 4}
    assert summary["written"] == 6 and [json.loads(x)["id"] for x in out.read_text().splitlines()] == [
        f"{i}-{t}" for i in "abf" for t in ("conversation", "complex")]  # fmt: skip
    # resume: only the failed items are asked again, and the output then holds every item in order
    _LLM.hits, _LLM.healed = [], True
    assert main(argv) == 0
    assert sorted(_LLM.hits) == sorted((w, t) for w in ("junk", "refuse", "slow") for t in ("conversation", "complex"))
    summary = json.loads(capsys.readouterr().out)
    assert summary["from_cache"] == 6 and summary["generated"] == 6 and summary["failed"] == 0
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == [f"{i}-{t}" for i in "abcdef" for t in ("conversation", "complex")]
    # a third run asks nothing; a new few-shot file for one type redoes only that type
    _LLM.hits = []
    assert main(argv) == 0 and _LLM.hits == []
    custom = tmp_path / "shots" / "natural"
    custom.mkdir(parents=True)
    shot = json.loads(json.dumps({"system": "Write one question about the image.", "examples": []}))
    (custom / "complex.json").write_text(json.dumps(shot))
    assert main([*argv, "--examples", str(tmp_path / "shots")]) == 0
    # (flaky and unformatted misbehave again: their hit counts start over with the cleared log)
    per_item = {w: n for (w, t), n in Counter(_LLM.hits).items() if t == "complex"}
    assert len(_LLM.hits) == 9 and per_item == {
        "ok": 1,
        "flaky": 3,
        "junk": 1,
        "refuse": 1,
        "slow": 1,
        "unformatted": 2,
    }


def test_a_torn_cache_line_is_skipped(llm, tmp_path, capsys):
    data = _write(tmp_path / "ctx.jsonl", [_natural("a"), _natural("b")])
    out = tmp_path / "instruct.jsonl"
    argv = _argv(llm, data, out, "--types", "detail")
    assert main(argv) == 0
    cache = out.with_suffix(".cache.jsonl")
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing the second item
    _LLM.hits = []
    assert main(argv) == 0 and len(_LLM.hits) == 1
    assert len(out.read_text().splitlines()) == 2


def test_print_prompt_and_bad_records(tmp_path, capsys):
    data = _write(tmp_path / "ctx.jsonl", [_natural("a")])
    out = tmp_path / "never.jsonl"
    assert main(_argv("http://127.0.0.1:9/v1", data, out, "--print_prompt", "--types", "detail")) == 0
    msgs = json.loads(capsys.readouterr().out)["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"] and "detailed description" in msgs[0][
        "content"] and msgs[-1]["content"].endswith("dog: [0.100, 0.100, 0.600, 0.600]")  # fmt: skip
    assert not out.exists()
    bad = _write(tmp_path / "bad.jsonl", [_natural("a"), {"captions": ["no id"]}])
    assert main(_argv("http://127.0.0.1:9/v1", bad, out)) == 2
    assert "bad.jsonl:2: needs an 'id'" in capsys.readouterr().err and not out.exists()
    assert main(_argv("127.0.0.1:9", data, out)) == 2
    assert "http(s) address" in capsys.readouterr().err


def test_parse_replies():
    assert parse_qa(CONV) == [("What is in the image?", "A dog."), ("Where?", "On grass.")]
    assert parse_qa("Q is\nquestion: a?\nANSWER: b") == [("a?", "b")]
    assert parse_reply("detail", "  A plot.  ") == [("", "A plot.")]
    for rtype, text, match in [
        ("conversation", "Question: a?\nQuestion: b?\nAnswer: c", "alternate"),
        ("conversation", "Question: a?\nAnswer: b\nQuestion: c?", "alternate"),
        ("conversation", "Question: a?\nAnswer:\n===", "empty"),
        ("conversation", "no blocks here", "no 'Question:'"),
        ("complex", CONV, "one question"),
        ("detail", COMPLEX, "Question/Answer"),
        ("detail", "I'm sorry, I can't describe this.", "refusal"),
        ("complex", "   ", "empty"),
    ]:
        with pytest.raises(ReplyError, match=match):
            parse_reply(rtype, text)


def test_contexts_and_bad_records(tmp_path, shared_data):
    ctx = context_of({"id": 7, "captions": "one caption", "objects": [{"label": "cat", "bbox": [0.1, 0.2, 0.3, 0.4]}]})
    assert (ctx.id, ctx.kind, ctx.image) == ("7", "natural", None)
    assert ctx.text == "one caption\n\ncat: [0.100, 0.200, 0.300, 0.400]"
    rec = build_record(ctx, "detail", [("", "d")], "m", seed=3)
    assert rec["image"] is None and rec["conversations"][0]["value"] in _DETAIL_INSTRUCTIONS["natural"]  # no <image>
    assert rec == build_record(ctx, "detail", [("", "d")], "m", seed=3)  # the instruction is drawn from (seed, id)
    for rec, match in [
        ({"captions": ["x"]}, "needs an 'id'"),
        ({"id": "x", "objects": [{"label": "cat", "bbox": [10, 10, 50, 50]}]}, "not normalized"),
        ({"id": "x", "objects": [{"bbox": [0, 0, 1, 1]}]}, "object #0 needs a 'label'"),
        ({"id": "x", "caption": "only a caption"}, "set --kind"),
        ({"id": "x", "captions": 5}, "'captions' must be"),
        ({"id": "x", "figure_type": "Bar Chart"}, "figure context needs"),
    ]:
        with pytest.raises(DataError, match=match):
            context_of(rec, where="f.jsonl:3")
    dup = _write(tmp_path / "dup.jsonl", [_natural("a"), _natural("a")])
    with pytest.raises(DataError, match=r"dup.jsonl:2: duplicate id 'a' \(first at .*dup.jsonl:1\)"):
        load_contexts(dup)
    # real SciCap records read as figure contexts (caption + mentions, OCR absent)
    real = load_contexts(shared_data / "scicap_text" / "samples.jsonl", kind="figure", limit=3)
    assert len(real) == 3 and all(c.text.startswith("Caption: ") and "Mentions in the paper:" in c.text for c in real)
    # COCO's own files: captions per image, pixel boxes normalized by the image size
    caps = {"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 50}], "annotations": [
        {"image_id": 1, "caption": "Two cats."}, {"image_id": 1, "caption": "Cats on a bed."}]}  # fmt: skip
    inst = {"categories": [{"id": 17, "name": "cat"}], "annotations": [{"image_id": 1, "category_id": 17,
                                                                         "bbox": [10, 5, 40, 20]}]}  # fmt: skip
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    (tmp_path / "inst.json").write_text(json.dumps(inst))
    assert coco_records(tmp_path / "caps.json")[0]["objects"] == []
    (coco,) = load_contexts(tmp_path / "caps.json", coco_instances=str(tmp_path / "inst.json"))
    assert coco.image == "1.jpg" and coco.text == "Two cats.\nCats on a bed.\n\ncat: [0.100, 0.100, 0.500, 0.500]"


def test_shipped_examples_load_for_every_type_and_kind():
    for kind in ("natural", "figure"):
        for rtype in ("conversation", "detail", "complex"):
            shot = load_fewshot(rtype, kind)
            assert shot.system and shot.examples and shot.source.endswith(f"{kind}/{rtype}.json")
            (context, response), *_ = shot.examples
            assert parse_reply(rtype, response)  # the examples follow the format the replies are parsed with
            assert ("Caption:" in context) == (kind == "figure")
