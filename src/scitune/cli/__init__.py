"""The `scitune` command: one entry point dispatching to a table of subcommands."""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help); each module has main(argv) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("scitune.cli.demo", "run the whole pipeline on built-in micro models and data (no download)"),
    "convert": ("scitune.cli.convert", "convert SciCap / ScienceQA sources to training records"),
    "data": ("scitune.cli.data", "validate a data file"),
    "train": ("scitune.cli.train", "train a stage (align | finetune) from a preset"),
    "eval": ("scitune.cli.eval", "evaluate a checkpoint or predictions on a benchmark; compare runs"),
    "generate": ("scitune.cli.generate", "generate a reply to one prompt with images"),
    "chat": ("scitune.cli.chat", "chat with a checkpoint in the terminal"),
    "export": ("scitune.cli.export", "export to a llava-hf folder, or merge LoRA adapters"),
    "import": ("scitune.cli.import_", "import a llava-hf folder as a scitune checkpoint"),
    "checkpoint": ("scitune.cli.checkpoint", "verify checkpoints against their manifests (SHA-256 of every file)"),
    "serve": ("scitune.cli.serve", "serve a checkpoint over an OpenAI-compatible HTTP API, with a chat page"),
    "ls": ("scitune.cli.ls", "list registered encoders, projectors, templates, presets, ..."),
    "models": ("scitune.cli.models", "write the tiny random base models the tiny/* presets use (runs/tiny-base)"),
    "config": ("scitune.cli.config", "show, copy or validate presets"),
    "analyze": ("scitune.cli.analyze", "representation analysis: embedding maps by label, Wu-Palmer similarity"),
}

OWN_THREADS_FLAG = ("demo", "serve")
"""Commands whose config has a ``threads`` field; every other command takes ``--threads`` here."""


def usage() -> str:
    from scitune import __version__

    lines = [
        f"scitune {__version__}: multimodal instruction tuning (SciTune, LLaVA)",
        "",
        "usage: scitune COMMAND [options]   (scitune COMMAND --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "Every command: flags with dashes or underscores (--max-steps = --max_steps), booleans --x / --no-x,",
        "lists a,b; --debug shows the traceback of an error; --threads N sets torch's CPU threads",
        "(default: the CPUs not already busy, from the load average; also $SCITUNE_THREADS).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scitune`` console script and ``python -m scitune``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from scitune import __version__

        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        from scitune.cli.args import suggest

        hint = suggest(argv[0], set(COMMANDS))
        print(f"scitune: error: unknown command {argv[0]!r}{hint} (scitune --help lists the commands)", file=sys.stderr)
        return 2
    from scitune import threads

    threads.prepare_openmp()  # before torch is imported
    rest, value = threads.split_threads_flag(argv[1:])
    if argv[0] in OWN_THREADS_FLAG:
        rest = argv[1:]  # the command's own --threads (kept in its config and report)
    from scitune.cli.common import setup_logging
    from scitune.cli.errors import run_guarded

    setup_logging()
    try:
        threads.configure(value)
    except ValueError as e:
        print(f"scitune {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return run_guarded(module.main, rest, argv[0])
