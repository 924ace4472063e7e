"""`scitune demo --size test`: every step runs, a killed training step resumes, a rerun skips; the evaluation is the
registered benchmarks' (their folders, files and numbers, reproduced by the `scitune eval` commands it lists), an
interrupted evaluation resumes from their predictions; bad --out fails."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = ("1-data", "2-tokenizer", "3-clip", "4-lm", "5-convert", "6-align", "7-finetune", "8-evaluate")
EVALS = ("figure-type", "caption", "scifig-mcq", "scifig-mcq-blind")
"""The benchmark folders under eval/ (the ablation adds vqa and the same with -C)."""


def demo(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "scitune", "demo", "--out", str(out), "--size", "test", "--demo.progress", "false"]
    return subprocess.run(
        [*args, *extra], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """A demo killed (SIGKILL) right after align's step-2 checkpoint, then run again to the end."""
    out = tmp_path_factory.mktemp("demo") / "out"
    killed = demo(out, env={"SCITUNE_FAULT_AFTER_STEP": "2"})
    resumed = demo(out)
    return out, [killed, resumed]


def test_killed_training_step_resumes_from_its_checkpoint(finished):
    out, (killed, resumed) = finished
    assert killed.returncode != 0 and "[done] 5-convert" in killed.stdout and "[done] 6-align" not in killed.stdout
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step-000002" in resumed.stderr
    assert resumed.stdout.count("[skip]") == 5  # data, tokenizer, clip, lm, convert were done before the kill
    for name in STEPS[5:]:
        assert f"[done] {name}" in resumed.stdout


def test_outputs_load_through_the_real_loading_paths(finished):
    from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPModel

    from scitune.loader import load
    from scitune.model.vision import load_vision_encoder

    out, _ = finished
    enc, proc = load_vision_encoder("clip", str(out / "models" / "clip"))
    assert enc.num_tokens > 0 and proc is not None
    assert CLIPModel.from_pretrained(out / "models" / "clip").config.projection_dim > 0
    tok = AutoTokenizer.from_pretrained(out / "models" / "lm")
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "<unk>", "<pad>", "<image>")] == [0, 1, 2, 3, 4]
    assert AutoModelForCausalLM.from_pretrained(out / "models" / "lm").config.vocab_size == len(tok)
    model, _ = load(out / "runs" / "finetune-CTOM" / "final")
    assert model.identity["vision"]["path"].endswith("clip")


def _results(out: Path, folders=EVALS) -> dict[str, dict]:
    return {f: json.loads((out / "eval" / f / "results.json").read_text()) for f in folders}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_report_and_results(finished):
    out, _ = finished
    assert sorted(p.name for p in (out / "eval").iterdir()) == sorted(EVALS)
    results = _results(out)
    for folder, res in results.items():
        assert res["benchmark"] == folder.removesuffix("-blind") and res["input"]["missing"] == 0
        assert (out / "eval" / folder / "report.md").is_file() and res["plots"]
        for png in res["plots"]:
            assert (out / "eval" / folder / png).stat().st_size > 1000
        if folder != "caption":  # generated here; caption scores figure-type's answers (the same prompts)
            assert len(_lines(out / "eval" / folder / "predictions.jsonl")) == res["input"]["examples"]
    described = (out / "eval" / "figure-type" / "predictions.jsonl").resolve()
    assert results["caption"]["source"] == f"predictions:{described}"
    assert results["caption"]["count"] == results["figure-type"]["model"]["count"] > 0
    assert 0 <= results["figure-type"]["model"]["acc"] <= 100
    assert set(results["figure-type"]["clip"]["by_prompt"]) == {"a {}", "a {} from a scientific paper"}
    image, blind = results["scifig-mcq"], results["scifig-mcq-blind"]
    assert not image["blind"] and blind["blind"] and (out / "eval" / "scifig-mcq-blind" / "blank-64x64.png").is_file()
    prompts = {m: [json.loads(x)["prompt"] for x in _lines(out / "eval" / m / "predictions.jsonl")]
               for m in ("scifig-mcq", "scifig-mcq-blind")}  # fmt: skip
    assert prompts["scifig-mcq"] == prompts["scifig-mcq-blind"]  # the same questions; only the image differs
    for res in (image, blind):
        fr = res["figure_reading"]
        assert fr["count"] > 0 and 0 < fr["chance"] < 100 and fr["kinds"]
        for protocol in ("choice", "letter"):
            assert set(fr[protocol]["per_kind"]) == set(fr["kinds"]) and fr[protocol]["groups"]["Avg"]
            assert 0 <= fr[protocol]["figure_reading"] <= 100
    head = json.loads((out / "steps" / "8-evaluate.json").read_text())["summary"]["headline"]
    assert head["CTOM"]["figure_reading"]["blind"] == blind["figure_reading"]["choice"]["figure_reading"]
    assert head["CTOM"]["figure_type_acc"] == results["figure-type"]["model"]["acc"]
    report = (out / "report.md").read_text()
    for name in STEPS:
        assert name in report
    sections = ("## ScienceQA accuracy (official rule)", "## Figure type", "## Captions", "## MCQs",
                "Per question kind", "## Examples", "## Benchmark runs")  # fmt: skip
    assert all(section in report for section in sections)
    for folder in EVALS:
        assert f"(eval/{folder}/report.md)" in report
    for png in ("losses", "figure_type", "confusion", "mcq_kinds", "examples"):
        assert (out / "report" / f"{png}.png").stat().st_size > 1000
    # the first table is the official ScienceQA score, read from the scifig-mcq runs (the `scitune eval` scorer)
    first = report[report.index("## ScienceQA accuracy") : report.index("## Steps")]
    row = next(line for line in first.splitlines() if line.startswith("| SciTune micro, stage 1 CTOM: with figure"))
    assert row.split(" | ")[1] == f"{image['summary']['acc']:.2f}"
    assert head["CTOM"]["scienceqa"]["blind"] == blind["summary"]["acc"]
    from scitune.demo.html import remote_references

    html = (out / "report.html").read_text()
    assert remote_references(html) == [] and html.count('src="data:image/png;base64,') >= 5


def test_scitune_eval_commands_reproduce_the_numbers(finished, tmp_path):
    """Each benchmark run's recorded `scitune eval` command, rerun into another folder, gives the same results; so
    does `scitune eval scienceqa` (the official numbers) and `scitune eval caption` from the checkpoint."""
    from scitune.cli.eval import main

    out, _ = finished
    runs = json.loads((out / "steps" / "8-evaluate.json").read_text())["summary"]["runs"]
    assert sorted(runs) == sorted(EVALS)
    results = _results(out)
    for folder, run in runs.items():
        argv = shlex.split(run["command"])
        assert argv[:3] == ["scitune", "eval", run["benchmark"]]
        argv[argv.index("--out") + 1] = str(tmp_path / folder)
        assert main([*argv[2:], "--progress", "false"]) == 0
        again = json.loads((tmp_path / folder / "results.json").read_text())
        assert again["summary"] == pytest.approx(results[folder]["summary"], nan_ok=True), folder
    # the official ScienceQA benchmark reads the same answers the same way
    argv = shlex.split(runs["scifig-mcq"]["command"])[2:]
    argv[0], argv[argv.index("--out") + 1] = "scienceqa", str(tmp_path / "sqa")
    assert main([*argv, "--progress", "false"]) == 0
    sqa = json.loads((tmp_path / "sqa" / "results.json").read_text())
    assert sqa["summary"] == {k: results["scifig-mcq"]["summary"][k] for k in sqa["summary"]}
    # caption from the checkpoint, generating: the same answers as figure-type's, so the same scores
    argv = shlex.split(runs["caption"]["command"])[2:]
    ft = shlex.split(runs["figure-type"]["command"])
    at = argv.index("--predictions")
    argv[at : at + 2] = ["--checkpoint", ft[ft.index("--checkpoint") + 1], "--max_new_tokens",
                         ft[ft.index("--max_new_tokens") + 1]]  # fmt: skip
    argv[argv.index("--out") + 1] = str(tmp_path / "caption-generated")
    assert main([*argv, "--progress", "false"]) == 0
    cap = json.loads((tmp_path / "caption-generated" / "results.json").read_text())
    assert cap["summary"] == pytest.approx(results["caption"]["summary"], nan_ok=True)


def test_rerun_skips_every_step(finished):
    out, _ = finished
    again = demo(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("[skip]") == len(STEPS) and "[run ]" not in again.stdout


def test_interrupted_evaluation_resumes_from_the_benchmarks_predictions(finished, capsys, caplog):
    """Step 8 killed inside the MCQ run (its last line torn) and before the blind one: the rerun keeps every answer
    already written and generates only the rest."""
    import logging

    from scitune.demo import DemoConfig, run_demo

    out, _ = finished
    ev = out / "eval"
    before = _results(out)
    done = _lines(ev / "scifig-mcq" / "predictions.jsonl")
    keep = len(done) // 2
    (ev / "scifig-mcq" / "predictions.jsonl").write_text("\n".join(done[:keep]) + "\n" + done[keep][:20])
    blind = _lines(ev / "scifig-mcq-blind" / "predictions.jsonl")
    (ev / "scifig-mcq-blind" / "predictions.jsonl").unlink()
    (ev / "scifig-mcq-blind" / "results.json").unlink()
    (out / "steps" / "8-evaluate.json").unlink()
    caplog.set_level(logging.INFO, logger="scitune.eval.runner")
    run_demo(DemoConfig(out=str(out), size="test", progress=False))  # in-process: the same code as the command
    stdout = capsys.readouterr().out
    assert stdout.count("[skip]") == len(STEPS) - 1 and "[done] 8-evaluate" in stdout
    assert f"resuming, {keep} of {len(done)} examples already predicted" in caplog.text
    assert "dropping 1 unreadable line(s)" in caplog.text
    now = _lines(ev / "scifig-mcq" / "predictions.jsonl")
    assert now[:keep] == done[:keep] and len(now) == len(done)  # kept as written, the rest generated
    assert sorted(json.loads(x)["id"] for x in now) == sorted(json.loads(x)["id"] for x in done)
    assert len(_lines(ev / "scifig-mcq-blind" / "predictions.jsonl")) == len(blind)
    after = _results(out)
    for folder in ("figure-type", "caption"):  # finished before the kill: only scored again
        assert after[folder]["summary"] == pytest.approx(before[folder]["summary"], nan_ok=True)
    assert (out / "report.md").is_file()


def test_unwritable_out_is_a_clear_error(tmp_path):
    from scitune.demo import DemoConfig, run_demo

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="--out .*a-file.*cannot write there"):
        run_demo(DemoConfig(out=str(blocker / "demo"), size="test", progress=False))


def test_zero_shot_accepts_a_folder_or_a_loaded_model(tmp_path):
    from PIL import Image

    from scitune.eval.zeroshot import type_similarities, zero_shot_figure_types
    from scitune.pretrain.clip import ClipPretrainConfig, build_clip, image_processor
    from scitune.pretrain.tokenizer import train_bpe_tokenizer, with_eos

    tok = with_eos(train_bpe_tokenizer(["a Graph Plot", "a Bar Chart", "an Equation"] * 5, 300))
    cfg = ClipPretrainConfig(image_size=32, patch_size=16, vision_hidden=16, vision_layers=1, vision_heads=2,
                             text_hidden=16, text_layers=1, projection_dim=8)  # fmt: skip
    clip, proc = build_clip(cfg, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id), image_processor(32)
    clip.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    images = [Image.new("RGB", (40, 40), c) for c in ("white", "black", "red")]
    names = ["Graph Plot", "Bar Chart"]
    from_folder = zero_shot_figure_types(str(tmp_path), images, names)
    from_model = zero_shot_figure_types(clip.eval(), images, names, processor=(tok, proc))
    sims = type_similarities(tmp_path, images, names)
    assert from_folder == from_model == [names[int(i)] for i in sims.argmax(-1)]
    assert sims.shape == (3, 2)
    with pytest.raises(ValueError, match="needs a"):
        zero_shot_figure_types(str(tmp_path), images, names, prompt="no slot")


def test_ablation_reports_both_variants_and_fewshot_vqa_rows(tmp_path):
    """`--ablation` (after a plain demo in the same folder): stage 1 with C, CT, CTO and CTOM through stage 2, plus the `vqa` benchmark's 0/1/2-shot rows
    with and without images, each variant into its own eval folders; the report's Table 3 says what it shows."""
    out = tmp_path / "ablation"
    first = demo(out, "--demo.ocr", "truth")  # a plain demo first: --ablation then adds the other variants
    assert first.returncode == 0, first.stderr[-3000:]
    run = demo(out, "--ablation", "--demo.ocr", "truth")
    assert run.returncode == 0, run.stderr[-3000:]
    for step in ("1-data", "3-clip", "4-lm", "6-align", "7-finetune"):  # CTOM's are reused
        assert f"[skip] {step}:" in run.stdout
    assert "[done] 5-convert" in run.stdout and "[done] 8-evaluate" in run.stdout  # redone for every variant
    variants = (("", "CTOM"), ("-C", "C"), ("-CT", "CT"), ("-CTO", "CTO"))
    for sfx, _ in variants[1:]:
        assert f"[done] 6-align{sfx}" in run.stdout and f"[done] 7-finetune{sfx}" in run.stdout
    folders = [f"{f}{sfx}" for sfx, _ in variants for f in (*EVALS, "vqa")]
    assert sorted(p.name for p in (out / "eval").iterdir()) == sorted(folders)
    results = _results(out, folders)
    rows = {"0-shot", "1-shot", "2-shot", "blind-0-shot", "blind-1-shot", "blind-2-shot"}
    head = json.loads((out / "steps" / "8-evaluate.json").read_text())["summary"]["headline"]
    assert set(head) == {"zero_shot", "CTOM", "C", "CT", "CTO"}
    # the stage-1 records differ by variant: C keeps the caption only, CTOM adds type, OCR, paragraphs, mentions
    answers = {v: json.loads((out / "data" / f"align-{v}.jsonl").read_text().splitlines()[0])["conversations"][1]
               for _, v in variants}  # fmt: skip
    assert len(answers["C"]["value"]) < len(answers["CT"]["value"]) <= len(answers["CTOM"]["value"])
    for sfx, v in variants:
        vqa = results[f"vqa{sfx}"]
        assert vqa["benchmark"] == "vqa" and set(vqa["summary"]) == rows
        assert all(0 <= x <= 100 for x in vqa["summary"].values()) and head[v]["vqa"] == vqa["summary"]
        assert len(_lines(out / "eval" / f"vqa{sfx}" / "predictions.jsonl")) == 6 * vqa["questions"] > 0
        assert vqa["options"]["checkpoint"].endswith(f"finetune-{v}/final")
        assert results[f"scifig-mcq{sfx}"]["options"]["checkpoint"].endswith(f"finetune-{v}/final")
    assert "clip" not in results["figure-type-C"]  # the zero-shot baseline does not depend on the variant
    report = (out / "report.md").read_text()
    assert "## Ablation: stage-1 variant" in report and "Few-shot VQA" in report
    table = report.split("## Ablation: stage-1 variant")[1].split("CTOM vs C:")[0]
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| C")] == ["| C", "| CT", "| CTO",
                                                                                                "| CTOM"]  # fmt: skip
    verdict = report.split("CTOM vs C: ")[1].split("\n")[0]
    assert verdict.startswith("ScienceQA ") and ("as in the paper" in verdict or "unlike the paper" in verdict)
    assert "| SciTune micro, stage 1 CTO: blind |" in report  # every variant in the first table too
