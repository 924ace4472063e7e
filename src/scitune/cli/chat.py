"""`scitune chat`: an interactive terminal chat; ``/image PATH`` attaches a figure, ``/reset``, ``/quit``."""

from __future__ import annotations

import sys

from scitune.cli.common import instantiate, parser
from scitune.config.schema import GenerationConfig

HELP = "commands: /image PATH (attach to the next message), /reset, /quit"


def main(argv: list[str]) -> int:
    from scitune.infer.generate import ChatSession, open_image
    from scitune.io import DataError
    from scitune.loader import load

    p = parser("chat", f"Chat with a checkpoint in the terminal.\n\n{HELP}")
    p.add_argument("--checkpoint", required=True, help="a scitune checkpoint folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--system", default=None, help="override the template's system message")
    p.add_class_arguments(GenerationConfig, "gen")
    args = p.parse_args(argv)
    model, processor = load(args.checkpoint, device=args.device)
    session = ChatSession(model, processor, instantiate(p, args).gen, args.system)
    print(HELP, flush=True)
    pending = None
    for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("you> "), None):
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            session.reset()
            print("(conversation cleared)", flush=True)
        elif line.startswith("/image "):
            try:
                pending = open_image(line.split(" ", 1)[1].strip())
                print("(image attached to your next message)", flush=True)
            except DataError as e:  # a bad image is this turn's problem, not the session's end
                print(f"(cannot open image: {e})", flush=True)
        else:
            print("assistant>", session.ask(line, pending), flush=True)
            pending = None
    return 0
