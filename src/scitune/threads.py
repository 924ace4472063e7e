"""How many CPU threads torch's operators use: one rule for every command.

On a machine shared with other work, torch's default (one intra-op thread per core, OpenMP threads that spin while
they wait) makes the threads fight the other processes for the cores: a tiny LoRA finetune ran 9.6x slower at load
4-5 on 2 cores than with one thread. So scitune picks the thread count from the CPUs this process may use and the
load already on them, and asks OpenMP to sleep rather than spin when idle. ``--threads N`` (every command) or
``$SCITUNE_THREADS`` overrides the choice; 0 means "choose".
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "SCITUNE_THREADS"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def auto_threads(cpus: int | None = None, load: float | None = None) -> int:
    """The CPUs not already busy: ``cpus`` minus the 1-minute load average (rounded), at least 1, at most ``cpus``."""
    cpus = usable_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover
            load = 0.0
    return max(1, min(cpus, cpus - round(load)))


def requested_threads(value: int | str | None = None) -> int:
    """``value`` if it is positive, else ``$SCITUNE_THREADS`` if set and positive, else 0 (choose)."""
    for v in (value, os.environ.get(ENV)):
        if v in (None, ""):
            continue
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"threads must be a whole number, got {v!r} (--threads / ${ENV})") from None
        if n < 0:
            raise ValueError(f"threads must be >= 0 (0 = choose from the free CPUs), got {n} (--threads / ${ENV})")
        if n:
            return n
    return 0


def prepare_openmp() -> None:
    """Ask OpenMP to sleep, not spin, between parallel regions; only effective before torch is first imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure(value: int | str | None = None) -> int:
    """Set torch's intra-op threads by the rule above and return the count (logged once per change)."""
    import torch

    n = requested_threads(value) or auto_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.debug("torch threads: %d (usable CPUs %d)", n, usable_cpus())
    return n


def split_threads_flag(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--threads N`` / ``--threads=N``, and the value given (None when absent)."""
    out, value, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--threads" and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if a.startswith("--threads="):
            value = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, value
