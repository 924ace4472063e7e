"""LiMBeR's encoders built tiny from their configs (NF-ResNet50 through timm, CLIP RN50x16 through open_clip, BEiT
through transformers): each trains a LiMBeR linear map for a few steps; ``random_init`` changes the weights and
nothing else; the presets of LiMBeR's table point at them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from scitune.config.schema import VisionConfig
from scitune.extras import missing

TINY_NF = {"depths": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_chs": 16}
TINY_RN = {"layers": [1, 1, 1, 1], "output_dim": 32, "heads": 2, "image_size": 64, "width": 8}


def _importable(module: str) -> bool:
    if missing(module):
        return False
    try:
        __import__(module)
    except (ImportError, RuntimeError, OSError):  # e.g. a torchvision built for another torch
        return False
    return True


needs_timm = pytest.mark.skipif(not _importable("timm"), reason="timm (scitune[limber]) does not import here")
needs_open_clip = pytest.mark.skipif(
    not _importable("open_clip"), reason="open_clip (scitune[limber]) does not import here"
)
ENCODERS = [
    pytest.param("nf-resnet50", marks=needs_timm),
    pytest.param("clip-rn50x16", marks=needs_open_clip),
    "beit-large",
]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """Build-on-demand tiny encoder folders, saved as real weights would be laid out (name -> folder)."""
    root = tmp_path_factory.mktemp("limber-towers")
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name in made:
            return made[name]
        out = root / name
        torch.manual_seed(1)
        if name == "beit-large":
            import transformers as tf

            cfg = tf.BeitConfig(
                hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32
            )
            cfg.patch_size = 8
            beit = tf.BeitModel(cfg)
            for p in beit.parameters():  # "pretrained" weights: none left at their fresh values (zeros, ones)
                torch.nn.init.normal_(p, std=0.05)
            beit.save_pretrained(out)
            tf.BeitImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(out)
        else:
            from scitune.model.towers import build_tower

            if name == "nf-resnet50":
                tower, proc = build_tower("timm", "nf_resnet50", None, True, TINY_NF, image_size=64)
            else:
                tower, proc = build_tower("open_clip", "RN50x16", None, True, TINY_RN)
            for p in tower.parameters():  # "pretrained" weights: not the seed-0 fresh ones
                torch.nn.init.normal_(p, std=0.05)
            tower.save_pretrained(out)
            proc.save_pretrained(out)
        made[name] = str(out)
        return made[name]

    return get


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_builds_tiny_and_gives_a_feature_grid(name, towers):
    from scitune.model.vision import load_vision_encoder

    enc, proc = load_vision_encoder(name, towers(name), -1, "patch")
    pix = proc(images=[Image.new("RGB", (50, 40), "red")], return_tensors="pt")["pixel_values"]
    feats = enc(pix)
    grid = {"nf-resnet50": 4, "clip-rn50x16": 4, "beit-large": 16}[name]  # 64 px / 32 (CNNs), (32 / 8)^2 (BEiT)
    assert feats.shape == (1, enc.num_tokens, enc.hidden_size) == (1, grid, feats.shape[-1])
    if name != "beit-large":
        with pytest.raises(ValueError, match="--model.vision.feature_layer"):
            load_vision_encoder(name, towers(name), -2, "patch")


@pytest.mark.parametrize("name", ENCODERS)
def test_random_init_changes_the_weights_and_nothing_else(name, towers):
    from scitune.model.vision import load_vision_encoder

    path = towers(name)
    pre, pre_proc = load_vision_encoder(name, path, -1, "patch")
    rng = torch.get_rng_state()
    rnd, rnd_proc = load_vision_encoder(name, path, -1, "patch", random_init=True)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random stream is untouched
    again, _ = load_vision_encoder(name, path, -1, "patch", random_init=True)
    a, b = pre.state_dict(), rnd.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    weights = [k for k in a if a[k].is_floating_point() and a[k].ndim > 1]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)  # every weight matrix is fresh
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in b.items())  # seeded: rebuilt exactly
    assert pre_proc.to_dict() == rnd_proc.to_dict()
    assert (pre.num_tokens, pre.hidden_size, pre.image_size, pre.has_cls) == (
        rnd.num_tokens,
        rnd.hidden_size,
        rnd.image_size,
        rnd.has_cls,
    )
    cfg_a, cfg_b = pre.config, rnd.config
    if hasattr(cfg_a, "to_dict"):
        drop = ("_name_or_path", "transformers_version", "dtype", "torch_dtype")
        assert {k: v for k, v in cfg_a.to_dict().items() if k not in drop} == {
            k: v for k, v in cfg_b.to_dict().items() if k not in drop
        }
    else:
        assert vars(cfg_a) == vars(cfg_b)


@pytest.mark.parametrize("name", ENCODERS)
def test_limber_linear_map_trains_a_few_steps(name, towers, tiny_base, color_data, tmp_path, fresh_accelerate_state):
    """The align stage on a tiny LM: only the linear map changes; the run's checkpoint loads back the same."""
    from conftest import tiny_run_config
    from scitune.loader import build, load
    from scitune.train.loop import train

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "run", projector="linear", max_steps=4)
    cfg.model.vision = VisionConfig(name=name, path=towers(name), feature_layer=-1)
    before, _ = build(cfg.model)
    result = train(cfg)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses[-1] < result.losses[0]
    after, proc = load(result.final_checkpoint)
    sa, sb = before.state_dict(), after.state_dict()
    changed = {k.split(".")[0] for k in sa if not torch.equal(sa[k], sb[k])}
    assert changed == {"projector"}, changed


@needs_timm
def test_nfrn50_tuned_trains_the_encoder_and_saves_it(towers, tiny_base, color_data, tmp_path, fresh_accelerate_state):
    from conftest import tiny_run_config
    from scitune.loader import build, load
    from scitune.train.loop import train

    cfg = tiny_run_config(tiny_base, color_data, tmp_path / "run", projector="linear", max_steps=2)
    cfg.model.vision = VisionConfig(name="nf-resnet50", path=towers("nf-resnet50"), feature_layer=-1, trainable=True)
    before, _ = build(cfg.model)
    result = train(cfg)
    after, _ = load(result.final_checkpoint)
    sa, sb = before.state_dict(), after.state_dict()
    assert {k.split(".")[0] for k in sa if not torch.equal(sa[k], sb[k])} == {"projector", "vision"}
    saved = json.loads((tmp_path / "run" / "final" / "vision" / "config.json").read_text())
    assert saved["architecture"] == "nf_resnet50" and saved["model_args"] == TINY_NF


def test_random_init_survives_a_checkpoint(towers, tiny_base, tmp_path):
    """A model built with random_init records it, and its checkpoint rebuilds the same fresh encoder."""
    from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig
    from scitune.loader import build, load, save_checkpoint

    cfg = ModelConfig(
        vision=VisionConfig(name="beit-large", path=towers("beit-large"), feature_layer=-1, random_init=True),
        projector=ProjectorConfig("linear"),
        llm=LlmConfig(path=tiny_base["llm"]),
    )
    model, proc = build(cfg, "plain")
    assert model.identity["vision"]["random_init"] is True
    save_checkpoint(model, proc, tmp_path / "ck", llm_changed=False)
    back, _ = load(tmp_path / "ck")
    a, b = model.vision.state_dict(), back.vision.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


LIMBER_ROWS = {
    "limber-gptj-nfrn50/align": ("nf-resnet50", False, False, None),
    "limber-gptj-nfrn50-tuned/align": ("nf-resnet50", False, True, None),
    "limber-gptj-nfrn50-random/align": ("nf-resnet50", True, False, None),
    "limber-gptj-beit/align": ("beit-large", False, False, None),
    "limber-gptj-beit-random/align": ("beit-large", True, False, None),
    "limber-gptj-beit-ft/align": ("beit-large-ft22k", False, False, None),
    "limber-gptj-clip/align": ("clip-rn50x16", False, False, None),
    "limber-gptj-magma/align": ("clip-rn50x16", False, True, "magma-mlp"),
}


@pytest.mark.parametrize("preset", sorted(LIMBER_ROWS))
def test_presets_of_limbers_table(preset):
    from scitune.cli.common import parse_run, run_parser

    cfg, _, _ = parse_run(run_parser("train", ""), ["--config", preset])
    name, random_init, trainable, adapter = LIMBER_ROWS[preset]
    v = cfg.model.vision
    assert (v.name, v.random_init, v.trainable, cfg.model.adapter.name) == (name, random_init, trainable, adapter)
    assert cfg.train.stage == "align" and cfg.model.llm.path == "EleutherAI/gpt-j-6b" and v.feature_layer == -1
    if adapter is None:  # a LiMBeR linear map: one linear layer, nothing in the LM
        assert cfg.model.projector.name == "linear"
