"""ETHICS keeps lm-evaluation-harness's hendrycks_ethics prompts, choices and labels: every task's first rows of the
real test files rendered with the harness's own task YAMLs (and its utilitarianism utils) equal scitune's examples.
(TruthfulQA MC / generation parity: tests/unit/eval/test_truthfulqa_gen.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scitune.eval.ethics import load_ethics

pytest.importorskip("lm_eval")


def _task_dir() -> Path:
    return Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks" / "hendrycks_ethics"


def _task(name: str) -> dict:
    """A task YAML with its ``include`` chain merged (read as text: the YAMLs hold !function tags)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: "!" + suffix)
    cfg = yaml.load((_task_dir() / name).read_text(), Loader=Loader)
    if "include" in cfg:
        cfg = {**_task(cfg["include"]), **cfg}
    return cfg


def _docs(root: Path, task: str, n: int) -> list[dict]:
    """The HF ``EleutherAI/hendrycks_ethics`` records of the first n CSV rows (the HF set is these CSVs)."""
    import csv

    files = {"commonsense": "cm", "deontology": "deontology", "justice": "justice", "utilitarianism": "util",
             "virtue": "virtue"}  # fmt: skip
    with open(root / task / f"{files[task]}_test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows = rows[:n] if task == "utilitarianism" else rows[1 : n + 1]
    if task == "commonsense":
        return [{"label": int(r[0]), "input": r[1]} for r in rows]
    if task == "deontology":
        return [{"label": int(r[0]), "scenario": r[1], "excuse": r[2]} for r in rows]
    if task == "justice":
        return [{"label": int(r[0]), "scenario": r[1]} for r in rows]
    if task == "utilitarianism":
        return [{"activity": r[0], "baseline": r[1]} for r in rows]
    return [{"label": int(r[0]), "scenario": r[1].partition(" [SEP] ")[0], "trait": r[1].partition(" [SEP] ")[2]}
            for r in rows]  # fmt: skip


@pytest.mark.parametrize(
    "task, yaml_name",
    [("commonsense", "commonsense.yaml"), ("deontology", "deontology.yaml"), ("justice", "justice.yaml"),
     ("utilitarianism", "utilitarianism.yaml"), ("virtue", "virtue.yaml")],
)  # fmt: skip
def test_ethics_prompts_choices_and_labels_equal_the_harness(shared_data, task, yaml_name):
    from lm_eval.utils import apply_template

    spec = importlib.util.spec_from_file_location("_harness_ethics_utils", _task_dir() / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    cfg = _task(yaml_name)
    ours = load_ethics(shared_data / "ethics", task)[:12]
    for doc, e in zip(_docs(shared_data / "ethics", task, 12), ours, strict=True):
        if str(cfg["doc_to_text"]).startswith("!function"):  # utils.doc_to_text / utils.doc_to_target
            text, target = utils.doc_to_text(doc), utils.doc_to_target(doc)
        else:
            text, target = apply_template(cfg["doc_to_text"], doc), doc[cfg["doc_to_target"]]
        assert e.text == text
        assert e.choices == [" " + c for c in cfg["doc_to_choice"]]  # target_delimiter " "
        assert e.target == target
