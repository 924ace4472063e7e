"""End to end through the CLI: convert -> align -> finetune -> generate -> score ScienceQA, on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "scitune", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"scitune {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


def metric_losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def scifig(tmp_path_factory) -> Path:
    from scitune.sources.scifig import SciFigConfig, generate_scifig

    root = tmp_path_factory.mktemp("scifig")
    generate_scifig(root, SciFigConfig(n_train=16, n_val=0, n_test=8, image_size=64), progress=False)
    return root


def test_convert_align_finetune_generate_eval(tmp_path, tiny_base, scifig):
    from scitune.eval.scienceqa import score_scienceqa
    from scitune.infer.generate import GenerationConfig, Generator, Prompt, open_image
    from scitune.loader import load

    align_data, ft_data = tmp_path / "align.jsonl", tmp_path / "ft.jsonl"
    cli(
        "convert",
        "scicap",
        "--src",
        str(scifig / "scicap" / "train.jsonl"),
        "--out",
        str(align_data),
        "--variant",
        "CTOM",
    )
    cli(
        "convert",
        "scienceqa",
        "--src",
        str(scifig / "scienceqa"),
        "--out",
        str(ft_data),
        "--split",
        "train",
        "--prompt_format",
        "QCM-A",
    )
    base = ["--model.vision.path", tiny_base["vision"], "--model.llm.path", tiny_base["llm"]]
    cli(
        "train",
        "--config",
        "tiny/align",
        *base,
        "--data.train",
        str(align_data),
        "--data.image_root",
        str(scifig),
        "--train.out_dir",
        str(tmp_path / "align"),
        "--train.epochs",
        "3",
        "--train.progress",
        "false",
    )
    assert (tmp_path / "align" / "config.yaml").is_file()
    cli(
        "train",
        "--config",
        "tiny/finetune",
        "--model.init_from",
        str(tmp_path / "align" / "final"),
        "--data.train",
        str(ft_data),
        "--data.image_root",
        str(scifig / "scienceqa" / "images"),
        "--train.out_dir",
        str(tmp_path / "ft"),
        "--train.epochs",
        "4",
        "--train.progress",
        "false",
    )
    a, f = metric_losses(tmp_path / "align"), metric_losses(tmp_path / "ft")
    assert sum(a[-3:]) / 3 < a[0], a
    assert f[-1] < 0.8 * f[0], f

    # the finetuned checkpoint loads from its folder alone and generates
    ck = tmp_path / "ft" / "final"
    test_fig = json.loads((scifig / "scicap" / "test.jsonl").read_text().splitlines()[0])
    out = cli(
        "generate",
        "--checkpoint",
        str(ck),
        "--image",
        str(scifig / test_fig["image"]),
        "--prompt",
        "What type of figure is this?",
        "--gen.max_new_tokens",
        "8",
    )
    assert out.returncode == 0 and out.stdout.endswith("\n")

    # ScienceQA-style scoring of the test split (8 figures) with the model's generated answers
    problems = json.loads((scifig / "scienceqa" / "problems.json").read_text())
    pids = json.loads((scifig / "scienceqa" / "pid_splits.json").read_text())["test"]
    from scitune.sources.converters import build_eval_prompt

    model, processor = load(ck)
    prompts = []
    for pid in pids:
        p = problems[pid]
        imgs = [open_image(scifig / "scienceqa" / "images" / pid / "image.png")] if p["image"] else []
        prompts.append(Prompt.single(build_eval_prompt(p, "QCM-A"), imgs))
    texts = Generator(model, processor).generate(prompts, GenerationConfig(max_new_tokens=8))
    scores = score_scienceqa(problems, dict(zip(pids, texts)), pids)
    assert scores["count"] == len(pids) >= 8
    results = tmp_path / "results.json"
    results.write_text(json.dumps(scores))
    assert results.is_file()
