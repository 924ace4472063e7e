"""Next-token choice with per-row settings: greedy rows take the argmax, sampled rows their own temperature, top-k,
top-p and (when seeded) their own random generator, so a seeded row draws the same tokens whatever shares its batch."""

from __future__ import annotations

import math

import torch


def warp(
    scores: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row temperature, top-k and top-p on logits (B, V), in transformers' order (temperature, top-k, top-p) with
    one setting per row.

    Temperature 0 keeps only the argmax (greedy inside a sampled batch); a row's top-k (0 = off) keeps its k highest
    scores (ties with the k-th included, as transformers' TopKLogitsWarper); tokens outside a row's top-p mass get
    -inf (the most likely token always stays).
    """
    greedy = temperature == 0
    dev = scores.device
    scores = scores / torch.where(greedy, torch.ones_like(temperature), temperature).to(dev, scores.dtype)[:, None]
    if top_k is not None and bool((top_k > 0).any()):
        k = top_k.to(dev).clamp(min=0, max=scores.shape[-1])
        kth = scores.topk(int(k.max()), dim=-1).values.gather(1, (k.clamp(min=1) - 1)[:, None])  # (B, 1)
        scores = scores.masked_fill((scores < kth) & (k > 0)[:, None], -math.inf)
    if bool((top_p < 1).any()):
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p.to(dev, cum.dtype))[:, None]
        remove[:, -1] = False  # always keep the most likely token
        scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), -math.inf)
    if bool(greedy.any()):
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)
        scores = scores.masked_fill(greedy.to(dev)[:, None] & ~keep, -math.inf)
    return scores


def choose(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    generators: list[torch.Generator | None],
    top_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next token of every row, (B,), from its logits (B, V).

    Rows with temperature 0 are greedy. A sampled row with a generator draws from it alone; the other sampled rows
    draw together from torch's global generator (so ``torch.manual_seed`` makes an unseeded run repeatable).
    ``top_k`` (B,) is each row's top-k (0 = off; None = off for all).
    """
    logits = logits.float()
    out = logits.argmax(-1)
    sampled = (temperature > 0).nonzero().flatten().tolist()
    if not sampled:
        return out
    idx = torch.tensor(sampled, device=logits.device)
    row_k = None if top_k is None else top_k[sampled]
    probs = warp(logits[idx], temperature[sampled], top_p[sampled], row_k).softmax(-1)  # (S, V)
    shared = [k for k, i in enumerate(sampled) if generators[i] is None]
    if shared:
        out[idx[shared]] = torch.multinomial(probs[shared], 1).flatten()
    for k, i in enumerate(sampled):
        if generators[i] is not None:
            out[i] = torch.multinomial(probs[k], 1, generator=generators[i])[0]
    return out
