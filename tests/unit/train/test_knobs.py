"""Speed knobs train the same model: gradient checkpointing, fused AdamW, bf16 autocast, torch.compile, length groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from scitune.data.dataset import SupervisedDataset
from scitune.train.loop import train


def run(
    tmp_path: Path, base: dict, data: Path, name: str, data_opts=None, optim_opts=None, **train_opts
) -> list[float]:
    """Losses of a short finetune run (16 samples, global batch 4, micro 2: 4 steps an epoch) on the tiny model."""
    cfg = tiny_run_config(base, data, tmp_path / name, "finetune", data=data_opts, optim=optim_opts,
                          **{"epochs": 1, **train_opts})  # fmt: skip
    return train(cfg).losses


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # runs with other precisions need a clean state


@pytest.fixture(scope="module")
def colors(tmp_path_factory) -> Path:
    """The `color_data` records (same generator and seed), built once for the module's shared reference run."""
    from conftest import make_color_records

    return make_color_records(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, tiny_base, colors) -> list[float]:
    """Losses of the plain run (fp32, no knob) that every knob is compared with."""
    from accelerate.state import AcceleratorState, GradientState

    losses = run(tmp_path_factory.mktemp("fp32"), tiny_base, colors, "plain")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return losses


def test_gradient_checkpointing_recomputes_and_gives_the_same_losses(tmp_path, tiny_base, colors, fp32, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaMLP

    calls = {"n": 0}
    forward = LlamaMLP.forward  # a layer's inner module: patching the layer itself would bypass HF's checkpointing

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaMLP, "forward", counted)
    ckpt = run(tmp_path, tiny_base, colors, "ckpt", gradient_checkpointing=True)
    assert calls["n"] == 2 * (4 * 2 * 2)  # (4 steps x 2 micro-batches x 2 layers), run again in the backward pass
    assert len(fp32) == len(ckpt) == 4
    assert max(abs(a - b) for a, b in zip(fp32, ckpt)) < 1e-5


def _cpu_fused_adamw() -> bool:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return "cpu" in _get_fused_kernels_supported_devices()
    except ImportError:  # older torch: fused AdamW was CUDA only
        return False


def test_fused_adamw_gives_the_same_losses(tmp_path, tiny_base, colors, fp32, monkeypatch):
    made = []

    class SpyAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("fused"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    if not _cpu_fused_adamw():  # this torch has no CPU kernel: the error says so before step one
        with pytest.raises(RuntimeError, match="fused"):
            run(tmp_path, tiny_base, colors, "fused", optim_opts={"fused": True})
        return
    fused = run(tmp_path, tiny_base, colors, "fused", optim_opts={"fused": True})
    assert made == [True]
    assert max(abs(a - b) for a, b in zip(fp32, fused)) < 1e-5


def test_bf16_autocast_stays_close_to_fp32(tmp_path, tiny_base, colors, fp32):
    """bf16 keeps 8 significant bits (unit roundoff 2**-9 ~ 2e-3); autocast rounds the inputs of each matmul to it.

    The first loss (before any update) is a mean over ~100 tokens of fp32 cross-entropies of slightly perturbed
    logits, so the rounding errors mostly cancel: it agrees to one bf16 unit, 2e-3 relative (measured: 3e-5). Later
    losses also carry updates taken from bf16 gradients at lr 1e-2 and drift (measured: 1.5e-3 after 3 updates);
    1e-2 still tells a working autocast from a broken one (a wrong dtype or loss scale moves the loss by O(1)). The
    losses must also differ from fp32, or the knob did nothing.
    """
    bf16 = run(tmp_path, tiny_base, colors, "bf16", precision="bf16")
    assert len(bf16) == len(fp32) == 4 and all(torch.isfinite(torch.tensor(bf16)))
    assert abs(bf16[0] - fp32[0]) <= 2e-3 * fp32[0]
    assert all(abs(a - b) <= 1e-2 * a for a, b in zip(fp32, bf16))
    assert fp32 != bf16


def _with_answers(color_data: Path, name: str, answer) -> Path:
    """The colour records with each assistant turn replaced by ``answer(index, old_answer)``."""
    recs = [json.loads(line) for line in color_data.read_text().splitlines()]
    for i, r in enumerate(recs):
        r["conversations"][1]["value"] = answer(i, r["conversations"][1]["value"])
    out = color_data.with_name(f"{name}.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


@pytest.mark.slow  # inductor generates and builds C++ for the forward and backward graphs: minutes on 2 busy cores
def test_torch_compile_gives_the_same_losses(tmp_path, tiny_base, color_data):
    from torch._dynamo.utils import counters

    data = _with_answers(color_data, "same", lambda i, old: "The image is red.")  # one length: one graph to compile
    plain = run(tmp_path, tiny_base, data, "plain")
    torch._dynamo.reset()
    counters.clear()
    compiled = run(tmp_path, tiny_base, data, "compiled", compile=True)
    assert counters["stats"]["unique_graphs"] >= 1  # the LLM really went through torch.compile
    assert len(compiled) == 4
    assert max(abs(a - b) for a, b in zip(plain, compiled)) < 1e-4, (plain, compiled)


def test_group_by_length_sees_every_sample_once_per_epoch_with_less_padding(
    tmp_path, tiny_base, color_data, monkeypatch
):
    data = _with_answers(color_data, "varied", lambda i, old: " ".join([old] * (1 + (i * 5) % 6)))  # 1-6 sentences
    seen: list[tuple[int, int]] = []
    getitem = SupervisedDataset.__getitem__

    def spy(self, i):
        seen.append((i, len(self.samples[i].encoded)))
        return getitem(self, i)

    monkeypatch.setattr(SupervisedDataset, "__getitem__", spy)
    runs = {}
    for grouped in (False, True):
        seen.clear()
        losses = run(tmp_path, tiny_base, data, f"g{grouped}", {"group_by_length": grouped}, epochs=2)
        assert len(losses) == 8
        runs[grouped] = list(seen)
    for order in runs.values():
        assert len(order) == 32  # 2 epochs x 16 samples, each loaded once per epoch
        for epoch in (order[:16], order[16:]):
            assert sorted(i for i, _ in epoch) == list(range(16))
    assert [i for i, _ in runs[True]] != [i for i, _ in runs[False]]

    def padding(order):  # pad tokens of the micro-batches (2 samples each, in loading order)
        pairs = [order[k : k + 2] for k in range(0, len(order), 2)]
        return sum(2 * max(n for _, n in p) - sum(n for _, n in p) for p in pairs)

    assert padding(runs[True]) < padding(runs[False])


def test_activation_offload_saves_through_torch_hooks_and_gives_the_same_losses(tmp_path, tiny_base, colors, fp32,
                                                                                  monkeypatch):  # fmt: skip
    calls = {"packed": 0}

    class Counting(torch.autograd.graph.save_on_cpu):
        def __init__(self, pin_memory=False, device_type="cuda"):
            super().__init__(pin_memory, device_type)
            pack = self.pack_hook

            def counted(t):
                calls["packed"] += 1
                return pack(t)

            self.pack_hook = counted

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", Counting)
    offloaded = run(tmp_path, tiny_base, colors, "offload", offload_activations=True)
    assert calls["packed"] > 100  # every tensor autograd saves goes through the hook
    assert max(abs(a - b) for a, b in zip(fp32, offloaded)) < 1e-6
