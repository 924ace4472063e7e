"""Figure-type location, scoring and confusion plot (SciTune Table 1)."""

from __future__ import annotations

import pytest

from scitune.eval.figure_type import FIGURE_TYPES, NOT_FOUND, locate_figure_type, plot_confusion, score_figure_types

GP, SC, ND, EQ, BC = FIGURE_TYPES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Assistant: Graph Plot The ratio of the corrected flux.", GP),
        ("a BAR CHART of packet drop rates", BC),
        ("An equation next to a graph plot", EQ),  # the earliest name wins
        ("This scatter plot shows", SC),
        ("A Scatter-plot", SC),
        ("a barchart", BC),
        ("bar-chart", BC),
        ("two equations", EQ),
        ("Node\nDiagram of the network", ND),
        ("a diagram of nodes", None),
        ("subequation", None),
        ("", None),
    ],
)
def test_locate_earliest_rule(text, expected):
    assert locate_figure_type(text) == expected


def test_locate_scitune_rule_is_case_sensitive_list_order():
    assert locate_figure_type("a graph plot and an Equation", rule="scitune") == EQ
    assert locate_figure_type("Bar Chart then Graph Plot", rule="scitune") == GP
    assert locate_figure_type("scatter plot", rule="scitune") is None
    with pytest.raises(ValueError, match="earliest"):
        locate_figure_type("x", rule="nope")


def test_score_figure_types_hand_computed():
    golds = [GP, GP, SC, ND, EQ, BC]
    preds = [GP, None, GP, ND, EQ, BC]
    s = score_figure_types(golds, preds)
    assert (s["correct"], s["count"], s["acc_str"]) == (4, 6, "66.67")
    assert {t: v["acc_str"] for t, v in s["per_type"].items()} == {
        GP: "50.00",
        SC: "0.00",
        ND: "100.00",
        EQ: "100.00",
        BC: "100.00",
    }
    assert s["confusion"][GP] == {GP: 1, SC: 0, ND: 0, EQ: 0, BC: 0, NOT_FOUND: 1}
    assert s["confusion"][SC][GP] == 1
    assert sum(sum(row.values()) for row in s["confusion"].values()) == 6


def test_score_figure_types_empty_type_and_errors():
    s = score_figure_types([GP], [GP])
    assert s["per_type"][SC] == {"count": 0, "correct": 0, "acc": None, "acc_str": "-"}
    with pytest.raises(ValueError, match="pair up"):
        score_figure_types([GP], [])
    with pytest.raises(ValueError, match="gold figure type 'Pie'"):
        score_figure_types(["Pie"], [GP])
    with pytest.raises(ValueError, match="predicted figure type 'graph plot'"):
        score_figure_types([GP], ["graph plot"])


def test_plot_confusion_writes_png_atomically(tmp_path):
    matrix = score_figure_types([GP, SC, BC], [GP, GP, None])["confusion"]
    out = tmp_path / "plots" / "confusion.png"
    plot_confusion(matrix, out, title="figure types")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]  # no temporary file left behind
