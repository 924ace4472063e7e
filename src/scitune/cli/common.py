"""Shared CLI plumbing: parsers with docstring help, logging, and friendly errors."""

from __future__ import annotations

import logging
import os
import sys

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from scitune.config.io import resolve_config_path
from scitune.config.schema import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

set_parsing_settings(docstring_parse_attribute_docstrings=True)

RUN_SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig), ("train", TrainConfig))


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not any(os.path.exists(d) for d in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        # no GPU here: DeepSpeed (imported by accelerate when installed) would warn on every command that it fell back
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def parser(prog: str, description: str) -> ArgumentParser:
    """A parser in scitune's one dialect (`scitune.cli.args.Parser`): errors raised with a "did you mean", never
    printed with the whole usage (the CLI's boundary prints one line)."""
    from scitune.cli.args import Parser

    return Parser(prog=f"scitune {prog}", description=description)


def run_parser(prog: str, description: str) -> ArgumentParser:
    """A parser for a full `RunConfig`: ``--config PRESET|FILE`` then ``--section.field value`` overrides."""
    p = parser(prog, description)
    p.add_argument("--config", action=ActionConfigFile, help="a preset name (scitune ls presets) or a YAML file")
    for key, cls in RUN_SECTIONS:
        p.add_class_arguments(cls, key)
    return p


def preset_argv(argv: list[str]) -> list[str]:  # called by `scitune.cli.args.Parser.parse_args`
    """Replace preset names given to ``--config`` by their YAML paths."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config_path(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + resolve_config_path(a.split("=", 1)[1])
    return out


def parse_run(p: ArgumentParser, argv: list[str], own: tuple[str, ...] = ()) -> tuple[RunConfig, str, dict]:
    """Parse into a `RunConfig`, the resolved YAML text, and the values of the command's ``own`` options (flags of
    the command, not of the run: they stay out of the YAML, so a config.yaml used again never carries them)."""
    ns = p.parse_args(argv)
    extra = {name: ns.pop(name) for name in own}
    text = p.dump(ns)
    init = instantiate(p, ns)
    return RunConfig(**{k: getattr(init, k) for k, _ in RUN_SECTIONS}), text, extra


def fail(message: str, code: int = 2) -> int:
    print(f"scitune: error: {message}", file=sys.stderr)
    return code


def instantiate(p: ArgumentParser, ns):
    """Instantiate dataclass groups of a parsed namespace (jsonargparse renamed this method in 4.49). A union option
    (``--data.train``) whose value failed one of scitune's own checks raises that check's message alone."""
    import re

    try:
        return p.instantiate(ns) if hasattr(p, "instantiate") else p.instantiate_classes(ns)
    except ValueError as e:
        ours = re.search(r"^\s*- (--[a-z_.]+ .*)$", str(e), re.M) if "Union subtypes" in str(e) else None
        if ours:
            raise ValueError(ours.group(1)) from None
        raise
