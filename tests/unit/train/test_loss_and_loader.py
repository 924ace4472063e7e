"""The label-only LM head gives the full-logits loss and gradients; background loading gives the same run."""

from __future__ import annotations

import pytest
import torch
import transformers

from scitune.config.schema import LoraConfig
from scitune.data.collate import collate, collate_packed
from scitune.data.dataset import SupervisedDataset, validate_file
from scitune.data.sampler import BatchPlan
from scitune.loader import tiny_vlm
from scitune.train.batches import StepSampler
from scitune.train.loss import batch_loss_sum, logits_mode, predicting_positions, token_loss_sum
from scitune.train.stages import prepare_stage

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def _items(processor, color_data, n=6):
    samples, report = validate_file(color_data, processor, max_length=512)
    assert report.ok
    data = SupervisedDataset(samples, processor.images)
    return [data[i] for i in range(n)]


def _inputs(batch):
    keys = ("input_ids", "attention_mask", "pixel_values", "position_ids")
    return {k: batch[k] for k in keys if batch.get(k) is not None}


def _loss_grads(model, batch, mode):
    model.zero_grad(set_to_none=True)
    if mode == "full":
        ce = token_loss_sum(model(**_inputs(batch)).logits, batch["labels"])
    else:
        ce = batch_loss_sum(model, _inputs(batch), batch["labels"], mode)
    ce.backward()
    return float(ce), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stage,lora,packed", [("align", 0, False), ("finetune", 0, False), ("finetune", 4, True)])
def test_label_only_logits_equal_full_logits(color_data, stage, lora, packed):
    model, processor = tiny_vlm()
    prepare_stage(model, stage, LoraConfig(r=lora, dropout=0.0))  # no dropout: the two passes must match
    items = _items(processor, color_data)
    # ragged labels: cut one answer short so rows have labels at different positions
    items[1]["labels"][-3:] = -100
    pad = processor.pad_token_id
    batch = collate_packed(items, pad, 3 * len(items[0]["input_ids"])) if packed else collate(items, pad)
    keep = predicting_positions(batch["labels"])
    assert 0 < int(keep.sum()) < keep.numel() // 2  # most positions are unlabelled: the point of the change
    mode_here = logits_mode(model.llm)
    assert mode_here == ("mask" if TRANSFORMERS_5 else "index")  # transformers >= 5: a bool mask per row
    full_loss, full_grads = _loss_grads(model, batch, "full")
    for mode in ("mask", "index") if mode_here == "mask" else ("index",):
        loss, grads = _loss_grads(model, batch, mode)
        assert abs(loss - full_loss) < 1e-4 * abs(full_loss)
        assert grads.keys() == full_grads.keys() and len(grads) >= 2
        for k in grads:
            assert torch.allclose(grads[k], full_grads[k], atol=1e-6, rtol=1e-4), (mode, k)


def test_a_batch_without_labels_gives_zero_loss_not_an_error(color_data):
    model, processor = tiny_vlm()
    prepare_stage(model, "finetune", LoraConfig())
    batch = collate(_items(processor, color_data, 2), processor.pad_token_id)
    batch["labels"][:] = -100
    ce = batch_loss_sum(model, _inputs(batch), batch["labels"], logits_mode(model.llm))
    ce.backward()
    assert float(ce) == 0.0


def test_step_sampler_resumes_where_the_full_order_is():
    plan = BatchPlan(10, 2, 2, world=1, seed=3)
    full = list(StepSampler(plan, 0, 7, 0))
    assert len(full) == 14 == len(StepSampler(plan, 0, 7, 0))
    assert list(StepSampler(plan, 4, 7, 0)) == full[8:]
    for step in range(7):  # the same micro-batches the plan gives for each step
        assert full[2 * step : 2 * step + 2] == plan.micro_batches(*divmod(step, plan.steps_per_epoch), 0)


def test_worker_processes_train_the_same_run(tmp_path, tiny_base, color_data):
    from conftest import tiny_run_config
    from scitune.train.loop import train

    inline = train(tiny_run_config(tiny_base, color_data, tmp_path / "inline", stage="finetune", epochs=2)).losses
    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "workers", stage="finetune", epochs=2,
                          data={"num_workers": 2})  # fmt: skip
    workers = train(cfg).losses
    assert len(inline) == len(workers) >= 4
    assert max(abs(a - b) for a, b in zip(inline, workers)) < 1e-6


def test_packed_rows_are_one_per_micro_batch_with_flash_attention_else_at_most_the_longest_sample(color_data):
    from conftest import tiny_run_config
    from scitune.train.batches import collate_batch, packed_row_length

    cfg = tiny_run_config({"vision": "v", "llm": "l"}, color_data, "out", data={"packing": True, "max_length": 512})
    assert packed_row_length(cfg) is None  # sdpa / eager
    cfg.model.llm.attn_implementation = "flash_attention_2"
    assert packed_row_length(cfg) == 512 * cfg.train.micro_batch_size
    model, processor = tiny_vlm()
    pad = processor.pad_token_id
    items = _items(processor, color_data, 4)
    items[1]["input_ids"], items[1]["labels"] = items[1]["input_ids"][:9], items[1]["labels"][:9]
    items[2]["input_ids"], items[2]["labels"] = items[2]["input_ids"][:8], items[2]["labels"][:8]
    n = sum(len(x["input_ids"]) for x in items)
    one = collate_batch(items, pad, True, packed_row_length(cfg))
    assert one["input_ids"].shape == (1, n)  # one row: FlashAttention's varlen path sees every sample boundary
    assert (one["position_ids"][0] == 0).sum() == 4
    longest = max(len(x["input_ids"]) for x in items)
    rows = collate_batch(items, pad, True, None)  # the two short samples share a row; no row is longer than before
    assert rows["input_ids"].shape == (3, longest)
    n_labels = [int(x["labels"].ne(-100).sum()) for x in items]
    want = sorted([n_labels[0], n_labels[3], n_labels[1] + n_labels[2]])
    assert sorted(rows["labels"].ne(-100).sum(1).tolist()) == want
