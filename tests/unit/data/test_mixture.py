"""Data mixtures: sources parsed from configs and YAML files, seeded draws, the seed-001 transforms (images stripped,
LLaVA-Instruct groups), the Alpaca and OpenOrca readers in their released layouts, image roots, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitune.config.schema import DataConfig, DataSource
from scitune.data.mixture import (
    TRANSFORMS,
    build_mixture,
    draw,
    llava_group,
    mixture_fingerprint,
    mixture_sources,
    strip_images,
)
from scitune.io import DataError
from scitune.sources.converters import CONVERTERS
from scitune.train.batches import reader_for


def conv(*turns: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]


def llava(rid: str, *turns: str, image: str | None = "000000000001.jpg") -> dict:
    return {"id": rid, **({"image": image} if image else {}), "conversations": conv(*turns)}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- config


def test_a_single_path_is_no_mixture_and_a_list_is():
    assert mixture_sources("data/train.jsonl") is None
    cfg = DataConfig(train=[{"path": "a.jsonl", "count": 3}, {"path": "b.json", "format": "alpaca"}])
    assert [type(s) for s in cfg.train] == [DataSource, DataSource]
    assert [s.name or Path(s.path).stem for s in mixture_sources(cfg.train)] == ["a", "b"]


@pytest.mark.parametrize(
    "source, needle",
    [
        ({"path": "a.jsonl", "count": 2, "fraction": 0.5}, "not both"),
        ({"path": "a.jsonl", "fraction": 1.5}, "fraction must be in (0, 1]"),
        ({"path": "a.jsonl", "cuont": 2}, "unknown key(s) ['cuont']"),
        ({"count": 2}, "needs a 'path'"),
    ],
)
def test_bad_sources_are_named(source, needle):
    with pytest.raises(ValueError, match="--data.train") as e:
        DataConfig(train=[source])
    assert needle in str(e.value)


def test_two_sources_of_one_name_are_refused():
    with pytest.raises(ValueError, match="two sources are named 'a'"):
        mixture_sources([{"path": "x/a.jsonl"}, {"path": "y/a.jsonl"}])


def test_a_mixture_yaml_file_takes_paths_from_its_folder(tmp_path):
    (tmp_path / "mix").mkdir()
    spec = tmp_path / "mix" / "sources.yaml"
    spec.write_text("- {path: ../a.jsonl, image_root: imgs, count: 2}\n- {path: /abs/b.json, format: alpaca}\n")
    a, b = mixture_sources(str(spec))
    assert Path(a.path) == tmp_path / "mix" / "../a.jsonl" and Path(a.image_root) == tmp_path / "mix" / "imgs"
    assert b.path == "/abs/b.json" and b.format == "alpaca"
    spec.write_text("path: a.jsonl\n")
    with pytest.raises(DataError, match="holds a YAML list of sources"):
        mixture_sources(str(spec))


def test_the_cli_keeps_a_single_path_as_typed(tmp_path):
    from scitune.cli.common import parse_run, run_parser

    for value in ("train.jsonl", "a,b.jsonl", "mix.yaml"):
        cfg, _, _ = parse_run(run_parser("train", ""), ["--data.train", value])
        assert cfg.data.train == value
    cfg, text, _ = parse_run(run_parser("train", ""), ["--data.train", "[{path: a.jsonl, count: 2}]"])
    assert cfg.data.train == [DataSource(path="a.jsonl", count=2)]
    assert "- path: a.jsonl" in text  # the resolved config.yaml lists the sources


# ---- transforms


def test_strip_images_removes_the_token_and_the_image_and_keeps_the_text():
    rec = llava("1", "<image>\nWhat is this?", "A cat.", "And\n<image>", "Also a cat.")
    out = strip_images(rec)
    assert "image" not in out and out["conversations"] == conv("What is this?", "A cat.", "And", "Also a cat.")
    assert rec["conversations"][0]["value"] == "<image>\nWhat is this?"  # the input is not changed
    assert TRANSFORMS.get("strip-images") is strip_images


def test_llava_groups_follow_the_released_files():
    detail = llava("d", "Describe the following image in detail.\n<image>", "A long description.")
    reasoning = llava("c", "<image>\nWhy might the man be smiling?", "Because ...")
    conversation = llava("v", "<image>\nWhat is it?", "A bus.", "What colour?", "Red.")
    assert [llava_group(r) for r in (detail, reasoning, conversation)] == [
        "detail",
        "complex-reasoning",
        "conversation",
    ]
    keep = TRANSFORMS.get("llava-group-detail")
    assert keep(detail) is detail and keep(reasoning) is None


# ---- readers in their released layouts


def test_alpaca_reader_reads_stanfords_json_and_the_hub_parquet(tmp_path):
    rows = [
        {"instruction": "Give three tips.", "input": "", "output": "1. Eat. 2. Sleep. 3. Move."},
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"},
        {"instruction": "Draw a cat.", "input": "", "output": "<nooutput>"},
    ]
    src = tmp_path / "alpaca_data.json"
    src.write_text(json.dumps(rows, indent=4))
    read = reader_for("alpaca")
    recs = [r for _, r in read(str(src))]
    assert [r["conversations"] for r in recs] == [
        conv("Give three tips.", "1. Eat. 2. Sleep. 3. Move."),
        conv("Translate.\nBonjour", "Hello"),
    ]
    assert [r["id"] for r in recs] == ["alpaca-0", "alpaca-1"] and all(r["image"] is None for r in recs)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.Table.from_pylist([{**r, "text": "### Instruction: ..."} for r in rows])
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    assert [r for _, r in read(str(tmp_path / "train-00000-of-00001.parquet"))] == recs
    src.write_text(json.dumps([{"instruction": "x", "output": 3}]))
    with pytest.raises(DataError, match=r"alpaca_data.json: record #0: needs a non-empty string 'output'"):
        read(str(src))


def test_openorca_reader_reads_the_hub_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [
        {"id": "niv.242684", "system_prompt": "", "question": "Q1?", "response": "A1."},
        {"id": "flan.1", "system_prompt": "You are a helpful assistant.", "question": "Q2?", "response": "A2."},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "1M-GPT4-Augmented.parquet")
    recs = [r for _, r in reader_for("openorca")(str(tmp_path / "1M-GPT4-Augmented.parquet"))]
    assert [r["id"] for r in recs] == ["niv.242684", "flan.1"]
    assert "system" not in recs[0] and recs[1]["system"] == "You are a helpful assistant."
    assert recs[1]["conversations"] == conv("Q2?", "A2.")
    out = tmp_path / "orca.jsonl"
    CONVERTERS.get("openorca")().run(str(tmp_path / "1M-GPT4-Augmented.parquet"), str(out))
    assert [json.loads(x) for x in out.read_text().splitlines()] == recs


def test_an_unknown_format_lists_the_readable_ones(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [llava("1", "hi", "ho", image=None)])
    with pytest.raises(DataError, match="unknown format 'alpacca'.*known: records, alpaca,.*openorca"):
        build_mixture([DataSource(path=str(src), format="alpacca")], 0, reader_for)


# ---- draws


def test_draws_are_seeded_per_source_and_keep_file_order():
    a = DataSource(path="a", count=5)
    first = draw(20, a, "a", seed=0)
    assert first == sorted(first) and len(set(first)) == 5
    assert draw(20, a, "a", seed=0) == first
    assert draw(20, a, "a", seed=1) != first
    assert draw(20, DataSource(path="a", fraction=0.25), "a", 0) == first  # 0.25 x 20 = 5, the same generator
    assert draw(3, DataSource(path="a"), "a", 0) == [0, 1, 2]
    with pytest.raises(DataError, match="count 5 but it has 3 records.*upsample"):
        draw(3, a, "a", 0)
    up = draw(3, DataSource(path="a", count=8, upsample=True), "a", 0)
    assert up[:6] == [0, 1, 2, 0, 1, 2] and len(up) == 8 and len(set(up[6:])) == 2  # 2 whole copies, 2 drawn


def test_mixture_rewrites_image_paths_to_the_common_root_and_ids_by_source(tmp_path):
    one = write_jsonl(tmp_path / "one" / "a.jsonl", [llava("1", "<image>\nQ", "A", image="x/1.png")])
    two = write_jsonl(tmp_path / "two" / "b.jsonl", [llava("1", "Q <image>", "A", image="2.png")] * 2)
    text = write_jsonl(tmp_path / "c.jsonl", [llava(str(i), "Q", "A", image=None) for i in range(4)])
    sources = [DataSource(path=str(one)), DataSource(path=str(two), image_root=str(tmp_path / "imgs"), count=1),
               DataSource(path=str(text), name="text", fraction=0.5)]  # fmt: skip
    mix = build_mixture(sources, 7, reader_for)
    assert mix.image_root == str(tmp_path)
    assert [r.get("image") for r in mix.records] == ["one/x/1.png", "imgs/2.png", None, None]
    assert [r["id"] for r in mix.records][:2] == ["a/1", "b/1"] and mix.chosen["text"] == sorted(mix.chosen["text"])
    assert [s["drawn"] for s in mix.summary] == [1, 1, 2]
    assert mix.positions["text"] == [int(i) for i in mix.chosen["text"]]  # ids 0..3 at positions 0..3
    bad = write_jsonl(tmp_path / "one" / "bad.jsonl", [llava("9", "<image>\nQ", "A", image="../two/b.jsonl")])
    with pytest.raises(DataError, match="source 'bad', record 'bad/9'.*leads outside the image root"):
        build_mixture([DataSource(path=str(bad))], 0, reader_for)


def test_fingerprint_covers_every_source_its_settings_and_the_seed(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [llava("1", "Q", "A", image=None)])
    b = write_jsonl(tmp_path / "b.jsonl", [llava("2", "Q", "A", image=None)])
    sources = [DataSource(path=str(a)), DataSource(path=str(b), count=1)]
    fp = mixture_fingerprint(sources, 0, None)
    assert mixture_fingerprint(sources, 0, None) == fp
    assert mixture_fingerprint(sources, 1, None) != fp
    assert (
        mixture_fingerprint([sources[0], DataSource(path=str(b), count=1, transforms=["strip-images"])], 0, None) != fp
    )
    write_jsonl(b, [llava("2", "Q", "B", image=None)])
    changed = mixture_fingerprint(sources, 0, None)
    assert changed["mixture"]["1"]["sha256"] != fp["mixture"]["1"]["sha256"]
    assert changed["mixture"]["0"] == fp["mixture"]["0"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("[{path: a.jsonl, count: 0}]", "--data.train source 'a.jsonl': count must be >= 1, got 0"),
        ("[{path: a.jsonl, cuont: 3}]", "--data.train source 0: unknown key(s) ['cuont']"),
        ("[3]", "--data.train: source 0 must be a mapping with a 'path', got 3"),
        ("[{path: a.jsonl", "--data.train: not a valid YAML list of sources"),
    ],
)
def test_a_bad_inline_mixture_is_one_clear_line(value, message):
    from scitune.cli.common import parse_run, run_parser

    with pytest.raises(ValueError) as e:
        parse_run(run_parser("train", ""), ["--data.train", value])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_transform_contract(name):
    """Every transform takes a canonical record and gives a canonical record or None, leaving its input as it was."""
    rec = llava("1", "<image>\nDescribe the following image in detail.", "A dog.")
    before = json.dumps(rec)
    out = TRANSFORMS.get(name)(rec)
    assert json.dumps(rec) == before
    assert out is None or [t["from"] for t in out["conversations"]] == ["human", "gpt"]
    assert (TRANSFORMS.get(name).__doc__ or "").strip()


def test_a_single_file_keeps_its_fingerprint_and_a_mixture_has_its_own(tmp_path):
    from scitune.config.schema import RunConfig
    from scitune.train.run_dir import data_fingerprint

    a = write_jsonl(tmp_path / "a.jsonl", [llava("1", "Q", "A", image=None)])
    single = data_fingerprint(RunConfig(data=DataConfig(train=str(a))))
    assert set(single) == {"train", "image_root"} and set(single["train"]) == {"size", "sha256"}
    mixed = data_fingerprint(RunConfig(data=DataConfig(train=[{"path": str(a), "count": 1}], sample_seed=5)))
    assert mixed["sample_seed"] == 5 and mixed["mixture"]["0"]["sha256"] == single["train"]["sha256"]
    assert mixed["mixture"]["0"]["count"] == 1 and "path" not in mixed["mixture"]["0"]  # the data may move
