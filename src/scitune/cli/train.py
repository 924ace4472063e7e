"""`scitune train`: run one stage (align | finetune) from a preset or YAML with dotted overrides."""

from __future__ import annotations

from pathlib import Path

from scitune.cli.common import parse_run, run_parser
from scitune.io import write_text

DESCRIPTION = """Train one stage.

  scitune train --config scitune-llama-7b/align --data.train scicap_CTOM.jsonl
  scitune train --config tiny/finetune --optim.lr 1e-3 --train.resume latest

Precedence: built-in defaults < --config (preset name or YAML) < --section.field flags.
The resolved config is written to <train.out_dir>/config.yaml. Multi-GPU: accelerate launch -m scitune train ..."""


def main(argv: list[str]) -> int:
    from scitune.train.loop import train

    cfg, text = parse_run(run_parser("train", DESCRIPTION), argv)
    out = Path(cfg.train.out_dir)
    from scitune.train.distributed import is_main_process

    if is_main_process():
        write_text(out / "config.yaml", text)
    result = train(cfg)
    if is_main_process():
        first, last = result.losses[0], result.losses[-1]
        print(
            f"trained {cfg.train.stage}: {result.steps} steps, loss {first:.4f} -> {last:.4f}; "
            f"checkpoint {result.final_checkpoint}"
        )
    return 0
