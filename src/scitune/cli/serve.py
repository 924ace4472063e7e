"""`scitune serve`: an OpenAI-compatible API (and a chat page at /) for a checkpoint."""

from __future__ import annotations

import os
from dataclasses import fields

from scitune.cli.common import parser
from scitune.serve.config import ServeConfig


def main(argv: list[str]) -> int:
    p = parser(
        "serve",
        "Serve a checkpoint over HTTP: POST /v1/chat/completions (OpenAI schema, streaming), POST /v1/completions\n"
        "(plain prompts, echo + logprobs, as lm-evaluation-harness uses), GET /v1/models, GET /health, and a chat\n"
        "page at /. Binds 127.0.0.1 unless --host says otherwise. The model id is the run's name\n"
        "(runs/x/final -> x) unless --served_model_name says otherwise.\n\n"
        "  scitune serve --checkpoint runs/x/final --port 8000 --image_root figures/",
    )
    p.add_class_arguments(ServeConfig)
    ns = p.parse_args(argv)
    cfg = ServeConfig(**{f.name: ns[f.name] for f in fields(ServeConfig)})
    if not cfg.checkpoint:
        raise ValueError("--checkpoint is required (a scitune checkpoint folder)")
    if cfg.api_key is None and os.environ.get("SCITUNE_API_KEY"):
        cfg.api_key = os.environ["SCITUNE_API_KEY"]  # keeps the key out of the process list
    from scitune.extras import require

    require("scitune serve", "fastapi", "uvicorn")

    from scitune.loader import load
    from scitune.serve.app import create_app, make_server
    from scitune.threads import configure

    configure(cfg.threads)
    model, processor = load(cfg.checkpoint, device=cfg.device)
    try:
        make_server(create_app(model, processor, cfg), cfg).run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then re-raises it
        pass
    return 0
