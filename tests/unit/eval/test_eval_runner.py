"""The eval runner with a tiny checkpoint on SciFig: batched generation appended as it goes, resume after an
interruption (and after a torn last line), refusal to mix runs, registry contract and CLI help per benchmark."""

from __future__ import annotations

import json

import pytest
from evalkit import is_png, make_scifig, session_checkpoint

from scitune.cli.args import normalize
from scitune.cli.eval import main
from scitune.eval import BENCHMARKS
from scitune.eval.benchmark import Benchmark, EvalOptions
from scitune.io import DataError


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return session_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def scifig_small(tmp_path_factory):
    return make_scifig(tmp_path_factory.mktemp("scifig"))


@pytest.mark.parametrize("name", BENCHMARKS.names())
def test_benchmark_contract(name, capsys):
    cls = BENCHMARKS.get(name)
    assert issubclass(cls, Benchmark) and cls.name == name and cls.mode in ("generate", "loglik", "complete")
    assert issubclass(cls.Options, EvalOptions) and cls.__doc__ and cls.Options.__doc__
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0 and "--data" in capsys.readouterr().out


def test_report_help_and_dash_flags(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "runs" in capsys.readouterr().out
    kinds = {"--compare_base": "bool", "--judge_url": "value", "--split": "value", "--progress": "bool",
             "--tasks": "list"}  # fmt: skip
    assert normalize(["--compare-base", "--judge-url=http://x", "--split", "val"], kinds) == [
        "--compare_base=true", "--judge_url=http://x", "--split", "val"]  # fmt: skip
    assert normalize(["--progress", "false"], kinds) == ["--progress=false"]
    assert normalize(["--no-progress", "--tasks", "a,b"], kinds) == ["--progress=false", "--tasks=[a, b]"]


def _figtype(scifig, ck, out, *extra):
    return ["figure-type", "--data", str(scifig / "scicap" / "test.jsonl"), "--checkpoint", ck, "--out", str(out),
            "--max-new-tokens", "4", "--batch-size", "2", "--progress", "false", "--device", "cpu", *extra]  # fmt: skip


def test_generation_appends_and_resumes_after_interruption(scifig_small, tiny_checkpoint, tmp_path, monkeypatch):
    from scitune.infer.generate import Generator

    real = Generator.generate
    calls: list[int] = []

    def flaky(self, prompts, cfg=None, use_cache=True):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return real(self, prompts, cfg, use_cache)

    monkeypatch.setattr(Generator, "generate", flaky)
    out = tmp_path / "ft"
    with pytest.raises(KeyboardInterrupt):
        main(_figtype(scifig_small, tiny_checkpoint["checkpoint"], out))
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and not (out / "results.json").exists()
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"id": "scifig-test-0000')  # a torn write at the moment of the kill
    calls.clear()
    monkeypatch.setattr(
        Generator,
        "generate",
        lambda self, p, cfg=None, use_cache=True: (calls.append(len(p)), real(self, p, cfg, use_cache))[1],
    )
    assert main(_figtype(scifig_small, tiny_checkpoint["checkpoint"], out)) == 0
    assert sum(calls) == 4  # only the 4 figures not done before
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in recs}) == 6 == len(recs)
    res = json.loads((out / "results.json").read_text())
    assert res["input"]["predictions"] == 6 and res["model"]["count"] == 6
    assert sum(sum(row.values()) for row in res["model"]["confusion"].values()) == 6
    assert all(is_png(out / p) for p in res["plots"]) and "confusion.png" in res["plots"]
    assert "Figure Type" in (out / "report.md").read_text()
    # the same folder with other options would mix two runs' predictions: refused
    with pytest.raises(DataError, match="another run"):
        main(_figtype(scifig_small, tiny_checkpoint["checkpoint"], out, "--max-new-tokens", "5"))


def test_figure_type_clip_baseline_without_zeroshot_module_is_a_note(scifig_small, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scitune.eval.zeroshot", None)  # not written yet: import fails
    pred = tmp_path / "p.jsonl"
    recs = [json.loads(x) for x in (scifig_small / "scicap" / "test.jsonl").read_text().splitlines()]
    pred.write_text("".join(json.dumps({"id": r["id"], "text": f"{r['figure_type']} A figure."}) + "\n" for r in recs))
    out = tmp_path / "o"
    assert main(["figure-type", "--data", str(scifig_small / "scicap" / "test.jsonl"), "--predictions", str(pred),
                 "--out", str(out), "--clip", str(tmp_path), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["acc"] == 100.0 and "note" in res["clip"]
    assert "baseline unavailable" in (out / "report.md").read_text()


def test_figure_type_clip_baseline_side_by_side(scifig_small, tmp_path, monkeypatch):
    import sys
    import types

    fake = types.ModuleType("scitune.eval.zeroshot")
    fake.zero_shot_figure_types = lambda clip, images, names, prompt: [names[0]] * len(images)  # always "Graph Plot"
    monkeypatch.setitem(sys.modules, "scitune.eval.zeroshot", fake)
    recs = [json.loads(x) for x in (scifig_small / "scicap" / "test.jsonl").read_text().splitlines()]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": r["id"], "text": "Bar Chart"}) + "\n" for r in recs))
    out = tmp_path / "o"
    assert main(["figure-type", "--data", str(scifig_small / "scicap" / "test.jsonl"), "--predictions", str(pred),
                 "--out", str(out), "--clip", "any", "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    n_graph = sum(r["figure_type"] == "Graph Plot" for r in recs)
    n_bar = sum(r["figure_type"] == "Bar Chart" for r in recs)
    assert res["summary"]["clip_acc"] == pytest.approx(100 * n_graph / len(recs))
    assert res["summary"]["acc"] == pytest.approx(100 * n_bar / len(recs))
    assert "CLIP zero-shot" in (out / "report.md").read_text() and is_png(out / "clip_confusion.png")


def test_scienceqa_generation_on_scifig(scifig_small, tiny_checkpoint, tmp_path):
    out = tmp_path / "sqa"
    assert main(["scienceqa", "--data", str(scifig_small / "scienceqa"), "--checkpoint", tiny_checkpoint["checkpoint"],
                 "--out", str(out), "--max-new-tokens", "3", "--progress", "false", "--limit", "3"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all("text" in r and "prompt" in r for r in recs)
    assert res["accuracy"]["count"] == 3 and res["input"]["missing"] == 0


def test_figure_type_with_a_real_tiny_clip(scifig_small, tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from scitune.eval.zeroshot import zero_shot_figure_types
    from scitune.model.builders import tiny_tokenizer

    tok = tiny_tokenizer()
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    cfg = CLIPConfig(text_config={**small, "vocab_size": len(tok), "max_position_embeddings": 64},
                     vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)  # fmt: skip
    clip = tmp_path / "clip"
    CLIPModel(cfg).save_pretrained(clip)
    tok.save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    recs = [json.loads(x) for x in (scifig_small / "scicap" / "test.jsonl").read_text().splitlines()]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": r["id"], "text": r["figure_type"]}) + "\n" for r in recs))
    out = tmp_path / "o"
    assert main(["figure-type", "--data", str(scifig_small / "scicap" / "test.jsonl"), "--predictions", str(pred),
                 "--out", str(out), "--clip", str(clip), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    direct = zero_shot_figure_types(str(clip), [scifig_small / r["image"] for r in recs])
    right = sum(d == r["figure_type"] for d, r in zip(direct, recs))
    assert res["clip"]["count"] == len(recs) and res["clip"]["correct"] == right
