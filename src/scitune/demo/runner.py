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


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (step 1's rendering workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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

    def step(self, name: str, fn: Callable[[], dict[str, Any]], announce: bool = True) -> dict[str, Any]:
        """Run ``fn`` unless ``steps/<name>.json`` says it is done; print a one-line summary either way.

        Steps 5 and 8 cover every stage-1 variant: done for other variants (``scitune demo`` first, then
        ``--ablation`` in the same folder), they run again; the others are reused."""
        marker = self.path("steps", f"{name}.json")
        variants = list(self.variants) if name in ("5-convert", "8-evaluate") else None
        if marker.is_file():
            done = read_json(marker)
            if done.get("variants", ["CTOM"] if variants else None) == variants:
                print(f"[skip] {name}: done earlier ({done['line']})", flush=True)
                return done
        if announce:
            print(f"[run ] {name} ...", flush=True)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        result = fn()
        line = result.pop("line")
        # CPU seconds of this process too: on a shared machine the wall time also counts other people's work
        done = {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(_cpu_seconds() - c0, 1),
                "line": line, "summary": result, **({"variants": variants} if variants else {})}  # fmt: skip
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
        records, beside = {}, None
        try:
            for name, fn in plan:
                if name == "3-clip" and self._clip_beside_lm():
                    beside = _start_clip_process(self.cfg)  # the micro CLIP trains in a second process
                    continue
                records[name] = self.step(name, fn)
                if name == "4-lm" and beside is not None:
                    records["3-clip"] = _finish_clip_process(*beside)
        finally:
            if beside is not None and beside[0].is_alive():  # this process failed first: stop the other
                beside[0].terminate()
        records = {name: records[name] for name, _ in plan}
        write_report(self, records)
        return records

    def _clip_beside_lm(self) -> bool:
        """Whether steps 3 and 4 (independent: both need only the data and the tokenizer) run side by side: when
        both are still to do and this process may use 2 CPUs or more. Each trains on its own seed in one process of
        ``--threads`` threads, so the numbers are the same either way; only the wall time differs."""
        from scitune.threads import usable_cpus

        todo = [n for n in ("3-clip", "4-lm") if not self.path("steps", f"{n}.json").is_file()]
        return len(todo) == 2 and usable_cpus() >= 2


def _clip_step(cfg: DemoConfig, conn: Any) -> None:
    """Step 3 in a child process (`Demo._clip_beside_lm`), without a progress bar (the LM's shows); sends back its
    record, or the exception it raised."""
    from scitune.demo import steps
    from scitune.threads import configure

    try:
        demo = Demo(cfg)
        configure(cfg.threads)
        conn.send(("ok", demo.step("3-clip", lambda: steps.make_clip(demo), announce=False)))
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            conn.send(("error", e))
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


def _start_clip_process(cfg: DemoConfig) -> tuple[Any, Any]:
    """Start step 3 in a spawned process; return the process and the end of the pipe its result comes through."""
    import multiprocessing
    from dataclasses import fields

    print("[run ] 3-clip ... (in a second process, beside 4-lm)", flush=True)
    options = {f.name: getattr(cfg, f.name) for f in fields(DemoConfig)}  # cfg may be the CLI's namespace
    cfg = DemoConfig(**{**options, "progress": False})
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_clip_step, args=(cfg, theirs), name="scitune-demo-clip", daemon=True)
    proc.start()
    return proc, mine


def _finish_clip_process(proc: Any, conn: Any) -> dict[str, Any]:
    """Wait for step 3's process and return its record; raise what it raised (a rerun resumes at step 3)."""
    try:
        status, value = conn.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"step 3-clip: its process ended without a result (exit code {proc.exitcode})") from None
    proc.join()
    if status == "error":
        raise value
    return value


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
