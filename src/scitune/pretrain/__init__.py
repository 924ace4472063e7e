"""Micro pretraining for the embedded demo: a byte-level BPE tokenizer, a CLIP (contrastive) and a causal LM.

Each writes a Hugging Face folder that loads with ``from_pretrained`` like downloaded weights.
"""

from scitune.pretrain.clip import ClipPretrainConfig, pretrain_clip
from scitune.pretrain.lm import LmPretrainConfig, pretrain_lm
from scitune.pretrain.tokenizer import train_bpe_tokenizer

__all__ = ["ClipPretrainConfig", "LmPretrainConfig", "pretrain_clip", "pretrain_lm", "train_bpe_tokenizer"]
