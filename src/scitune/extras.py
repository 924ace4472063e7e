"""Optional dependencies in one place: every feature that needs an extra package checks it through `require` before
any work starts, and a missing one ends with one line naming the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

EXTRA_OF = {
    "peft": "train",
    "tensorboard": "train",
    "wandb": "train",
    "bitsandbytes": "train",
    "pycocoevalcap": "eval",
    "openai": "eval",
    "fastapi": "serve",
    "uvicorn": "serve",
    "pytesseract": "ocr",
    "sklearn": "analysis",
    "umap": "analysis",
    "deepspeed": "deepspeed",
    "spacy": "data",
    "pyarrow": "data",
    "timm": "limber",
    "open_clip": "limber",
    "imagecorruptions": "corruptions",
}
"""Import name -> the scitune extra that installs it (``pip install 'scitune[EXTRA]'``; ``scitune[all]`` has all).
Modules outside every extra (``rouge``, ``sentence_transformers``) are named by their pip name instead."""
_PIP_NAME = {
    "sklearn": "scikit-learn",
    "umap": "umap-learn",
    "sentence_transformers": "sentence-transformers",
    "open_clip": "open_clip_torch",
}


class MissingExtra(ImportError):
    """A feature needs a package that is not installed; the message says which extra brings it."""


def missing(*modules: str) -> list[str]:
    """The ``modules`` that cannot be imported here (checked without importing them)."""

    def present(name: str) -> bool:
        if name in sys.modules:  # already imported (or blocked: None)
            return sys.modules[name] is not None
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [m for m in modules if not present(m)]


def require(feature: str, *modules: str) -> None:
    """Raise `MissingExtra` naming the extra(s) when ``feature`` needs ``modules`` and one is not installed.

    Call it where the feature is chosen (a flag parsed, a benchmark picked), before models load or data is read.
    """
    absent = missing(*modules)
    if not absent:
        return
    names = ", ".join(_PIP_NAME.get(m, m) for m in absent)
    extras = sorted({EXTRA_OF[m] for m in absent if m in EXTRA_OF})
    others = [_PIP_NAME.get(m, m) for m in absent if m not in EXTRA_OF]
    hint = " ".join([f"'scitune[{e}]'" for e in extras] + others)
    raise MissingExtra(f"{feature} needs {names}, which is not installed: pip install {hint}", name=absent[0])


def load(feature: str, module: str) -> ModuleType:
    """`require` one module, then import and return it."""
    require(feature, module)
    return importlib.import_module(module)
