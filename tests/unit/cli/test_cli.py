"""CLI: the pinned subcommand set, --help for each, ls, config, print_config and overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from scitune.cli import COMMANDS, main

EXPECTED = {
    "demo",
    "checkpoint",
    "convert",
    "data",
    "train",
    "eval",
    "generate",
    "chat",
    "serve",
    "export",
    "import",
    "ls",
    "models",
    "config",
    "analyze",
}


def test_subcommand_set_is_pinned():
    assert set(COMMANDS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_help_for_every_subcommand(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: scitune" in out and len(out) > 200


def test_top_level_usage_and_module_entry():
    r = subprocess.run([sys.executable, "-m", "scitune", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for name in EXPECTED:
        assert f"  {name} " in r.stdout


def test_unknown_command_fails(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_train_help_shows_field_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--train.stage" in out and "train the connector only" in out
    assert "--model.vision.feature_layer" in out and "penultimate" in out


def test_print_config_applies_preset_then_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", "scitune-llama-7b/align", "--optim.lr", "1e-4", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optim"]["lr"] == 1e-4  # flag beats preset
    assert cfg["train"]["global_batch_size"] == 128  # preset beats default
    assert cfg["model"]["projector"]["name"] == "linear"


def test_ls_lists_registries(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for entry in ("mlp2x-gelu", "clip-vit-l-14", "scitune", "vicuna-v1", "tiny/align", "scienceqa", "scicap"):
        assert entry in out


def test_config_show_cp_validate(tmp_path, capsys):
    assert main(["config", "show", "tiny/align"]) == 0
    assert "stage: align" in capsys.readouterr().out
    dest = tmp_path / "mine.yaml"
    assert main(["config", "cp", "scitune-llama-13b/finetune", str(dest)]) == 0
    assert yaml.safe_load(dest.read_text())["train"]["epochs"] == 12
    assert main(["config", "validate", str(dest)]) == 0
    assert "valid" in capsys.readouterr().out


def test_cross_field_error_names_the_flag(capsys):
    code = main(["train", "--config", "tiny/align", "--train.global_batch_size", "5"])
    assert code == 2
    assert "--train.global_batch_size" in capsys.readouterr().err


def test_unknown_preset_lists_known_ones(capsys):
    assert main(["train", "--config", "no-such/preset"]) == 2
    assert "tiny/align" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from scitune.loader import save_checkpoint, tiny_vlm

    path = tmp_path_factory.mktemp("ck") / "final"
    save_checkpoint(*tiny_vlm(), path)
    return path


def test_chat_reads_turns_and_images_from_stdin(tiny_checkpoint, tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20), "blue").save(tmp_path / "fig.png")
    script = f"hello\n/image {tmp_path / 'fig.png'}\nwhat is shown?\n/image {tmp_path / 'nope.png'}\n/reset\n/quit\n"
    r = subprocess.run(
        [sys.executable, "-m", "scitune", "chat", "--checkpoint", str(tiny_checkpoint), "--gen.max_new_tokens", "4"],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("assistant>") == 2
    assert "(image attached" in r.stdout and "cannot open image" in r.stdout and "conversation cleared" in r.stdout


def test_generate_with_sampling_and_stop(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(tmp_path / "a.png")
    args = [
        "generate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--image",
        str(tmp_path / "a.png"),
        "--prompt",
        "hi",
        "--gen.max_new_tokens",
        "6",
        "--gen.temperature",
        "0.7",
        "--gen.top_p",
        "0.9",
        "--gen.stop",
        '["x"]',
    ]
    assert main(args) == 0
    assert "x" not in capsys.readouterr().out.strip()


def test_models_tiny_writes_what_the_tiny_presets_load(tmp_path, monkeypatch, capsys):
    from scitune.loader import load

    monkeypatch.chdir(tmp_path)
    assert main(["models", "tiny"]) == 0
    assert (tmp_path / "runs/tiny-base/llm/config.json").is_file()
    assert (tmp_path / "runs/tiny-base/vision/config.json").is_file()
    model, processor = load("tiny/align")  # the preset's relative paths resolve to them
    assert model.num_image_tokens > 0 and processor.image_token in processor.tokenizer.get_vocab()
    (tmp_path / "runs/tiny-base/notes.txt").write_text("mine")
    assert main(["models", "tiny"]) == 2  # a folder holding a user's file is refused
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "runs/tiny-base/notes.txt").read_text() == "mine"
