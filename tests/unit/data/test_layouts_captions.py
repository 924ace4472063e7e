"""Caption data read as released: Karpathy split JSON (COCO, Flickr30k), NoCaps validation / COCO-style
annotations, LLaVA's CC3M-595K and LLaVA-Pretrain chat + metadata files, LLaVA-Instruct JSON; small files written
in exactly those layouts, converted through the CLI, and bad records named."""

from __future__ import annotations

import json

import pytest

from scitune.cli import main as cli
from scitune.io import DataError
from scitune.sources.converters.caption_sets import read_caption_set


def karpathy_coco(path):
    """dataset_coco.json's layout (images: filepath, sentids, filename, imgid, split, sentences, cocoid)."""

    def sent(raw, imgid, sid):
        return {"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": imgid, "sentid": sid}

    images = [
        {"filepath": "val2014", "sentids": [0, 1], "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
         "split": "test", "sentences": [sent("A man with a red helmet on a small moped on a dirt road. ", 0, 0),
                                        sent("Man riding a motor bike on a dirt road on the countryside.", 0, 1)],
         "cocoid": 391895},
        {"filepath": "train2014", "sentids": [2], "filename": "COCO_train2014_000000000009.jpg", "imgid": 1,
         "split": "restval", "sentences": [sent("A plate of food.", 1, 2)], "cocoid": 9},
        {"filepath": "train2014", "sentids": [3], "filename": "COCO_train2014_000000000025.jpg", "imgid": 2,
         "split": "train", "sentences": [sent("A giraffe eating leaves.", 2, 3)], "cocoid": 25},
    ]  # fmt: skip
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def karpathy_flickr(path):
    """dataset_flickr30k.json's layout: no filepath, no cocoid."""
    images = [{"sentids": [0, 1], "imgid": 0, "split": "test", "filename": "1000092795.jpg",
               "sentences": [{"tokens": ["two", "young", "guys"], "raw": "Two young guys with shaggy hair.", "imgid": 0,
                              "sentid": 0},
                             {"tokens": ["two", "men"], "raw": "Two men in green shirts.", "imgid": 0, "sentid": 1}]}]  # fmt: skip
    path.write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return path


def nocaps_val(path):
    """nocaps_val_4500_captions.json's layout (COCO-style, images with their domain)."""
    domains = ["in-domain", "near-domain", "out-domain", "near-domain"]
    images = [{"id": i, "open_images_id": f"{i:016x}", "height": 1024, "width": 732, "coco_url":
               f"https://s3.amazonaws.com/nocaps/val/{i:016x}.jpg", "file_name": f"{i:016x}.jpg", "license": 0,
               "date_captured": "2018-11-06 11:04:33", "domain": d} for i, d in enumerate(domains)]  # fmt: skip
    caps = ["A baby is standing in front of a house.", "A little girl in a white dress.", "A jellyfish in blue water.",
            "A red car parked by a tree."]  # fmt: skip
    anns = [{"image_id": i, "id": 10 * i + k, "caption": f"{c} ({k})" if k else c}
            for i, c in enumerate(caps) for k in range(3)]  # fmt: skip
    info = {"url": "http://nocaps.org", "date_created": "2018/11/06", "version": "0.1",
            "description": "nocaps validation dataset", "contributor": "nocaps team", "year": 2018}  # fmt: skip
    path.write_text(json.dumps({"licenses": [], "info": info, "images": images, "annotations": anns}))
    return path


def cc3m_595k(folder):
    """LLaVA-CC3M-Pretrain-595K as released: chat.json + metadata.json (+ images/ from images.zip)."""
    folder.mkdir(parents=True, exist_ok=True)
    chat = [{"id": "GCC_train_002582585", "image": "GCC_train_002582585.jpg", "conversations": [
                {"from": "human", "value": "Provide a brief description of the given image.\n<image>"},
                {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."}]},
            {"id": "GCC_train_002061335", "image": "GCC_train_002061335.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
                {"from": "gpt", "value": "a city skyline at night"}]}]  # fmt: skip
    meta = [{"id": "GCC_train_002582585", "image": "GCC_train_002582585.jpg",
             "caption": "olive oil is a healthy ingredient used liberally .",
             "blip_caption": "some olive oil in a bowl", "url": "https://example.org/a.jpg"}]  # fmt: skip
    (folder / "chat.json").write_text(json.dumps(chat))
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_karpathy_coco_and_flickr(tmp_path):
    coco = read_caption_set(karpathy_coco(tmp_path / "dataset_coco.json"))  # default split: test
    assert coco.layout == "karpathy-coco" and [it.id for it in coco.items] == ["391895"]
    it = coco.items[0]
    assert it.image == "val2014/COCO_val2014_000000391895.jpg" and len(it.references) == 2
    assert it.references[0] == "A man with a red helmet on a small moped on a dirt road. "  # 'raw' as released
    assert it.meta["split"] == "test" and it.meta["cocoid"] == 391895
    assert [i.id for i in read_caption_set(tmp_path, "train,restval").items] == ["9", "25"]  # the folder is searched
    fl = read_caption_set(karpathy_flickr(tmp_path / "dataset_flickr30k.json"), "test")
    assert fl.layout == "karpathy-flickr30k" and fl.items[0].id == "1000092795"
    assert fl.items[0].image == "1000092795.jpg" and fl.image_roots[0] == tmp_path / "flickr30k-images"
    with pytest.raises(DataError, match=r"no image in split 'val' \(the file has: restval, test, train\)"):
        read_caption_set(tmp_path / "dataset_coco.json", "val")
    with pytest.raises(DataError, match="unknown Karpathy split 'dev'"):
        read_caption_set(tmp_path / "dataset_coco.json", "dev")
    out = tmp_path / "coco_train.jsonl"
    assert cli(["convert", "karpathy", "--src", str(tmp_path / "dataset_coco.json"), "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["9-0", "25-0"]
    assert recs[0]["image"] == "train2014/COCO_train2014_000000000009.jpg"
    assert recs[0]["conversations"] == [
        {"from": "human", "value": "Provide a one-sentence caption for the provided image.\n<image>"},
        {"from": "gpt", "value": "A plate of food."}]  # fmt: skip
    assert recs[0]["meta"]["split"] == "restval" and recs[0]["meta"]["source"] == "karpathy-coco"


def test_nocaps_validation_and_coco_captions(tmp_path, capsys):
    nc = read_caption_set(nocaps_val(tmp_path / "nocaps_val_4500_captions.json"))
    assert nc.layout == "nocaps" and [it.meta["domain"] for it in nc.items] == [
        "in-domain", "near-domain", "out-domain", "near-domain"]  # fmt: skip
    assert nc.items[0].references == ["A baby is standing in front of a house.",
                                      "A baby is standing in front of a house. (1)",
                                      "A baby is standing in front of a house. (2)"]  # fmt: skip
    assert nc.items[0].image == "0000000000000000.jpg" and nc.items[0].meta["open_images_id"] == "0000000000000000"
    out = tmp_path / "near.jsonl"
    assert cli(["convert", "nocaps", "--src", str(tmp_path / "nocaps_val_4500_captions.json"), "--out", str(out),
                "--domain", "near-domain", "--all_references", "false"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 2 and summary["records"] == 2 and summary["domains"]["near-domain"] == 2
    # COCO's own captions_val2014.json: same layout, no domain
    coco = {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}],
            "annotations": [{"image_id": 42, "id": 1, "caption": "A dog."}, {"image_id": 42, "id": 2, "caption": "A pup."}]}  # fmt: skip
    (tmp_path / "captions_val2014.json").write_text(json.dumps(coco))
    cc = read_caption_set(tmp_path / "captions_val2014.json")
    assert cc.layout == "coco-captions" and cc.items[0].references == ["A dog.", "A pup."]
    # NoCaps' test file has image info only: its captions are private
    (tmp_path / "nocaps_test_image_info.json").write_text(json.dumps({"images": [{"id": 0, "file_name": "a.jpg",
                                                                                  "domain": "in-domain"}]}))  # fmt: skip
    with pytest.raises(DataError, match="has no 'annotations'.*private"):
        read_caption_set(tmp_path / "nocaps_test_image_info.json")
    bad = json.loads((tmp_path / "nocaps_val_4500_captions.json").read_text())
    bad["images"][2]["domain"] = "far-domain"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"bad.json: image 2: 'domain' must be one of .*got 'far-domain'"):
        read_caption_set(tmp_path / "bad.json")
    with pytest.raises(DataError, match="--split 'test' applies to Karpathy split files only"):
        read_caption_set(tmp_path / "captions_val2014.json", "test")


def test_cc3m_595k_and_llava_pretrain(tmp_path, capsys):
    folder = cc3m_595k(tmp_path / "LLaVA-CC3M-Pretrain-595K")
    cs = read_caption_set(folder)
    assert cs.layout == "llava-pretrain" and cs.items[1].references == ["a city skyline at night"]
    assert cs.image_roots[0] == folder / "images"
    out = tmp_path / "align.jsonl"
    assert cli(["convert", "llava-pretrain", "--src", str(folder), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 2 and report["metadata"].endswith("metadata.json")
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs[0]["conversations"][0]["value"] == "Provide a brief description of the given image.\n<image>"
    assert recs[0]["meta"] == {"source": "llava-cc3m-595k", "caption": "olive oil is a healthy ingredient used liberally .",
                               "blip_caption": "some olive oil in a bowl", "url": "https://example.org/a.jpg"}  # fmt: skip
    assert recs[1]["meta"] == {"source": "llava-cc3m-595k"}  # no metadata record for it
    # images are checked when --image_root is given
    assert cli(["convert", "llava-pretrain", "--src", str(folder), "--out", str(out), "--image_root",
                str(folder / "images")]) == 2  # fmt: skip
    assert "record 'GCC_train_002582585': image" in capsys.readouterr().err
    # LLaVA-Pretrain 558K: blip_laion_cc_sbu_558k.json, images in sub-folders
    pre = tmp_path / "LLaVA-Pretrain"
    pre.mkdir()
    (pre / "blip_laion_cc_sbu_558k.json").write_text(json.dumps([{"id": "004539375", "image": "00453/004539375.jpg",
        "conversations": [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
                          {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]}]))  # fmt: skip
    assert cli(["convert", "llava-pretrain", "--src", str(pre), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "llava-pretrain-558k"
    assert read_caption_set(pre).items[0].image == "00453/004539375.jpg"


def test_llava_instruct_json_as_released(tmp_path, capsys):
    """llava_instruct_150k.json (and conversation_58k / detail_23k / complex_reasoning_77k): COCO image names
    without a folder, <image> in the first human turn (either end), several turns."""
    recs = [{"id": "000000033471", "image": "000000033471.jpg", "conversations": [
                {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
                {"from": "gpt", "value": "The bus in the image is white and red."},
                {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
            {"id": "000000052846", "image": "000000052846.jpg", "conversations": [
                {"from": "human", "value": "<image>\nWhere is the cat positioned in the image?"},
                {"from": "gpt", "value": "The cat is positioned on top of the back of the couch."}]}]  # fmt: skip
    src = tmp_path / "llava_instruct_150k.json"
    src.write_text(json.dumps(recs, indent=2))
    out = tmp_path / "instruct.jsonl"
    assert cli(["convert", "llava-json", "--src", str(src), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 2 and report["with_image"] == 2 and report["not_alternating"] == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["conversations"] for r in got] == [r["conversations"] for r in recs]
    assert got[0]["image"] == "000000033471.jpg"


def test_caption_records_layout_and_errors(tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "a.png", "captions": ["x", "y"]}) + "\n"
                    + json.dumps({"id": "b", "image": "b.png", "caption": "z"}) + "\n")  # fmt: skip
    cs = read_caption_set(path)
    assert cs.layout == "records" and [it.references for it in cs.items] == [["x", "y"], ["z"]]
    path.write_text(json.dumps({"id": "a", "image": "a.png"}) + "\n")
    with pytest.raises(DataError, match=r"caps.jsonl:1.*needs 'caption'"):
        read_caption_set(path)
    (tmp_path / "x.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(DataError, match="not a caption layout scitune reads"):
        read_caption_set(tmp_path / "x.json")
    with pytest.raises(DataError, match="folder holds none of the caption files"):
        read_caption_set(tmp_path)
