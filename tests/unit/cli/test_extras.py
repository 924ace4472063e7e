"""Optional dependencies: a missing extra ends in one line naming it, before any model loads or data is read."""

from __future__ import annotations

import sys

import pytest

import scitune.loader
from scitune.cli import main
from scitune.extras import MissingExtra, missing, require


def _block(monkeypatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # `import m` now raises ImportError


def _no_model_loads(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the missing extra was reported")

    for name in ("build", "load", "load_checkpoint"):
        monkeypatch.setattr(scitune.loader, name, refuse)


def test_require_names_the_extra_and_the_pip_name(monkeypatch):
    _block(monkeypatch, "peft", "sklearn", "rouge")
    assert missing("peft", "json") == ["peft"]
    with pytest.raises(MissingExtra, match=r"LoRA needs peft.*pip install 'scitune\[train\]'"):
        require("LoRA", "peft")
    with pytest.raises(MissingExtra, match=r"needs scikit-learn, rouge.*'scitune\[analysis\]' rouge"):
        require("x", "sklearn", "rouge")
    require("nothing missing", "json", "torch")


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train", "--config", "tiny/finetune", "--data.train", "{data}", "--train.lora.r", "8"], "train"),
        (["train", "--config", "tiny/finetune", "--data.train", "{data}", "--lora.r", "8"], "train"),
        (["train", "--config", "tiny/align", "--data.train", "{data}", "--train.report_to", "tensorboard"], "train"),
    ],
)
def test_train_without_extra_is_one_line_before_loading(argv, extra, monkeypatch, tmp_path, capsys, color_data):
    _block(monkeypatch, "peft", "tensorboard")
    _no_model_loads(monkeypatch)
    argv = [a.replace("{data}", str(color_data)) for a in argv] + ["--train.out_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"pip install 'scitune[{extra}]'" in err and err.startswith("scitune: error:")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_analyze_embed_without_sklearn(monkeypatch, tmp_path, capsys):
    _block(monkeypatch, "sklearn")
    _no_model_loads(monkeypatch)
    code = main(["analyze", "embed", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "x.jsonl"),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "scikit-learn" in err and "scitune[analysis]" in err and len(err.splitlines()) == 1


def test_serve_without_fastapi(monkeypatch, tmp_path, capsys):
    _block(monkeypatch, "fastapi")
    _no_model_loads(monkeypatch)
    assert main(["serve", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "fastapi" in err and "scitune[serve]" in err and len(err.splitlines()) == 1


def test_eval_benchmark_requires_before_work(monkeypatch, tmp_path, capsys):
    from scitune.eval import BENCHMARKS

    bench = BENCHMARKS.get("pope")
    monkeypatch.setattr(bench, "requires", ("no_such_module_xyz",))
    monkeypatch.setattr(bench, "examples", lambda self: pytest.fail("examples read before the extra check"))
    code = main(["eval", "pope", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "eval pope needs no_such_module_xyz" in err
    assert not (tmp_path / "o").exists()
