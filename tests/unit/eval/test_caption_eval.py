"""Caption benchmark: first sentence vs reference, BLEU / ROUGE-L / CIDEr-D against hand-computed values, SciCap-style
and VisText inputs, and the comparison report of several runs."""

from __future__ import annotations

import json

import pytest
from evalkit import is_png

from scitune.cli.eval import main
from scitune.eval.captioning import cider_d, coco_tokenize, strip_figure_type
from scitune.eval.report import compare_runs


def test_coco_tokenize_is_ptb_like():
    assert coco_tokenize("A Bar-Chart, of 1.5 GeV (values)!") == "a bar chart of 1.5 gev values"
    assert coco_tokenize("Loss vs. epochs; 10,000 steps") == "loss vs epochs 10,000 steps"


def test_cider_d_hand_values():
    refs = [["a red cat sat"], ["blue dogs run fast"], ["green trees grow tall"]]
    exact = cider_d(["a red cat sat", "blue dogs run fast", "green trees grow tall"], refs)
    assert exact["cider_d"] == pytest.approx(10.0)  # cosine 1 at every n, no length penalty, x10
    disjoint = cider_d(["green trees grow tall", "a red cat sat", "blue dogs run fast"], refs)
    assert disjoint["cider_d"] == pytest.approx(0.0)
    assert cider_d(["x"], [["x"]])["cider_d"] is None  # one item: log(N) = 0, undefined


def test_strip_figure_type():
    assert strip_figure_type("Graph Plot The ratio of flux.") == "The ratio of flux."
    assert strip_figure_type("bar chart: counts per class") == "counts per class"
    assert strip_figure_type("A graph plot of x") == "A graph plot of x"


def _write_scicap(path, captions):
    path.write_text("".join(json.dumps({"id": f"f{i}", "image": f"images/f{i}.png", "caption": c}) + "\n"
                            for i, c in enumerate(captions)))  # fmt: skip


def test_caption_predictions_first_sentence_and_missing(tmp_path):
    caps = [
        "Accuracy versus epochs for two models.",
        "Packet drop rate per router.",
        "The energy spectrum of electrons.",
    ]
    data = tmp_path / "test.jsonl"
    _write_scicap(data, caps)
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"id": "f0", "text": "Graph Plot Accuracy versus epochs for two models. Extra text."}) + "\n"
                    + json.dumps({"id": "f1", "text": "Packet drop rate per router. More."}) + "\n")  # f2 missing  # fmt: skip
    out = tmp_path / "o"
    assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(out), "--strip-type",
                 "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["per_caption"]["bleu"] == pytest.approx([1.0, 1.0, 0.0])
    assert res["per_caption"]["rouge_l"] == pytest.approx([1.0, 1.0, 0.0])
    assert res["summary"]["bleu"] == pytest.approx(2 / 3) and res["input"]["missing"] == 1
    assert res["summary"]["cider_d"] == pytest.approx(20 / 3)
    report = (out / "report.md").read_text()
    assert "Google-BLEU" in report and "CIDEr-D" in report and is_png(out / "caption_scores.png")
    # without --strip-type the figure-type words stay in the caption and lower the scores
    assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(tmp_path / "o2"),
                 "--progress", "false"]) == 0  # fmt: skip
    res2 = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res2["per_caption"]["bleu"][0] < 1.0 and res2["per_caption"]["bleu"][1] == 1.0
    table = compare_runs([out, tmp_path / "o2"], tmp_path / "cmp")
    assert table.startswith("| metric | o | o2 |") and "| caption/bleu |" in table
    assert is_png(tmp_path / "cmp" / "comparison.png") and (tmp_path / "cmp" / "comparison.md").is_file()
    assert main(["report", str(out), str(tmp_path / "o2")]) == 0


def test_vistext_split_file(tmp_path):
    data = tmp_path / "data_test.json"
    data.write_text(json.dumps([
        {"caption_id": "c1", "img_id": "7", "caption_L1": "This is a line chart of sales.", "caption_L2L3": "Sales rise."},
        {"caption_id": "c2", "img_id": "8", "caption_L1": "This is a bar chart of GDP.", "caption_L2L3": "Spain leads."},
    ]))  # fmt: skip
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": c, "text": t}) + "\n" for c, t in
                            (("c1", "This is a line chart of sales."), ("c2", "This is a bar chart of GDP."))))  # fmt: skip
    for which, bleu in (("L1", 1.0), ("L1L2L3", None)):
        out = tmp_path / which
        assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(out),
                     "--vistext-caption", which, "--progress", "false"]) == 0  # fmt: skip
        res = json.loads((out / "results.json").read_text())
        assert res["data_format"] == "vistext" and res["count"] == 2
        if bleu is not None:
            assert res["summary"]["bleu"] == pytest.approx(bleu)
        else:
            assert res["summary"]["bleu"] < 1.0  # the reference also holds the L2/L3 sentence


def test_missing_pycocoevalcap_leaves_cider_out(tmp_path, monkeypatch):
    """Without the eval extra's pycocoevalcap the caption benchmark still scores BLEU and ROUGE-L (the demo runs it)."""
    import sys

    data = tmp_path / "test.jsonl"
    _write_scicap(data, ["Accuracy versus epochs.", "Packet drop rate per router."])
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"id": f"f{i}", "text": t}) + "\n"
                            for i, t in enumerate(["Accuracy versus epochs.", "Drop rate."])))  # fmt: skip
    monkeypatch.setitem(sys.modules, "pycocoevalcap.cider.cider", None)  # import fails
    out = tmp_path / "o"
    assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(out), "--progress",
                 "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["summary"]["cider_d"] is None and "pycocoevalcap" in res["cider"]["missing"]
    assert res["per_caption"]["bleu"][0] == pytest.approx(1.0)
    assert "CIDEr-D (pycocoevalcap, simple tokens) | - (CIDEr needs pycocoevalcap" in (out / "report.md").read_text()
