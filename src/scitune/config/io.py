"""Presets (YAML package data, registered by name) and config loading/dumping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scitune.registry import Registry

if TYPE_CHECKING:
    from scitune.config.schema import RunConfig

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: Registry[Path] = Registry("preset")
for _name in (
    "tiny/align",
    "tiny/finetune",
    "scitune-llama-7b/align",
    "scitune-llama-7b/align-no-im-start-end",
    "scitune-llama-7b/finetune",
    "scitune-llama-7b/finetune-qcm-lea",
    "scitune-llama-13b/align",
    "scitune-llama-13b/align-no-im-start-end",
    "scitune-llama-13b/finetune",
    "scitune-llama-13b/finetune-qcm-lea",
    "scitune-llama2-13b/align",
    "scitune-llama2-13b/align-no-im-start-end",
    "scitune-llama2-13b/finetune",
    "scitune-llama2-13b/finetune-qcm-lea",
    "llava-v1-13b/align",
    "llava-v1-13b/finetune",
    "llava-v1.5-7b/align",
    "llava-v1.5-7b/finetune",
    "magma-gptj-6b/align",
    "limber-gptj-clip/align",
    "limber-gptj-beit/align",
    "limber-gptj-nfrn50/align",
    "limber-gptj-nfrn50-tuned/align",
    "limber-gptj-nfrn50-random/align",
    "limber-gptj-beit-random/align",
    "limber-gptj-beit-ft/align",
    "limber-gptj-magma/align",
    "magma-v1/align",
    "sight-beyond-text-llama2-7b/align",
    "sight-beyond-text-llama2-7b/finetune-visual",
    "sight-beyond-text-llama2-7b/finetune-text-stripped",
    "sight-beyond-text-llama2-7b/finetune-text-alpaca",
    "sight-beyond-text-llama2-7b/finetune-text-orca",
    "sight-beyond-text-llama2-7b/finetune-group-conversation",
    "sight-beyond-text-llama2-7b/finetune-group-detail",
    "sight-beyond-text-llama2-7b/finetune-group-complex-reasoning",
    "sight-beyond-text-llama2-7b/finetune-group-uniform",
    "sight-beyond-text-llama2-7b-chat/align",
    "sight-beyond-text-llama2-7b-chat/finetune-visual",
    "sight-beyond-text-llama2-7b-chat/finetune-text-stripped",
    "sight-beyond-text-llama2-7b-chat/finetune-text-alpaca",
    "sight-beyond-text-llama2-7b-chat/finetune-text-orca",
    "sight-beyond-text-llama2-7b-chat/finetune-group-conversation",
    "sight-beyond-text-llama2-7b-chat/finetune-group-detail",
    "sight-beyond-text-llama2-7b-chat/finetune-group-complex-reasoning",
    "sight-beyond-text-llama2-7b-chat/finetune-group-uniform",
):
    PRESETS.add(_name, PRESET_DIR / f"{_name}.yaml")


def resolve_config_path(value: str) -> str:
    """A ``--config`` value: an existing YAML file as is (checked to parse), else a preset name (``tiny/align``)."""
    if Path(value).is_file():
        _check_yaml(Path(value))
        return value
    name = value[:-5] if value.endswith(".yaml") else value
    if value.endswith((".yaml", ".yml", ".json")) and name not in PRESETS.names():
        raise FileNotFoundError(2, "config file not found", value)
    return str(PRESETS.get(name))


def _check_yaml(path: Path) -> None:
    """A config file that does not parse is named with the parser's line and column, before anything else runs."""
    import yaml

    from scitune.io import DataError, read_text

    try:
        yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"{path}{where}: not valid YAML: {problem}") from None


def load_yaml(path: str | Path) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping")
    return data


def _from_dict(cls: type, data: dict, where: str) -> object:
    """A dataclass ``cls`` from a (nested) mapping; an unknown key is an error naming it."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value, f"{where}.{key}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def load_run_config(source: str) -> RunConfig:
    """A `RunConfig` from a preset name or a YAML file (the CLI adds ``--section.field`` overrides on top)."""
    from scitune.config.schema import RunConfig

    path = resolve_config_path(source)
    return _from_dict(RunConfig, load_yaml(path), str(source))
