"""Presets (YAML package data, registered by name) and config loading/dumping."""

from __future__ import annotations

from pathlib import Path

from scitune.registry import Registry

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: Registry[Path] = Registry("preset")
for _name in (
    "tiny/align",
    "tiny/finetune",
    "scitune-llama-7b/align",
    "scitune-llama-7b/finetune",
    "scitune-llama-13b/align",
    "scitune-llama-13b/finetune",
    "scitune-llama2-13b/align",
    "scitune-llama2-13b/finetune",
    "llava-v1-13b/align",
    "llava-v1-13b/finetune",
    "llava-v1.5-7b/align",
    "llava-v1.5-7b/finetune",
    "magma-gptj-6b/align",
    "limber-gptj-clip/align",
    "limber-gptj-beit/align",
    "limber-gptj-nfrn50/align",
    "limber-gptj-nfrn50-tuned/align",
):
    PRESETS.add(_name, PRESET_DIR / f"{_name}.yaml")


def resolve_config_path(value: str) -> str:
    """A ``--config`` value: an existing YAML file as is, else a preset name (``tiny/align``)."""
    if Path(value).is_file():
        return value
    name = value[:-5] if value.endswith(".yaml") else value
    return str(PRESETS.get(name))


def load_yaml(path: str | Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping")
    return data
