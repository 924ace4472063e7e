"""The run's resolved config as the flat hyperparameters TensorBoard's hparams plugin and W&B show
(``accelerator.init_trackers(..., config=...)``)."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

__all__ = ["flat_hparams", "start_trackers"]

Scalar = str | int | float | bool


def _scalar(value: Any) -> Scalar:
    """One hyperparameter value: numbers, strings and booleans as they are, None as ``"None"``, a list or tuple
    joined with commas, anything else (a nested mapping inside a list) as JSON."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return ",".join(str(_scalar(v)) for v in value)
    return json.dumps(value, sort_keys=True, default=str)


def flat_hparams(cfg: Any) -> dict[str, Scalar]:
    """``{"optim.lr": 0.002, "train.report_to": "tensorboard", ...}``: every field of the config dataclass (or
    nested dict), keyed by its dotted flag name, each value a str, int, float or bool (TensorBoard's hparams
    plugin takes nothing else)."""
    tree = asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else dict(cfg)
    out: dict[str, Scalar] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = _scalar(node if not isinstance(node, dict) else None)

    walk("", tree)
    return out


def start_trackers(accelerator: Any, cfg: Any, project: str = "scitune") -> None:
    """Start the ``--train.report_to`` trackers with the resolved config as the run's hyperparameters."""
    accelerator.init_trackers(project, config=flat_hparams(cfg))
