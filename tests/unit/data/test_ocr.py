"""OCR: character error rate against hand-computed values, the install hint, and Tesseract on SciFig figures."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw, ImageFont

from scitune.io import DataError
from scitune.sources import ocr
from scitune.sources.ocr import OCRConfig, OCRUnavailableError, cer, corpus_cer, edit_distance, fill_ocr, normalize_text

MISSING = ocr.tesseract_missing()
needs_tesseract = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [("", "", 0), ("abc", "", 3), ("", "abc", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
     ("E=mc2", "E = m c^2", 4), ("σ(z)", "o(z)", 1)],
)  # fmt: skip
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_cer_hand_computed():
    assert cer("kitten", "sitting") == pytest.approx(3 / 7)  # 2 substitutions + 1 insertion over 7 characters
    assert cer("350 Temp", "350 Temperature") == pytest.approx(7 / 15)  # 7 deletions
    assert cer("Sample B", "Sample B") == 0.0
    assert cer("ab", "a") == 1.0  # one insertion over a one-character reference
    assert cer("xyz", "a") == 3.0  # can exceed 1
    assert cer("", "") == 0.0 and cer("x", "") == 1.0
    # corpus CER weighs each pair by its length: (3 + 0) / (7 + 8), not the mean (3/7 + 0) / 2
    assert corpus_cer(["kitten", "Sample B"], ["sitting", "Sample B"]) == pytest.approx(3 / 15)
    with pytest.raises(ValueError):
        corpus_cer(["a"], [])
    assert normalize_text("  Time\n(s)\t 350 ") == "Time (s) 350"


def test_missing_binary_says_how_to_install(monkeypatch, tmp_path):
    pytesseract = pytest.importorskip("pytesseract")
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    reason = ocr.tesseract_missing()
    assert "apt-get install -y tesseract-ocr" in reason and "/nonexistent/tesseract" in reason
    with pytest.raises(OCRUnavailableError, match="apt-get install -y tesseract-ocr"):
        fill_ocr([("f:1", {"image": "a.png"})], tmp_path)


def _text_image(text: str) -> Image.Image:
    from matplotlib import font_manager

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 28)
    im = Image.new("RGB", (420, 60), "white")
    ImageDraw.Draw(im).text((10, 12), text, fill="black", font=font)
    return im


@needs_tesseract
def test_tesseract_reads_clear_text():
    text = "Accuracy vs. epoch 2024"
    assert cer(ocr.ocr_image(_text_image(text), OCRConfig(psm=7, scale=1)), text) < 0.1


@needs_tesseract
def test_fill_ocr_on_scifig_scores_against_the_truth(tmp_path):
    pytest.importorskip("matplotlib")
    from scitune.sources.scifig import make_figure

    located = []
    for i in (3, 4):  # an equation and a bar chart: the types Tesseract reads best
        fig = make_figure(0, i, "test", image_size=224)
        fig.image.save(tmp_path / f"{fig.id}.png")
        located.append((f"scicap.jsonl:{i}", {"id": fig.id, "image": f"{fig.id}.png", "ocr_text": fig.ocr_text}))
    records, report = fill_ocr(located, tmp_path, progress=False)
    refs = [rec["ocr_text"] for _, rec in located]
    preds = [rec["ocr_text"] for rec in records]
    assert report["scored"] == 2 and report["cer"] == round(corpus_cer(preds, refs), 4)
    assert report["cer"] < 0.8 and all(preds)  # Tesseract reads most of the exact drawn text
    with pytest.raises(DataError, match=r"scicap\.jsonl:9 \(id 'x'\): image .*missing\.png not found"):
        fill_ocr([("scicap.jsonl:9", {"id": "x", "image": "missing.png"})], tmp_path)


@needs_tesseract
def test_cli_ocr(tmp_path, capsys):
    from scitune.cli import main

    _text_image("Graph Plot").save(tmp_path / "g.png")
    data = tmp_path / "figs.jsonl"
    data.write_text(json.dumps({"id": "g", "image": "g.png", "ocr_text": "Graph Plot"}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["data", "ocr", "--data", str(data), "--out", str(out), "--psm", "7", "--scale", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["cer"] < 0.2
    assert json.loads(out.read_text(encoding="utf-8"))["ocr_text"].startswith("Graph")


def test_cli_ocr_without_tesseract(tmp_path, capsys, monkeypatch):
    from scitune.cli import main

    monkeypatch.setattr(ocr, "tesseract_missing", lambda: "pytesseract is not installed: " + ocr.INSTALL_HINT)
    data = tmp_path / "figs.jsonl"
    data.write_text(json.dumps({"id": "g", "image": "g.png"}) + "\n", encoding="utf-8")
    assert main(["data", "ocr", "--data", str(data), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "apt-get install -y tesseract-ocr" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()
