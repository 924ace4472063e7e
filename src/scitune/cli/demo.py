"""`scitune demo`: the whole pipeline on built-in data and tiny models, no download, resumable."""

from __future__ import annotations

from scitune.cli.common import instantiate, parser
from scitune.demo import DemoConfig


def main(argv: list[str]) -> int:
    from scitune.demo import run_demo

    p = parser(
        "demo",
        "Run SciTune end to end on SciFig (synthetic figures) with tiny models: data -> "
        "tiny base models -> convert (scicap CTOM, scienceqa) -> align -> finetune -> evaluate.\n"
        "A rerun with the same --out skips finished steps.\n\n  scitune demo --out demo_out",
    )
    p.add_class_arguments(DemoConfig, "demo", as_group=False)
    args = p.parse_args(["--demo.out" if a == "--out" else "--demo.size" if a == "--size" else a for a in argv])
    cfg = instantiate(p, args).demo
    run_demo(cfg)
    print(f"report: {cfg.out}/report.md")
    return 0
