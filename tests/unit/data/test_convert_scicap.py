"""SciCap converter: exact match with the SciTune authors' generator, variants, seeding, empty fields, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import SHARED_DATA  # noqa: E402
from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.sources.converters.scicap import (
    FIGURE_WORD,
    QUESTIONS,
    SYSTEM_MESSAGE,
    VARIANTS,
    SciCapConverter,
    build_answer,
    convert_scicap,
    load_scicap,
    normalize_figure,
)

_CANDIDATES = [SHARED_DATA]
DATA = next((p / "scicap_text" for p in _CANDIDATES if (p / "scicap_text").is_dir()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="shared SciCap text sample not available")
LAYOUT = DATA / "scitune_reference" / "scicap_challenge_layout.json" if DATA else None
REFERENCE = DATA / "scitune_reference" / "scitune_scicap_val.json" if DATA else None


def _fig(**overrides):
    fig = {
        "id": "f1",
        "image": "f1.png",
        "caption": "Loss curves; see Fig. 2 and figures.",
        "figure_type": "Graph Plot",
        "ocr": ["epoch", "loss"],
        "paragraphs": ["As Figure 1 shows, loss falls.", "More text."],
        "mentions": [["As Figure 1 shows, loss falls."]],
    }
    fig.update(overrides)
    return fig


@pytest.fixture(scope="module")
def layout():
    return json.loads(LAYOUT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@needs_data
def test_exact_match_with_authors(layout, reference, caplog):
    with caplog.at_level(logging.WARNING):
        records, report = convert_scicap(layout, "CTOM", seed=0, with_meta=False)
    assert len(records) == len(reference) == 300
    for ours, ref in zip(records, reference):
        assert ours == ref
        assert list(ours) == list(ref)
    # The reference OCR is empty for 37 figures: reported (and warned about), not dropped, its line kept empty.
    assert report["written"] == 300 and report["empty"]["ocr"] == 37 and len(report["empty_ids"]["ocr"]) == 37
    assert sum("\n\n" in r["conversations"][1]["value"] for r in records) == 37
    assert "37 of 300 SciCap records have an empty ocr" in caplog.text


@needs_data
def test_run_writes_authors_bytes(tmp_path):
    out = tmp_path / "scicap.json"
    summary = CONVERTERS.get("scicap")().run(str(LAYOUT), str(out), with_meta=False)
    assert out.read_bytes() == REFERENCE.read_bytes()
    assert summary["records"] == summary["written"] == 300 and summary["empty"]["ocr"] == 37
    assert len(summary["empty_ids"]["ocr"]) == 20  # summary lists the first 20 ids


@needs_data
def test_canonical_records(layout, reference, tmp_path):
    records, _ = convert_scicap(layout)
    for ours, ref in zip(records, reference):
        assert ours["id"] == str(ref["id"]) and ours["image"] == ref["image"]
        assert ours["conversations"] == ref["conversations"]
        assert ours["meta"]["system"] == SYSTEM_MESSAGE
        assert ref["conversations"][0]["value"] == QUESTIONS[ours["meta"]["question_index"]] + "\n<image>"
    out = tmp_path / "scicap.jsonl"
    SciCapConverter().run(str(LAYOUT), str(out))
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == records


@needs_data
def test_questions_seeded(layout, reference):
    pool = {q + "\n<image>" for q in QUESTIONS}
    assert all(r["conversations"][0]["value"] in pool for r in reference)
    draw = [r["meta"]["question_index"] for r in convert_scicap(layout, seed=7)[0]]
    assert draw == [r["meta"]["question_index"] for r in convert_scicap(layout, seed=7)[0]]
    assert draw != [r["meta"]["question_index"] for r in convert_scicap(layout, seed=8)[0]]
    assert len(set(draw)) == 16


@needs_data
def test_variants_are_prefixes_of_ctom(layout):
    answers = {v: [r["conversations"][1]["value"] for r in convert_scicap(layout, v)[0]] for v in VARIANTS}
    types = [image["figure_type"] for image in layout["images"]]
    for t, c, ct, cto, ctom in zip(types, *(answers[v] for v in ("C", "CT", "CTO", "CTOM"))):
        assert "\n" not in ct and ctom.startswith(cto + "\n") and cto.startswith(ct + "\n")
        assert ct == FIGURE_WORD.sub(t, f"{t} {c}")  # C: the bare caption, no type and no substitution


def test_variant_layouts():
    fig = normalize_figure(_fig(), "t")
    assert build_answer(fig, "C") == "Loss curves; see Fig. 2 and figures."
    assert build_answer(fig, "CT") == "Graph Plot Loss curves; see Graph Plot. 2 and figures."
    assert build_answer(fig, "CTO") == "Graph Plot Loss curves; see Graph Plot. 2 and figures.\nepoch\tloss"
    assert build_answer(fig, "CTOM") == (
        "Graph Plot Loss curves; see Graph Plot. 2 and figures.\nepoch\tloss\n"
        "As Graph Plot 1 shows, loss falls.\nMore text.\nAs Graph Plot 1 shows, loss falls."
    )
    with pytest.raises(ValueError, match="known: C, CT, CTO, CTOM"):
        build_answer(fig, "CM")


def test_figure_word_substitution():
    fig = normalize_figure(_fig(caption="FIG. 3, fig 4, Figure5, Figs 1-2, subfigure, Fig\\1", ocr=[]), "t")
    first = build_answer(fig, "CT")
    assert first == "Graph Plot Graph Plot. 3, Graph Plot 4, Figure5, Figs 1-2, subfigure, Graph Plot\\1"
    assert build_answer(normalize_figure(_fig(figure_type=None), "t"), "CT").startswith("Image ")


def test_empty_fields_reported_kept_or_dropped(caplog):
    figs = [_fig(), _fig(id="f2", ocr=[], mentions=[]), _fig(id="f3", paragraphs=[])]
    with caplog.at_level(logging.WARNING):
        records, report = convert_scicap(figs, "CTOM", seed=0)
    assert report["written"] == 3 and report["empty"] == {
        "figure_type": 0,
        "caption": 0,
        "ocr": 1,
        "paragraphs": 1,
        "mentions": 1,
    }
    assert report["empty_ids"]["ocr"] == ["f2"] and report["empty_ids"]["paragraphs"] == ["f3"]
    assert records[1]["conversations"][1]["value"].split("\n")[1] == ""  # the empty OCR line stays
    assert records[1]["conversations"][1]["value"].endswith("More text.\n")  # so does the empty mention line
    assert records[1]["meta"]["empty_fields"] == ["ocr", "mentions"]
    assert "have an empty ocr (first ids: 'f2')" in caplog.text
    compact, _ = convert_scicap(figs, "CTOM", keep_empty_lines=False)
    assert "\n\n" not in compact[1]["conversations"][1]["value"]
    kept, report = convert_scicap(figs, "CTOM", seed=0, drop_empty=True)
    assert [r["id"] for r in kept] == ["f1"] and report["dropped"] == 2 and report["dropped_ids"] == ["f2", "f3"]
    assert kept[0]["conversations"][0] == records[0]["conversations"][0]  # dropping does not shift the draws
    _, report = convert_scicap(figs, "CT", drop_empty=True)  # OCR/mentions are not selected by CT
    assert report["dropped"] == 0 and set(report["empty"]) == {"figure_type", "caption"}


@needs_data
def test_other_layouts_via_field_mapping(layout, reference, tmp_path):
    # The same figures in a different flat layout: renamed keys, OCR as one string, flat mention lists, JSONL.
    flat = []
    for image, ann in zip(layout["images"], layout["annotations"]):
        mentions = [m for group in ann["mention"] for m in group]
        flat.append(
            {
                "fid": image["id"],
                "path": image["file_name"],
                "caption_text": ann["caption_no_index"],
                "meta": {"kind": image["figure_type"]},
                "ocr_string": " ".join(image["ocr"]),
                "paragraph": ann["paragraph"],
                "mentions": mentions,
            }
        )
    src = tmp_path / "flat.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in flat), encoding="utf-8")
    fields = {"id": "fid", "image": "path", "caption": "caption_text", "figure_type": "meta.kind", "ocr": "ocr_string"}
    out = tmp_path / "out.json"
    SciCapConverter().run(str(src), str(out), fields=fields, with_meta=False)
    assert json.loads(out.read_text(encoding="utf-8")) == reference


def test_scicap_release_folder(tmp_path):
    release = {
        "figure-ID": "1001.0025v1-Figure2-1.png",
        "figure-type": "Graph Plot",
        "0-originally-extracted": "Figure 2: Impact of the replay attack.",
        "1-lowercase-and-token-and-remove-figure-index": {"caption": "impact of the replay attack ."},
        "Img-text": ["(b)", "s]"],
    }
    (tmp_path / "1001.0025v1-Figure2-1.json").write_text(json.dumps(release), encoding="utf-8")
    figs = load_scicap(tmp_path)
    assert figs[0][1]["image"] == "1001.0025v1-Figure2-1.png" and figs[0][1]["ocr"] == ["(b)", "s]"]
    records, report = convert_scicap([release], "CTO")
    assert records[0]["conversations"][1]["value"] == "Graph Plot Graph Plot 2: Impact of the replay attack.\n(b)\ts]"
    nested = load_scicap(tmp_path, fields={"caption": "1-lowercase-and-token-and-remove-figure-index.caption"})
    assert nested[0][1]["caption"] == "impact of the replay attack ."


def test_bad_input_errors(tmp_path):
    with pytest.raises(DataError, match=r"figs\.json: record #1 \(id 'b'\): record has no caption"):
        convert_scicap([_fig(), {"id": "b", "image": "b.png"}], source="figs.json")
    with pytest.raises(DataError, match=r"record #0 \(id 'f1'\): field 'ocr' must be a string or a list"):
        convert_scicap([_fig(ocr=3)])
    with pytest.raises(DataError, match=r"field 'paragraphs' must hold strings"):
        convert_scicap([_fig(paragraphs=[1])])
    with pytest.raises(ValueError, match="unknown SciCap field"):
        convert_scicap([_fig()], fields={"captions": "x"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_fig()) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON line"):
        load_scicap(bad)
    layout = {"images": [{"id": 0, "file_name": "a.png"}], "annotations": [{"image_id": 5, "caption_no_index": "x"}]}
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout), encoding="utf-8")
    with pytest.raises(DataError, match=r"layout\.json: images\[0\]/annotations\[0\]: annotation image_id 5 != image"):
        load_scicap(path)
    layout["annotations"].append({"image_id": 0, "caption_no_index": "y"})
    with pytest.raises(DataError, match="1 images but 2 annotations"):
        convert_scicap(layout)
    with pytest.raises(DataError, match="folder holds no .json"):
        load_scicap(_empty_dir(tmp_path))
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        SciCapConverter().run(str(tmp_path / "missing.json"), str(tmp_path / "o.jsonl"))


def _empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


def test_missing_image_reported():
    records, report = convert_scicap([_fig(image=None)], "C")
    assert records[0]["image"] is None and "<image>" not in records[0]["conversations"][0]["value"]
    assert report["no_image"] == 1 and report["no_image_ids"] == ["f1"]


def test_registered():
    assert "scicap" in CONVERTERS.names()
    assert CONVERTERS.get("scicap") is SciCapConverter
