"""`scitune import magma`: a tiny checkpoint written in MAGMA's released layout (a DeepSpeed mp_rank_00_model_states.pt
whose ``module`` has ``lm.*`` GPT-J keys with MAGMA's adapter wrappers, ``image_prefix.{enc,proj,ln}.*`` and the
``word_embedding`` / ``transformer`` aliases) imports with equal logits; anything torch.load(weights_only=True)
cannot read is refused in one line."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from scitune.io import DataError

TINY_RN = {"layers": [1, 1, 1, 1], "output_dim": 32, "heads": 2, "image_size": 64, "width": 8}


def _open_clip_ok() -> bool:
    try:
        import open_clip  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        return False
    return True


needs_open_clip = pytest.mark.skipif(not _open_clip_ok(), reason="open_clip (scitune[limber]) does not import here")


# ---- a stand-in for MAGMA's module nesting (magma/adapters.py, magma/magma.py add_adapters), written for the test
class _Bottleneck(nn.Module):
    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.adapter = nn.Sequential(nn.Linear(dim, dim // factor), nn.ReLU(), nn.Linear(dim // factor, dim))
        for p in self.adapter.parameters():
            nn.init.normal_(p, std=0.2)


class _SeqMlp(_Bottleneck):  # Sequential(mlp, Adapter): keys mlp.0.* and mlp.1.adapter.*
    def forward(self, x):
        return self.adapter(x) + x


class _Parallel(_Bottleneck):  # ParallelAdapter / ParallelAdapterWrapper: keys <sub>.module.*, <sub>.adapter.*
    def __init__(self, module: nn.Module, dim: int, factor: int, scaled: bool):
        super().__init__(dim, factor)
        self.module = module
        if scaled:
            self.adapter_scale = nn.Parameter(torch.tensor([0.6]))

    def forward(self, hidden_states=None, *args, **kwargs):
        out = self.module(hidden_states, *args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        y = y + self.adapter(hidden_states) * getattr(self, "adapter_scale", 1)
        return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y


class _SeqAttn(_Bottleneck):  # AdapterWrapper(attn_block=...): keys attn.attn_block.*, attn.adapter.*
    def __init__(self, attn_block: nn.Module, dim: int, factor: int):
        super().__init__(dim, factor)
        self.attn_block = attn_block

    def forward(self, hidden_states=None, *args, **kwargs):
        out = self.attn_block(hidden_states, *args, **kwargs)
        return (self.adapter(out[0]) + out[0],) + tuple(out[1:])


def _magma_reference(vocab: int, layout: dict[str, str], factor: int):
    """A tiny GPT-J + CLIP ResNet + image prefix nested as MAGMA nests them, with non-zero adapters."""
    import transformers as tf

    from scitune.model.towers import build_tower

    torch.manual_seed(3)
    cfg = tf.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, vocab_size=vocab, n_positions=256)
    lm = tf.GPTJForCausalLM(cfg).eval()
    for block in lm.transformer.h:
        kind = layout.get("mlp")
        if kind == "normal":
            block.mlp = nn.Sequential(block.mlp, _SeqMlp(32, factor))
        elif kind:
            block.mlp = _Parallel(block.mlp, 32, factor, kind == "scaled_parallel")
        kind = layout.get("attention")
        if kind == "normal":
            block.attn = _SeqAttn(block.attn, 32, factor)
        elif kind:
            block.attn = _Parallel(block.attn, 32, factor, kind == "scaled_parallel")
    tower, _ = build_tower("open_clip", "RN50x16", None, True, TINY_RN)
    for p in tower.parameters():
        nn.init.normal_(p, std=0.05)
    prefix = nn.ModuleDict({"proj": nn.Linear(tower.config.hidden_size, 32), "ln": nn.LayerNorm(32)})
    nn.init.normal_(prefix["ln"].weight, 1.0, 0.1)
    return cfg, lm, tower, prefix


def _magma_names(key: str) -> str:
    """transformers' GPT-J names -> MAGMA's (finetuneanon's GPT-Neo with jax=True)."""
    key = re.sub(
        r"(attn\.(?:attn_block\.|module\.)?)(q_proj|k_proj|v_proj|out_proj|bias|masked_bias)", r"\1attention.\2", key
    )
    return key.replace("fc_in", "c_fc").replace("fc_out", "c_proj")


def write_magma_checkpoint(folder, lm, tower, prefix) -> None:
    sd = {f"lm.{_magma_names(k)}": v for k, v in lm.state_dict().items()}
    sd["word_embedding.weight"] = sd["lm.transformer.wte.weight"]  # MAGMA registers these twice
    sd.update({f"transformer.{k[len('lm.transformer.h.') :]}": v for k, v in sd.items() if ".h." in k})
    sd.update({f"image_prefix.enc.{k[len('net.') :]}": v for k, v in tower.state_dict().items()})
    sd.update({f"image_prefix.{k}": v for k, v in prefix.state_dict().items()})
    ds = {"module": sd, "buffer_names": [], "optimizer": None, "global_steps": 3, "dp_world_size": 1}
    ds.update({"mp_world_size": 1, "ds_version": "0.5.8", "lr_scheduler": {"last_batch_iteration": 3}})
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ds, folder / "mp_rank_00_model_states.pt")


LAYOUTS = {
    "MAGMA_v1": ({"mlp": "normal"}, 4, "magma-mlp"),
    "MAGMA_v2": ({"mlp": "normal", "attention": "normal"}, 8, "magma"),
    "scaled-parallel-mlp": ({"mlp": "scaled_parallel"}, 4, "scaled-parallel-mlp"),
    "parallel-both": ({"mlp": "parallel", "attention": "parallel"}, 4, "parallel"),
}


@needs_open_clip
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_magma_checkpoint_imports_with_equal_logits(layout, tmp_path):
    from PIL import Image

    from scitune.cli import main
    from scitune.interop.magma_import import IMAGE_TOKEN, import_magma
    from scitune.loader import load
    from scitune.model.builders import tiny_tokenizer

    adapters, factor, name = LAYOUTS[layout]
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "gptj")
    cfg, lm, tower, prefix = _magma_reference(len(tok) + 1, adapters, factor)  # + MAGMA's <|image|>
    cfg.save_pretrained(tmp_path / "gptj")  # the config only: the weights come from the checkpoint
    write_magma_checkpoint(tmp_path / "global_step3", lm, tower, prefix)

    model, proc = import_magma(tmp_path / "global_step3", str(tmp_path / "gptj"), encoder_args=TINY_RN)
    assert model.identity["adapter"] == {"name": name, "downsample_factor": factor}
    assert type(model.projector).__name__ == "LinearNormProjector" and proc.template_name == "plain"
    pix = proc.image_processor(images=[Image.new("RGB", (80, 60), "teal")], return_tensors="pt")["pixel_values"]
    text = torch.tensor([tok("Graph Plot of accuracy")["input_ids"]])
    image_id = proc.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_id == len(tok) == model.image_token_id
    n = model.num_image_tokens
    ids = torch.cat([torch.full((1, n), image_id), text], dim=1)
    with torch.no_grad():
        ours = model(ids, pixel_values=pix).logits
        grid = tower(pix).hidden_states[-1].flatten(2).transpose(1, 2)  # (1, h*w, C): MAGMA's "b d h w -> b (h w) d"
        prefix_emb = prefix["ln"](prefix["proj"](grid))
        theirs = lm(inputs_embeds=torch.cat([prefix_emb, lm.transformer.wte(text)], dim=1)).logits
    assert n == 4 and ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-5

    out = tmp_path / "ck"
    argv = ["import", "magma", str(tmp_path / "global_step3"), "--llm", str(tmp_path / "gptj"), "--out", str(out)]
    assert main([*argv, "--image_size", "64"]) == 0  # depth and width read from the weights
    back, _ = load(out)
    with torch.no_grad():
        assert torch.equal(back(ids, pixel_values=pix).logits, ours)


class NotWeights:
    """Any object a weights-only unpickler must refuse."""


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path, capsys):
    from scitune.cli import main

    f = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"lm.transformer.wte.weight": torch.zeros(2, 2)}, "args": NotWeights()}, f)
    with pytest.raises(DataError, match=r"refused: not readable with torch.load\(weights_only=True\)") as e:
        from scitune.interop.magma_import import read_magma_state

        read_magma_state(tmp_path)
    assert "\n" not in str(e.value)
    rc = main(["import", "magma", str(f), "--llm", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "weights_only=True" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "scitune.json").exists()


def test_other_layouts_are_refused(tmp_path):
    from scitune.interop.magma_import import read_magma_state, split_magma_state

    f = tmp_path / "x.pt"
    torch.save({"module": {"model.layers.0.weight": torch.zeros(1)}}, f)
    with pytest.raises(DataError, match="not MAGMA's layout"):
        read_magma_state(f)
    with pytest.raises(DataError, match="no such file"):
        read_magma_state(tmp_path / "missing")
    sd = {"lm.transformer.h.0.ln_2.weight": torch.ones(4), "lm.transformer.wte.weight": torch.zeros(3, 4)}
    with pytest.raises(DataError, match="outside MAGMA's GPT-J layout"):  # GPT-Neo's second LayerNorm: not GPT-J
        split_magma_state(sd, f)
