"""`scitune convert caption-pairs`: LLaVA's noun-phrase filter (hand-computed counts), stage-1 record shape, seeding,
the three input layouts and the missing-spaCy-model message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitune.cli import main
from scitune.sources.converters.caption_pairs import (
    BRIEF_INSTRUCTIONS,
    filter_by_noun_phrases,
    load_instructions,
    noun_phrases,
    read_caption_pairs,
)

pytest.importorskip("spacy")

# With --extractor words (non-stop words) and --min_count 2 --max_per_phrase 2, by hand:
#   dog: captions 0, 1, 2 (3 > 2: a random 2 kept) · ball: 3, 4 (2: both kept)
#   beach, running, sleeping, red, game, sunset: 1 caption each (< 2: rare) · caption 6: no phrase
#   kept = 2 dog captions + {3, 4} = 4; dropped = 3 (one dog caption, 5, 6)
CAPTIONS = ["dog on the beach", "dog running", "dog sleeping", "red ball", "ball game", "sunset", "of the"]


def _tsv(folder: Path, captions=CAPTIONS) -> Path:
    path = folder / "Train_GCC-training.tsv"
    lines = [f"{c}\thttps://example.invalid/img/{i}.jpg\n" for i, c in enumerate(captions)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _convert(capsys, src: Path, out: Path, *flags: str) -> dict:
    rc = main(["convert", "caption-pairs", "--src", str(src), "--out", str(out), "--extractor", "words", *flags])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_counts_match_the_hand_computed_example(tmp_path, capsys):
    out = tmp_path / "stage1.jsonl"
    s = _convert(capsys, _tsv(tmp_path), out, "--min_count", "2", "--max_per_phrase", "2", "--seed", "0")
    assert (s["pairs"], s["kept"], s["dropped"], s["records"]) == (7, 4, 3, 4)
    assert (s["phrases_before"], s["phrases_rare"], s["phrases_capped"], s["captions_without_phrase"]) == (8, 6, 1, 1)
    assert s["phrases_after"] == 6  # ball, red, game, dog + the 2 other words of the two kept dog captions
    ids = [r["id"] for r in _records(out)]
    assert {"000000003", "000000004"} <= set(ids) and len({"000000000", "000000001", "000000002"} & set(ids)) == 2
    report = json.loads(Path(s["report"]).read_text())
    by = {r["phrase"]: (r["before"], r["after"]) for r in report["phrases"]}
    assert by["dog"] == (3, 2) and by["ball"] == (2, 2) and by["sunset"] == (1, 0)
    assert report["min_count"] == 2 and report["max_per_phrase"] == 2 and report["kept"] == 4


def test_records_have_llava_stage1_shape(tmp_path, capsys):
    caps = [f"a photo of object number {i}" for i in range(40)]
    out = tmp_path / "chat.json"  # LLaVA's stage-1 file is a JSON list
    _convert(capsys, _tsv(tmp_path, caps), out, "--no_filter", "true", "--id_prefix", "GCC_train_")
    recs = json.loads(out.read_text())
    assert len(recs) == 40
    sides, used = set(), set()
    for i, r in enumerate(recs):
        assert r["id"] == f"GCC_train_{i:09d}" and r["image"] == f"GCC_train_{i:09d}.jpg"
        assert r["meta"]["url"] == f"https://example.invalid/img/{i}.jpg"
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt == {"from": "gpt", "value": caps[i]}
        first, second = human["value"].split("\n")
        assert "<image>" in (first, second)
        instr = second if first == "<image>" else first
        assert instr in BRIEF_INSTRUCTIONS
        sides.add(first == "<image>")
        used.add(instr)
    assert sides == {True, False} and len(used) > 3  # both placements and several instructions, at random


def test_seed_gives_the_same_selection_twice(tmp_path, capsys):
    caps = [f"dog number {i} with a tail" for i in range(12)] + ["cat nap", "cat toy", "cat bed"]
    src = _tsv(tmp_path, caps)
    flags = ("--min_count", "3", "--max_per_phrase", "4")
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8), ("d", 9), ("e", 10)):
        _convert(capsys, src, tmp_path / f"{name}.jsonl", *flags, "--seed", str(seed))
        runs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert runs["a"] == runs["b"]
    assert len({runs[k] for k in "acde"}) > 1  # the seed does choose the subset


def test_filter_with_injected_phrases():
    phrases = [["a dog"], ["a dog", "the park"], ["a dog"], ["the park"], [], ["a cat"]] + [["a dog"]] * 3
    res = filter_by_noun_phrases(phrases, min_count=2, max_per_phrase=4, seed=1)
    # "a dog": 6 captions (> 4: 4 kept); "the park": 2 (kept: 1, 3); "a cat": 1 (rare); caption 4: none
    assert res.before == {"a dog": 6, "the park": 2, "a cat": 1}
    assert (res.n_rare, res.n_capped, res.n_no_phrase) == (1, 1, 1)
    assert {1, 3} <= set(res.kept) and 4 not in res.kept and 5 not in res.kept
    assert res.after["a dog"] == 4 and res.after["the park"] == 2
    assert res == filter_by_noun_phrases(phrases, min_count=2, max_per_phrase=4, seed=1)
    with pytest.raises(ValueError, match="--min_count"):
        filter_by_noun_phrases(phrases, min_count=0)


def test_noun_phrases_reads_spacy_noun_chunks():
    import spacy
    from spacy.tokens import Doc

    vocab = spacy.blank("en").vocab

    class ParsedPipeline:  # stands in for en_core_web_sm: a hand-parsed Doc per caption
        def pipe(self, texts, batch_size=1):
            for _ in texts:
                yield Doc(vocab, words=["A", "big", "dog", "chases", "the", "red", "ball"],
                          pos=["DET", "ADJ", "NOUN", "VERB", "DET", "ADJ", "NOUN"],
                          deps=["det", "amod", "nsubj", "ROOT", "det", "amod", "dobj"], heads=[2, 2, 3, 3, 6, 6, 3])  # fmt: skip

    assert noun_phrases(ParsedPipeline(), ["x"]) == [["a big dog", "the red ball"]]


def test_missing_spacy_model_says_how_to_get_it(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("en_core_web_sm") is not None:
        pytest.skip("en_core_web_sm is installed here")
    rc = main(["convert", "caption-pairs", "--src", str(_tsv(tmp_path)), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert "python -m spacy download en_core_web_sm" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_folder_and_parquet_layouts(tmp_path, capsys):
    folder = tmp_path / "shard"
    (folder / "00000").mkdir(parents=True)
    for i, c in enumerate(["red ball", "ball game", ""]):
        (folder / "00000" / f"{i:09d}.jpg").write_bytes(b"jpeg")
        (folder / "00000" / f"{i:09d}.txt").write_text(c, encoding="utf-8")
    (folder / "00000" / "no_caption.jpg").write_bytes(b"jpeg")
    pairs, empty = read_caption_pairs(folder)
    assert [(p.id, p.image, p.caption) for p in pairs] == [
        ("00000/000000000", "00000/000000000.jpg", "red ball"),
        ("00000/000000001", "00000/000000001.jpg", "ball game"),
    ] and empty == 1
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "laion.parquet"
    pq.write_table(pa.table({"URL": ["https://e.invalid/a.jpg", "https://e.invalid/b.jpg"], "TEXT": ["x y", "z"]}),
                   path)  # fmt: skip
    pairs, _ = read_caption_pairs(path, "laion_")
    assert [(p.id, p.image, p.caption) for p in pairs] == [
        ("laion_000000000", "https://e.invalid/a.jpg", "x y"),
        ("laion_000000001", "https://e.invalid/b.jpg", "z"),
    ]
    s = _convert(capsys, folder, tmp_path / "f.jsonl", "--min_count", "2")
    assert (s["kept"], s["dropped"]) == (2, 0)  # "ball" is in both
    assert _records(tmp_path / "f.jsonl")[0]["image"] == "00000/000000000.jpg"


def test_instructions_file(tmp_path):
    (tmp_path / "i.txt").write_text("# mine\nSay what you see briefly.\n\nOne line, please.\n")
    assert load_instructions(tmp_path / "i.txt") == ["Say what you see briefly.", "One line, please."]
    (tmp_path / "i.json").write_text(json.dumps(["Describe the image concisely."]))
    assert load_instructions(tmp_path / "i.json") == ["Describe the image concisely."]
    assert load_instructions(None) == list(BRIEF_INSTRUCTIONS)
