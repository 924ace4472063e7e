"""results.json also in lm-evaluation-harness's layout ("metric,filter" keys, stderr, versions, n-shot, n-samples,
config, configs, higher_is_better, date, ...), read back the way the harness's readers do, and --log_samples'
samples_<task>.jsonl with the harness's per-sample keys."""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import time

import pytest

from scitune.cli.eval import main
from scitune.eval.harness_format import metric_stderr

HARNESS_KEYS = {
    "results": dict, "versions": dict, "n-shot": dict, "n-samples": dict, "config": dict, "higher_is_better": dict,
    "configs": dict, "date": float, "git_hash": (str, type(None)), "transformers_version": str,
    "pretty_env_info": str, "task_hashes": dict,
}  # fmt: skip
SAMPLE_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
               "prompt_hash", "target_hash"}  # fmt: skip
METRIC_KEY = re.compile(r"^[^,]+,none$")  # "<metric>,<filter>" and "<metric>_stderr,<filter>"


def _truthfulqa(tmp_path, n: int = 5):
    """``n`` TruthfulQA MC questions and log-likelihood predictions for all but the last (scored 0 on both)."""
    questions = [
        {
            "question": f"Question {i}?",
            "mc1_targets": {f"right {i}": 1, f"wrong {i}": 0, "other": 0},
            "mc2_targets": {f"right {i}": 1, f"also right {i}": 1, f"wrong {i}": 0},
        }
        for i in range(n)
    ]
    data = tmp_path / "mc_task.json"
    data.write_text(json.dumps(questions))
    # question i: MC1 right when i is even; MC2 gives the true answers probability (i + 1) / (n + 1)
    preds = []
    for i in range(n - 1):
        mc1 = [0.0, -1.0, -2.0] if i % 2 == 0 else [-1.0, 0.0, -2.0]
        p = (i + 1) / (n + 1)
        mc2 = [math.log(p / 2), math.log(p / 2), math.log(1 - p)]
        preds.append({"id": str(i), "logprobs": mc1 + mc2})
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in preds))
    return data, pred


def _run(tmp_path, *extra):
    data, pred = _truthfulqa(tmp_path)
    out = tmp_path / "out"
    argv = ["truthfulqa-mc", "--data", str(data), "--predictions", str(pred), "--out", str(out), "--primer", "none",
            "--progress", "false", *extra]  # fmt: skip
    before = time.time()
    assert main(argv) == 0
    return out, before


def test_results_json_has_the_harness_layout_beside_scitunes_keys(tmp_path):
    import transformers

    out, before = _run(tmp_path, "--limit", "4")
    res = json.loads((out / "results.json").read_text())
    for key, kind in HARNESS_KEYS.items():
        assert isinstance(res[key], kind), key
    assert {"benchmark", "out", "options", "summary", "input", "source", "plots"} <= set(res)  # scitune's own
    assert before <= res["date"] <= time.time() and float(res["total_evaluation_time_seconds"]) >= 0
    assert res["transformers_version"] == transformers.__version__
    task = "truthfulqa-mc"
    entry = res["results"][task]
    assert entry["alias"] == task
    assert all(METRIC_KEY.match(k) for k in entry if k != "alias")
    assert set(entry) == {"alias", "mc1,none", "mc1_stderr,none", "mc2,none", "mc2_stderr,none"}
    assert entry["mc1,none"] == res["summary"]["mc1"] and entry["mc2,none"] == res["summary"]["mc2"]
    # per-question values exist (0/1 for MC1, in percent as the summary): stderr = stdev(ddof=1) / sqrt(n)
    mc1 = [100.0 * x for x in res["per_question"]["mc1"]]
    assert mc1 == [100.0, 0.0, 100.0, 0.0]
    assert entry["mc1_stderr,none"] == pytest.approx(statistics.stdev(mc1) / math.sqrt(4))
    p = 0.5  # 0/1 values: the same as the proportion formula sqrt(p (1 - p) / (n - 1))
    assert entry["mc1_stderr,none"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 3))
    mc2 = [100.0 * x for x in res["per_question"]["mc2"]]
    assert entry["mc2_stderr,none"] == pytest.approx(statistics.stdev(mc2) / 2)
    assert res["versions"][task] and isinstance(res["n-shot"][task], int) and res["n-shot"][task] == 0
    assert res["n-samples"][task] == {"original": 5, "effective": 4}
    assert res["higher_is_better"][task] == {"mc1": True, "mc2": True}
    cfg = res["configs"][task]
    assert cfg["task"] == task and cfg["output_type"] == "multiple_choice" and cfg["num_fewshot"] == 0
    assert [m["metric"] for m in cfg["metric_list"]] == ["mc1", "mc2"]
    assert res["config"]["model"] == "predictions" and res["config"]["limit"] == 4
    assert res["config"]["model_args"].startswith("predictions=") and res["config"]["batch_size"] == 8
    assert res["task_hashes"] == {}  # filled in only with --log_samples
    assert not list(out.glob("samples_*.jsonl"))


def test_a_harness_style_reader_gets_every_metric(tmp_path):
    out, _ = _run(tmp_path)
    with open(out / "results.json", encoding="utf-8") as f:
        data = json.load(f)
    # as lm-eval's result readers (make_table, the zeno/wandb loggers) walk it
    rows = []
    for task, metrics in data["results"].items():
        version = data["versions"][task]
        n_shot = data["n-shot"][task]
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if key == "alias" or metric.endswith("_stderr"):
                continue
            stderr = metrics[f"{metric}_stderr,{filt}"]
            higher = data["higher_is_better"][task][metric]
            rows.append((task, version, filt, n_shot, metric, value, stderr, higher))
    assert [r[4] for r in rows] == ["mc1", "mc2"] and all(r[2] == "none" and r[7] is True for r in rows)
    assert data["results"]["truthfulqa-mc"]["mc1,none"] == pytest.approx(40.0)  # 2 of 5 (the last is missing)


def test_log_samples_writes_one_harness_record_per_example(tmp_path):
    out, _ = _run(tmp_path, "--log-samples")
    res = json.loads((out / "results.json").read_text())
    path = out / "samples_truthfulqa-mc.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 5 == res["input"]["examples"]
    assert all(SAMPLE_KEYS <= set(s) for s in lines)
    assert [s["doc_id"] for s in lines] == list(range(5)) and all(s["filter"] == "none" for s in lines)
    first = lines[0]
    assert first["doc"]["id"] == "0" and first["doc"]["text"] == "Q: Question 0?\nA:"
    assert first["metrics"] == ["mc1", "mc2"] and first["mc1"] == 100.0
    assert first["arguments"]["gen_args_0"] == {"arg_0": "Q: Question 0?\nA:", "arg_1": " right 0"}
    assert len(first["arguments"]) == 6 and len(first["resps"]) == 6 == len(first["filtered_resps"])
    assert float(first["filtered_resps"][1]) == -1.0 and first["resps"][1] == [first["filtered_resps"][1]]
    assert lines[4]["resps"] == [] and lines[4]["mc1"] == 0.0  # no prediction: scored wrong
    # the per-sample values average to the reported metrics
    for m in ("mc1", "mc2"):
        assert statistics.fmean(s[m] for s in lines) == pytest.approx(res["results"]["truthfulqa-mc"][f"{m},none"])
    sha = lambda t: hashlib.sha256(t.encode()).hexdigest()  # noqa: E731
    assert first["doc_hash"] == sha(json.dumps(first["doc"], indent=2, ensure_ascii=False))
    assert first["prompt_hash"] == sha("Q: Question 0?\nA:") and first["target_hash"] == sha(first["target"])
    assert res["task_hashes"]["truthfulqa-mc"] == sha(
        "".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in lines)
    )
    # the file is one of the eval folder's own (EVAL_WRITES): a rerun into the folder is not refused
    out_again, _ = _run(tmp_path, "--log-samples")
    assert out_again == out and len(path.read_text().splitlines()) == 5


def test_accuracy_stderr_without_per_example_values(tmp_path):
    from evalkit import make_scifig

    root = make_scifig(tmp_path / "sf")
    figs = [json.loads(x) for x in (root / "scicap" / "test.jsonl").read_text().splitlines()]
    pred = tmp_path / "pred.jsonl"  # the first 4 of 6 right, then a wrong type
    pred.write_text("".join(json.dumps({"id": f["id"], "text": (f["figure_type"] if i < 4 else "Equation" if
                    f["figure_type"] != "Equation" else "Bar Chart") + " of x."}) + "\n" for i, f in enumerate(figs)))  # fmt: skip
    out = tmp_path / "ft"
    argv = ["figure-type", "--data", str(root / "scicap" / "test.jsonl"), "--predictions", str(pred), "--out",
            str(out), "--progress", "false", "--log-samples"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    entry = res["results"]["figure-type"]
    n = res["input"]["examples"]
    p = entry["acc,none"] / 100
    assert entry["acc,none"] == res["summary"]["acc"] and n == len(figs) == 6 and p == pytest.approx(4 / 6)
    assert entry["acc_stderr,none"] == pytest.approx(100 * math.sqrt(p * (1 - p) / (n - 1)))
    assert entry["Bar Chart_stderr,none"] == "N/A"  # a per-type accuracy over an unknown count: no stderr
    assert res["configs"]["figure-type"]["output_type"] == "generate_until"
    assert res["config"]["gen_kwargs"]["max_new_tokens"] == 256
    samples = [json.loads(x) for x in (out / "samples_figure-type.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and samples[0]["metrics"] == []  # the benchmark exposes no per-example scores
    assert samples[0]["resps"] == [[figs[0]["figure_type"] + " of x."]]
    assert samples[0]["arguments"]["gen_args_0"]["arg_1"] == {"max_new_tokens": 256, "temperature": 0.0}


def test_metric_stderr_rules():
    assert metric_stderr("x", 1.0, [1.0, 2.0, 3.0], 3) == pytest.approx(1.0 / math.sqrt(3))
    assert metric_stderr("acc", 50.0, None, 5) == pytest.approx(100 * math.sqrt(0.25 / 4))
    assert metric_stderr("acc", 50.0, None, 1) == "N/A"
    assert metric_stderr("bleu", 0.3, None, 10) == "N/A"
    assert metric_stderr("acc", None, None, 10) == "N/A"


def test_compare_base_is_a_second_task(tmp_path_factory, tmp_path):
    from evalkit import session_checkpoint

    ck = session_checkpoint(tmp_path_factory)
    data, _ = _truthfulqa(tmp_path, n=3)
    out = tmp_path / "cmp"
    argv = ["truthfulqa-mc", "--checkpoint", ck["checkpoint"], "--data", str(data), "--primer", "none",
            "--compare-base", "--out", str(out), "--progress", "false", "--log-samples"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["results"]) == ["truthfulqa-mc", "truthfulqa-mc-base"]
    assert res["results"]["truthfulqa-mc"]["mc2,none"] == res["checkpoint"]["summary"]["mc2"]
    assert res["results"]["truthfulqa-mc-base"]["mc2,none"] == res["base"]["summary"]["mc2"]
    assert res["config"]["model"] == "scitune" and res["config"]["model_args"] == f"pretrained={ck['checkpoint']}"
    for task, folder in (("truthfulqa-mc", out), ("truthfulqa-mc-base", out / "base")):
        lines = [json.loads(x) for x in (out / f"samples_{task}.jsonl").read_text().splitlines()]
        preds = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
        assert [[float(r) for r in s["filtered_resps"]] for s in lines] == [p["logprobs"] for p in preds]
