"""The engine's parts on their own: streamed text (stop strings split across tokens, EOS), per-row sampling, and the
KV-cache adapter's batch surgery (merge, select, trim) on transformers' cache and the older layouts."""

from __future__ import annotations

import math

import pytest
import torch

from scitune.infer.kv import KVCacheAdapter, pad_left
from scitune.infer.sampling import choose, warp
from scitune.infer.stream import TextStream


def _stream(pieces: list[str], stops=("###",), eos=(99,)):
    deltas: list[str] = []
    s = TextStream(lambda ids: "".join(pieces[i] for i in ids), set(eos), list(stops), deltas.append)
    return s, deltas


def _run(s: TextStream, n: int) -> int:
    """Push ids 0..n-1 one at a time; the count pushed when the text ended (or n)."""
    for t in range(1, n + 1):
        if s.push(list(range(t))):
            return t
        s.flush()
    return n


def test_stream_never_sends_a_stop_string_split_across_tokens():
    pieces = ["Hello", " wor", "ld", " #", "##", " tail"]
    s, deltas = _stream(pieces)
    assert _run(s, len(pieces)) == 5
    assert s.finish() == "Hello world" and "".join(deltas) == "Hello world"
    assert all("#" not in d for d in deltas) and len(deltas) > 1


def test_user_stops_eos_and_partial_utf8():
    s, _ = _stream(["a", "b", "STOP", "c"], stops=["ST"])
    assert _run(s, 4) == 3 and s.finish() == "ab"
    s, _ = _stream(["x", "x", "<eos>"])
    assert s.push([0, 1, 99]) and s.finish() == "xx"
    s, deltas = _stream(["caf", "\ufffd", "é"])  # a character split over tokens decodes to U+FFFD until complete
    s.push([0, 1])
    s.flush()
    assert "".join(deltas) == "caf"
    assert s.safe("tail ##") == "tail" and s.safe("a b  ") == "a b"


def test_no_deltas_without_a_callback():
    s = TextStream(lambda ids: "abc"[: len(ids)], set(), [])
    s.push([0, 1])
    s.flush()
    assert s.finish() == "ab" and s.streamed == ""


def test_warp_greedy_rows_keep_only_the_argmax_and_top_p_cuts_the_tail():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]] * 3)
    out = warp(scores.clone(), torch.tensor([0.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 0.5]))
    assert torch.isfinite(out[0]).tolist() == [False, True, False, False]  # greedy
    assert torch.allclose(out[1], scores[1] / 2)  # temperature only
    assert scores[2].softmax(-1)[1] > 0.5 and torch.isfinite(out[2]).tolist() == [False, True, False, False]
    assert not math.isinf(out[2][1])


def test_choose_greedy_seeded_and_shared_rows():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    temp, top_p = torch.tensor([0.0, 1.0, 1.0, 1.0]), torch.ones(4)

    def gens(seed):
        return [None, torch.Generator().manual_seed(seed), None, torch.Generator().manual_seed(seed + 1)]

    a = choose(logits, temp, top_p, gens(3))
    torch.manual_seed(123)  # the unseeded rows' draws must not move the seeded rows'
    b = choose(logits, temp, top_p, gens(3))
    assert a[0] == logits[0].argmax() and (a[1], a[3]) == (b[1], b[3])
    alone = choose(logits[1:2], temp[1:2], top_p[1:2], [torch.Generator().manual_seed(3)])
    assert alone[0] == a[1]
    assert torch.equal(choose(logits, torch.zeros(4), top_p, [None] * 4), logits.argmax(-1))


def _layers(batch: int, length: int, fill: float, n_layers: int = 2):
    return [
        (torch.full((batch, 2, length, 4), fill + i), torch.full((batch, 2, length, 4), -fill - i))
        for i in range(n_layers)
    ]


def _dynamic(batch: int, length: int, fill: float):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(_layers(batch, length, fill)):
        cache.update(k, v, i)
    return cache


class _KeyCacheLists:
    """transformers < 4.56's DynamicCache layout."""

    def __init__(self, layers):
        self.key_cache = [k for k, _ in layers]
        self.value_cache = [v for _, v in layers]
        self._seen_tokens = layers[0][0].shape[-2]


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("layout", ["dynamic", "key_cache", "tuples"])
def test_merge_select_and_trim_keep_each_rows_keys(layout):
    make = {
        "dynamic": _dynamic,
        "key_cache": lambda b, n, f: _KeyCacheLists(_layers(b, n, f)),
        "tuples": lambda b, n, f: tuple(_layers(b, n, f)),
    }[layout]
    kv = KVCacheAdapter(_tiny_llama())
    merged = kv.merge(make(2, 3, 1.0), make(1, 5, 7.0))
    (k0, v0), (k1, _) = kv.layers(merged)
    assert k0.shape == (3, 2, 5, 4) and k1.shape == (3, 2, 5, 4)
    assert (k0[:2, :, :2] == 0).all() and (k0[:2, :, 2:] == 1).all() and (k0[2] == 7).all() and (v0[2] == -7).all()
    assert (k1[:2, :, 2:] == 2).all()  # layer 1 of the first cache
    if layout == "key_cache":
        assert merged._seen_tokens == 5
    kept = kv.select(merged, torch.tensor([0, 1]))
    trimmed = kv.trim(kept, 2)
    assert [tuple(k.shape) for k, _ in kv.layers(trimmed)] == [(2, 2, 3, 4)] * 2
    assert (kv.layers(trimmed)[0][0] == 1).all()


def test_adapter_names_the_cache_argument_of_the_installed_transformers():
    import transformers

    llm = _tiny_llama()
    kv = KVCacheAdapter(llm)
    major = int(transformers.__version__.split(".")[0])
    assert kv.cache_arg == ("cache" if major >= 5 else "past_key_values")
    cache = kv.new()
    out = llm(input_ids=torch.tensor([[1, 2, 3]]), **kv.forward_kwargs(cache))
    assert out.logits.shape == (1, 1, 10)  # last position only
    assert kv.returned(out, cache) is cache and kv.layers(cache)[0][0].shape[-2] == 3
    assert kv.forward_kwargs(None)["use_cache"] is False


def test_pad_left():
    assert pad_left(torch.ones(2, 3), 2, dim=-1).tolist() == [[0, 0, 1, 1, 1]] * 2
    assert pad_left(torch.ones(1, 2, 3), 0) is not None and pad_left(torch.ones(1, 2, 3), 1).shape == (1, 3, 3)
