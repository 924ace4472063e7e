"""SciFig: reproducible figures, exact OCR ground truth, ScienceQA-schema questions, layout, resume, distinct types."""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from scitune.sources import scifig  # noqa: E402
from scitune.sources.scifig import (  # noqa: E402
    FIGURE_TYPES,
    LECTURES,
    SciFigConfig,
    generate_scifig,
    make_figure,
    make_questions,
)
from scitune.sources.scifig import text as scifig_text  # noqa: E402

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
                assert f"{se['name']} ({se['color']}) {scifig_text._TREND_VERB[se['trend']]}" in fig.caption
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


def _degrees(meta: dict) -> Counter:
    return Counter(x for edge in meta["edges"] for x in edge)


def _expected_answer(fig: scifig.SciFigFigure, pid: str, p: dict) -> str:
    """The answer recomputed from the data that drew the figure (``fig.meta``); unknown questions fail."""
    m, q = fig.meta, p["question"]
    if q == "Which type of figure is shown?" or q.startswith("Which type of figure is best for"):
        return fig.figure_type
    if pid.endswith("-txt"):  # the data is in the hint: check the hint names every item, then recompute
        if fig.figure_type == "Node Diagram":
            assert all(f"from {a} to {b}" in p["hint"] for a, b in m["edges"])
            return _degrees(m).most_common(1)[0][0]
        if fig.figure_type == "Equation":
            k = int(re.search(r"equation \((\d)\)", q).group(1))
            return m["equations"][k - 1]["lhs"]
        values = {"Graph Plot": lambda: [se["y"][-1] for se in m["series"]],
                  "Scatterplot": lambda: [float(np.mean(g["y"])) for g in m["groups"]],
                  "Bar Chart": lambda: m["heights"]}[fig.figure_type]()  # fmt: skip
        assert all(name in p["hint"] for name in m["names"])
        return m["names"][int(np.argmax(values))]
    if q.startswith("Which trend does"):
        se = m["series"][0] if len(m["series"]) == 1 else next(s for s in m["series"] if s["name"] in q)
        lo, hi = m["y_lim"]
        y = (np.asarray(se["y"]) - lo) / (hi - lo)  # as a fraction of the y axis
        if y[-1] > y[0] + 0.2 and y.max() < y[-1] + 0.1:
            return "increasing"
        if y[-1] < y[0] - 0.2 and y.max() < y[0] + 0.1:
            return "decreasing"
        assert y.max() > max(y[0], y[-1]) + 0.2  # a clear peak between the ends
        return "rises then falls"
    if q == "How many curves are plotted?":
        return str(len(m["series"]))
    if q.startswith("What color is the curve labelled"):
        return next(s["color"] for s in m["series"] if q.endswith(f"labelled {s['name']}?"))
    if q == "Which kind of correlation do the plotted points show?":
        rs = [np.corrcoef(g["x"], g["y"])[0, 1] for g in m["groups"]]
        kind = "positive" if min(rs) > 0.7 else ("negative" if max(rs) < -0.7 else "no clear")
        assert kind != "no clear" or max(map(abs, rs)) < 0.2
        return f"{kind} correlation"
    if q.startswith("What color are the points labelled"):
        return next(g["color"] for g in m["groups"] if q.endswith(f"labelled {g['name']}?"))
    if q == "How many groups of points does the legend list?":
        return str(len(m["groups"]))
    if q in ("Which bar is the tallest?", "Which bar is the shortest?"):
        pick = np.argmax if "tallest" in q else np.argmin
        assert sorted(m["heights"]).count(pick(m["heights"]) and m["heights"][pick(m["heights"])]) <= 1
        return m["names"][int(pick(m["heights"]))]
    if q == "How many bars are shown?":
        return str(len(m["heights"]))
    if q == "What color are the bars?":
        assert len(set(m["colors"])) == 1
        return m["colors"][0]
    if q.startswith("What color is the bar for"):
        return next(c for n, c in zip(m["names"], m["colors"]) if q.endswith(f"bar for {n}?"))
    if q == "How many nodes are in the diagram?":
        return str(len(m["nodes"]))
    if q == "Which node has the most connections?":
        (hub, top), (_, second) = _degrees(m).most_common(2)
        assert top > second
        return hub
    if q.startswith("Which node does the arrow from"):
        a = re.search(r"arrow from (.+) point to\?", q).group(1)
        targets = [b for a2, b in m["edges"] if a2 == a]
        assert len(targets) == 1
        return targets[0]
    if q == "How many numbered equations are shown?":
        return str(len(m["equations"]))
    eqs = m["equations"]
    k = int(re.search(r"equation \((\d)\)", q).group(1)) - 1 if "equation (" in q else 0
    if q.startswith("Which quantity is on the left-hand side"):
        assert eqs[k]["text"].startswith(eqs[k]["lhs"] + " =")  # the drawn text shows it
        return eqs[k]["lhs"]
    if q.startswith("Which function appears in"):
        return eqs[k]["function"]
    raise AssertionError(f"no check for question {q!r}: add one")


def test_every_mcq_answer_matches_the_data_that_drew_the_figure():
    """All question kinds, over 35 figures of every type: the keyed answer is the one the figure's data gives."""
    seen = Counter()
    for index in range(35):  # 35 = lcm(5 types, 7 context cycle): every type meets every context kind
        fig = make_figure(7, index, "test")
        for pid, p in make_questions(fig, 10).items():
            answer = p["choices"][p["answer"]]
            assert answer == _expected_answer(fig, pid, p), (pid, p["question"])
            assert p["choices"].count(answer) == 1
            seen[re.sub(r"labelled .+|for .+|from .+|\(\d\)", "X", p["question"])] += 1
    assert len(seen) >= 20  # every kind of question was met


def test_files_do_not_depend_on_worker_count(tmp_path, monkeypatch):
    import scitune.sources.scifig.dataset as ds

    monkeypatch.setattr(ds, "FIGURES_PER_WORKER", 1)  # so few figures would otherwise render in this process
    config = SciFigConfig(n_train=6, n_val=3, n_test=2, image_size=32, seed=9, questions_per_figure=2)
    one, two = tmp_path / "one", tmp_path / "two"
    generate_scifig(one, config, progress=False, workers=1)
    generate_scifig(two, config, progress=False, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) and len(files) > 30
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_split_counts_and_gallery(tmp_path):
    from PIL import Image

    from scitune.sources.scifig.dataset import render_gallery, split_counts

    assert split_counts(2000) == {"train": 1600, "val": 200, "test": 200}
    assert split_counts(9) == {"train": 9, "val": 0, "test": 0} and sum(split_counts(57).values()) == 57
    with pytest.raises(ValueError):
        split_counts(-1)
    path = render_gallery(tmp_path / "g.png", seed=0, per_type=2, image_size=40)
    with Image.open(path) as im:
        assert im.size == (150 + 2 * 48 + 8, 5 * 48 + 8)
        # the first cell of the Bar Chart row is train figure 4 of seed 0, unscaled
        cell = np.asarray(im.convert("RGB"))[8 + 4 * 48 : 8 + 4 * 48 + 40, 158:198]
    assert np.array_equal(cell, np.asarray(make_figure(0, 4, "train", "Bar Chart", 40).image))


def test_kinds_filter_asks_only_those_kinds_and_is_checked():
    from scitune.sources.scifig import GLANCE_KINDS, QUESTION_KINDS, make_figure, make_questions, question_kind

    assert set(GLANCE_KINDS) <= {k for k, _ in QUESTION_KINDS}
    seen = set()
    for i in range(10):
        fig = make_figure(0, i, "train", FIGURE_TYPES[i % 5], 64)
        for prob in make_questions(fig, 3, GLANCE_KINDS).values():
            if prob["image"]:
                seen.add(question_kind(prob["question"]))
        every = {question_kind(p["question"]) for p in make_questions(fig, 9).values() if p["image"]}
        assert "other" not in every  # every template has a kind
    assert seen <= set(GLANCE_KINDS) and len(seen) >= 5
    with pytest.raises(ValueError, match="unknown"):
        SciFigConfig(kinds=("no-such-kind",))


def test_fixed_choices_keep_the_questions_and_fix_the_order():
    """fixed_choices changes only the order (and the count windows): same questions, answers, grades and solutions;
    the choices in pool order, so each answer has one letter per question kind; counts span the kind's range."""
    from scitune.sources.scifig import question_kind
    from scitune.sources.scifig.render import COLOR_NAMES, CORRELATIONS, TRENDS

    vocab = {"trend": TRENDS, "correlation": [f"{c} correlation" for c in CORRELATIONS], "bar-color": COLOR_NAMES,
             "figure-type": FIGURE_TYPES, "figure-choice": FIGURE_TYPES}  # fmt: skip
    letters: dict[tuple[str, str], set[int]] = {}
    for index in range(70):
        fig = make_figure(5, index, "train", image_size=32)
        shuffled, fixed = make_questions(fig, 10), make_questions(fig, 10, fixed_choices=True)
        assert shuffled.keys() == fixed.keys()
        for pid, p in fixed.items():
            q, kind = shuffled[pid], question_kind(p["question"])
            same = ("question", "hint", "grade", "solution", "skill", "lecture")
            assert all(p[k] == q[k] for k in same) and p["choices"][p["answer"]] == q["choices"][q["answer"]]
            if kind.startswith("count-"):
                values = [int(c) for c in p["choices"]]
                assert values == list(range(values[0], values[0] + 4))  # ascending, 4 consecutive counts
                letters.setdefault((kind, p["choices"][p["answer"]]), set()).add(p["answer"])
            elif kind in vocab:
                assert p["choices"] == sorted(p["choices"], key=list(vocab[kind]).index)
                if kind != "bar-color":  # all of the vocabulary is shown: one letter per answer
                    assert len(p["choices"]) == len(vocab[kind])
                    letters.setdefault((kind, p["choices"][p["answer"]]), set()).add(p["answer"])
            elif pid.endswith("-txt") and "arrows go" not in p["hint"] and "Equation (1)" not in p["hint"]:
                at = [p["hint"].index(f" {c} ") for c in p["choices"]]
                assert at == sorted(at)  # names in the hint's order
    assert len(letters) >= 15 and all(len(v) == 1 for v in letters.values()), letters
