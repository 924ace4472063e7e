"""MAGMA's adapter variants: He et al.'s parallel and scaled-parallel adapters on attention and/or MLP blocks (zero
initialised = the frozen LM exactly; the hooked output is sub-block(x) + s * adapter(x)), a few training steps, and
the MAGMA_v1 preset."""

from __future__ import annotations

import pytest
import torch

from scitune.model.adapters import ADAPTERS, AdapterSet, ParallelAdapter

VARIANTS = [n for n in ADAPTERS.names() if "parallel" in n]


def tiny_lm(family: str):
    import transformers as tf

    torch.manual_seed(0)
    if family == "llama":
        cfg = tf.LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        return tf.LlamaForCausalLM(cfg).eval()
    return tf.GPTJForCausalLM(tf.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, vocab_size=64)).eval()


def test_variants_are_registered():
    assert set(VARIANTS) == {
        f"{k}{w}" for k in ("parallel", "scaled-parallel") for w in ("", "-mlp", "-attn")
    }  # fmt: skip
    assert (ADAPTERS.get("magma-mlp").location, ADAPTERS.get("magma-mlp").kind) == ("mlp", "sequential")


@pytest.mark.parametrize("family", ["llama", "gptj"])
@pytest.mark.parametrize("name", VARIANTS)
def test_zero_initialised_adapters_leave_the_frozen_lm_unchanged(family, name):
    lm = tiny_lm(family)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        before = lm(ids).logits
    adapters = AdapterSet(lm, name, downsample_factor=4)
    where = 2 if not name.endswith(("-mlp", "-attn")) else 1
    assert len(adapters.adapters) == 2 * where
    assert all(isinstance(a, ParallelAdapter) for a in adapters.adapters.values())
    assert all(hasattr(a, "scale") == name.startswith("scaled") for a in adapters.adapters.values())
    with torch.no_grad():
        assert torch.equal(lm(ids).logits, before)  # up-projection starts at zero: exactly the frozen LM
    lm.requires_grad_(False)
    for a in adapters.adapters.values():
        torch.nn.init.normal_(a.up.weight, std=0.5)
    out = lm(ids).logits
    assert not torch.allclose(out, before)
    out.sum().backward()
    assert all(p.grad is not None for p in adapters.parameters())
    assert all(p.grad is None for p in lm.parameters())
    if name.startswith("scaled"):  # s = 0 switches the adapters off again
        with torch.no_grad():
            for a in adapters.adapters.values():
                a.scale.zero_()
            assert torch.equal(lm(ids).logits, before)
    adapters.detach()
    with torch.no_grad():
        assert torch.equal(lm(ids).logits, before)


@pytest.mark.parametrize("family", ["llama", "gptj"])
@pytest.mark.parametrize("where", ["mlp", "attn"])
def test_parallel_adapter_reads_the_sub_blocks_input(family, where):
    """hooked output == sub-block(x) + s * up(relu(down(x))): the adapter reads the sub-block's input x (LLaMA passes
    it to attention by keyword, GPT-J positionally), not its output."""
    lm = tiny_lm(family)
    adapters = AdapterSet(lm, f"scaled-parallel-{where}")
    sub = getattr(adapters.layers[0], "mlp" if where == "mlp" else ("self_attn" if family == "llama" else "attn"))
    a = adapters.adapters[f"0_{where}"]
    seen: dict[str, torch.Tensor] = {}

    def first(_m, args, kwargs, out):  # runs before the adapter's hook
        seen["x"] = args[0] if args else kwargs["hidden_states"]
        seen["raw"] = out[0] if isinstance(out, tuple) else out

    def last(_m, _args, _kwargs, out):  # runs after it
        seen["final"] = out[0] if isinstance(out, tuple) else out

    with torch.no_grad():
        for p in a.parameters():
            torch.nn.init.normal_(p, std=0.3)
        a.scale.fill_(0.7)
        h1 = sub.register_forward_hook(first, with_kwargs=True, prepend=True)
        h2 = sub.register_forward_hook(last, with_kwargs=True)
        lm(torch.randint(0, 64, (1, 5)))
        h1.remove(), h2.remove()
        expected = seen["raw"] + 0.7 * a.up(torch.relu(a.down(seen["x"])))
    assert not torch.allclose(seen["final"], seen["raw"])
    assert torch.allclose(seen["final"], expected, atol=1e-6)


@pytest.mark.parametrize("name", ["parallel", "scaled-parallel-mlp"])
def test_parallel_adapters_train_a_few_steps(name, tiny_base, color_data, tmp_path, fresh_accelerate_state):
    from conftest import tiny_run_config
    from scitune.config.schema import AdapterConfig
    from scitune.loader import build, load
    from scitune.train.loop import train

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "run", projector="linear", max_steps=4)
    cfg.model.adapter = AdapterConfig(name=name, downsample_factor=4)
    before, _ = build(cfg.model)
    result = train(cfg)
    assert result.steps == 4 and result.losses[-1] < result.losses[0]
    assert result.parameter_counts["adapters"]["trainable"] > 0
    after, _ = load(result.final_checkpoint)
    assert after.identity["adapter"] == {"name": name, "downsample_factor": 4}
    sa, sb = before.state_dict(), after.state_dict()
    assert {k.split(".")[0] for k in sa if not torch.equal(sa[k], sb[k])} == {"projector", "adapters"}


def test_magma_v1_preset():
    from scitune.cli.common import parse_run, run_parser

    cfg, _, _ = parse_run(run_parser("train", ""), ["--config", "magma-v1/align"])
    m = cfg.model
    assert (m.adapter.name, m.adapter.downsample_factor) == ("magma-mlp", 4)  # MAGMA_v1: MLP adapters, factor 4
    assert (m.vision.name, m.vision.trainable, m.vision.select, m.projector.name) == (
        "clip-rn50x16",
        True,
        "patch",
        "linear-ln",
    )
    assert (cfg.optim.lr, cfg.optim.vision_lr, cfg.optim.max_grad_norm) == (8e-4, 2e-6, 1.0)
    assert (cfg.train.global_batch_size, cfg.train.max_steps, cfg.data.template) == (256, 150000, "plain")
