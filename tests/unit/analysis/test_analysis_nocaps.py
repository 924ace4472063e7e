"""`scitune analyze nocaps`: CIDEr-D per NoCaps domain and over all, CLIPScore with a tiny CLIP, one table."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from scitune.cli import main

pytest.importorskip("pycocoevalcap")

REFS = {  # image id -> (domain, references)
    0: ("in-domain", ["a man riding a horse on a beach", "a person on a horse near the sea"]),
    1: ("in-domain", ["two dogs playing in the snow", "dogs running through snow"]),
    2: ("near-domain", ["a red car parked on a street", "a car parked by the road"]),
    3: ("near-domain", ["a bowl of fruit on a table", "apples and bananas in a bowl"]),
    4: ("out-domain", ["a jellyfish floating in dark water", "a glowing jellyfish in the ocean"]),
    5: ("out-domain", ["an accordion on a wooden chair", "a musical instrument on a chair"]),
}


@pytest.fixture
def nocaps(tmp_path):
    images = [{"id": i, "file_name": f"{i:04d}abcd.jpg", "domain": d} for i, (d, _) in REFS.items()]
    anns = [
        {"image_id": i, "id": 10 * i + k, "caption": c} for i, (_, refs) in REFS.items() for k, c in enumerate(refs)
    ]
    path = tmp_path / "nocaps_val_4500_captions.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    for im in images:
        Image.new("RGB", (32, 32), (40 * im["id"], 90, 200 - 30 * im["id"])).save(tmp_path / im["file_name"])
    return path


def _run(capsys, nocaps, preds: dict, out, *flags):
    rc = main(["analyze", "nocaps", "--annotations", str(nocaps), "--predictions", json.dumps(preds),
               "--out", str(out), *flags])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads((out / "results.json").read_text()), captured.out


def test_cider_per_domain(tmp_path, nocaps, capsys):
    from scitune.eval.captioning import cider_d

    # "in": the first reference on in-domain images, nonsense elsewhere; submission JSON with image ids
    good_in = [{"image_id": i, "caption": REFS[i][1][0] if REFS[i][0] == "in-domain" else "zzz qqq"} for i in REFS]
    (tmp_path / "in.json").write_text(json.dumps(good_in))
    # "all": the first reference everywhere; JSONL keyed by the file_name's stem, one image left out
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"id": f"{i:04d}abcd", "text": REFS[i][1][0]}) + "\n"
                                                for i in REFS if i != 5))  # fmt: skip
    res, printed = _run(capsys, nocaps, {"in": str(tmp_path / "in.json"), "all": str(tmp_path / "all.jsonl")},
                        tmp_path / "out")  # fmt: skip
    e_in, e_all = res["encoders"]["in"], res["encoders"]["all"]
    assert e_in["in-domain"] > 1 and e_in["near-domain"] == 0 and e_in["out-domain"] == 0
    assert e_all["missing"] == 1 and e_all["n_in-domain"] == 2 and e_all["out-domain"] > 0
    # each domain is scored on its own (its references give the document frequencies)
    refs4 = [REFS[i][1] for i in (4, 5)]
    assert e_all["out-domain"] == pytest.approx(cider_d([REFS[4][1][0], ""], refs4)["cider_d"])
    assert "| in |" in printed and "| all |" in printed and "CLIP-S" not in printed
    assert (tmp_path / "out" / "table.md").read_text().startswith("# NoCaps per encoder")


def test_clipscore_column_and_bad_ids(tmp_path, nocaps, capsys):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from scitune.eval.clipscore import clip_scores
    from scitune.model.builders import tiny_tokenizer
    from scitune.pretrain.tokenizer import with_eos

    tok = with_eos(tiny_tokenizer())
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cfg = CLIPConfig(text_config={**small, **ids, "vocab_size": len(tok), "max_position_embeddings": 64},
                     vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)  # fmt: skip
    torch.manual_seed(0)
    clip = tmp_path / "clip"
    CLIPModel(cfg).save_pretrained(clip)
    tok.save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    caps = {i: f"a photo number {i}" for i in REFS}
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": i, "text": c}) + "\n" for i, c in caps.items()))
    res, printed = _run(capsys, nocaps, {"tiny": str(tmp_path / "p.jsonl")}, tmp_path / "out", "--clip", str(clip))
    e = res["encoders"]["tiny"]
    direct = clip_scores(clip, [tmp_path / f"{i:04d}abcd.jpg" for i in REFS], list(caps.values()),
                         [REFS[i][1] for i in REFS])  # fmt: skip
    assert e["clipscore"] == pytest.approx(direct["clipscore"]) and e["refclipscore"] == pytest.approx(
        direct["refclipscore"]
    )
    assert "CLIP-S" in printed
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 99, "text": "x"}) + "\n")
    rc = main(["analyze", "nocaps", "--annotations", str(nocaps), "--predictions",
               json.dumps({"x": str(tmp_path / "bad.jsonl")}), "--out", str(tmp_path / "o2")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "bad.jsonl:1: id 99 is no image of the annotations" in err
