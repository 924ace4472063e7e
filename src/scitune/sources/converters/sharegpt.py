"""ShareGPT conversations -> canonical records (the reading is shared with `llava_json`, which also exports)."""

from __future__ import annotations

from scitune.sources.converters.base import CONVERTERS
from scitune.sources.converters.llava_json import ConversationConverter, to_sharegpt

__all__ = ["ShareGPTConverter", "to_sharegpt"]


@CONVERTERS.register("sharegpt")
class ShareGPTConverter(ConversationConverter):
    """``scitune convert sharegpt``: ShareGPT (or LLaVA JSON) conversations -> canonical records."""

    source = "sharegpt"
