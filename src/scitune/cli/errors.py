"""The CLI's one error boundary: every exception becomes one line, ``scitune: error: <file or flag>: <problem>``,
and an exit status; ``--debug`` or ``SCITUNE_DEBUG=1`` shows the traceback as well."""

from __future__ import annotations

import argparse
import errno
import re
import sys
import traceback

DEBUG_ENV = "SCITUNE_DEBUG"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _argument_error(e: argparse.ArgumentError) -> str:
    text = str(e)
    m = re.match(r'(?s)\s*Parser key "([^"]+)":\s*(.*)', text)
    if m:
        flag, problem = m.groups()
        problem = re.sub(r"<class '(\w+)'>", r"\1", problem)
        problem = re.sub(r"typing\.Literal\[(.*?)\]", r"one of \1", problem)
        problem = re.sub(
            r"^Expected an? (.+?)\. Got value: (.*)$", r"expected \1, got '\2'", problem.strip(), flags=re.S
        )
        return f"--{flag}: {_one_line(problem)}"
    return _one_line(text)


def _os_error(e: OSError) -> str:
    where = e.filename or ""
    if e.errno == errno.ENOSPC:
        problem = "no space left on device (nothing was replaced: free some space and run the command again)"
    elif e.errno == errno.EDQUOT:
        problem = "disk quota exceeded (nothing was replaced)"
    else:
        problem = e.strerror or _one_line(str(e)) or type(e).__name__
    return f"{where}: {problem}" if where else problem


def describe(e: BaseException, command: str) -> tuple[str, int]:
    """The one-line message and exit status for an exception that reached the command line."""
    from scitune.io import DataError

    if isinstance(e, argparse.ArgumentError):
        return f"{_argument_error(e)} (scitune {command} --help lists the options)", 2
    from scitune.extras import EXTRA_OF, MissingExtra

    if isinstance(e, MissingExtra):
        return _one_line(str(e)), 2
    if isinstance(e, ImportError):
        name = (e.name or "").split(".")[0]
        extra = EXTRA_OF.get(name)
        hint = f": pip install 'scitune[{extra}]'" if extra else ""
        return f"{name or 'a module'} is not installed{hint} ({_one_line(str(e))})", 2
    if isinstance(e, KeyError):
        return _one_line(e.args[0] if e.args else "unknown key"), 2
    if isinstance(e, (DataError, ValueError, UnicodeError)):
        return _one_line(str(e)), 2
    if isinstance(e, MemoryError):
        return "out of memory (use a smaller batch, model or image limit)", 1
    if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "out of GPU memory: lower --train.micro_batch_size, or enable --train.gradient_checkpointing", 1
    if isinstance(e, OSError):
        return _os_error(e), 2 if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)) else 1
    return (
        f"unexpected {type(e).__name__}: {_one_line(str(e))} (a bug in scitune: rerun with --debug for the "
        "traceback and report it)",
        1,
    )


def run_guarded(fn, argv: list[str], command: str) -> int:
    """Run a subcommand's ``main(argv)``; every failure ends as one line on stderr and a non-zero status."""
    import os

    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return int(fn(argv) or 0)
    except KeyboardInterrupt:
        print("scitune: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # the boundary: nothing below prints a traceback unless asked
        if debug:
            traceback.print_exc()
        message, code = describe(e, command)
        print(f"scitune: error: {message}", file=sys.stderr)
        return code
