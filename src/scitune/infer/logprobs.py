"""Log-probabilities of chosen tokens and their most likely alternatives (`TokenLogprob`), from logits."""

from __future__ import annotations

import torch

from scitune.infer.requests import TokenLogprob

CHUNK = 512
"""Rows turned into log-probabilities at once (a prompt's (P, V) float copy would otherwise be made whole)."""


def token_logprobs(logits: torch.Tensor, targets: list[int], ks: list[int]) -> list[TokenLogprob]:
    """For each row of ``logits`` (R, V): the log-probability of ``targets[r]`` and the ``ks[r]`` most likely tokens.

    Log-probabilities are of the raw distribution (log-softmax of the logits; no temperature, top-k or top-p), as
    vLLM's default and lm-evaluation-harness's loglikelihood expect.
    """
    out: list[TokenLogprob] = []
    for start in range(0, len(targets), CHUNK):
        lp = logits[start : start + CHUNK].float().log_softmax(-1)  # (R', V)
        tgt = torch.tensor(targets[start : start + CHUNK], device=lp.device)
        chosen = lp.gather(1, tgt[:, None])[:, 0].tolist()
        kmax = max(ks[start : start + CHUNK], default=0)
        top_v, top_i = lp.topk(min(kmax, lp.shape[-1]), dim=-1) if kmax else (None, None)
        tops_v = top_v.tolist() if top_v is not None else None
        tops_i = top_i.tolist() if top_i is not None else None
        for r, (t, c) in enumerate(zip(targets[start : start + CHUNK], chosen)):
            k = ks[start + r]
            top = list(zip(tops_i[r][:k], tops_v[r][:k])) if k and tops_i is not None else []
            out.append(TokenLogprob(int(t), float(c), top))
    return out
