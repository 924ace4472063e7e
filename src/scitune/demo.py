"""`scitune demo`: the SciTune pipeline end to end on built-in data and tiny models, resumable step by step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

SIZES = {
    "micro": {"n_train": 60, "n_test": 20, "align_epochs": 3, "finetune_epochs": 3},
    "small": {"n_train": 300, "n_test": 60, "align_epochs": 3, "finetune_epochs": 4},
}


@dataclass
class DemoConfig:
    """The demo run."""

    out: str = "demo_out"
    """Output folder (a rerun skips the steps already done there)."""
    size: str = "micro"
    """micro (about a minute on 2 CPU cores) or small."""
    seed: int = 0
    """Seed of the data and the models."""
    progress: bool = True
    """Show progress bars."""


class Demo:
    """Runs the numbered steps; each writes ``steps/<name>.json`` when done so a rerun skips it."""

    def __init__(self, cfg: DemoConfig):
        if cfg.size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {cfg.size!r}")
        self.cfg, self.out, self.size = cfg, Path(cfg.out), SIZES[cfg.size]

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.out / "steps" / f"{name}.json"
        if marker.is_file():
            done = read_json(marker)
            print(f"[skip] {name}: done earlier ({done['summary']})", flush=True)
            return done
        t0 = time.perf_counter()
        result = fn()
        done = {"seconds": round(time.perf_counter() - t0, 1), "summary": result}
        write_json(marker, done)
        print(f"[done] {name} in {done['seconds']}s: {result}", flush=True)
        return done

    def run(self) -> dict[str, Any]:
        steps = [
            ("1-data", self.make_data),
            ("2-base-models", self.make_base),
            ("3-convert", self.convert),
            ("4-align", lambda: self.train("align")),
            ("5-finetune", lambda: self.train("finetune")),
            ("6-evaluate", self.evaluate),
        ]
        results = {name: self.step(name, fn) for name, fn in steps}
        self.report(results)
        return results

    # ---- steps
    def make_data(self) -> dict[str, Any]:
        from scitune.data.scifig import SciFigConfig, generate_scifig

        cfg = SciFigConfig(
            n_train=self.size["n_train"], n_val=0, n_test=self.size["n_test"], image_size=64, seed=self.cfg.seed
        )
        manifest = generate_scifig(self.out / "scifig", cfg, progress=self.cfg.progress)
        return {"figures": manifest.get("counts", {}), "ocr": "SciFig's rendered-text truth (no OCR run)"}

    def make_base(self) -> dict[str, Any]:
        from scitune.model.builders import save_tiny_base

        paths = save_tiny_base(self.out / "base", seed=self.cfg.seed)
        return {"vision": paths["vision"], "llm": paths["llm"], "kind": "tiny random CLIP + LLaMA"}

    def convert(self) -> dict[str, Any]:
        from scitune.data.converters import SciCapConverter, ScienceQAConverter

        root = self.out / "scifig"
        scicap = SciCapConverter().run(
            str(root / "scicap" / "train.jsonl"),
            str(self.out / "data" / "align.jsonl"),
            variant="CTOM",
            seed=self.cfg.seed,
        )
        sqa = ScienceQAConverter().run(
            str(root / "scienceqa"), str(self.out / "data" / "finetune.jsonl"), split="train", prompt_format="QCM-A"
        )
        return {"align_records": scicap.get("records"), "finetune_records": sqa.get("records")}

    def train(self, stage: str) -> dict[str, Any]:
        from scitune.config.schema import (
            DataConfig,
            LlmConfig,
            ModelConfig,
            OptimConfig,
            ProjectorConfig,
            RunConfig,
            TrainConfig,
            VisionConfig,
        )
        from scitune.train.loop import train

        base = self.out / "base"
        if stage == "align":
            model = ModelConfig(
                vision=VisionConfig(name="clip", path=str(base / "vision")),
                projector=ProjectorConfig("mlp2x-gelu"),
                llm=LlmConfig(path=str(base / "llm")),
            )
            data = DataConfig(
                train=str(self.out / "data" / "align.jsonl"), image_root=str(self.out / "scifig"), max_length=1024
            )
        else:
            model = ModelConfig(init_from=str(self.out / "runs" / "align" / "final"))
            data = DataConfig(
                train=str(self.out / "data" / "finetune.jsonl"),
                image_root=str(self.out / "scifig" / "scienceqa" / "images"),
                max_length=1024,
            )
        cfg = RunConfig(
            model=model,
            data=data,
            optim=OptimConfig(lr=1e-2 if stage == "align" else 3e-3, warmup_ratio=0.05),
            train=TrainConfig(
                stage=stage,
                out_dir=str(self.out / "runs" / stage),
                global_batch_size=8,
                micro_batch_size=8,
                epochs=self.size[f"{stage}_epochs"],
                seed=self.cfg.seed,
                progress=self.cfg.progress,
                resume="latest",
                save_every=20,
            ),
        )
        r = train(cfg)
        return {
            "steps": r.steps,
            "first_loss": round(r.losses[0], 4),
            "last_loss": round(r.losses[-1], 4),
            "checkpoint": r.final_checkpoint,
        }

    def evaluate(self) -> dict[str, Any]:
        from scitune.eval.figure_type import locate_figure_type, score_figure_types
        from scitune.infer.generate import GenerationConfig, Generator, Prompt, open_image
        from scitune.model.checkpoint import load_model

        model = load_model(self.out / "runs" / "align" / "final")
        figs = [json.loads(x) for x in (self.out / "scifig" / "scicap" / "test.jsonl").read_text().splitlines()]
        prompts = [
            Prompt.single("Describe the following image in detail.", [open_image(self.out / "scifig" / f["image"])])
            for f in figs
        ]
        gen = Generator(model)
        outs: list[str] = []
        for i in range(0, len(prompts), 8):
            outs += gen.generate(prompts[i : i + 8], GenerationConfig(max_new_tokens=16))
        scores = score_figure_types([f["figure_type"] for f in figs], [locate_figure_type(o) for o in outs])
        write_json(self.out / "eval" / "figure_type.json", {"scores": scores, "outputs": outs})
        return {"figure_type_accuracy_pct": scores["acc_str"], "n": len(figs)}

    def report(self, results: dict[str, Any]) -> None:
        lines = ["# scitune demo", "", "| step | seconds | summary |", "|---|---|---|"]
        lines += [f"| {k} | {v['seconds']} | {json.dumps(v['summary'])} |" for k, v in results.items()]
        write_text(self.out / "report.md", "\n".join(lines) + "\n")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run (or finish) the demo under ``cfg.out``; returns each step's time and summary."""
    return Demo(cfg).run()
