"""Converters from raw sources to canonical JSONL records; importing this package registers every converter."""

from scitune.sources.converters import (  # noqa: F401  (registration)
    alpaca,
    caption_pairs,
    karpathy,
    llava_json,
    llava_pretrain,
    nocaps,
    openorca,
    scicap,
    scienceqa,
    sharegpt,
    vistext,
)
from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.caption_pairs import CaptionPairsConverter
from scitune.sources.converters.llava_json import (
    LlavaJsonConverter,
    export_conversations,
    export_file,
    import_conversations,
)
from scitune.sources.converters.scicap import SciCapConverter, convert_scicap, load_scicap
from scitune.sources.converters.scienceqa import (
    ScienceQAConverter,
    build_eval_prompt,
    build_prompt,
    convert_scienceqa,
    load_scienceqa,
)
from scitune.sources.converters.sharegpt import ShareGPTConverter
from scitune.sources.converters.vistext import VisTextConverter, convert_vistext, load_vistext

__all__ = [
    "CONVERTERS",
    "CaptionPairsConverter",
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
