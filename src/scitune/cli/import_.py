"""`scitune import hf DIR --out CKPT`: a llava-hf folder to a scitune checkpoint that can keep training."""

from __future__ import annotations

from scitune.cli.common import parser


def main(argv: list[str]) -> int:
    from scitune.model.checkpoint import save_model_files, write_checkpoint
    from scitune.model.hf_llava import import_hf

    p = parser(
        "import",
        "Import a model.\n\n  scitune import hf llava-hf/ --out runs/imported "
        "--template vicuna-v1\n  scitune train --config ... --model.init_from runs/imported",
    )
    sub = p.add_subcommands(dest="source")
    sp = parser("import hf", "a LlavaForConditionalGeneration folder (llava-hf layout)")
    sp.add_argument("folder", help="the llava-hf folder")
    sp.add_argument("--out", required=True, help="scitune checkpoint folder to write")
    sp.add_argument("--template", default="scitune", help="chat template the model was trained with")
    sp.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (they are kept; only scitune's files are replaced)",
    )
    sub.add_subcommand("hf", sp, help="import a llava-hf folder")
    args = p.parse_args(argv).hf
    from scitune.outputs import check_output_folder

    check_output_folder(args.out, "checkpoint", args.overwrite)  # before the model is read
    model = import_hf(args.folder, args.template)
    write_checkpoint(
        args.out, lambda d: save_model_files(model, d, llm_changed=True, vision_changed=True), overwrite=args.overwrite
    )
    print(f"wrote {args.out}")
    return 0
