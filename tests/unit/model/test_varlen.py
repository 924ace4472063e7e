"""sdpa_varlen: a packed row gives each sample exactly what it gets alone (GQA, several rows, a sliding window), and
anything that is not a packed row is plain SDPA."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from scitune.model.varlen import VARLEN, packed_kwargs, varlen_attention


def _llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, attn_implementation="sdpa")  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _mistral(window: int):
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=window,
                        attn_implementation="sdpa")  # fmt: skip
    return MistralForCausalLM(cfg).eval()


def _rows(groups: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed rows (same length) of the samples in ``groups`` and their restarting position ids."""
    ids = torch.stack([torch.cat(g) for g in groups])
    pos = torch.stack([torch.cat([torch.arange(len(x)) for x in g]) for g in groups])
    return ids, pos


@pytest.mark.parametrize("build", [_llama, lambda: _mistral(4)], ids=["llama-gqa", "mistral-window-4"])
def test_packed_samples_get_what_they_get_alone(build):
    model = build()
    g = torch.Generator().manual_seed(1)
    samples = [torch.randint(0, 100, (n,), generator=g) for n in (5, 9, 3, 1, 8, 9)]
    alone = [model(input_ids=x[None], use_cache=False).logits[0] for x in samples]
    groups = [[samples[0], samples[2], samples[3]], [samples[1]], [samples[4], samples[3]], [samples[5]]]
    ids, pos = _rows(groups)
    with torch.no_grad(), varlen_attention(model) as on:
        assert on and model.config._attn_implementation == VARLEN
        packed = model(input_ids=ids, position_ids=pos, use_cache=False, **packed_kwargs(pos)).logits
        padded = torch.nn.utils.rnn.pad_sequence(samples, batch_first=True)  # not packed: plain SDPA with its mask
        mask = (torch.arange(padded.shape[1])[None] < torch.tensor([len(x) for x in samples])[:, None]).long()
        plain = model(input_ids=padded, attention_mask=mask, use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"
    order = [0, 2, 3, 1, 4, 3, 5]
    got = [t for r, grp in enumerate(groups) for t in torch.split(packed[r], [len(x) for x in grp])]
    for i, t in zip(order, got):
        torch.testing.assert_close(t, alone[i], atol=1e-5, rtol=1e-4)
    for i, x in enumerate(samples):
        torch.testing.assert_close(plain[i, : len(x)], alone[i], atol=1e-5, rtol=1e-4)


def test_a_window_shorter_than_the_sample_still_limits_attention():
    """The packed result matches the model alone only if the window is applied: check it is not a no-op here."""
    wide, narrow = _mistral(64), _mistral(3)
    x = torch.randint(0, 100, (10,), generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(wide(input_ids=x[None]).logits, narrow(input_ids=x[None]).logits)


def test_other_implementations_are_left_alone():
    model = _llama()
    model.config._attn_implementation = "eager"
    with varlen_attention(model) as on:
        assert not on and model.config._attn_implementation == "eager"
    with varlen_attention(_llama(), enabled=False) as on:
        assert not on
