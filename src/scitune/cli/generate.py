"""`scitune generate`: answer one prompt (with images) from a checkpoint."""

from __future__ import annotations

from scitune.cli.common import instantiate, parser
from scitune.config.schema import GenerationConfig


def main(argv: list[str]) -> int:
    from scitune.infer.generate import Generator, Prompt, open_image
    from scitune.loader import load

    p = parser(
        "generate",
        "Generate a reply for one prompt.\n\n  scitune generate --checkpoint runs/x/final "
        "--image fig.png --prompt 'What type of figure is this?'",
    )
    p.add_argument("--checkpoint", required=True, help="a scitune checkpoint folder")
    p.add_argument("--prompt", required=True, help="the user message (an <image> placeholder is added per image)")
    p.add_argument("--image", nargs="*", default=[], help="image file(s), in order (--image a.png b.png)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_class_arguments(GenerationConfig, "gen")
    args = p.parse_args(argv)
    model, processor = load(args.checkpoint, device=args.device)
    gen_cfg = instantiate(p, args).gen
    images = [open_image(x) for x in args.image]
    prompt = Prompt.single(args.prompt, images, processor.image_token)
    print(Generator(model, processor).generate([prompt], gen_cfg)[0])
    return 0
