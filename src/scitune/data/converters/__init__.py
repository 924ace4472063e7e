"""Converters from raw sources to canonical JSONL records; importing this package registers every converter."""

from scitune.data.converters import llava_json, scicap, scienceqa, sharegpt, vistext  # noqa: F401  (registration)
from scitune.data.converters.base import CONVERTERS
from scitune.data.converters.llava_json import (
    LlavaJsonConverter,
    export_conversations,
    export_file,
    import_conversations,
)
from scitune.data.converters.scicap import SciCapConverter, convert_scicap, load_scicap
from scitune.data.converters.scienceqa import (
    ScienceQAConverter,
    build_eval_prompt,
    build_prompt,
    convert_scienceqa,
    load_scienceqa,
)
from scitune.data.converters.sharegpt import ShareGPTConverter
from scitune.data.converters.vistext import VisTextConverter, convert_vistext, load_vistext

__all__ = [
    "CONVERTERS",
    "LlavaJsonConverter",
    "ShareGPTConverter",
    "VisTextConverter",
    "convert_vistext",
    "export_conversations",
    "export_file",
    "import_conversations",
    "load_vistext",
    "SciCapConverter",
    "ScienceQAConverter",
    "build_eval_prompt",
    "build_prompt",
    "convert_scicap",
    "convert_scienceqa",
    "load_scicap",
    "load_scienceqa",
]
