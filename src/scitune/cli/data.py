"""`scitune data validate`: check every record of a data file against a model's tokenizer and context."""

from __future__ import annotations

from pathlib import Path

from scitune.cli.common import parser


def main(argv: list[str]) -> int:
    from scitune.data.dataset import validate_file
    from scitune.data.templates import get_template
    from scitune.data.tokenize import ImageSlots
    from scitune.model.checkpoint import load_model

    p = parser("data", "Data tools.\n\n  scitune data validate --data train.jsonl --checkpoint runs/x/final")
    sub = p.add_subcommands(dest="action")
    v = parser("data validate", "Report every bad record (file, line, id, problem); exit 1 if any.")
    v.add_argument("--data", required=True, help="JSONL or LLaVA .json list file")
    v.add_argument("--checkpoint", required=True, help="checkpoint whose tokenizer/encoder define the sample")
    v.add_argument("--image_root", default=None, help="folder for relative image paths (default: data's folder)")
    v.add_argument("--template", default=None, help="chat template (default: the checkpoint's)")
    v.add_argument("--max_length", type=int, default=2048, help="context length")
    sub.add_subcommand("validate", v, help="validate a data file")
    args = p.parse_args(argv).validate
    model = load_model(args.checkpoint)
    slots = ImageSlots(model.identity.get("image_token", "<image>"), model.image_token_id, model.num_image_tokens)
    template = get_template(args.template or model.template)
    samples, report = validate_file(Path(args.data), model.tokenizer, template, slots, args.image_root, args.max_length)
    print(report.summary(limit=1000))
    return 0 if report.ok else 1
