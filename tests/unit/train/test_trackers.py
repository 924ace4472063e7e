"""--train.report_to: the resolved run config reaches TensorBoard's hparams plugin (and W&B) as flat scalars."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_run_config
from scitune.train.trackers import flat_hparams


def test_flat_hparams_are_dotted_scalars(tmp_path):
    cfg = tiny_run_config({"vision": "v", "llm": "l"}, "d.jsonl", tmp_path / "o", optim={"lr": 3e-4},
                          report_to=["tensorboard", "wandb"])  # fmt: skip
    flat = flat_hparams(cfg)
    assert flat["optim.lr"] == 3e-4 and flat["train.stage"] == "align"
    assert flat["model.vision.path"] == "v" and flat["data.max_length"] == 256
    assert flat["train.report_to"] == "tensorboard,wandb"  # lists joined
    assert flat["optim.betas"] == "0.9,0.999"
    assert flat["optim.vision_lr"] == "None"  # None as text
    assert all(isinstance(v, str | int | float | bool) for v in flat.values())
    assert not any(isinstance(v, dict | list | tuple) or v is None for v in flat.values())
    assert flat_hparams({"a": {"b": [1, {"c": None}]}, "e": {}}) == {"a.b": '1,{"c": null}', "e": "None"}


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_tensorboard_run_shows_the_config_as_hparams(tmp_path, tiny_base, color_data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from scitune.train.loop import train

    out = tmp_path / "run"
    cfg = tiny_run_config(tiny_base, color_data, out, optim={"lr": 7e-3, "schedule": "linear"},
                          report_to=["tensorboard"], max_steps=2)  # fmt: skip
    train(cfg)
    hparams, scalars = {}, set()
    for events in sorted(Path(out, "scitune").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        scalars.update(acc.Tags()["scalars"])
        try:
            plugin = acc.PluginTagToContent("hparams")
        except KeyError:  # the metrics' event file: no hparams in it
            continue
        for tag, content in plugin.items():
            if tag == "_hparams_/session_start_info":
                info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
                hparams.update({k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in
                                info.hparams.items()})  # fmt: skip
    assert hparams["optim.lr"] == pytest.approx(7e-3)
    assert hparams["optim.schedule"] == "linear" and hparams["train.max_steps"] == 2
    assert hparams["train.report_to"] == "tensorboard" and hparams["optim.vision_lr"] == "None"
    assert hparams["data.train"] == str(color_data)
    assert {"loss", "lr"} <= scalars  # the per-step metrics still arrive
