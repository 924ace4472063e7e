"""Deterministic batch plans: the same global batches for any number of processes, resumable mid-epoch."""

from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int, lengths: list[int] | None = None, megabatch: int = 0) -> list[int]:
    """A seeded permutation of ``range(n)``; with ``lengths``, sorted by length (longest first) within megabatches."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    if lengths is not None and megabatch > 1:
        chunks = [order[i : i + megabatch] for i in range(0, n, megabatch)]
        order = [j for c in chunks for j in sorted(c, key=lambda k: -lengths[k])]
    return order


class BatchPlan:
    """Splits each epoch into global batches of ``micro * accum * world`` samples.

    Global batch ``s`` of an epoch is the same whatever the process count; process ``rank`` takes micro-batch
    slices ``(k * world + rank)`` for ``k < accum``. A last incomplete global batch is filled by wrapping around
    to the start of the epoch's order, so every sample is seen and every step has the same size.
    """

    def __init__(
        self,
        n: int,
        micro: int,
        accum: int,
        world: int = 1,
        seed: int = 0,
        lengths: list[int] | None = None,
        group_by_length: bool = False,
    ):
        if n == 0:
            raise ValueError("no training samples")
        self.n, self.micro, self.accum, self.world, self.seed = n, micro, accum, world, seed
        self.lengths = lengths if group_by_length else None
        self.global_batch = micro * accum * world
        self._epoch_batches: tuple[int, list[list[int]]] | None = None  # the last epoch drawn (steps reuse it)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n // self.global_batch)

    def global_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_batches is not None and self._epoch_batches[0] == epoch:
            return self._epoch_batches[1]
        order = epoch_order(self.n, self.seed, epoch, self.lengths, self.global_batch * 8)
        need = self.steps_per_epoch * self.global_batch
        order = (order * (need // self.n + 1))[:need]
        batches = [order[i : i + self.global_batch] for i in range(0, need, self.global_batch)]
        self._epoch_batches = (epoch, batches)
        return batches

    def micro_batches(self, epoch: int, step_in_epoch: int, rank: int) -> list[list[int]]:
        """The ``accum`` micro-batches of process ``rank`` for one optimizer step."""
        gb = self.global_batches(epoch)[step_in_epoch]
        return [  # copies: callers may keep or change them
            gb[(k * self.world + rank) * self.micro : (k * self.world + rank + 1) * self.micro]
            for k in range(self.accum)
        ]
