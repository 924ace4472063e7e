"""The training data path: records validated into a dataset, and micro-batches in the order of the step plan
(resumable at any step), collated in the training process or in data-loader workers."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch.utils.data import Sampler

from scitune.config.schema import RunConfig
from scitune.data.collate import collate, collate_packed
from scitune.data.dataset import ImageCheck, SupervisedDataset
from scitune.data.mixture import (
    MIXTURE_DIR,
    Reader,
    build_mixture,
    mixture_sources,
    read_source_records,
    write_mixture,
)
from scitune.data.sampler import BatchPlan
from scitune.data.validated import lazy_dataset, validate_records
from scitune.io import DataError, write_jsonl
from scitune.train.stages import trains_vision

log = logging.getLogger(__name__)


class StepSampler(Sampler[list[int]]):
    """This process's micro-batches (index lists) for optimizer steps ``start .. total - 1``, in training order.

    Feeding it to a `DataLoader` as ``batch_sampler`` lets worker processes load and collate the next steps'
    batches while the current step trains; the order is `BatchPlan`'s, so resuming at ``start`` is exact.
    """

    def __init__(self, plan: BatchPlan, start: int, total: int, rank: int):
        self.plan, self.start, self.total, self.rank = plan, start, total, rank

    def __len__(self) -> int:
        return (self.total - self.start) * self.plan.accum

    def __iter__(self):
        for step in range(self.start, self.total):
            yield from self.plan.micro_batches(*divmod(step, self.plan.steps_per_epoch), self.rank)


def packed_row_length(cfg: RunConfig, per_sample_attention: bool = False) -> int | None:
    """Row length that ``--data.packing`` fills.

    With FlashAttention, or SDPA attending per sample (`scitune.model.varlen`, ``per_sample_attention``): the whole
    micro-batch in one row, with no padding at all (the attention does no work across samples). Otherwise (eager, or
    SDPA under torch.compile; None): rows as long as the micro-batch's longest sample, so shorter samples share a row
    but a row's attention, computed over the whole row under a block-diagonal mask, is never larger than the padded
    batch's.
    """
    if per_sample_attention or _flash(cfg):
        return cfg.data.max_length * cfg.train.micro_batch_size
    return None


def _flash(cfg: RunConfig) -> bool:
    return (cfg.model.llm.attn_implementation or "").startswith("flash_attention")


def packing_is_exact(cfg: RunConfig, per_sample_attention: bool) -> bool:
    """Whether packed rows keep samples apart under this run's attention: FlashAttention (varlen), SDPA attending per
    sample, or a transformers that masks packed rows (`scitune.model.varlen.masks_packed_rows`)."""
    from scitune.model.varlen import masks_packed_rows

    return per_sample_attention or _flash(cfg) or masks_packed_rows()


def collate_batch(items: list[dict[str, Any]], pad: int, packing: bool, row_length: int | None) -> dict[str, Any]:
    """One micro-batch: padded rows, or with ``packing`` samples packed into rows of ``row_length`` (None = the
    longest sample's length). Items whose image could not be read are left out and listed under ``bad``; a batch
    with none left is ``{"bad": [...], "empty": True}``."""
    bad = [x["bad"] for x in items if "bad" in x]
    items = [x for x in items if "bad" not in x]
    if not items:
        return {"bad": bad, "empty": True}
    if not packing:
        out = collate(items, pad)
    else:
        out = collate_packed(items, pad, row_length or max(len(x["input_ids"]) for x in items))
    return {**out, "bad": bad}


def load_data(cfg: RunConfig, model, processor, out_dir: Path, is_main: bool) -> SupervisedDataset:
    """Validate every record with the processor before training (streamed, with a progress bar; the verdict is
    cached, so a second launch on the same data and settings skips it); stop with the full report or skip bad ones
    if asked. The dataset reads each record from the file when training asks for it."""
    if not cfg.data.train:
        raise ValueError("no training data: set --data.train PATH")
    check = ImageCheck(cfg.data.max_image_pixels or None, cfg.data.allow_outside_root)
    data = cfg.data
    train, image_root = mixture_file(cfg, out_dir, is_main)
    validated = validate_records(
        train,
        processor,
        image_root,
        data.max_length,
        data.image_placement,
        check,
        is_main and cfg.train.progress,
    )
    report = validated.report
    if not report.ok:
        if not cfg.data.skip_bad_samples:
            log.error(report.summary(limit=50))
            first = report.problems[0]
            raise DataError(
                f"{first}; {len(report.problems)} of {report.total} records are bad (listed above): fix them, or "
                "pass --data.skip_bad_samples true to train on the rest"
            )
        log.warning(report.summary(limit=10))
        if is_main:
            write_jsonl(out_dir / "skipped.jsonl", (asdict(p) for p in report.problems))
    how = "from cache" if validated.from_cache else f"validated in {validated.seconds:.1f} s"
    log.info("data: %d usable of %d (%s) in %s", len(validated), report.total, how, train)
    store = None
    if cfg.data.feature_cache:
        from scitune.data.feature_store import FeatureStore
        from scitune.train.feature_cache import model_feature_identity

        if trains_vision(cfg.train.stage, cfg.model.vision.trainable):
            raise ValueError(
                "--data.feature_cache needs a frozen vision encoder; unset --model.vision.trainable "
                "(and use --train.stage align or finetune)"
            )
        store = FeatureStore(cfg.data.feature_cache, model_feature_identity(model, processor))
    if not len(validated):
        raise DataError(f"{train}: no usable records (all {report.total} are bad)")
    return lazy_dataset(validated, processor, image_root, data.max_length, data.image_placement, check, store)


def reader_for(fmt: str) -> Reader:
    """The reader of a mixture source's ``format``: ``records``, or a converter that has a ``read`` method."""
    from scitune.sources.converters import CONVERTERS

    if fmt == "records":
        return read_source_records
    readable = ["records", *(n for n in CONVERTERS.names() if callable(getattr(CONVERTERS.get(n), "read", None)))]
    if fmt not in readable:
        raise KeyError(f"unknown format {fmt!r} (known: {', '.join(readable)})")
    return CONVERTERS.get(fmt)().read


def mixture_file(cfg: RunConfig, out_dir: Path, is_main: bool) -> tuple[str, str | None]:
    """The records file to train on and its image root: ``--data.train`` itself, or a mixture's sources drawn into
    the run folder's ``mixture/`` (with the chosen ids)."""
    sources = mixture_sources(cfg.data.train)
    if sources is None:
        return str(cfg.data.train), cfg.data.image_root
    data = cfg.data
    mix = build_mixture(sources, data.sample_seed, reader_for, data.image_root, data.allow_outside_root)
    path = write_mixture(mix, out_dir / MIXTURE_DIR, data.sample_seed, is_main)
    for s in mix.summary:
        log.info("mixture source %s: %d of %d records (%d with images) from %s", s["name"], s["drawn"], s["read"],
                 s["with_image"], s["path"])  # fmt: skip
    return str(path), mix.image_root
