"""Representation analysis of seed 003 (MAGMA / LiMBeR): 2-D maps of encoder (+ connector) embeddings coloured by
label with separability scores (`embed`), and Wu-Palmer similarity of generated to true class words (`wordnet`)."""

from __future__ import annotations

import importlib
from typing import Any

# name -> defining module; imported on first use so `wup` never pays for torch and `embed` never for nltk
_EXPORTS = {
    "EmbedOptions": "scitune.analysis.embed",
    "run_embed": "scitune.analysis.embed",
    "WupOptions": "scitune.analysis.wordnet",
    "run_wup": "scitune.analysis.wordnet",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scitune.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
