"""Converters from raw sources to canonical JSONL records; importing this package registers every converter."""

from scitune.data.converters import scicap, scienceqa  # noqa: F401  (registration side effect)
from scitune.data.converters.base import CONVERTERS
from scitune.data.converters.scicap import SciCapConverter, convert_scicap, load_scicap
from scitune.data.converters.scienceqa import (
    ScienceQAConverter,
    build_eval_prompt,
    build_prompt,
    convert_scienceqa,
    load_scienceqa,
)

__all__ = [
    "CONVERTERS",
    "SciCapConverter",
    "ScienceQAConverter",
    "build_eval_prompt",
    "build_prompt",
    "convert_scicap",
    "convert_scienceqa",
    "load_scicap",
    "load_scienceqa",
]
