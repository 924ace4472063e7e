"""Helpers of the fault suite: the scitune CLI in-process or in a forked child (SIGKILLed through the test hooks),
folder snapshots that prove nothing was lost or half-written, and the checks every refused input must pass."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from runkit import losses, weights, write_run_config  # noqa: F401 (the fault tests import them from here)

TEMP_MARKS = (".scitune-tmp-", ".scitune-old-", ".zero-")


@dataclass
class Result:
    """How a CLI run ended: its exit status (or the signal that killed it) and what it printed."""

    rc: int | None
    signal: int | None
    out: str
    err: str


def _reset_process_state() -> None:
    """A forked child starts like a fresh ``scitune`` process: accelerate's singletons cleared, one torch thread.

    One thread: torch's OpenMP pool does not survive ``fork`` (a forked child that runs parallel ops hangs), and
    every run compared in a test runs here, so all of them use the same thread count.
    """
    import torch
    from accelerate.state import AcceleratorState, GradientState, PartialState

    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def forked_cli(argv: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> Result:
    """Run ``scitune ARGV`` in a forked copy of this process (no interpreter start-up, torch already imported)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                with open(out_path, "w") as out, open(err_path, "w") as err:
                    os.dup2(out.fileno(), 1)
                    os.dup2(err.fileno(), 2)
                    sys.stdout, sys.stderr = out, err
                    os.environ.update(env or {})
                    _reset_process_state()
                    import logging

                    for h in list(logging.getLogger().handlers):
                        logging.getLogger().removeHandler(h)
                    from scitune.cli import main

                    code = main(list(argv))
                    out.flush()
                    err.flush()
            except BaseException as e:  # noqa: BLE001 (report anything, then leave the child)
                with open(err_path, "a") as err:
                    err.write(f"\nchild crashed: {type(e).__name__}: {e}\n")
            finally:
                os._exit(code if isinstance(code, int) else 1)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"scitune {' '.join(argv)} ran past {timeout} s")
            time.sleep(0.05)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return Result(rc, sig, out_path.read_text(), err_path.read_text())


def inproc_cli(argv: list[str], capsys) -> Result:
    """Run ``scitune ARGV`` in this process (for refusals: they end before any training)."""
    from scitune.cli import main

    capsys.readouterr()
    rc = main(list(argv))
    captured = capsys.readouterr()
    return Result(rc, None, captured.out, captured.err)


def assert_refused(res: Result, *needles: str, code: int | None = None) -> str:
    """The run ended with a non-zero status and one ``scitune: error:`` line (naming ``needles``), no traceback."""
    assert res.rc not in (0, None), f"expected a refusal, got rc={res.rc} signal={res.signal}\n{res.err[-2000:]}"
    if code is not None:
        assert res.rc == code, res.err[-2000:]
    assert "Traceback" not in res.err, res.err[-3000:]
    lines = [x for x in res.err.splitlines() if x.startswith("scitune: error:")]
    assert len(lines) == 1, f"expected one error line, got {lines}\n{res.err[-2000:]}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (symlinks by their target's name)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Temp files or folders scitune left behind under ``root`` (an interrupted or failed write)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.name.startswith(TEMP_MARKS) or (p.name.startswith(".") and p.name.endswith(".tmp"))
    )
