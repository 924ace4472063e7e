"""The full-finetune stage: the vision encoder trains (at its own lr if asked), is saved, and reloads exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config
from scitune.cli.common import run_parser
from scitune.config.schema import (
    LoraConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from scitune.loader import build, load, tiny_vlm
from scitune.train.optim import build_optimizer, build_scheduler
from scitune.train.stages import STAGE_TRAINS, prepare_stage

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _cfg(tmp_path: Path, base: dict, data: Path, stage: str, vision_lr: float | None = None, **vision) -> RunConfig:
    return tiny_run_config(base, data, tmp_path / stage, stage, vision=vision, optim={"vision_lr": vision_lr},
                           max_steps=1)  # fmt: skip


def _run(cfg: RunConfig):
    """One optimizer step; returns (the trained model, its encoder weights before, the final checkpoint)."""
    from scitune.train.loop import Trainer

    trainer = Trainer(cfg)
    seen = {}
    build = trainer._build

    def spy(resume_dir):  # the encoder's weights right after the model is built, before any step
        model, counts = build(resume_dir)
        seen.update({k: v.detach().clone() for k, v in model.vision.state_dict().items()})
        return model, counts

    trainer._build = spy
    result = trainer.run()
    return trainer.acc.unwrap_model(trainer.model).eval(), seen, Path(result.final_checkpoint)


def _vision_changed(model, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in model.vision.state_dict().items())


@pytest.mark.parametrize("stage", ["align", "finetune"])
def test_encoder_stays_frozen_in_align_and_finetune(tmp_path, tiny_base, color_data, stage):
    model, before, ck = _run(_cfg(tmp_path, tiny_base, color_data, stage))
    assert not _vision_changed(model, before)
    meta = json.loads((ck / "scitune.json").read_text())
    assert meta["vision"]["saved"] is False and not (ck / "vision").exists()  # saved by reference to its path


def test_full_finetune_trains_saves_and_reloads_the_encoder(tmp_path, tiny_base, color_data):
    model, before, ck = _run(_cfg(tmp_path, tiny_base, color_data, "full-finetune"))
    assert _vision_changed(model, before)
    assert STAGE_TRAINS["full-finetune"] == ("vision", "projector", "llm")
    meta = json.loads((ck / "scitune.json").read_text())
    assert meta["vision"]["saved"] is True and meta["llm"]["saved"] == "full"
    assert (ck / "vision" / "model.safetensors").is_file()
    loaded, _ = load(ck)
    for k, v in model.vision.state_dict().items():
        assert torch.equal(v, loaded.vision.state_dict()[k]), k
    ids = torch.tensor([[0] + [model.image_token_id] * 16 + [5, 6, 7]])
    pix = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(ids, pixel_values=pix).logits, loaded(ids, pixel_values=pix).logits)


def test_vision_trainable_in_align_saves_the_encoder_too(tmp_path, tiny_base, color_data):
    model, before, ck = _run(_cfg(tmp_path, tiny_base, color_data, "align", trainable=True))
    assert _vision_changed(model, before)
    loaded, _ = load(ck)
    assert all(torch.equal(v, loaded.vision.state_dict()[k]) for k, v in model.vision.state_dict().items())


def test_vision_lr_gets_its_own_groups():
    m, _ = tiny_vlm()
    prepare_stage(m, "full-finetune", LoraConfig())
    plain = build_optimizer(m, OptimConfig(lr=1e-3))
    assert len(plain.param_groups) == 2 and all(g["lr"] == 1e-3 for g in plain.param_groups)
    opt = build_optimizer(m, OptimConfig(lr=1e-3, vision_lr=1e-5, warmup_ratio=0.5))
    vision_ids = {id(p) for p in m.vision.parameters()}
    by_lr = {}
    for g in opt.param_groups:
        by_lr.setdefault(g["lr"], set()).update(id(p) for p in g["params"])
    assert by_lr[1e-5] == vision_ids and not (by_lr[1e-3] & vision_ids)
    sched = build_scheduler(opt, 4, OptimConfig(lr=1e-3, vision_lr=1e-5, warmup_ratio=0.5))
    # transformers' warmup starts at lr 0 (step 0 of 2), then step 1 of 2 is half of each group's peak
    assert sched.get_last_lr() == [0.0] * len(opt.param_groups)
    opt.step()
    sched.step()
    lrs = sched.get_last_lr()
    assert lrs[0] == pytest.approx(5e-4) and lrs[-1] == pytest.approx(5e-6)
    with pytest.raises(ValueError, match="--optim.vision_lr"):
        OptimConfig(vision_lr=-1e-5)


def test_full_finetune_freezing_with_and_without_lora():
    m, _ = tiny_vlm()
    counts = prepare_stage(m, "full-finetune", LoraConfig())
    assert all(c["trainable"] == c["total"] > 0 for c in counts.values())
    m, _ = tiny_vlm()
    counts = prepare_stage(m, "full-finetune", LoraConfig(r=4, alpha=8, dropout=0.0))
    assert counts["vision"]["trainable"] == counts["vision"]["total"]
    assert 0 < counts["llm"]["trainable"] < counts["llm"]["total"]
    TrainConfig(stage="full-finetune", lora=LoraConfig(r=4))  # LoRA is allowed in both finetune stages
    with pytest.raises(ValueError, match="--train.stage"):
        prepare_stage(tiny_vlm().model, "pretrain", LoraConfig())


def test_feature_cache_refuses_a_trained_encoder(tmp_path, tiny_base, color_data):
    from scitune.train.batches import load_data

    cfg = _cfg(tmp_path, tiny_base, color_data, "full-finetune")
    cfg.data.feature_cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match="frozen vision encoder"):
        load_data(cfg, *build(cfg.model), tmp_path, True)


def test_help_lists_the_stage_and_options():
    text = run_parser("train", "").format_help()
    assert "full-finetune" in text and "--optim.vision_lr" in text and "--model.vision.anyres" in text
