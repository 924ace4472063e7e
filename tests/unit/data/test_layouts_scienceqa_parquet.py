"""ScienceQA's Hugging Face parquet release (derek-thomas/ScienceQA: data/<split>-*.parquet, image bytes inside) is
converted exactly as the official problems.json tree is: same conversations, images extracted to <pid>/image.png."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from conftest import SHARED_DATA
from scitune.cli import main as cli
from scitune.io import DataError
from scitune.sources.converters.scienceqa import ScienceQAConverter, load_scienceqa
from scitune.sources.converters.scienceqa_parquet import PARQUET_COLUMNS, load_scienceqa_parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
SQA = SHARED_DATA / "scienceqa"
needs_data = pytest.mark.skipif(not SQA.is_dir(), reason="shared ScienceQA sample not available")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + seed % 5, 6), (seed * 40 % 256, 10, 200)).save(buf, format="PNG")
    return buf.getvalue()


def write_release(folder, split: str, problems: list[dict]) -> None:
    """Write ``problems`` as the Hub release writes a split: the 13 columns in order, image as {bytes, path}."""
    schema = pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer", pa.int8()),
        *[(c, pa.string()) for c in ("hint", "task", "grade", "subject", "topic", "category", "skill", "lecture",
                                     "solution")],
    ])  # fmt: skip
    assert tuple(schema.names) == PARQUET_COLUMNS
    rows = [{**{c: p[c] for c in PARQUET_COLUMNS if c != "image"},
             "image": None if p["image"] is None else {"bytes": _png(i), "path": None}}
            for i, p in enumerate(problems)]  # fmt: skip
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data" / f"{split}-00000-of-00001-0a1b.parquet")


@needs_data
def test_parquet_release_converts_like_the_official_tree(tmp_path):
    official = load_scienceqa(SQA / "problems_trainval_sample.json", SQA / "pid_splits.json", "train", missing="skip")
    problems = [official.problems[pid] for pid in official.pids]  # 50 real problems, 22 with an image
    release = tmp_path / "ScienceQA"
    write_release(release, "train", problems)
    write_release(release, "validation", problems[:3])
    out = tmp_path / "conv" / "train.json"
    assert cli(["convert", "scienceqa", "--src", str(release), "--split", "train", "--prompt_format", "QCM-LEPA",
                         "--out", str(out), "--with_meta", "true"]) == 0  # fmt: skip
    got = json.loads(out.read_text())
    ref_out = tmp_path / "ref.json"
    ScienceQAConverter().run(str(SQA / "problems_trainval_sample.json"), str(ref_out), "train", "QCM-LEPA",
                             str(SQA / "pid_splits.json"), missing="skip", with_meta=True)  # fmt: skip
    want = json.loads(ref_out.read_text())
    assert len(got) == len(want) == 50
    for row, (g, w) in enumerate(zip(got, want)):
        assert g["id"] == f"train-{row}" and g["conversations"] == w["conversations"]
        assert ("image" in g) == ("image" in w) and g.get("image", f"train-{row}/image.png") == f"train-{row}/image.png"
        assert {**g["meta"], "pid": w["id"]} == w["meta"]
        if "image" in g:  # the released bytes (PNG) written as they are
            assert (tmp_path / "conv" / "images" / g["image"]).read_bytes() == _png(row)
    # the split name of pid_splits.json (val) reads the release's "validation" files
    problems_v, pids_v, images_v = load_scienceqa_parquet(release, "val")
    assert pids_v == ["val-0", "val-1", "val-2"] and problems_v["val-0"]["split"] == "val"
    assert set(images_v) == {p for p in pids_v if problems_v[p]["image"] == "image.png"}


def _problem(**kw):
    p = {"image": None, "question": "Which is bigger?", "choices": ["ant", "cow"], "answer": 1, "hint": "",
         "task": "closed choice", "grade": "grade2", "subject": "natural science", "topic": "biology",
         "category": "Animals", "skill": "Compare sizes", "lecture": "Size is measured.", "solution": "A cow is."}  # fmt: skip
    return {**p, **kw}


def test_parquet_jpeg_image_is_written_as_png_and_bad_input_is_named(tmp_path, capsys):
    release = tmp_path / "rel"
    write_release(release, "test", [_problem(), _problem(image="x")])
    # a JPEG in the release is re-encoded as PNG (the official tree's image.png)
    table = pq.read_table(release / "data" / "test-00000-of-00001-0a1b.parquet").to_pylist()
    jpeg = io.BytesIO()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(jpeg, format="JPEG")
    table[1]["image"]["bytes"] = jpeg.getvalue()
    pq.write_table(pa.Table.from_pylist(table), release / "data" / "test-00000-of-00001-0a1b.parquet")
    out = tmp_path / "o" / "test.jsonl"
    summary = ScienceQAConverter().run(str(release), str(out), split="test", prompt_format="QCM-A")
    assert summary["layout"] == "parquet" and summary["with_image"] == 1
    assert Image.open(tmp_path / "o" / "images" / "test-1" / "image.png").format == "PNG"
    with pytest.raises(DataError, match=r"no parquet file for split 'train' \(found splits: test\)"):
        load_scienceqa_parquet(release, "train")
    bad = tmp_path / "bad"
    (bad / "data").mkdir(parents=True)
    pq.write_table(pa.table({"question": ["q"]}), bad / "data" / "train-0.parquet")
    assert cli(["convert", "scienceqa", "--src", str(bad), "--split", "train", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not ScienceQA's parquet release: columns image, choices" in err and len(err.splitlines()) == 1
    (bad / "data" / "train-0.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_scienceqa_parquet(bad, "train")
