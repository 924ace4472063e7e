"""`scitune models tiny`: write the tiny random base models that the ``tiny/*`` presets, the docs and the tests use."""

from __future__ import annotations

import json

from scitune.cli.common import parser

DESCRIPTION = """Base models made here, without a download.

  scitune models tiny                          # runs/tiny-base/{vision,llm}: what the tiny/* presets load
  scitune models tiny --out /tmp/tb --seed 1   # elsewhere; then --model.vision.path /tmp/tb/vision ...

tiny: a 2-layer CLIP vision tower (32x32 images, 16 patches) and a 2-layer LLaMA with a byte-level BPE tokenizer
trained here, saved as Hugging Face folders, so they load through from_pretrained like real weights."""


def main(argv: list[str]) -> int:
    p = parser("models", DESCRIPTION)
    sub = p.add_subcommands(dest="action")
    tp = parser("models tiny", "Write tiny random CLIP (vision/) and LLaMA (llm/) folders.")
    tp.add_argument("--out", default="runs/tiny-base", help="the folder to write (default: runs/tiny-base)")
    tp.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    tp.add_argument("--overwrite", type=bool, default=False, help="write into a folder that holds other files")
    sub.add_subcommand("tiny", tp, help="tiny random CLIP + LLaMA for smoke tests (runs/tiny-base)")
    ns = p.parse_args(argv)
    args = ns[ns.action]
    from scitune.model.builders import save_tiny_base
    from scitune.outputs import write_output_folder

    out = write_output_folder(args.out, "tiny-base", lambda tmp: save_tiny_base(tmp, args.seed), args.overwrite)
    print(json.dumps({"vision": str(out / "vision"), "llm": str(out / "llm")}))
    return 0
