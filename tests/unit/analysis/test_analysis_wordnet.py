"""Wu-Palmer similarity on WordNet 3.0 (Debian's wordnet-base, read offline): values recomputed by hand from the
hypernym hierarchy, the per-item rule, the summary counts, `scitune analyze wup`, and the missing-WordNet error."""

from __future__ import annotations

import json

import pytest

from scitune.analysis.wordnet import (
    WordNetMissingError,
    candidate_words,
    find_wordnet_dir,
    label_synsets,
    load_wordnet,
    score_items,
)
from scitune.cli import main
from scitune.io import DataError


@pytest.fixture(scope="module")
def wn():
    try:
        return load_wordnet()
    except WordNetMissingError as e:
        pytest.skip(f"WordNet 3.0 files absent (apt-get install wordnet-base): {e}")


def _depth(s) -> int:
    """Nodes on the longest root-to-``s`` hypernym path (the root counts 1)."""
    return max(len(p) for p in s.hypernym_paths())


def _steps_up(s, ancestor) -> int:
    """Fewest hypernym links from ``s`` up to ``ancestor``."""
    return min(len(p) - 1 - p.index(ancestor) for p in s.hypernym_paths() if ancestor in p)


def _wup_by_hand(a, b):
    """Wu-Palmer as nltk defines it: 2 d(lcs) / ((d(lcs) + steps(a, lcs)) + (d(lcs) + steps(b, lcs))), where the
    lowest common subsumer is the deepest synset on both hierarchies and d counts nodes from the root."""
    common = {s for p in a.hypernym_paths() for s in p} & {s for p in b.hypernym_paths() for s in p}
    lcs = max(common, key=_depth)
    d = _depth(lcs)
    return lcs, 2 * d / ((d + _steps_up(a, lcs)) + (d + _steps_up(b, lcs)))


def test_dog_cat_from_depths(wn):
    dog, cat = wn.synset("dog.n.01"), wn.synset("cat.n.01")
    lcs, value = _wup_by_hand(dog, cat)
    # dog -> canine -> carnivore, cat -> feline -> carnivore; carnivore sits 12 nodes below (and counting) entity
    assert lcs.name() == "carnivore.n.01" and _depth(lcs) == 12
    assert _steps_up(dog, lcs) == 2 and _steps_up(cat, lcs) == 2
    assert value == pytest.approx(24 / 28) == pytest.approx(0.857142857)
    assert dog.wup_similarity(cat) == pytest.approx(value)


@pytest.mark.parametrize("a,b", [("horse.n.01", "zebra.n.01"), ("bar_chart.n.01", "graph.n.01")])
def test_more_pairs_against_the_hierarchy(wn, a, b):
    sa, sb = wn.synset(a), wn.synset(b)
    _, value = _wup_by_hand(sa, sb)
    assert 0 < value < 1
    assert sa.wup_similarity(sb) == pytest.approx(value)


def test_candidate_words_and_labels(wn):
    words = candidate_words("A bar chart of the accuracy, and it is in a picture.", ignore={"picture"})
    assert words[:3] == ["bar", "chart", "accuracy"] and "bar_chart" in words
    assert not {"a", "it", "is", "in", "the", "picture"} & set(words)
    assert candidate_words("Sample C rises") == ["sample", "rises"]  # single letters are not nouns here
    assert [s.name() for s in label_synsets(wn, "Bar Chart")] == ["bar_chart.n.01"]
    assert [s.name() for s in label_synsets(wn, "dog.n.01")] == ["dog.n.01"]
    # no "graph_plot" in WordNet: the head noun "plot" stands in
    assert label_synsets(wn, "Graph Plot") == wn.synsets("plot", pos="n")
    assert label_synsets(wn, "Qwxz") == []


def test_item_scores_and_summary(wn):
    items = [
        {"id": "1", "text": "A cat sitting on a mat.", "label": "dog.n.01"},
        {"id": "2", "text": "Two dogs playing.", "label": "dog"},
        {"id": "3", "text": "it is in the", "label": "dog"},
        {"id": "4", "text": "anything", "label": "Qwxz"},
    ]
    rows, summary = score_items(wn, items, first_sense=True)
    by_id = {r["id"]: r for r in rows}
    cat = wn.synset("cat.n.01")
    # first senses only: cat.n.01 vs dog.n.01 beats sitting.n.01 and mat.n.01 against dog.n.01
    expected_1 = max(cat.wup_similarity(wn.synset("dog.n.01")), *(
        wn.synsets(w, "n")[0].wup_similarity(wn.synset("dog.n.01")) for w in ("sitting", "mat")))  # fmt: skip
    assert by_id["1"]["score"] == pytest.approx(expected_1) == pytest.approx(6 / 7)
    assert by_id["1"]["word"] == "cat" and by_id["1"]["status"] == "related"
    assert by_id["2"]["score"] == 1.0 and by_id["2"]["status"] == "exact"  # "dogs" -> dog by morphy
    assert by_id["3"]["score"] == 0.0 and by_id["3"]["status"] == "no_noun"
    assert by_id["4"]["score"] is None and by_id["4"]["status"] == "unknown_label"
    assert summary["n"] == 4 and summary["n_scored"] == 3 and summary["n_exact"] == 1
    assert summary["wup_mean"] == pytest.approx((6 / 7 + 1.0 + 0.0) / 3)
    assert summary["wup_mean_not_named"] == pytest.approx((6 / 7 + 0.0) / 2)
    assert summary["exact_rate"] == pytest.approx(1 / 3)
    assert summary["unknown_labels"] == ["Qwxz"]


def test_all_senses_take_the_max_over_pairs(wn):
    # "seal": the animal (seal.n.09) is among its noun senses; with every sense the best pair is that one
    rows, _ = score_items(wn, [{"id": "s", "text": "a seal", "label": "walrus"}])
    walrus = wn.synset("walrus.n.01")
    best = max(s.wup_similarity(walrus) for s in wn.synsets("seal", "n"))
    assert rows[0]["score"] == pytest.approx(best)
    first, _ = score_items(wn, [{"id": "s", "text": "a seal", "label": "walrus"}], first_sense=True)
    assert first[0]["score"] < rows[0]["score"]


def test_cli_writes_results(wn, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "text": "a picture of a horse", "label": "zebra"},
        {"id": "b", "text": "a zebra", "label": "zebra"},
    ]))  # fmt: skip
    out = tmp_path / "wup"
    assert main(["analyze", "wup", "--predictions", str(preds), "--out", str(out), "--ignore", "[picture]"]) == 0
    printed = json.loads(capsys.readouterr().out)
    horse_zebra = wn.synset("horse.n.01").wup_similarity(wn.synset("zebra.n.01"))
    assert printed["wup_mean"] == pytest.approx((horse_zebra + 1.0) / 2)
    results = json.loads((out / "results.json").read_text())
    assert results["wordnet"]["version"] == "3.0" and results["ignore"] == ["picture"]
    rows = [json.loads(line) for line in (out / "wup.jsonl").read_text().splitlines()]
    assert [r["word"] for r in rows] == ["horse", "zebra"]
    assert (out / "wup_hist.png").stat().st_size > 1000


def test_label_map_names_the_sense(wn, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "a", "text": "a line graph of loss", "label": "Scatterplot"}) + "\n")
    out = tmp_path / "o"
    assert main(["analyze", "wup", "--predictions", str(preds), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["n_unknown_label"] == 1  # WordNet 3.0 has no "scatterplot"
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"Scatterplot": "plot.n.04"}))
    assert main(["analyze", "wup", "--predictions", str(preds), "--out", str(out), "--label_map", str(mapping)]) == 0
    printed = json.loads(capsys.readouterr().out)
    plot = wn.synset("plot.n.04")
    best = max(s.wup_similarity(plot) for w in ("line", "graph", "loss", "line_graph") for s in wn.synsets(w, "n"))
    assert printed["n_unknown_label"] == 0 and printed["wup_mean"] == pytest.approx(best)


def test_bad_predictions(wn, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a", "text": "x", "label": "dog"}\n{"id": "a", "text": "y", "label": "dog"}\n')
    assert main(["analyze", "wup", "--predictions", str(preds), "--out", str(tmp_path / "o")]) == 2
    assert "repeated id(s) ['a']" in capsys.readouterr().err
    preds.write_text('{"id": "a", "label": "dog"}\n')
    from scitune.analysis.wordnet import read_predictions

    with pytest.raises(DataError, match=r"p.jsonl:1 \(id a\): field 'text'"):
        read_predictions(preds)


def test_missing_wordnet_names_the_package(tmp_path):
    with pytest.raises(WordNetMissingError, match="apt-get install wordnet-base"):
        find_wordnet_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        load_wordnet(tmp_path / "nowhere")


def test_missing_wordnet_is_a_clean_cli_error(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a", "text": "x", "label": "dog"}\n')
    rc = main(
        ["analyze", "wup", "--predictions", str(preds), "--out", str(tmp_path / "o"), "--wordnet_dir", str(tmp_path)]
    )
    assert rc == 2 and "wordnet-base" in capsys.readouterr().err
