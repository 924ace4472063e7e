"""The demo's numbered steps; each writes ``steps/<name>.json`` when done, so a rerun skips it.

1 data · 2 tokenizer · 3 micro CLIP · 4 micro LM · 5 convert · 6 align · 7 finetune · 8 evaluate, then report.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scitune.demo.config import SIZES, DemoConfig
from scitune.io import read_json, write_json

log = logging.getLogger(__name__)

SYSTEM_AND_TEMPLATE = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.###Human: Question: Context: N/A Options: (A) (B) (C) "
    "(D) (E) ###Assistant: The answer is A. B. C. D. E. BECAUSE: LECTURE: SOLUTION: ANSWER:"
)
"""Template text added to the tokenizer corpus, so the chat scaffolding gets compact tokens too."""
ABLATION_VARIANTS = ("C", "CT", "CTO")
"""Stage-1 variants `--ablation` trains beside CTOM (SciTune Table 3), on the same data, tokenizer and micro models."""
MB_PER_TRAIN_FIGURE = 0.12
"""Disk the demo needs per train figure (images, data, checkpoints), measured on the micro size, with margin."""


DEMO_WRITES = ("scifig", "tokenizer", "models", "data", "runs", "steps", "eval", "report", "report.md", "report.html",
               "*.png", "*.json")  # fmt: skip
"""What the demo writes at the top of its folder."""


def check_out_dir(out: Path, need_mb: float, overwrite: bool = False) -> None:
    """Fail early, naming the folder, when ``out`` holds files of the user's (unless ``overwrite``), cannot be
    written, or its disk has less than ``need_mb`` free."""
    from scitune.outputs import claim_output_folder

    try:
        claim_output_folder(out, "demo", DEMO_WRITES, overwrite)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e}); choose a writable folder") from e
    free_mb = shutil.disk_usage(out).free / 2**20
    if free_mb < need_mb:
        raise ValueError(f"--out {out}: {free_mb:.0f} MB free on its disk, the demo needs about {need_mb:.0f} MB")


class Demo:
    """Runs the steps in order under ``cfg.out``; `run` returns each step's record (seconds and summary)."""

    def __init__(self, cfg: DemoConfig):
        if cfg.size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {cfg.size!r}")
        self.cfg, self.out, self.size = cfg, Path(cfg.out), SIZES[cfg.size]
        self.variants = ("CTOM", *ABLATION_VARIANTS) if cfg.ablation else ("CTOM",)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless ``steps/<name>.json`` says it is done; print a one-line summary either way."""
        marker = self.path("steps", f"{name}.json")
        if marker.is_file():
            done = read_json(marker)
            print(f"[skip] {name}: done earlier ({done['line']})", flush=True)
            return done
        print(f"[run ] {name} ...", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        line = result.pop("line")
        # CPU seconds of this process too: on a shared machine the wall time also counts other people's work
        done = {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
                "line": line, "summary": result}  # fmt: skip
        write_json(marker, done)
        print(f"[done] {name} in {done['seconds']}s: {line}", flush=True)
        return done

    def run(self) -> dict[str, Any]:
        from scitune.demo import steps
        from scitune.demo.evaluate import evaluate
        from scitune.demo.report import write_report

        check_out_dir(self.out, MB_PER_TRAIN_FIGURE * self.size.n_train * len(self.variants) + 50, self.cfg.overwrite)
        from scitune.threads import configure

        self.threads = configure(self.cfg.threads)
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("1-data", lambda: steps.make_data(self)),
            ("2-tokenizer", lambda: steps.make_tokenizer(self)),
            ("3-clip", lambda: steps.make_clip(self)),
            ("4-lm", lambda: steps.make_lm(self)),
            ("5-convert", lambda: steps.convert(self)),
        ]
        for v in self.variants:
            sfx = "" if v == "CTOM" else f"-{v}"
            plan.append((f"6-align{sfx}", lambda v=v: steps.train_stage(self, "align", v)))
            plan.append((f"7-finetune{sfx}", lambda v=v: steps.train_stage(self, "finetune", v)))
        plan.append(("8-evaluate", lambda: evaluate(self)))
        records = {name: self.step(name, fn) for name, fn in plan}
        write_report(self, records)
        return records


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run (or finish) the demo under ``cfg.out``.

    Args:
        cfg: the run's options (`DemoConfig`).

    Returns:
        ``{step name: {"seconds", "line", "summary"}}`` in step order; ``report.md`` is written under ``cfg.out``.

    Raises:
        ValueError: ``cfg.out`` is not writable or its disk is too full, or ``cfg.size`` is unknown.
    """
    return Demo(cfg).run()


def step_records(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The records of the finished steps of a demo folder, by step name."""
    folder = Path(out) / "steps"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
