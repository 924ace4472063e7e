"""Tokenizers of the kinds real models ship, trained offline in a fraction of a second with `tokenizers`, and random
texts that stress them (spaces, added tokens, accents, combining marks, CJK, emoji, NFKC expansions)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The figure shows a graph plot of accuracy versus epochs for three models.",
    "What is shown in the image? Answer the question using a single word or phrase.",
    "The bus in the image is white and red. café naïve résumé 東京 タワー 😀",
    "Scatterplot of x and y with a linear fit; the correlation is 0.93 (p < 0.01).",
] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]
ATOMS = [
    "a",
    "the",
    "Figure",
    "graph",
    "x",
    "0.93",
    " ",
    " ",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\t",
    ".",
    ",",
    "?",
    "(",
    ")",
    "<",
    ">",
    "</s>",
    "<s>",
    "<unk>",
    "<pad>",
    "<im",
    "é",
    "e\u0301",
    "naïve",
    "東京",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧",
    "▁",
    "▁▁",
    "\u00a0",
    "ﬁ",
    "ﷺ",
    "㍻",
    "İ",
    "ß",
    "Σ",
    "\x00",
    "\x7f",
    "\u200b",
    "\ufeff",
    "Ａ",
    "###",
    "USER:",
    "ASSISTANT:",
    "{0}",
    "}",
]


def _wrap(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def _with(spec_changes: dict[str, Any], tok: Any) -> Any:
    """``tok`` with top-level parts of its JSON replaced, and only the special tokens left as added tokens (the byte
    tokens stay plain vocabulary, as in LLaMA's tokenizer.json)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    spec.update(spec_changes)
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] in SPECIALS]
    return Tokenizer.from_str(json.dumps(spec))


def byte_level(prefix_space: bool = False, nfkc: bool = False) -> Any:
    """GPT-2 / LLaMA-3 style: byte-level BPE (the tiny test tokenizer's kind)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    if nfkc:
        tok.normalizer = normalizers.NFKC()
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return _wrap(tok)


def _sentencepiece_bpe(split_words: bool) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    if split_words:  # SentencePiece's default: no merge crosses a word's start
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS + BYTES, show_progress=False)
    )
    return tok


def llama(split_words: bool = True) -> Any:
    """LLaMA-2 / Vicuna as transformers stores them: ``Prepend('▁')`` + ``Replace(' ', '▁')``, no pre-tokenizer,
    byte-fallback BPE (``split_words=False``: trained without word boundaries, so merges cross them)."""
    norm = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    return _wrap(_with({"normalizer": norm, "pre_tokenizer": None}, _sentencepiece_bpe(split_words)))


def metaspace(scheme: str = "first", split: bool = False) -> Any:
    """Mistral / newer LLaMA conversions: a Metaspace pre-tokenizer, byte-fallback BPE."""
    meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}
    return _wrap(_with({"pre_tokenizer": meta}, _sentencepiece_bpe(True)))


def wordpiece() -> Any:
    """BERT style: WordPiece with the BERT normalizer (lowercase, accents, CJK spacing) and pre-tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False)
    )
    return _wrap(tok)


def unigram() -> Any:
    """T5 / SentencePiece-unigram style, with an NFKC normalizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(
        CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    )
    return _wrap(tok)


KINDS: dict[str, Callable[[], Any]] = {
    "byte-level": byte_level,
    "byte-level-prefix-nfkc": lambda: byte_level(True, True),
    "llama": llama,
    "llama-merges-cross-words": lambda: llama(False),
    "metaspace-first": metaspace,
    "metaspace-always-split": lambda: metaspace("always", True),
    "wordpiece": wordpiece,
    "unigram": unigram,
}


def random_text(rng: random.Random, n: int | None = None) -> str:
    n = rng.randint(0, 40) if n is None else n
    text = "".join(rng.choice(ATOMS) if rng.random() < 0.7 else chr(rng.randint(32, 0x2FFF)) for _ in range(n))
    if rng.random() < 0.2:
        text = " " * rng.randint(1, 3) + text
    if rng.random() < 0.2:
        text += " " * rng.randint(1, 3)
    return text
