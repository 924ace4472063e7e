"""`scitune ls`: list registry entries (vision encoders, projectors, LLMs, templates, converters, presets)."""

from __future__ import annotations

from scitune.cli.common import parser


def registries() -> dict:
    from scitune.config.io import PRESETS
    from scitune.data.mixture import TRANSFORMS
    from scitune.data.templates import CHAT_TEMPLATES
    from scitune.eval import BENCHMARKS
    from scitune.model import LLMS, PROJECTORS, VISION_ENCODERS
    from scitune.sources.converters import CONVERTERS

    return {
        "vision-encoders": VISION_ENCODERS,
        "projectors": PROJECTORS,
        "llms": LLMS,
        "templates": CHAT_TEMPLATES,
        "converters": CONVERTERS,
        "data-transforms": TRANSFORMS,
        "presets": PRESETS,
        "benchmarks": BENCHMARKS,
    }


def main(argv: list[str]) -> int:
    regs = registries()
    p = parser("ls", "List what is registered.\n\n  scitune ls            # everything\n  scitune ls presets")
    p.add_argument("kind", nargs="?", choices=sorted(regs), default=None, help="which registry")
    args = p.parse_args(argv)
    for kind in [args.kind] if args.kind else sorted(regs):
        print(f"{kind}:")
        for name in regs[kind].names():
            print(f"  {name}")
    return 0
