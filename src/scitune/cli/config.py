"""`scitune config`: show, copy or validate a preset / YAML config."""

from __future__ import annotations

import shutil

from scitune.cli.common import parse_run, parser, run_parser


def main(argv: list[str]) -> int:
    from scitune.config.io import resolve_config_path

    p = parser(
        "config",
        "Work with configs.\n\n  scitune config show tiny/align\n  scitune config cp "
        "scitune-llama-7b/align my.yaml\n  scitune config validate my.yaml",
    )
    p.add_argument("action", choices=["show", "cp", "validate"], help="show | cp | validate")
    p.add_argument("name", help="preset name or YAML file")
    p.add_argument("dest", nargs="?", default=None, help="destination file (cp)")
    args = p.parse_args(argv)
    path = resolve_config_path(args.name)
    if args.action == "show":
        print(open(path, encoding="utf-8").read(), end="")
    elif args.action == "cp":
        if not args.dest:
            p.error("cp needs a destination file")
        shutil.copyfile(path, args.dest)
        print(f"copied {path} -> {args.dest}")
    else:
        _, text, _ = parse_run(run_parser("train", "validate"), ["--config", path])
        print(text, end="")
        print(f"# {args.name}: valid")
    return 0
