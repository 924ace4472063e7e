"""Byte-level BPE tokenizer trained on a text corpus, with the chat special tokens and a chat template."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN

CHAT_SPECIALS = ("<s>", "</s>", "<unk>", "<pad>", DEFAULT_IMAGE_TOKEN)
"""Special tokens, ids 0-4 in this order (BOS, EOS, UNK, PAD, image placeholder)."""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""A minimal Jinja chat template, so the ``chat-template`` template works with the tokenizer too."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1536) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``.

    Args:
        texts: the training corpus (any iterable of strings).
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included.

    Returns:
        A ``PreTrainedTokenizerFast`` with BOS/EOS/UNK/PAD, ``<image>`` as an additional special token and
        `CHAT_TEMPLATE`, adding no special tokens itself (scitune's chat templates place BOS/EOS);
        ``save_pretrained`` writes it as a folder ``AutoTokenizer`` reads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.add_special_tokens({"additional_special_tokens": [DEFAULT_IMAGE_TOKEN]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def with_eos(tokenizer: Any) -> Any:
    """A copy of a tokenizer from `train_bpe_tokenizer` that appends ``</s>`` to each text (for a CLIP text tower)."""
    import copy

    from tokenizers import processors

    out = copy.deepcopy(tokenizer)
    eos = out.eos_token_id
    out.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    return out
