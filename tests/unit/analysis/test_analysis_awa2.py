"""LiMBeR's AwA2 analyses: the released file layout, which animal a caption names, property overlap by hand, the
per-encoder summary and plots through `scitune analyze awa2`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitune.analysis.awa2 import _matcher, judge_caption, load_awa2, write_fixture
from scitune.cli import main
from scitune.io import DataError


@pytest.fixture(scope="module")
def awa2(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("awa2") / "Animals_with_Attributes2", per_class=1)


def test_reads_the_released_layout(awa2):
    a = load_awa2(awa2)
    assert a.classes[:4] == ("zebra", "horse", "tiger", "polar+bear") and len(a.predicates) == 8
    assert a.matrix.shape == (8, 8) and a.find("Polar Bear") == "polar+bear" and a.find("cat") is None
    # zebra 1 1 1 1 0 0 0 0 vs horse 1 1 0 1 0 0 0 0: both have black, white, hooves; they agree on 7 of 8
    assert a.overlap("zebra", "horse") == 3 and a.overlap("zebra", "horse", "agree") == 7
    # polar bear 0 1 0 0 1 0 1 1 vs grizzly 1 0 0 0 1 0 1 1: water, claws, fierce
    assert a.overlap("polar+bear", "grizzly+bear") == 3 and a.overlap("polar+bear", "grizzly+bear", "agree") == 6


def test_bad_matrix_names_file_and_line(tmp_path, awa2):
    bad = tmp_path / "awa2"
    bad.mkdir()
    for name in ("classes.txt", "predicates.txt"):
        (bad / name).write_text((awa2 / name).read_text())
    lines = (awa2 / "predicate-matrix-binary.txt").read_text().splitlines()
    lines[2] = "1 1 2 0 0 0 1 1"
    (bad / "predicate-matrix-binary.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"predicate-matrix-binary\.txt:3: expected 8 values of 0 or 1"):
        load_awa2(bad)
    (bad / "predicate-matrix-binary.txt").unlink()
    with pytest.raises(DataError, match=r"predicate-matrix-binary\.txt: AwA2 file"):
        load_awa2(bad)


def test_which_animal_a_caption_names(awa2):
    m = _matcher(load_awa2(awa2).classes, {"killer+whale": ["orca"]})
    assert judge_caption("Two zebras in a field.", "zebra", m) == ("named", "zebra")
    assert judge_caption("a horse, or maybe a zebra", "zebra", m) == ("named", "zebra")
    assert judge_caption("A grizzly bear next to polar bears", "tiger", m) == ("mistaken", "grizzly+bear")
    assert judge_caption("an orca jumping", "dolphin", m) == ("mistaken", "killer+whale")
    assert judge_caption("a bear in the snow", "polar+bear", m) == ("none", None)  # "bear" alone is no AwA2 class
    assert judge_caption("a horseshoe", "zebra", m) == ("none", None)  # whole words only


def _write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_cli_summary_by_hand(tmp_path, awa2, capsys):
    # encoder A: zebra -> horse twice, tiger once (most: horse, overlap 3); polar bear -> grizzly (3);
    #            dolphin named; killer whale: no animal. Most-mistaken overlaps [3, 3]: mean 3, median 3.
    a = [
        ("1", "a horse", "zebra"),
        ("2", "horses running", "zebra"),
        ("3", "a tiger", "zebra"),
        ("4", "a grizzly bear", "polar+bear"),
        ("5", "a dolphin", "dolphin"),
        ("6", "the sea", "killer+whale"),
    ]
    # encoder B: zebra -> tiger (zebra 11110000 / tiger 11100011: 3 shared); horse -> dalmatian (11000010 vs
    #            11010000: 2 shared). Most-mistaken overlaps [3, 2]: mean 2.5, median 2.5.
    b = [("1", "a tiger", "zebra"), ("2", "a dalmatian", "horse")]
    pa = _write(tmp_path / "a.jsonl", [{"id": i, "text": t, "label": lab} for i, t, lab in a])
    pb = _write(tmp_path / "b.jsonl", [{"id": i, "text": t} for i, t, _ in b])
    labels = _write(tmp_path / "labels.jsonl", [{"id": "1", "image": "JPEGImages/zebra/zebra_10001.jpg"},
                                                {"id": "2", "label": "horse"}])  # fmt: skip
    out = tmp_path / "out"
    rc = main(["analyze", "awa2", "--awa2", str(awa2), "--predictions", json.dumps({"A": pa, "B": pb}),
               "--labels", labels, "--wup", "false", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    ea, eb = res["encoders"]["A"], res["encoders"]["B"]
    assert (ea["n"], ea["n_named"], ea["n_mistaken"], ea["n_none"]) == (6, 1, 4, 1)
    assert ea["most_mistaken"] == {"zebra": {"mistaken_for": "horse", "times": 2, "overlap": 3},
                                   "polar+bear": {"mistaken_for": "grizzly+bear", "times": 1, "overlap": 3}}  # fmt: skip
    assert ea["overlap_most_mistaken"] == {"mean": 3.0, "median": 3.0, "n": 2}
    assert ea["overlap_every_mistake"]["n"] == 4 and ea["overlap_every_mistake"]["mean"] == pytest.approx(12 / 4)
    assert eb["overlap_most_mistaken"] == {"mean": 2.5, "median": 2.5, "n": 2}
    assert (out / "awa2_overlap.png").stat().st_size > 1000 and not (out / "wup_missed.png").exists()
    rows = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows if r["encoder"] == "B"] == ["mistaken", "mistaken"]


def test_unknown_label_is_one_line(tmp_path, awa2, capsys):
    p = _write(tmp_path / "p.jsonl", [{"id": "1", "text": "a cat", "label": "unicorn"}])
    rc = main(["analyze", "awa2", "--awa2", str(awa2), "--predictions", json.dumps({"A": p}), "--wup", "false",
               "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "label 'unicorn' is not an AwA2 class" in err


def test_wup_of_captions_that_miss_the_animal(tmp_path, awa2, capsys):
    from scitune.analysis.wordnet import WordNetMissingError, find_wordnet_dir

    pytest.importorskip("nltk")
    try:
        find_wordnet_dir()
    except WordNetMissingError:
        pytest.skip("WordNet 3.0 files not installed")
    rows = [{"id": "1", "text": "a picture of a zebra", "label": "zebra"},
            {"id": "2", "text": "a picture of a horse", "label": "zebra"},
            {"id": "3", "text": "a picture of a tiger", "label": "dalmatian"}]  # fmt: skip
    p = _write(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    rc = main(["analyze", "awa2", "--awa2", str(awa2), "--predictions", json.dumps({"A": p}), "--ignore", "[picture]",
               "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    w = json.loads((out / "results.json").read_text())["encoders"]["A"]["wup_missed"]
    assert w["n"] == 2 and w["exact_rate"] == pytest.approx(1 / 3)
    # horse vs zebra meet at equine (closer) than tiger vs dalmatian (carnivore): both in (0.5, 1)
    assert 0.5 < w["mean"] < 1 and (out / "wup_missed.png").is_file()
