"""`scitune train`: run one stage (align | finetune) from a preset or YAML with dotted overrides."""

from __future__ import annotations

from scitune.cli.common import parse_run, run_parser
from scitune.train.distributed import is_main_process

DESCRIPTION = """Train one stage.

  scitune train --config scitune-llama-7b/align --data.train scicap_CTOM.jsonl
  scitune train --config tiny/finetune --optim.lr 1e-3 --train.resume latest

Precedence: built-in defaults < --config (preset name or YAML) < --section.field flags.
The resolved config is written to <train.out_dir>/config.yaml. One run per folder: a folder holding a run is
continued with --train.resume latest or replaced with --overwrite. Multi-GPU: accelerate launch -m scitune train ..."""


def main(argv: list[str]) -> int:
    from scitune.train.loop import train

    p = run_parser("train", DESCRIPTION)
    p.add_argument(
        "--overwrite",
        type=bool,
        default=False,
        help="start over in a --train.out_dir that holds another run (removed once this run finishes; files "
        "scitune did not write are kept)",
    )
    cfg, text, own = parse_run(p, argv, own=("overwrite",))
    result = train(cfg, overwrite=own["overwrite"], config_text=text)
    if is_main_process():
        losses = f", loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}" if result.losses else ""
        skipped = f", {len(result.skipped)} record(s) skipped (skipped.jsonl)" if result.skipped else ""
        print(f"trained {cfg.train.stage}: {result.steps} steps{losses}{skipped}; checkpoint {result.final_checkpoint}")
    return 0
