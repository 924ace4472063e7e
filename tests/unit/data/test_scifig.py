"""SciFig: reproducible figures, exact OCR ground truth, ScienceQA-schema questions, layout, resume, distinct types."""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from scitune.data import scifig  # noqa: E402
from scitune.data.scifig import (  # noqa: E402
    FIGURE_TYPES,
    LECTURES,
    SciFigConfig,
    generate_scifig,
    make_figure,
    make_questions,
)

SQA_KEYS = {"question", "choices", "answer", "hint", "image", "task", "grade", "subject", "topic", "category", "skill",
            "lecture", "solution", "split"}  # fmt: skip
SUBJECTS = {"natural science", "social science", "language science"}


def _png(fig: scifig.SciFigFigure) -> bytes:
    buf = io.BytesIO()
    fig.image.save(buf, format="PNG")
    return buf.getvalue()


def _texts(fig: scifig.SciFigFigure) -> tuple:
    return fig.figure_type, fig.caption, fig.ocr_text, fig.mentions, fig.paragraphs


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("scifig")
    config = SciFigConfig(n_train=14, n_val=7, n_test=5, image_size=64, seed=3, questions_per_figure=2)
    return out, config, generate_scifig(out, config, progress=False)


def test_config_checks():
    with pytest.raises(ValueError, match="types"):
        SciFigConfig(types=("Graph Plot", "Pie Chart"))
    with pytest.raises(ValueError, match="image_size"):
        SciFigConfig(image_size=16)
    with pytest.raises(ValueError, match="n_train"):
        SciFigConfig(n_train=-1)
    assert SciFigConfig(types=["Equation"]).types == ("Equation",)


def test_same_seed_same_figure_in_any_order():
    a = make_figure(5, 2, "train", "Bar Chart")
    make_figure(5, 0, "val", "Scatterplot")  # the canvas is reused: nothing may leak from one figure to the next
    make_figure(5, 1, "val", "Equation")
    b = make_figure(5, 2, "train", "Bar Chart")
    assert _png(a) == _png(b) and _texts(a) == _texts(b)
    assert make_questions(a, 3) == make_questions(b, 3)
    c = make_figure(5, 3, "train", "Bar Chart")
    assert _png(c) != _png(a)
    assert _png(make_figure(6, 2, "train", "Bar Chart")) != _png(a)
    assert make_figure(5, 2, "test").figure_type == FIGURE_TYPES[2]


@pytest.mark.parametrize("image_size", [32, 100, 224])
def test_image_size(image_size):
    fig = make_figure(0, 0, "train", "Graph Plot", image_size=image_size)
    assert fig.image.size == (image_size, image_size) and fig.image.mode == "RGB"


@pytest.mark.parametrize("figure_type", FIGURE_TYPES)
def test_ocr_text_is_exactly_what_is_drawn(figure_type):
    for index in range(6):
        fig = make_figure(1, index, "train", figure_type)
        items = fig.meta["text_items"]  # [string given to matplotlib, what a reader sees] in reading order
        # the texts on the canvas (read back from the artists, clipped ones left out) are exactly the recorded ones
        assert Counter(d for d, _ in items) == Counter(fig.meta["canvas_texts"])
        assert fig.ocr_text == " ".join(o for _, o in items)
        assert fig.ocr_text and fig.caption and 1 <= len(fig.mentions) <= 2
        assert not any(w in fig.caption + fig.ocr_text for w in ("None", "{a}", "{b}"))


def test_captions_and_mentions_are_grounded():
    for index in range(15):
        fig = make_figure(2, index, "val")
        m, ocr = fig.meta, fig.ocr_text
        assert any(re.search(r"\b(Fig\.|Figure) \d\b", s) for s in fig.mentions)
        assert fig.paragraphs and all(s in fig.paragraphs[0] for s in fig.mentions)
        if fig.figure_type == "Bar Chart":
            tall = m["names"][int(np.argmax(m["heights"]))]
            assert f"{tall} has the tallest bar" in fig.caption and tall in ocr.split()
        elif fig.figure_type == "Graph Plot":
            for se in m["series"]:
                assert f"{se['name']} ({se['color']}) {scifig._TREND_VERB[se['trend']]}" in fig.caption
                y = np.asarray(se["y"])
                if se["trend"] != "rises then falls":
                    assert (y[-1] > y[0]) == (se["trend"] == "increasing")
        elif fig.figure_type == "Scatterplot":
            for g in m["groups"]:
                r = np.corrcoef(g["x"], g["y"])[0, 1]
                assert {"positive": r > 0.7, "negative": r < -0.7, "no clear": abs(r) < 0.2}[m["correlation"]]
        elif fig.figure_type == "Node Diagram":
            degree = Counter(x for e in m["edges"] for x in e)
            assert degree.most_common(2)[0][0] == m["hub"] and degree.most_common(2)[1][1] < degree[m["hub"]]
            assert sorted(ocr.split()) == sorted(nd["label"] for nd in m["nodes"])
        else:
            assert all(e["text"] in ocr and e["text"] in fig.caption for e in m["equations"])


def test_layout_and_balance(small):
    out, config, manifest = small
    assert manifest["counts"] == {"train": 14, "val": 7, "test": 5}
    for split, n in manifest["counts"].items():
        counts = manifest["type_counts"][split]
        assert sum(counts.values()) == n and max(counts.values()) - min(counts.values()) <= 1
        records = [json.loads(line) for line in (out / "scicap" / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == n
        for rec in records:
            assert set(rec) == {"id", "image", "figure_type", "caption", "ocr_text", "mentions", "paragraphs"}
            assert rec["image"] == f"images/{rec['id']}.png" and (out / rec["image"]).is_file()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert len(list((out / "images").glob("*.png"))) == 26


def test_problems_schema(small):
    out, _, manifest = small
    problems = json.loads((out / "scienceqa" / "problems.json").read_text())
    splits = json.loads((out / "scienceqa" / "pid_splits.json").read_text())
    assert set(splits) == {"train", "val", "test"} and sorted(p for v in splits.values() for p in v) == sorted(problems)
    contexts = Counter()
    for split, pids in splits.items():
        for pid in pids:
            p = problems[pid]
            assert set(p) == SQA_KEYS and p["split"] == split and p["task"] == "closed choice"
            assert 2 <= len(p["choices"]) <= 5 and len(set(p["choices"])) == len(p["choices"])
            assert all(isinstance(c, str) and c for c in p["choices"])
            assert isinstance(p["answer"], int) and 0 <= p["answer"] < len(p["choices"])
            assert re.fullmatch(r"grade([1-9]|1[0-2])", p["grade"]) and p["subject"] in SUBJECTS
            assert p["lecture"] == LECTURES[p["category"]] and p["solution"] and p["topic"] and p["skill"]
            if p["image"] is not None:
                assert p["image"] == "image.png" and (out / "scienceqa" / "images" / pid / "image.png").is_file()
                # the question text does not give the answer away
                assert not re.search(rf"(?<!\w){re.escape(p['choices'][p['answer']])}(?!\w)", p["question"])
            contexts["image" if p["image"] else ("text" if p["hint"] else "none")] += 1
    assert contexts["text"] > 0 and contexts["none"] > 0 and contexts["image"] >= 2 * 26
    assert dict(contexts) == {k: v for k, v in manifest["problem_contexts"].items() if v}
    assert len(Counter(p["answer"] for p in problems.values())) >= 3  # choices are shuffled


def test_image_questions_are_grounded():
    for index in range(10):
        fig = make_figure(4, index, "train")
        for p in make_questions(fig, 10).values():
            answer = p["choices"][p["answer"]]
            if p["question"] == "Which type of figure is shown?":
                assert answer == fig.figure_type and len(p["choices"]) == 5
            elif p["question"] == "Which bar is the tallest?":
                assert answer == fig.meta["names"][int(np.argmax(fig.meta["heights"]))]
            elif p["question"].startswith("How many nodes"):
                assert answer == str(len(fig.meta["nodes"]))
            elif p["question"] == "Which node has the most connections?":
                assert answer == fig.meta["hub"]


def test_rerun_skips_work_and_config_change_regenerates(tmp_path, monkeypatch):
    config = SciFigConfig(n_train=5, n_val=0, n_test=0, image_size=48)
    first = generate_scifig(tmp_path, config, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the manifest matches")

    with monkeypatch.context() as m:
        m.setattr(scifig, "make_figure", boom)
        assert generate_scifig(tmp_path, config, progress=False) == first
    second = generate_scifig(tmp_path, SciFigConfig(n_train=6, n_val=0, n_test=0, image_size=48), progress=False)
    assert second["counts"]["train"] == 6 and len((tmp_path / "scicap" / "train.jsonl").read_text().splitlines()) == 6


def test_types_are_visually_distinct_at_32px():
    """A nearest-centroid classifier on 32x32 grayscale pixels, trained on 50 figures, tells held-out types apart."""

    def pixels(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        figs = [make_figure(0, i, split) for i in range(n)]
        x = [np.asarray(f.image.convert("L").resize((32, 32)), dtype=np.float32).ravel() / 255 for f in figs]
        return np.stack(x), np.array([FIGURE_TYPES.index(f.figure_type) for f in figs])

    x_train, y_train = pixels("train", 50)
    x_test, y_test = pixels("test", 50)
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(len(FIGURE_TYPES))])
    pred = ((x_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y_test).mean() >= 0.8
