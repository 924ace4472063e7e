"""GPU paths of the trainer: bf16 autocast, attention backends, QLoRA 4-bit, activation offload.

The device comes from ``SCITUNE_TEST_DEVICE`` (``cuda``, the default, or ``cpu``). With ``cuda`` and no CUDA device
every test here is skipped at collection, so the default suite pays nothing for them. ``SCITUNE_TEST_DEVICE=cpu``
runs the same tests on CPU with the tiny model (QLoRA is skipped there with its reason, and its refusal is checked);
``benchmarks/gpu_check.py --dry-run`` does that in CI. On CUDA the LLM is wider (hidden 256, 4 layers) and the answers
longer (~350 tokens a sample), so that activations, not weights, dominate the memory that offloading should save.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import make_color_records, tiny_run_config
from scitune.config.schema import LlmConfig, LoraConfig, ModelConfig, ProjectorConfig, VisionConfig
from scitune.train.loop import Trainer

DEVICE = os.environ.get("SCITUNE_TEST_DEVICE", "cuda")
if DEVICE not in ("cuda", "cpu"):
    raise ValueError(f"SCITUNE_TEST_DEVICE must be cuda or cpu, got {DEVICE!r}")
CUDA = DEVICE == "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        CUDA and not torch.cuda.is_available(),
        reason="SCITUNE_TEST_DEVICE=cuda (the default) and no CUDA device; SCITUNE_TEST_DEVICE=cpu runs these on CPU",
    ),
]


def _reset_accelerate() -> None:
    """accelerate keeps one process-wide state; each run here starts from a clean one (its precision differs)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module", autouse=True)
def on_device():
    """Pin the trainer (accelerate) to DEVICE, and torch to 1 CPU thread: the CI machine's cores are shared."""
    saved = {k: os.environ.get(k) for k in ("ACCELERATE_TORCH_DEVICE", "ACCELERATE_USE_CPU")}
    if not CUDA:  # on a machine with a GPU too, accelerate would otherwise pick it
        os.environ.update(ACCELERATE_TORCH_DEVICE="cpu", ACCELERATE_USE_CPU="true")
    _reset_accelerate()
    yield
    _reset_accelerate()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_base) -> dict[str, str]:
    """CPU: the tiny CLIP + LLaMA (hidden 32, 2 layers). CUDA: the same CLIP with a LLaMA of hidden 256, 4 layers."""
    if not CUDA:
        return tiny_base
    from scitune.model.builders import tiny_llm, tiny_tokenizer, tiny_vision

    out = tmp_path_factory.mktemp("gpu-base")
    tok = tiny_tokenizer()
    vision, proc = tiny_vision(0)
    llm = tiny_llm(len(tok), 0, hidden=256, layers=4, bos=tok.bos_token_id, eos=tok.eos_token_id)
    vision.save_pretrained(out / "vision")
    proc.save_pretrained(out / "vision")
    llm.save_pretrained(out / "llm")
    tok.save_pretrained(out / "llm")
    return {"vision": str(out / "vision"), "llm": str(out / "llm")}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """16 colour records; on CUDA each answer is its sentence 40 times (~350 tokens a sample)."""
    import json

    path = make_color_records(tmp_path_factory.mktemp("colors"))
    if CUDA:
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        for r in recs:
            r["conversations"][1]["value"] = " ".join([r["conversations"][1]["value"]] * 40)
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@dataclass
class Run:
    losses: list[float]
    device: str
    peak_bytes: int | None
    final: str
    probed: Any = None


class _MeasuredTrainer(Trainer):
    """The trainer, with the device memory peak of its training loop (weights and data already loaded) on CUDA."""

    peak_bytes: int | None = None

    def _loop(self, *args, **kwargs):
        cuda = self.acc.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        losses = super()._loop(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        return losses


def _train(out: Path, base: dict[str, str], records: Path, probe=None, **train_opts) -> Run:
    """A finetune run (16 samples, global batch 4 in micro-batches of 2: 4 steps) on DEVICE; what it left, with
    ``probe(trained model)`` in ``probed``."""
    _reset_accelerate()
    cfg = tiny_run_config(base, records, out, "finetune", data={"max_length": 1024}, **{"epochs": 1, **train_opts})
    trainer = _MeasuredTrainer(cfg)
    result = trainer.run()
    model = trainer.acc.unwrap_model(trainer.model)
    probed = probe(model) if probe else None
    run = Run(result.losses, trainer.acc.device.type, trainer.peak_bytes, result.final_checkpoint, probed)
    del trainer, model
    _reset_accelerate()
    return run


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, base, records) -> Run:
    """The plain run (fp32, no offload) that bf16 and offloading are compared with."""
    return _train(tmp_path_factory.mktemp("fp32"), base, records)


def test_runs_use_the_device_asked_for(fp32):
    assert fp32.device == DEVICE
    assert len(fp32.losses) == 4 and all(math.isfinite(x) for x in fp32.losses)


def test_bf16_training_is_finite_close_to_fp32_and_its_checkpoint_reloads(tmp_path, base, records, fp32):
    """Autocast rounds each matmul's inputs to bf16 (8 significant bits); the first loss, before any update, is a
    mean over many tokens and agrees with fp32 to well under 1 % (tests/unit/train/test_knobs.py measured 3e-5 on
    CPU). The weights stay fp32 and the checkpoint holds exactly the trained ones."""
    from scitune.loader import load_checkpoint

    def state(model):
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    bf16 = _train(tmp_path / "bf16", base, records, state, precision="bf16")
    assert bf16.device == DEVICE
    assert len(bf16.losses) == 4 and all(math.isfinite(x) for x in bf16.losses), bf16.losses
    assert abs(bf16.losses[0] - fp32.losses[0]) <= 1e-2 * fp32.losses[0], (bf16.losses, fp32.losses)
    assert bf16.losses != fp32.losses  # autocast really ran
    model, _ = load_checkpoint(bf16.final)
    reloaded = model.state_dict()
    assert reloaded.keys() == bf16.probed.keys()
    for k, v in reloaded.items():
        assert v.dtype == torch.float32 and torch.equal(v, bf16.probed[k]), k


def _batch(processor, records: Path, n: int = 4) -> dict[str, torch.Tensor]:
    """``n`` records collated with right padding (so the attention masks have zeros)."""
    from scitune.data.collate import collate
    from scitune.data.dataset import SupervisedDataset, validate_file

    samples, report = validate_file(records, processor, max_length=1024)
    assert report.ok, report.summary()
    data = SupervisedDataset(samples, processor.images)
    items = [data[i] for i in range(n)]
    items[1]["input_ids"], items[1]["labels"] = items[1]["input_ids"][:-5], items[1]["labels"][:-5]
    return collate(items, processor.pad_token_id)


def _logits(base: dict[str, str], records: Path, impl: str, dtype: str, like=None) -> tuple[torch.Tensor, dict]:
    """Logits of the model built with attention ``impl`` on DEVICE at the batch's real (unpadded) positions."""
    from scitune.loader import build

    cfg = ModelConfig(
        vision=VisionConfig(name="clip", path=base["vision"]),
        projector=ProjectorConfig("mlp2x-gelu"),
        llm=LlmConfig(path=base["llm"], dtype=dtype, attn_implementation=impl),
    )
    model, processor = build(cfg)
    assert model.llm.config._attn_implementation == impl  # no silent fallback to another backend
    if like is not None:  # the projector starts random: every backend gets the same weights
        model.load_state_dict(like)
    model.to(DEVICE).eval()
    batch = _batch(processor, records)
    keys = ("input_ids", "attention_mask", "pixel_values")
    with torch.no_grad():
        logits = model(**{k: batch[k].to(DEVICE) for k in keys}).logits
    return logits[batch["attention_mask"].to(DEVICE).bool()].float().cpu(), model.state_dict()


def _flash_attention_2() -> str | None:
    """Why flash_attention_2 cannot run here, or None."""
    from transformers.utils import is_flash_attn_2_available

    if not CUDA:
        return "flash_attention_2 needs CUDA"
    return None if is_flash_attn_2_available() else "flash_attention_2: the flash-attn package is not installed"


def test_sdpa_and_eager_attention_give_the_same_logits(base, records):
    """fp32 on either device: the two backends agree to rounding (padding positions are left out)."""
    sdpa, weights = _logits(base, records, "sdpa", "float32")
    eager, _ = _logits(base, records, "eager", "float32", like=weights)
    assert sdpa.shape == eager.shape and sdpa.shape[0] > 100
    torch.testing.assert_close(eager, sdpa, atol=1e-4, rtol=1e-4)


def test_flash_attention_2_agrees_with_sdpa_in_bf16(base, records):
    """FlashAttention-2 runs in bf16 only: both backends in bf16, compared at 5 % of the logits' largest magnitude
    (bf16 keeps 8 significant bits; a wrong mask or layout moves logits by their whole size)."""
    why = _flash_attention_2()
    if why:
        pytest.skip(why)
    sdpa, weights = _logits(base, records, "sdpa", "bfloat16")
    flash, _ = _logits(base, records, "flash_attention_2", "bfloat16", like=weights)
    assert flash.shape == sdpa.shape
    assert (flash - sdpa).abs().max() <= 5e-2 * sdpa.abs().max() + 1e-3


def _qlora_unavailable() -> str | None:
    if not CUDA:
        return "QLoRA 4-bit needs CUDA (bitsandbytes' NF4 kernels); SCITUNE_TEST_DEVICE=cpu"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA 4-bit needs bitsandbytes, which is not installed"
    return None


def test_qlora_4bit_trains_a_step(tmp_path, base, records):
    """--train.lora.quantize 4bit with LoRA r 8: the LLM's linear layers are NF4, one step trains the adapters."""
    why = _qlora_unavailable()
    if why:
        pytest.skip(why)

    def probe(model):
        import bitsandbytes as bnb  # peft's LoRA wrapper is also called Linear4bit, but is no bnb one

        linear4bit = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.llm.modules())
        lora_b = [p for n, p in model.llm.named_parameters() if "lora_B" in n]
        return linear4bit, len(lora_b), sum(bool(p.detach().abs().sum() > 0) for p in lora_b)

    lora = LoraConfig(r=8, alpha=16, quantize="4bit")
    run = _train(tmp_path / "qlora", base, records, probe, lora=lora, precision="bf16", max_steps=1)
    assert run.device == "cuda"
    assert len(run.losses) == 1 and math.isfinite(run.losses[0]), run.losses
    linear4bit, n_lora_b, moved = run.probed
    assert linear4bit >= 4 * 7, "the LLM's linear layers are not NF4 (bitsandbytes Linear4bit)"
    assert n_lora_b == linear4bit and moved == n_lora_b, "LoRA B starts at zero: one step moves every one"
    assert (Path(run.final) / "llm_lora").is_dir()


def test_qlora_without_cuda_is_refused_before_loading(tmp_path, base, records):
    """Where QLoRA cannot run, the trainer says why (bitsandbytes missing, or no CUDA) before loading anything."""
    if not _qlora_unavailable():
        pytest.skip("QLoRA can run here: test_qlora_4bit_trains_a_step covers it")
    with pytest.raises((ImportError, ValueError), match="bitsandbytes|CUDA"):
        _train(tmp_path / "refused", base, records, lora=LoraConfig(r=8, quantize="4bit"), max_steps=1)
    assert not (tmp_path / "refused" / "final").exists()


def test_activation_offload_gives_the_same_losses_and_on_cuda_less_memory(tmp_path, base, records, fp32):
    """--train.offload_activations: the saved tensors go to (pinned) host memory and come back bit for bit, so the
    losses are fp32's (up to CUDA's nondeterministic atomics in later steps); on CUDA the loop's peak drops."""
    offloaded = _train(tmp_path / "offload", base, records, offload_activations=True)
    assert offloaded.device == DEVICE
    assert offloaded.losses[0] == pytest.approx(fp32.losses[0], rel=1e-6)
    assert offloaded.losses == pytest.approx(fp32.losses, rel=1e-4)
    if CUDA:
        assert offloaded.peak_bytes < 0.9 * fp32.peak_bytes, (offloaded.peak_bytes, fp32.peak_bytes)
