"""The seed-001 (Sight Beyond Text) presets parse, draw their mixtures from files in the released layouts (LLaVA's
CC3M-595K chat.json and LLaVA-Instruct files over COCO images, Stanford Alpaca JSON, the OpenOrca parquet), and train
a step on the tiny models with the preset's own template (LLaMA-2-chat: the tokenizer's chat template)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scitune.cli.common import parse_run, run_parser
from scitune.config.io import PRESETS
from scitune.data.mixture import mixture_sources

RECIPES = [n for n in PRESETS.names() if n.startswith("sight-beyond-text-")]
TRAINED = [  # one step each: every data shape of the recipes, and both templates
    "sight-beyond-text-llama2-7b/align",
    "sight-beyond-text-llama2-7b/finetune-visual",
    "sight-beyond-text-llama2-7b/finetune-text-stripped",
    "sight-beyond-text-llama2-7b/finetune-text-alpaca",
    "sight-beyond-text-llama2-7b-chat/finetune-text-orca",
    "sight-beyond-text-llama2-7b-chat/finetune-group-detail",
]
LLAMA2_CHAT = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n<</SYS>>\n\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }} </s>{% endif %}"
    "{% endfor %}"
)


def _turns(*texts: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A folder laid out as the presets expect (``data/...``), each file in its released layout."""
    from PIL import Image

    root = tmp_path_factory.mktemp("released")
    coco, cc3m, llava = root / "data/coco/train2017", root / "data/llava/cc3m_595k_images", root / "data/llava"
    for folder in (coco, cc3m, root / "data/alpaca", root / "data/openorca"):
        folder.mkdir(parents=True)
    groups = {"conversation": [], "detail": [], "complex_reasoning": []}
    for i in range(4):
        coco_id = f"{i + 1:012d}"
        Image.new("RGB", (24, 24), (40 * i, 90, 200)).save(coco / f"{coco_id}.jpg")
        cc_id = f"GCC_train_{i:09d}"
        Image.new("RGB", (24, 24), (200, 40 * i, 90)).save(cc3m / f"{cc_id}.jpg")
        groups["conversation"].append({"id": coco_id, "image": f"{coco_id}.jpg", "conversations": _turns(
            "What is on the table?\n<image>", "A cake.", "What colour is it?", "White.")})  # fmt: skip
        groups["detail"].append({"id": coco_id, "image": f"{coco_id}.jpg", "conversations": _turns(
            "<image>\nDescribe the following image in detail.", "A kitchen with a cake on the table.")})  # fmt: skip
        groups["complex_reasoning"].append({"id": coco_id, "image": f"{coco_id}.jpg", "conversations": _turns(
            "<image>\nWhy might this cake be here?", "It may be a birthday.")})  # fmt: skip
    sizes = {"conversation": 58, "detail": 23, "complex_reasoning": 77}
    for group, records in groups.items():
        (llava / f"{group}_{sizes[group]}k.json").write_text(json.dumps(records, indent=2))
    merged = [r for records in groups.values() for r in records]
    (llava / "llava_instruct_158k.json").write_text(json.dumps(merged))
    (llava / "llava_instruct_80k.json").write_text(json.dumps(merged[::2]))
    chat = [{"id": f"GCC_train_{i:09d}", "image": f"GCC_train_{i:09d}.jpg", "conversations": _turns(
        "Provide a brief description of the given image.\n<image>", "a red square .")} for i in range(4)]  # fmt: skip
    (llava / "chat.json").write_text(json.dumps(chat))
    alpaca = [{"instruction": f"Count to {i}.", "input": "", "output": " ".join(map(str, range(i)))} for i in (2, 3)]
    alpaca += [{"instruction": "Classify.", "input": "apple", "output": "fruit"}]
    (root / "data/alpaca/alpaca_data.json").write_text(json.dumps(alpaca, indent=4))
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    orca = [{"id": f"flan.{i}", "system_prompt": "You are an AI assistant." if i % 2 else "",
             "question": f"What is {i} + 1?", "response": f"{i + 1}."} for i in range(4)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(orca), root / "data/openorca/1M-GPT4-Augmented.parquet")
    return root


@pytest.fixture(scope="module")
def chat_llm(tiny_base, tmp_path_factory) -> str:
    """The tiny LLaMA with a LLaMA-2-chat style chat template."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-chat") / "llm"
    shutil.copytree(tiny_base["llm"], folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = LLAMA2_CHAT
    tok.save_pretrained(folder)
    return str(folder)


def tiny_recipe(name: str, base: dict, chat_llm: str, out: Path):
    """The preset with the tiny models, fp32, one step of batch 2; its mixture counts cut to the tiny files."""
    llm = chat_llm if "-chat/" in name else base["llm"]
    argv = ["--config", name, "--model.vision.name", "clip", "--model.vision.path", base["vision"],
            "--model.llm.path", llm, "--model.llm.dtype", "float32", "--model.init_from", "null",
            "--train.precision", "fp32", "--train.max_steps", "1", "--train.global_batch_size", "2",
            "--train.micro_batch_size", "1", "--train.gradient_checkpointing", "false", "--train.progress", "false",
            "--data.num_workers", "0", "--data.max_length", "512", "--train.out_dir", str(out)]  # fmt: skip
    cfg, _, _ = parse_run(run_parser("train", ""), argv)
    for s in mixture_sources(cfg.data.train) or []:
        if s.count:
            s.count = 5 if s.upsample else 2
    return cfg


def test_every_recipe_is_registered_for_both_bases():
    runs = {n.split("/", 1)[1] for n in RECIPES}
    assert len(RECIPES) == 2 * len(runs) == 18
    assert {"align", "finetune-visual", "finetune-text-stripped", "finetune-text-alpaca", "finetune-text-orca",
            "finetune-group-conversation", "finetune-group-detail", "finetune-group-complex-reasoning",
            "finetune-group-uniform"} == runs  # fmt: skip


def check_paper_settings(name: str) -> None:
    """The preset as written: base, template, stage, and the seed-001 sample sizes."""
    cfg, _, _ = parse_run(run_parser("train", ""), ["--config", name])
    chat = "-chat/" in name
    assert cfg.data.template == ("chat-template" if chat else "vicuna-v1")
    if name.endswith("/align"):
        assert cfg.model.llm.path == f"meta-llama/Llama-2-7b{'-chat' if chat else ''}-hf"
        assert cfg.train.stage == "align" and cfg.data.train == "data/llava/chat.json"
        return
    (src,) = mixture_sources(cfg.data.train)
    run = name.split("/")[1]
    want = 20000 if "group" in run else 80000 if "text" in run else None
    assert src.count == want and cfg.model.init_from == f"runs/{name.split('/')[0]}-align/final"
    assert ("strip-images" in src.transforms) == run.endswith("text-stripped")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_mixture_draws_from_the_released_layouts(name, released, tiny_base, chat_llm, monkeypatch, tmp_path):
    from scitune.data.mixture import build_mixture
    from scitune.train.batches import mixture_file, reader_for

    check_paper_settings(name)
    monkeypatch.chdir(released)
    cfg = tiny_recipe(name, tiny_base, chat_llm, tmp_path / "run")
    sources = mixture_sources(cfg.data.train)
    if sources is None:
        assert Path(cfg.data.train).is_file()
        return
    mix = build_mixture(sources, cfg.data.sample_seed, reader_for, cfg.data.image_root)
    text_only = "/finetune-text" in name
    assert all(bool(r.get("image")) != text_only for r in mix.records)
    assert all("<image>" not in t["value"] for r in mix.records for t in r["conversations"]) == text_only
    if "detail" in name:
        assert all(len(r["conversations"]) == 2 and "in detail" in r["conversations"][0]["value"] for r in mix.records)
    path, _ = mixture_file(cfg, tmp_path / "run", is_main=True)
    ids = json.loads((tmp_path / "run" / "mixture" / "ids.json").read_text())
    assert sum(map(len, ids.values())) == len(mix.records) == len(Path(path).read_text().splitlines())


@pytest.mark.parametrize("name", TRAINED)
def test_recipe_trains_a_step_on_the_tiny_models(name, released, tiny_base, chat_llm, monkeypatch, tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    from scitune.train.loop import train

    monkeypatch.chdir(released)
    cfg = tiny_recipe(name, tiny_base, chat_llm, tmp_path / "run")
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        result = train(cfg)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert result.steps == 1 and result.losses and all(x == x and x > 0 for x in result.losses)
    if not name.endswith("/align"):
        assert (tmp_path / "run" / "mixture" / "ids.json").is_file()
