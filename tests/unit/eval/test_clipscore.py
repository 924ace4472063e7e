"""CLIPScore and RefCLIPScore (Hessel et al. 2021) against values computed by hand from a tiny random CLIPModel's
embeddings, zero clipping and the harmonic mean, and ``scitune eval caption --clip``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from evalkit import make_scifig
from PIL import Image

from scitune.cli.eval import main
from scitune.eval.clipscore import clip_scores, clipscores
from scitune.io import DataError


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIPModel from a small CLIPConfig, saved with the tiny tokenizer and a 32 px image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from scitune.model.builders import tiny_tokenizer
    from scitune.pretrain.tokenizer import with_eos

    tok = with_eos(tiny_tokenizer())  # appends </s>, where the text tower pools (as the demo's micro CLIP)
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cfg = CLIPConfig(text_config={**small, **ids, "vocab_size": len(tok), "max_position_embeddings": 64},
                     vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=16)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _by_hand(folder, images, candidates, references, prefix="A photo depicts"):
    """Cosines computed here from get_image_features / get_text_features, then the paper's formulas."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    tok, proc = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)

    def feats(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text(t):
        enc = tok([f"{prefix} {t}" if prefix else t], return_tensors="pt")
        assert enc["input_ids"][0, -1] == tok.eos_token_id
        return feats(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))[0]

    def cos(a, b):
        return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))

    clip_s, ref_s = [], []
    with torch.no_grad():
        for im, cand, refs in zip(images, candidates, references):
            v = feats(model.get_image_features(pixel_values=proc(images=[im], return_tensors="pt")["pixel_values"]))[0]
            c = text(cand)
            s = 2.5 * max(cos(c, v), 0.0)
            r = max(max(cos(c, text(x)) for x in refs), 0.0)
            clip_s.append(s)
            ref_s.append(0.0 if s + r == 0 else 2 * s * r / (s + r))
    return clip_s, ref_s


def _images():
    return [Image.new("RGB", (40, 40), c) for c in [(220, 30, 30), (30, 200, 30), (30, 30, 220), (250, 250, 250)]]


def test_scores_equal_hand_computed_values(tiny_clip):
    images = _images()
    cands = ["a red plot", "green bars", "blue nodes of a graph", "white"]
    refs = [["red curve", "a plot in red"], ["bar chart"], ["node diagram", "graph", "blue"], ["an empty figure"]]
    got = clip_scores(str(tiny_clip), images, cands, refs, batch_size=3)
    clip_s, ref_s = _by_hand(tiny_clip, images, cands, refs)
    assert got["per_item"]["clipscore"] == pytest.approx(clip_s, abs=1e-5)
    assert got["per_item"]["refclipscore"] == pytest.approx(ref_s, abs=1e-5)
    assert got["clipscore"] == pytest.approx(sum(clip_s) / 4, abs=1e-5)
    assert got["refclipscore"] == pytest.approx(sum(ref_s) / 4, abs=1e-5)
    assert got["count"] == 4 and got["w"] == 2.5 and len({round(x, 6) for x in clip_s}) == 4  # not degenerate
    # no prefix changes the texts, hence the scores; without references there is no RefCLIPScore
    bare = clip_scores(str(tiny_clip), images, cands, prefix="")
    assert bare["refclipscore"] is None
    assert bare["per_item"]["clipscore"] == pytest.approx(_by_hand(tiny_clip, images, cands, refs, prefix="")[0][:4],
                                                          abs=1e-5)  # fmt: skip
    # a loaded model with its processor gives the same numbers as the folder
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    loaded = (AutoTokenizer.from_pretrained(tiny_clip), AutoImageProcessor.from_pretrained(tiny_clip))
    same = clip_scores(CLIPModel.from_pretrained(tiny_clip).eval(), images, cands, refs, processor=loaded)
    for key in ("clipscore", "refclipscore"):
        assert same["per_item"][key] == pytest.approx(got["per_item"][key], abs=1e-6)


def test_zero_clipping_and_harmonic_mean():
    s60 = math.sqrt(3) / 2
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    cand = torch.tensor([[0.5, s60], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # cos with the image: 0.5, -1, 1, 1
    refs = [
        torch.tensor([[0.0, 1.0], [-1.0, 0.0]]),  # cos with the candidate: s60, -0.5 -> best s60
        torch.tensor([[1.0, 0.0]]),  # cos -1 -> clipped to 0
        torch.tensor([[1.0, 0.0]]),  # cos 0 -> 0: the harmonic mean is 0
        torch.tensor([[-0.6, 0.8], [-1.0, 0.0]]),  # cos -0.6, -1 -> clipped to 0 although CLIP-S is 2.5
    ]
    out = clipscores(image, cand, refs)
    assert out["clipscore"] == pytest.approx([1.25, 0.0, 2.5, 2.5])
    assert out["refclipscore"] == pytest.approx([2 * 1.25 * s60 / (1.25 + s60), 0.0, 0.0, 0.0])
    assert clipscores(image, cand, None, w=1.0)["clipscore"] == pytest.approx([0.5, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        clipscores(image, cand[:2], refs)


def test_caption_benchmark_with_clip(tiny_clip, tmp_path):
    scifig = make_scifig(tmp_path / "sf")
    data = scifig / "scicap" / "test.jsonl"
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    pred = tmp_path / "p.jsonl"
    captions = ["A plot of the results. More text.", "Bars", "", "An equation", "Nodes and arrows.", "Points"]
    pred.write_text("".join(json.dumps({"id": r["id"], "text": t}) + "\n" for r, t in zip(recs, captions)))
    out = tmp_path / "o"
    assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(out), "--clip",
                 str(tiny_clip), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    first = ["A plot of the results.", "Bars", "", "An equation", "Nodes and arrows.", "Points"]
    direct = clip_scores(str(tiny_clip), [scifig / r["image"] for r in recs], first, [[r["caption"]] for r in recs])
    assert res["summary"]["clipscore"] == pytest.approx(direct["clipscore"])
    assert res["summary"]["refclipscore"] == pytest.approx(direct["refclipscore"])
    assert {"bleu", "rouge_l", "cider_d"} <= set(res["summary"]) and res["clip"]["count"] == len(recs)
    assert 0 <= res["summary"]["clipscore"] <= 2.5 and "CLIPScore" in (out / "report.md").read_text()
    plain = tmp_path / "plain"
    assert main(["caption", "--data", str(data), "--predictions", str(pred), "--out", str(plain)]) == 0
    assert "clipscore" not in json.loads((plain / "results.json").read_text())["summary"]


def test_missing_image_is_named(tiny_clip, tmp_path):
    with pytest.raises(DataError, match="nope.png: image not found"):
        clip_scores(str(tiny_clip), [tmp_path / "nope.png"], ["a caption"])
