"""One CLI dialect for every command: ``--a-b`` = ``--a_b``, booleans as ``--x`` / ``--no-x`` / ``--x false``, lists as
``a,b`` or ``[a, b]``, a nested option without its outer section when that is unambiguous (``--lora.r`` for
``--train.lora.r``), help texts whose example blocks stay as written, and a "did you mean" for every typo."""

from __future__ import annotations

import argparse
import difflib
import re
from types import UnionType
from typing import Any, Union, get_args, get_origin

from jsonargparse import ArgumentParser, DefaultHelpFormatter

_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, but descriptions keep their own line breaks (example command blocks stay readable)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def suggest(word: str, choices: list[str] | set[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "flag"
    hint = getattr(action, "_typehint", None)
    if hint is not None:
        parts = {hint, *get_args(hint)}
        if bool in parts:
            return "bool"
        text_too = get_origin(hint) in (Union, UnionType) and str in get_args(hint)
        if not text_too and any(get_origin(h) in (list, tuple) or h in (list, tuple) for h in parts):
            return "list"  # (a str-or-list option, e.g. --data.train, takes its value as typed)
    return "value"


def option_kinds(parser: Any) -> dict[str, str]:
    """``{option string: bool | flag | list | value}`` of ``parser`` and all its subcommands."""
    kinds: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                kinds.update(option_kinds(sub))
            continue
        for opt in action.option_strings:
            if opt.startswith("--") and not opt.endswith("+"):
                kinds[opt] = _kind(action)
    return kinds


def subcommands(parser: Any) -> list[str]:
    """Names of ``parser``'s subcommands (all levels)."""
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [name, *subcommands(sub)]
    return out


def _as_list(value: str) -> str:
    value = value.strip()
    if value.startswith("[") or not value:
        return value
    return "[" + ", ".join(v.strip() for v in value.split(",") if v.strip()) + "]"


def _resolve(opt: str, kinds: dict[str, str]) -> str:
    """A dotted option given without its outer section (``--lora.r`` for ``--train.lora.r``) when exactly one known
    option ends with it; otherwise ``opt`` unchanged."""
    if opt in kinds or "." not in opt:
        return opt
    tail = "." + opt[2:]
    found = [k for k in kinds if k.endswith(tail)]
    return found[0] if len(found) == 1 else opt


def normalize(argv: list[str], kinds: dict[str, str]) -> list[str]:
    """Rewrite ``argv`` into the form the parser reads (see the module docstring)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--") or arg == "--" or re.fullmatch(r"--?\d.*", arg):
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        opt = _resolve("--" + name.replace("-", "_"), kinds)
        negated = None
        if opt not in kinds and opt.startswith("--no_") and kinds.get("--" + opt[5:]) in ("bool", "flag"):
            negated, opt = True, "--" + opt[5:]
        kind = kinds.get(opt, "value")
        nxt = argv[i] if i < len(argv) else None
        if kind == "flag":  # argparse store_true: present or not
            if negated or (eq and value.lower() in ("false", "no", "0", "off")):
                continue
            if not eq and nxt is not None and nxt.lower() in _BOOL_WORDS:
                i += 1
                if nxt.lower() in ("false", "no", "0", "off"):
                    continue
            out.append(opt)
        elif kind == "bool":
            if negated:
                out.append(f"{opt}=false")
            elif eq:
                out.append(f"{opt}={value}")
            elif nxt is not None and nxt.lower() in _BOOL_WORDS:
                out.append(f"{opt}={nxt}")
                i += 1
            else:  # a bare boolean option means true
                out.append(f"{opt}=true")
        elif kind == "list":
            if eq:
                out.append(f"{opt}={_as_list(value)}")
            elif nxt is not None and not nxt.startswith("--"):
                out.append(f"{opt}={_as_list(nxt)}")
                i += 1
            else:
                out.append(opt)
        else:
            out.append(f"{opt}{eq}{value}")
    return out


def explain(error: argparse.ArgumentError, parser: Any) -> str:
    """The parser's error with a "did you mean" for unknown options and choices."""
    text = str(error)
    kinds = option_kinds(parser)
    unknown = re.search(r"unrecognized arguments: (.*)", text)
    if unknown:
        hints = [f"{tok}{suggest(tok, set(kinds))}" for tok in unknown.group(1).split() if tok.startswith("--")]
        return "unrecognized arguments: " + ", ".join(hints or [unknown.group(1)])
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", text)
    if choice:
        choices = re.findall(r"'([^']*)'", choice.group(2))
        return (
            f"invalid choice {choice.group(1)!r}{suggest(choice.group(1), choices)}; choose from {', '.join(choices)}"
        )
    required = re.search(r"the following arguments are required: (.*)", text)
    if required:  # jsonargparse names a subcommand's options "sub.name": say them as they are typed
        names = [n.strip() for n in required.group(1).split(",")]
        flags = [n if n.startswith("-") else "--" + (n.split(".", 1)[1] if n.split(".", 1)[0] in subcommands(parser)
                                                      else n) for n in names]  # fmt: skip
        return "missing required option(s): " + ", ".join(flags)
    got = re.search(r"Literal\[(.*?)\]\. Got value: (\S+)", text)
    if got:
        return text + suggest(got.group(2), re.findall(r"'([^']*)'", got.group(1)))
    return text


class Parser(ArgumentParser):
    """scitune's argument parser: one dialect (`normalize`) and errors raised with suggestions, never printed with
    the whole usage (the CLI's boundary prints one line)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)  # --train.max_step is a typo to point out, not a prefix to accept
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: list[str] | None = None, *rest: Any, **kwargs: Any):  # type: ignore[override]
        kinds = option_kinds(self)
        argv = normalize(list(args or []), kinds)
        if "--config" in kinds:  # a preset name becomes its YAML file
            from scitune.cli.common import preset_argv

            argv = preset_argv(argv)
        try:
            return super().parse_args(argv, *rest, **kwargs)
        except argparse.ArgumentError as e:
            raise argparse.ArgumentError(None, explain(e, self)) from None
