"""`scitune convert SOURCE`: raw sources -> canonical records (one subcommand per registered converter)."""

from __future__ import annotations

import json

from scitune.cli.args import Parser
from scitune.cli.common import parser


def main(argv: list[str]) -> int:
    from scitune.sources.converters import CONVERTERS

    p = parser(
        "convert",
        "Convert a source to training records.\n\n  scitune convert scicap --src figs/ --out "
        "scicap_CTOM.jsonl --variant CTOM\n  scitune convert scienceqa --src problems.json --out "
        "train.json --split train --prompt_format QCM-LEA\n  scitune convert llava-json --src llava_instruct_150k.json "
        "--out llava.jsonl\n  scitune convert sharegpt --src sharegpt.json --out chat.jsonl\n  scitune convert vistext "
        "--src vistext/data --split test --level L2L3 --out vistext_test.jsonl\n  scitune convert caption-pairs --src "
        "Train_GCC-training.tsv --out cc3m_595k.json --min_count 3 --max_per_phrase 100 --seed 0",
    )
    sub = p.add_subcommands(dest="source")
    for name in CONVERTERS.names():
        sp = Parser(description=(CONVERTERS.get(name).__doc__ or "").strip())
        sp.add_method_arguments(CONVERTERS.get(name), "run")
        sub.add_subcommand(name, sp, help=(CONVERTERS.get(name).__doc__ or "").strip().split("\n")[0])
    args = p.parse_args(argv)
    name = args.source
    kwargs = {k: v for k, v in vars(args[name]).items() if not k.startswith("__")}
    summary = CONVERTERS.get(name)().run(**kwargs)
    print(json.dumps(summary, indent=2, default=str))
    return 0
