"""A run's checkpoints: which one a resume continues from (the newest that verifies, the damaged ones skipped with
a word), and pruning that only ever touches this run's own complete checkpoints and scitune's temp folders."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from scitune.io import DataError, read_json
from scitune.model.checkpoint import is_complete, verify_checkpoint
from scitune.outputs import OLD_PREFIX, TEMP_PREFIX, read_manifest

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
LEFTOVER_PREFIXES = (TEMP_PREFIX, OLD_PREFIX, ".zero-")
"""Hidden folders an interrupted save leaves in ``checkpoints/``; scitune made them, so pruning removes them."""


def step_checkpoints(out_dir: Path) -> list[Path]:
    """The complete ``checkpoints/step-*`` folders of a run, oldest first (hidden temp folders never count)."""
    root = out_dir / "checkpoints"
    return sorted(p for p in root.glob("step-*") if is_complete(p)) if root.is_dir() else []


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete step checkpoint of a run (half-written temp folders are never picked)."""
    done = step_checkpoints(out_dir)
    return done[-1] if done else None


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step a training checkpoint was written at."""
    state = read_trainer_state(ckpt)
    return int(state["progress"]["step"])


def read_trainer_state(ckpt: Path) -> dict:
    if not (ckpt / TRAINER_STATE).is_file():
        raise DataError(f"{ckpt}: not a training checkpoint (no {TRAINER_STATE}): it can be loaded, not resumed")
    return read_json(ckpt / TRAINER_STATE)


def check_training_checkpoint(ckpt: Path) -> int:
    """Verify every file of ``ckpt`` against its manifest (full SHA-256) and return its step (the base weights are
    compared with the run's fingerprint afterwards: a changed base is not this checkpoint's damage)."""
    verify_checkpoint(ckpt, "full", bases=False)
    return checkpoint_step(ckpt)


def resolve_resume(resume: str | None, out_dir: Path) -> Path | None:
    """The checkpoint ``--train.resume`` continues from, or None to start the run from step 0.

    ``latest``: the newest checkpoint of the run (step checkpoints and ``final``) that verifies; a damaged or
    incomplete one is skipped with a warning saying which file is damaged, and the one before it is used. A folder
    given by path must verify (no fallback).
    """
    if not resume:
        return None
    if resume != "latest":
        ck = Path(resume)
        if not ck.is_dir():
            raise DataError(f"--train.resume {resume}: checkpoint folder not found")
        check_training_checkpoint(ck)
        return ck
    candidates = [*step_checkpoints(out_dir), *([out_dir / "final"] if is_complete(out_dir / "final") else [])]
    incomplete = sorted((out_dir / "checkpoints").glob("step-*")) if (out_dir / "checkpoints").is_dir() else []
    for ck in incomplete:
        if not is_complete(ck):
            log.warning("--train.resume latest: %s is incomplete (an interrupted save): skipped", ck)
    scored = []
    for ck in candidates:
        try:
            scored.append((checkpoint_step(ck), ck))
        except DataError as e:
            log.warning("--train.resume latest: %s skipped: %s", ck, e)
    for _, ck in sorted(scored, key=lambda x: (x[0], x[1].name != "final"), reverse=True):
        try:
            check_training_checkpoint(ck)
        except DataError as e:
            log.warning("--train.resume latest: %s is damaged, falling back to the checkpoint before it: %s", ck, e)
            continue
        return ck
    if scored:
        raise DataError(
            f"--train.resume latest: every checkpoint in {out_dir} is damaged (see the warnings above); "
            "start over with --overwrite or resume from a copy"
        )
    log.info("--train.resume latest: no checkpoint in %s yet, starting the run from step 0", out_dir)
    return None


def run_id_of(ckpt: Path) -> str | None:
    try:
        manifest = read_manifest(ckpt)
    except DataError:
        return None
    return (manifest or {}).get("run_id")


def prune_checkpoints(out_dir: Path, keep_last: int, run_id: str) -> None:
    """Keep this run's newest ``keep_last`` step checkpoints; remove older ones of this run and save leftovers.

    A checkpoint that does not carry this run's id (copied in, or written before run ids) is never touched.
    """
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return
    if keep_last > 0:
        mine = [p for p in step_checkpoints(out_dir) if run_id_of(p) == run_id]
        for old in mine[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in (p for p in root.iterdir() if p.name.startswith(LEFTOVER_PREFIXES) and p.is_dir()):
        shutil.rmtree(leftover, ignore_errors=True)
