"""`scitune demo --size test`: every step runs, a killed training step resumes, a rerun skips; bad --out fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = ("1-data", "2-tokenizer", "3-clip", "4-lm", "5-convert", "6-align", "7-finetune", "8-evaluate")


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


def test_report_and_results(finished):
    out, _ = finished
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results) == {"zero_shot", "CTOM"}
    mcq = results["CTOM"]["mcq"]
    for protocol in ("choice", "letter"):
        assert set(mcq[protocol]["groups"]) == {"image", "blind"} and mcq[protocol]["per_kind"]
        reading = mcq[protocol]["figure_reading"]
        assert reading["count"] > 0 and 0 <= reading["image"] <= 100 and 0 < reading["chance"] < 100
    assert 0 <= results["CTOM"]["stage1"]["figure_type"]["acc"] <= 100
    report = (out / "report.md").read_text()
    for name in STEPS:
        assert name in report
    for section in ("## Figure type", "## Captions", "## MCQs", "Per question kind", "## Examples"):
        assert section in report
    for png in ("losses", "figure_type", "confusion", "mcq_kinds", "examples"):
        assert (out / "report" / f"{png}.png").stat().st_size > 1000


def test_rerun_skips_every_step(finished):
    out, _ = finished
    again = demo(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("[skip]") == len(STEPS) and "[run ]" not in again.stdout


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
    """`--ablation`: stage 1 with C and CTOM through stage 2, plus 0/1/2-shot VQA rows with and without images."""
    out = tmp_path / "ablation"
    run = demo(out, "--ablation")
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("6-align-C", "7-finetune-C"):
        assert f"[done] {name}" in run.stdout
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results) == {"zero_shot", "CTOM", "C"}
    rows = {"0-shot", "1-shot", "2-shot", "blind-0-shot", "blind-1-shot", "blind-2-shot"}
    for v in ("CTOM", "C"):
        assert set(results[v]["vqa"]) == rows and all(0 <= x <= 100 for x in results[v]["vqa"].values())
    report = (out / "report.md").read_text()
    assert "## Ablation: stage-1 variant" in report and "Few-shot VQA" in report and "| C |" in report
