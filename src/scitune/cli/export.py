"""`scitune export`: a checkpoint to a llava-hf folder (`hf`), or LoRA adapters merged into the LLM (`merge-lora`)."""

from __future__ import annotations

from scitune.cli.common import parser


def main(argv: list[str]) -> int:
    from scitune.interop.hf_llava import export_hf
    from scitune.loader import load, save_checkpoint

    p = parser(
        "export",
        "Export a checkpoint.\n\n  scitune export hf --checkpoint runs/x/final --out llava-hf/\n"
        "  scitune export merge-lora --checkpoint runs/lora/final --out runs/merged",
    )
    sub = p.add_subcommands(dest="action")
    for name, help_ in (
        (
            "hf",
            "a folder transformers 4.45+ and 5.x (and vLLM) load: Llava(Next)ForConditionalGeneration + AutoProcessor, "
            "with a generation config and a model card (README.md)",
        ),
        ("merge-lora", "merge LoRA adapters into the LLM weights (a full scitune checkpoint)"),
    ):
        sp = parser(f"export {name}", help_)
        sp.add_argument("--checkpoint", required=True, help="scitune checkpoint folder")
        sp.add_argument("--out", required=True, help="output folder (built beside it, then swapped in)")
        sp.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="write into a folder that holds other files (they are kept; only scitune's files are replaced)",
        )
        sub.add_subcommand(name, sp, help=help_)
    args = p.parse_args(argv)
    sa = args[args.action]
    from scitune.outputs import check_output_folder

    check_output_folder(sa.out, "hf-export" if args.action == "hf" else "checkpoint", sa.overwrite)  # before loading
    model, processor = load(sa.checkpoint)
    if args.action == "hf":
        export_hf(model, processor, sa.out, sa.overwrite, checkpoint=sa.checkpoint)
    else:
        if not hasattr(model.llm, "peft_config"):
            raise ValueError(f"{sa.checkpoint}: has no LoRA adapters to merge")
        model.llm = model.llm.merge_and_unload()
        save_checkpoint(model, processor, sa.out, llm_changed=True, vision_changed=False, overwrite=sa.overwrite)
    print(f"wrote {sa.out}")
    return 0
