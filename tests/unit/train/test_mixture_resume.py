"""A 3-source mixture (image records, the same records with images stripped, Alpaca) trains with length-grouped
batches, is killed after a step, and resumes with ``--train.resume latest`` to the same losses and weights; the chosen
ids are in the run folder, and a changed mixture is refused on resume."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "faults"))

from faultkit import forked_cli, losses, weights  # noqa: E402


def alpaca_file(folder: Path, n: int = 8) -> Path:
    """``n`` Alpaca rows (every other one with an input) as Stanford's JSON list."""
    rows = [
        {"instruction": f"Add {i} and {i + 1}.", "input": "Show the sum." if i % 2 else "", "output": f"{2 * i + 1}"}
        for i in range(n)
    ]
    path = folder / "alpaca_data.json"
    path.write_text(json.dumps(rows))
    return path


def mixture_config(tmp: Path, base: dict, color: Path, alpaca: Path, name: str = "cfg.yaml", **image_src) -> Path:
    sources = [
        {"path": str(color), "name": "visual", "count": 4, **image_src},
        {"path": str(color), "name": "stripped", "count": 4, "transforms": ["strip-images"]},
        {"path": str(alpaca), "format": "alpaca", "fraction": 0.5},
    ]
    cfg = {
        "model": {
            "vision": {"name": "clip", "path": base["vision"]},
            "projector": {"name": "mlp2x-gelu"},
            "llm": {"path": base["llm"]},
        },
        "data": {"train": sources, "max_length": 256, "group_by_length": True, "sample_seed": 3},
        "optim": {"lr": 5e-3, "warmup_ratio": 0.1},
        "train": {
            "stage": "finetune",
            "epochs": 2,
            "global_batch_size": 4,
            "micro_batch_size": 2,
            "progress": False,
            "save_every": 1,
            "keep_last": 2,
        },  # fmt: skip
    }
    path = tmp / name
    path.write_text(json.dumps(cfg))
    return path


def _train(cfg: Path, out: Path, *extra: str, env: dict | None = None):
    return forked_cli(["train", "--config", str(cfg), "--train.out_dir", str(out), *extra], env=env)


def test_three_source_mixture_trains_and_resumes_exactly(tmp_path, tiny_base, color_data):
    alpaca = alpaca_file(tmp_path)
    cfg = mixture_config(tmp_path, tiny_base, color_data, alpaca)
    ref = _train(cfg, tmp_path / "ref")
    assert ref.rc == 0, ref.err[-3000:]
    assert len(losses(tmp_path / "ref")) == 6  # 4 + 4 + 4 records, batch 4, 2 epochs

    mix = tmp_path / "ref" / "mixture"
    ids = json.loads((mix / "ids.json").read_text())
    assert list(ids) == ["visual", "stripped", "alpaca_data"]
    assert [len(v) for v in ids.values()] == [4, 4, 4]
    positions = json.loads((mix / "positions.json").read_text())
    assert [[f"r{i}" for i in positions[k]] for k in ("visual", "stripped")] == [ids["visual"], ids["stripped"]]
    records = [json.loads(x) for x in (mix / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"{k}/{i}" for k, v in ids.items() for i in v]
    text_only = [r for r in records if not r.get("image")]
    assert len(text_only) == 8 and all("<image>" not in t["value"] for r in text_only for t in r["conversations"])
    summary = json.loads((mix / "mixture.json").read_text())
    assert summary["sample_seed"] == 3 and [s["with_image"] for s in summary["sources"]] == [4, 0, 0]

    run = tmp_path / "run"
    first = _train(cfg, run, env={"SCITUNE_FAULT_AFTER_STEP": "3"})
    assert first.signal == signal.SIGKILL, first.err[-3000:]
    second = _train(cfg, run, "--train.resume", "latest")
    assert second.rc == 0, second.err[-3000:]
    assert "resumed from" in second.err
    assert losses(run) == losses(tmp_path / "ref")  # exactly
    assert weights(run / "final") == weights(tmp_path / "ref" / "final")
    assert (run / "mixture" / "ids.json").read_bytes() == (mix / "ids.json").read_bytes()

    changed = mixture_config(tmp_path, tiny_base, color_data, alpaca, name="changed.yaml", count=3)
    for cfg_file, extra, change in ((changed, (), "count: 4 -> 3"), (cfg, ("--data.sample_seed", "4"), "seed: 3 -> 4")):
        refused = _train(cfg_file, run, "--train.resume", "latest", *extra)
        assert refused.rc not in (0, None)
        assert "training data changed" in refused.err and change in refused.err, refused.err[-2000:]
