"""`scitune eval captioning`: multi-reference BLEU-1..4, METEOR, ROUGE-L, CIDEr equal to pycocoevalcap's own scorers
(called directly here as the reference) without Java (with Java: test_captioning_java.py); NoCaps scored per domain; the released layouts read
by the CLI, COCO result files, and a tiny model captioning a Karpathy test split."""

from __future__ import annotations

import json
import shutil

import pytest
from evalkit import session_checkpoint
from PIL import Image

from scitune.cli import main as cli
from scitune.eval import coco_caption
from scitune.eval.captioning import coco_tokenize
from scitune.eval.coco_caption import MissingJava, score_captions

pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

REFS = {
    "1": ["A man riding a horse on a beach.", "A person rides a horse along the shore.", "Horse and rider by the sea."],
    "2": ["Two dogs play in the snow.", "Dogs playing outside in snow.", "A pair of dogs in the snow"],
    "3": ["A red bus parked on the street.", "A bus is parked next to the curb."],
    "4": ["A plate with a sandwich and fries.", "Lunch: a sandwich, fries, and a pickle."],
}
HYPS = {"1": "a man rides a horse on the beach", "2": "Two dogs playing in snow.", "3": "a bus on a street",
        "4": "a sandwich on a plate with fries"}  # fmt: skip


def reference_scores(gts, res):
    """pycocoevalcap's scorers called directly, as COCOEvalCap.evaluate calls them."""
    out = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


@pytest.fixture
def no_java(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(coco_caption.shutil, "which", lambda name, *a, **k: None if name == "java" else real(name))


def test_scores_equal_pycocoevalcap_without_java(no_java):
    got = score_captions(HYPS, REFS)  # auto: no java -> pure-Python tokens, METEOR left out
    assert got["tokenizer"] == "simple" and got["scores"]["METEOR"] is None
    assert "needs java" in got["skipped"]["METEOR"] and "default-jre-headless" in got["skipped"]["METEOR"]
    gts = {k: [coco_tokenize(r) for r in v] for k, v in REFS.items()}
    res = {k: [coco_tokenize(HYPS[k])] for k in REFS}
    want = reference_scores(gts, res)
    assert {k: v for k, v in got["scores"].items() if k != "METEOR"} == pytest.approx(want, abs=1e-12)
    assert 0 < want["Bleu_4"] < want["Bleu_1"] < 1 and want["CIDEr"] > 0.5  # a set that can tell scorers apart
    assert sum(got["per_item"]["CIDEr"].values()) / 4 == pytest.approx(got["scores"]["CIDEr"])
    with pytest.raises(MissingJava, match="java is not found"):
        score_captions(HYPS, REFS, tokenizer="ptb")
    with pytest.raises(MissingJava, match="--meteor on"):
        score_captions(HYPS, REFS, tokenizer="simple", meteor="on")
    # a missing prediction is an empty caption: it lowers the scores, it is not dropped
    assert score_captions({"1": HYPS["1"]}, REFS)["scores"]["CIDEr"] < got["scores"]["CIDEr"]


def nocaps_file(path):
    domains = ["in-domain", "in-domain", "near-domain", "near-domain", "out-domain", "out-domain"]
    caps = [["a dog on a couch", "a brown dog lying on a sofa"], ["a man surfing a wave", "a surfer on a big wave"],
            ["a red fox in the grass", "a fox standing in a field"], ["a lighthouse on a cliff", "a white lighthouse"],
            ["a jellyfish in blue water", "a glowing jellyfish"], ["an accordion on a table", "a red accordion"]]  # fmt: skip
    images = [{"id": i, "open_images_id": f"{i:016x}", "file_name": f"{i:016x}.jpg", "domain": d}
              for i, d in enumerate(domains)]  # fmt: skip
    anns = [{"image_id": i, "id": 10 * i + k, "caption": c} for i, cs in enumerate(caps) for k, c in enumerate(cs)]
    path.write_text(json.dumps({"licenses": [], "info": {}, "images": images, "annotations": anns}))
    return caps


def test_nocaps_per_domain_table(tmp_path, no_java):
    caps = nocaps_file(tmp_path / "nocaps_val_4500_captions.json")
    hyps = ["a dog lying on a sofa", "a surfer riding a wave", "a fox in the grass", "a tower on a hill",
            "a jellyfish", "a piano on a table"]  # fmt: skip
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": i, "caption": h} for i, h in enumerate(hyps)]))
    out = tmp_path / "eval"
    assert cli(["eval", "captioning", "--data", str(tmp_path / "nocaps_val_4500_captions.json"), "--predictions",
                str(tmp_path / "pred.json"), "--out", str(out), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert list(res["domains"]) == ["in-domain", "near-domain", "out-domain", "overall"]
    for d, ids in (("in-domain", [0, 1]), ("near-domain", [2, 3]), ("out-domain", [4, 5]), ("overall", range(6))):
        gts = {str(i): [coco_tokenize(c) for c in caps[i]] for i in ids}
        want = reference_scores(gts, {str(i): [coco_tokenize(hyps[i])] for i in ids})
        assert {k: res["domains"][d][k] for k in want} == pytest.approx(want, abs=1e-12)  # each domain on its own
        assert res["domains"][d]["count"] == len(ids)
    assert res["summary"]["cider"] == pytest.approx(100 * res["domains"]["overall"]["CIDEr"])
    assert res["summary"]["out-domain/cider"] == pytest.approx(100 * res["domains"]["out-domain"]["CIDEr"])
    assert res["summary"]["meteor"] is None and res["data_format"] == "nocaps"
    report = (out / "report.md").read_text()
    assert "| in-domain (2) |" in report and "| overall (6) |" in report and "METEOR left out: needs java" in report
    assert (out / "domains.png").is_file()
    # an explicit Java part without java: one line naming what to install, no traceback
    assert cli(["eval", "captioning", "--data", str(tmp_path / "nocaps_val_4500_captions.json"), "--predictions",
                str(tmp_path / "pred.json"), "--out", str(tmp_path / "e2"), "--tokenizer", "ptb"]) == 2  # fmt: skip


def test_karpathy_split_with_a_tiny_model(tmp_path_factory, tmp_path):
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    images = []
    for i, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        name = f"COCO_val2014_{i:012d}.jpg"
        Image.new("RGB", (32, 32), color).save(root / "val2014" / name)
        sents = [{"raw": f"A {c} square.", "tokens": [], "imgid": i, "sentid": 2 * i + k} for k, c in
                 enumerate(["red", "plain"] if i == 0 else ["green", "bright"] if i == 1 else ["blue", "dark"])]  # fmt: skip
        images.append({"filepath": "val2014", "filename": name, "imgid": i, "split": "test", "sentences": sents,
                       "cocoid": 100 + i})  # fmt: skip
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    out = tmp_path / "eval"
    argv = ["eval", "captioning", "--data", str(root / "dataset_coco.json"), "--checkpoint", ck, "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "3", "--device", "cpu", "--progress", "false",
            "--tokenizer", "simple", "--meteor", "off"]  # fmt: skip
    assert cli(argv) == 0
    res = json.loads((out / "results.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == ["100", "101", "102"] and res["count"] == 3
    assert preds[0]["prompt"].count("<image>") <= 1 and res["data_format"] == "karpathy-coco"
    want = score_captions({p["id"]: p["text"] for p in preds}, {str(100 + i): [s["raw"] for s in im["sentences"]]
                          for i, im in enumerate(images)}, tokenizer="simple", meteor="off")  # fmt: skip
    assert res["scores"] == pytest.approx(want["scores"])
    assert res["skipped"] == {"METEOR": "--meteor off"}
