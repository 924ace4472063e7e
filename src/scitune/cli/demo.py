"""`scitune demo`: the whole SciTune pipeline on built-in data with micro models it pretrains itself, resumable."""

from __future__ import annotations

from scitune.cli.common import instantiate, parser
from scitune.demo import DemoConfig

_SHORT = {"--out": "--demo.out", "--size": "--demo.size", "--seed": "--demo.seed", "--threads": "--demo.threads"}


def _expand(argv: list[str]) -> list[str]:
    """Accept the short flags (``--out DIR``, ``--size S``, ``--ablation``) beside the ``--demo.*`` ones."""
    out: list[str] = []
    for a in argv:
        key, eq, val = a.partition("=")
        if a == "--ablation":
            out += ["--demo.ablation", "true"]
        else:
            out.append(_SHORT.get(key, key) + eq + val if key in _SHORT else a)
    return out


def main(argv: list[str]) -> int:
    from scitune.demo import run_demo

    p = parser(
        "demo",
        "Run SciTune end to end on SciFig (synthetic scientific figures), no GPU, no download:\n"
        "  1 data -> 2 BPE tokenizer -> 3 micro CLIP (contrastive) -> 4 micro LM -> 5 convert (scicap CTOM,\n"
        "  scienceqa) -> 6 align (connector) -> 7 finetune (connector + LM) -> 8 evaluate -> report.md\n"
        "A rerun with the same --out skips finished steps (an interrupted training step resumes).\n\n"
        "  scitune demo --out demo_out             # the real thing, a few minutes on 2 CPU cores\n"
        "  scitune demo --out demo_out --ablation  # also stage 1 with variant C, reported beside CTOM\n"
        "  scitune demo --out /tmp/d --size test   # seconds: a smoke run with a few steps per stage",
    )
    p.add_class_arguments(DemoConfig, "demo", as_group=False)
    cfg = instantiate(p, p.parse_args(_expand(argv))).demo
    records = run_demo(cfg)
    print(f"report: {cfg.out}/report.md ({sum(r['seconds'] for r in records.values()):.0f} s of steps)")
    return 0
