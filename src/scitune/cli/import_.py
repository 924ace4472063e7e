"""`scitune import hf|llava|magma DIR --out CKPT`: a llava-hf folder, an original-LLaVA-layout checkpoint (LLaVA-v0/v1/1.5,
SciTune's release) or MAGMA's released DeepSpeed checkpoint, to a scitune checkpoint that can keep training."""

from __future__ import annotations

from scitune.cli.common import parser

_OVERWRITE = "write into a folder that holds other files (they are kept; only scitune's files are replaced)"


def main(argv: list[str]) -> int:
    from scitune.loader import save_checkpoint
    from scitune.outputs import check_output_folder

    p = parser(
        "import",
        "Import a model.\n\n  scitune import hf llava-hf/ --out runs/imported --template vicuna-v1\n"
        "  scitune import llava LLaVA-7b-v0/ --out runs/llava-v0 --vision_tower clip-vit-large-patch14/\n"
        "  scitune import magma mp_rank_00_model_states.pt --llm gpt-j-6b/ --tokenizer gpt2/ --out runs/magma\n"
        "  scitune train --config ... --model.init_from runs/imported",
    )
    sub = p.add_subcommands(dest="source")
    hf = parser("import hf", "a LlavaForConditionalGeneration folder (llava-hf layout)")
    hf.add_argument(
        "--template",
        default=None,
        help="chat template the model was trained with (default: the one a scitune export records, else the one the "
        "folder's chat template renders as; `scitune ls templates` lists them)",
    )
    llava = parser("import llava", "an original LLaVA-layout folder (LlavaLlamaForCausalLM + mm_projector weights)")
    llava.add_argument("--template", default=None, help="chat template (default: llava-v0 for v0, else vicuna-v1)")
    llava.add_argument("--vision_tower", default=None, help="local CLIP folder instead of the config's mm_vision_tower")
    magma = parser("import magma", "MAGMA's DeepSpeed mp_rank_00_model_states.pt (read with weights_only=True)")
    magma.add_argument("--llm", required=True, help="GPT-J config folder (transformers layout; weights not read)")
    magma.add_argument("--tokenizer", default=None, help="MAGMA's GPT-2 tokenizer folder (default: --llm's)")
    magma.add_argument("--encoder", default="clip-rn50x16", help="vision encoder key of MAGMA's image encoder")
    magma.add_argument("--image_size", type=int, default=None, help="encoder input side (default: its own, 384)")
    for sp, name, help_ in (
        (hf, "hf", "import a llava-hf folder"),
        (llava, "llava", "import an original LLaVA folder"),
        (magma, "magma", "import a MAGMA checkpoint (file or its folder)"),
    ):
        sp.add_argument("folder", help="the folder to import")
        sp.add_argument("--out", required=True, help="scitune checkpoint folder to write")
        sp.add_argument("--overwrite", type=bool, default=False, help=_OVERWRITE)
        sub.add_subcommand(name, sp, help=help_)
    ns = p.parse_args(argv)
    args = ns[ns.source]
    check_output_folder(args.out, "checkpoint", args.overwrite)  # before the model is read
    if ns.source == "hf":
        from scitune.interop.hf_llava import import_hf

        model, processor = import_hf(args.folder, args.template)
    elif ns.source == "magma":
        from scitune.interop.magma_import import import_magma

        model, processor = import_magma(args.folder, args.llm, args.tokenizer, args.encoder, image_size=args.image_size)
    else:
        from scitune.interop.llava_original import import_llava_original

        model, processor = import_llava_original(args.folder, args.template, args.vision_tower)
    save_checkpoint(model, processor, args.out, llm_changed=True, vision_changed=True, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return 0
