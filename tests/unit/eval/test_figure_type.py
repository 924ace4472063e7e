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


def _tiny_clip(folder):
    """A random micro CLIP folder (model, image processor, tokenizer) as the demo's step 3 saves one."""
    from scitune.pretrain.clip import ClipPretrainConfig, build_clip, image_processor
    from scitune.pretrain.tokenizer import train_bpe_tokenizer, with_eos

    tok = with_eos(train_bpe_tokenizer([f"a {t} from a scientific paper" for t in FIGURE_TYPES] * 5, 300))
    cfg = ClipPretrainConfig(image_size=32, patch_size=16, vision_hidden=16, vision_layers=1, vision_heads=2,
                             text_hidden=16, text_layers=1, projection_dim=8)  # fmt: skip
    build_clip(cfg, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id).save_pretrained(folder)
    image_processor(32).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_zero_shot_baseline_with_several_prompts(tmp_path):
    import json

    from evalkit import is_png, make_scifig

    from scitune.cli.eval import main
    from scitune.eval.zeroshot import zero_shot_figure_types

    root, clip = make_scifig(tmp_path / "sf"), _tiny_clip(tmp_path / "clip")
    figs = [json.loads(x) for x in (root / "scicap" / "test.jsonl").read_text().splitlines()]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": f["id"], "text": f"{f['figure_type']} of x."}) + "\n" for f in figs))
    prompts = ["a {}", "a {} from a scientific paper"]
    out = tmp_path / "ft"
    argv = ["figure-type", "--data", str(root / "scicap" / "test.jsonl"), "--predictions", str(pred), "--out", str(out),
            "--clip", str(clip), "--clip-prompt", prompts[0], "--clip-prompts", json.dumps(prompts[1:]), "--progress",
            "false"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    golds = [f["figure_type"] for f in figs]
    images = [str(root / f["image"]) for f in figs]
    expected = {p: score_figure_types(golds, zero_shot_figure_types(str(clip), images, FIGURE_TYPES, p))["acc"]
                for p in prompts}  # fmt: skip
    assert {p: s["acc"] for p, s in res["clip"]["by_prompt"].items()} == expected
    best = max(prompts, key=lambda p: expected[p])  # the first of equals
    assert res["clip"]["prompt"] == best and res["summary"]["clip_acc"] == expected[best]
    assert res["summary"]["acc"] == 100.0
    report = (out / "report.md").read_text()
    assert all(f"CLIP zero-shot '{p}'" in report for p in prompts) and is_png(out / "clip_confusion.png")
