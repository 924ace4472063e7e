"""Few-shot VQA (MAGMA / LiMBeR protocol): answer normalisation and VQA accuracy against hand-computed values, the
prompt layout (shots + 1 images), a --predictions run with exact numbers, the data layouts and a tiny-model run."""

from __future__ import annotations

import json

import pytest
from evalkit import session_checkpoint
from PIL import Image

from scitune.cli.eval import main
from scitune.eval.vqa import (
    VqaItem,
    build_vqa_examples,
    load_vqa,
    normalize_vqa_answer,
    row_names,
    vqa_accuracy,
    vqa_answer,
    vqa_prompt,
)
from scitune.io import DataError


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),  # lower-case, number word -> digit
        ("the dog.", "dog"),  # article dropped, final period removed
        ("An Apple ", "apple"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("10,000", "10000"),  # a digit comma: every mark is removed
        ("yes!", "yes"),  # a mark is replaced by a space, then spaces collapse
        ("cat-dog", "cat dog"),
        ("cat - dog", "cat dog"),  # a mark that touches a space is removed
        ("dont know", "don't know"),  # contraction restored
        ("couldnt've", "couldn't've"),
        ("its red", "its red"),  # an ordinary word is not a contraction
        ("none", "0"),
        ("Mr. Smith\tjr", "mr smith jr"),
        ("a:b", "a:b"),  # colons are not among the official marks
    ],
)
def test_normalisation_cases(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


def test_vqa_accuracy_official_formula_and_short_lists():
    # 10 answers: the mean over the 10 leave-one-out subsets of min(#matches / 3, 1), by hand:
    # m matches -> (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10
    for m, expected in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        answers = ["2"] * m + ["3"] * (10 - m)
        assert vqa_accuracy("two", answers) == pytest.approx(expected)  # "two" normalises to "2"
    assert vqa_accuracy("The Cat.", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    # fewer than 10 answers: min(#matches / min(3, k), 1)
    assert vqa_accuracy("yes", ["yes", "yes", "no"]) == pytest.approx(2 / 3)
    assert vqa_accuracy("yes", ["yes", "yes", "yes", "no"]) == 1.0
    assert vqa_accuracy("Bar Chart", ["bar chart"]) == 1.0 and vqa_accuracy("bar", ["bar chart"]) == 0.0
    assert vqa_accuracy("a", ["b", "a"]) == 0.5
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_answer_extraction():
    assert vqa_answer("  blue\nQ: what next? A: red") == "blue"
    assert vqa_answer("\n\n4 Q: How many? A: 5") == "4"
    assert vqa_answer("") == ""


def _vqa_set(root, n=5):
    """n JSONL questions on n solid-colour images; question i has 10 answers."""
    root.mkdir(parents=True, exist_ok=True)
    colors = ["red", "green", "blue", "yellow", "black", "white"]
    rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20),
           "black": (0, 0, 0), "white": (255, 255, 255)}  # fmt: skip
    lines = []
    for i in range(n):
        c = colors[i % len(colors)]
        Image.new("RGB", (32, 32), rgb[c]).save(root / f"im{i}.png")
        answers = [c] * 7 + ["dark"] * 3 if i % 2 else [c] * 2 + ["light"] * 8
        lines.append({"id": f"q{i}", "image": f"im{i}.png", "question": "What color is it?", "answers": answers})
    path = root / "vqa.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_prompt_layout_has_shots_plus_one_images(tmp_path):
    from scitune.infer.generate import Generator, Prompt, open_image
    from scitune.loader import tiny_vlm

    items = load_vqa(_vqa_set(tmp_path))
    examples = build_vqa_examples(items, items, shots=(0, 1, 2), blind=True, seed=3)
    assert [e.meta["row"] for e in examples[:6]] == ["0-shot", "1-shot", "2-shot", "blind-0-shot", "blind-1-shot",
                                                     "blind-2-shot"]  # fmt: skip
    assert len(examples) == 6 * len(items)
    model, processor = tiny_vlm()
    gen = Generator(model, processor)
    for e in examples:
        n, blind = e.meta["shots"], e.meta["blind"]
        ids = gen._batch([Prompt.single(e.text, [open_image(p) for p in e.images])])["input_ids"][0]
        images = 0 if blind else n + 1
        assert len(e.images) == images and e.text.count("<image>") == images
        assert int((ids == model.image_token_id).sum()) == images * model.num_image_tokens
        assert e.text.count("Q: ") == n + 1 and e.text.endswith(f"Q: {e.meta['question']} A:")
        query = e.id.split("/", 1)[1]
        assert query not in e.meta["shot_ids"] and len(set(e.meta["shot_ids"])) == n
        if not blind:
            assert e.images[-1].endswith(f"im{query[1:]}.png")
    # nested and seeded: the 2-shot row extends the 1-shot row; blind rows show the same shots
    by_id = {e.id: e for e in examples}
    for q in items:
        one, two, blind2 = (by_id[f"{r}/{q.id}"].meta["shot_ids"] for r in ("1-shot", "2-shot", "blind-2-shot"))
        assert two[:1] == one and blind2 == two
    again = build_vqa_examples(items, items, shots=(0, 1, 2), blind=True, seed=3)
    assert [e.text for e in again] == [e.text for e in examples]
    other = build_vqa_examples(items, items, shots=(0, 1, 2), blind=True, seed=4)
    assert [e.meta["shot_ids"] for e in other] != [e.meta["shot_ids"] for e in examples]


def test_prompt_text_and_rows():
    assert vqa_prompt("Q2?", [("Q1?", "a1")]) == "<image>\nQ: Q1? A: a1\n<image>\nQ: Q2? A:"
    assert vqa_prompt("Q2?", [("Q1?", "a1")], None) == "Q: Q1? A: a1\nQ: Q2? A:"
    assert [r[0] for r in row_names([0, 4], True)] == ["0-shot", "4-shot", "blind-0-shot", "blind-4-shot"]
    with pytest.raises(ValueError):
        row_names([1, 1], False)
    assert VqaItem("x", "q", ["b", "a", "a", "b", "a"]).answer == "a"


def test_predictions_run_gives_exact_numbers(tmp_path):
    data = _vqa_set(tmp_path / "d", n=4)
    items = load_vqa(data)
    # q0: 2 x red, 8 x light; q1: 7 x green, 3 x dark; q2: 2 x blue, 8 x light; q3: 7 x yellow, 3 x dark
    texts = {
        "0-shot": ["red", "Green\nQ: more", "light", "no"],  # 0.6, 1, 1 (8 x light), 0  -> 65 %
        "1-shot": ["the light.", "dark", "Blue", "Yellow!"],  # 1, 0.9 (3 x dark), 0.6, 1 -> 87.5 %
        "blind-0-shot": ["", "green", "x", None],  # 0, 1, 0, missing (0)             -> 25 %
        "blind-1-shot": ["dark", "dark", "dark", "dark"],  # 0, 0.9, 0, 0.9            -> 45 %
    }
    lines = [
        {"id": f"{row}/{q.id}", "text": t} for row, ts in texts.items() for q, t in zip(items, ts) if t is not None
    ]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert main(["vqa", "--data", str(data), "--predictions", str(pred), "--out", str(out), "--shots", "[0, 1]",
                 "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["summary"] == pytest.approx({"0-shot": 65.0, "1-shot": 87.5, "blind-0-shot": 25.0,
                                            "blind-1-shot": 45.0})  # fmt: skip
    assert res["rows"]["blind-0-shot"]["answered"] == 3 and res["input"]["missing"] == 1
    report = (out / "report.md").read_text()
    assert "| 0 | 65.00 | 25.00 | 4 |" in report and (out / "vqa.png").is_file()


def test_layouts_and_bad_input(tmp_path):
    # VQAv2: questions + annotations (name derived), COCO image names
    qs = {"data_subtype": "val2014", "questions": [{"question_id": 7, "image_id": 42, "question": "Is it?"}]}
    anns = {"annotations": [{"question_id": 7, "answers": [{"answer": "yes", "answer_id": i} for i in range(10)]}]}
    (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(qs))
    (tmp_path / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(anns))
    [item] = load_vqa(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json")
    assert item.id == "7" and item.answers == ["yes"] * 10
    assert item.image.endswith("val2014/COCO_val2014_000000000042.jpg")
    (tmp_path / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(DataError, match="--annotations"):
        load_vqa(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "question": "q", "answers": ["a"]}) + "\n" + json.dumps({"id": 2}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: 'question'"):
        load_vqa(bad)
    items = load_vqa(_vqa_set(tmp_path / "few", n=2))
    with pytest.raises(DataError, match="q0: the support set has 1 usable item"):
        build_vqa_examples(items, items, shots=(0, 2))


@pytest.fixture(scope="module")
def scifig(tmp_path_factory):
    from scitune.sources.scifig import SciFigConfig, generate_scifig

    root = tmp_path_factory.mktemp("scifig-vqa")
    generate_scifig(root, SciFigConfig(n_train=6, n_val=0, n_test=3, image_size=32), progress=False)
    return root


def test_scifig_adapter(scifig):
    problems = json.loads((scifig / "scienceqa" / "problems.json").read_text())
    items = load_vqa(scifig / "scienceqa", split="test")
    assert items and all(i.id.startswith("scifig-test") for i in items)
    for item in items:
        prob = problems[item.id]
        assert item.question == prob["question"] and item.answers == [prob["choices"][prob["answer"]]]
        assert (item.image is None) == (not prob["image"])


def test_tiny_model_end_to_end(scifig, tmp_path_factory, tmp_path):
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "vqa"
    assert main(["vqa", "--data", str(scifig / "scienceqa"), "--checkpoint", ck, "--out", str(out), "--shots",
                 "[0, 1, 2]", "--max-new-tokens", "3", "--progress", "false", "--device", "cpu"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    questions = sum(1 for i in load_vqa(scifig / "scienceqa", split="test") if i.image)
    assert set(res["summary"]) == {"0-shot", "1-shot", "2-shot", "blind-0-shot", "blind-1-shot", "blind-2-shot"}
    assert all(0 <= v <= 100 for v in res["summary"].values()) and res["questions"] == questions
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 6 * questions and res["input"]["missing"] == 0
    two = next(r for r in recs if r["id"].startswith("2-shot/"))
    assert two["prompt"].count("<image>") == 3 and two["prompt"].count("Q: ") == 3
    blind = next(r for r in recs if r["id"].startswith("blind-2-shot/"))
    assert "<image>" not in blind["prompt"] and blind["prompt"].count("Q: ") == 3
