"""Representation analysis of seed 003 (MAGMA / LiMBeR): 2-D maps of encoder (+ connector) embeddings coloured by
label with separability scores (`embed`), Wu-Palmer similarity of generated to true class words (`wordnet`), AwA2
property overlap of mistaken animals (`awa2`) and the NoCaps per-encoder table (`nocaps`)."""

from __future__ import annotations

import importlib
from typing import Any

# name -> defining module; imported on first use so `wup` never pays for torch and `embed` never for nltk
_EXPORTS = {
    "EmbedOptions": "scitune.analysis.embed",
    "run_embed": "scitune.analysis.embed",
    "WupOptions": "scitune.analysis.wordnet",
    "run_wup": "scitune.analysis.wordnet",
    "AwA2Options": "scitune.analysis.awa2",
    "run_awa2": "scitune.analysis.awa2",
    "NocapsOptions": "scitune.analysis.nocaps",
    "run_nocaps": "scitune.analysis.nocaps",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scitune.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
