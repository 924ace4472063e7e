"""`scitune analyze embed`: labelled images through a tiny encoder (bare vision folder, a two-tower CLIP folder, a
scitune checkpoint with its connector), the 2-D plot and the separability numbers, and bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from scitune.analysis.embed import EmbedOptions, knn_loo_accuracy, load_embedder, read_labelled, run_embed
from scitune.cli import main
from scitune.io import DataError

pytest.importorskip("sklearn", reason="scitune analyze embed needs scikit-learn (pip install 'scitune[analysis]')")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def _write_set(folder, per_class: int = 6, shuffled_labels: bool = False):
    """Solid-colour images with a little pixel noise; label = colour, or (shuffled) a label independent of colour:
    each colour group holds every label equally often, so a point's same-colour neighbours mostly disagree with it."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    lines = []
    for ci, colour in enumerate(names):
        for j in range(per_class):
            px = [tuple(min(255, max(0, v + rng.randint(-12, 12))) for v in COLOURS[colour]) for _ in range(40 * 40)]
            im = Image.new("RGB", (40, 40))
            im.putdata(px)
            path = f"img/{colour}{j}.png"
            (folder / "img").mkdir(exist_ok=True)
            im.save(folder / path)
            label = names[(j + ci) % len(names)] if shuffled_labels else colour
            lines.append({"id": f"{colour}{j}", "image": path, "label": label})
    data = folder / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return data


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return _write_set(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from scitune.loader import save_checkpoint, tiny_vlm

    path = tmp_path_factory.mktemp("ck") / "final"
    save_checkpoint(*tiny_vlm(), path)
    return path


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A two-tower CLIPModel folder, as a SciFig demo's models/clip."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    cfg = CLIPConfig(text_config={**small, "vocab_size": 50}, vision_config={**small, "image_size": 32,
                     "patch_size": 8}, projection_dim=16)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_knn_loo_accuracy_by_hand():
    x = np.array([[1, 0], [0.9, 0.1], [1, 0.05], [0, 1], [0.1, 0.9], [0.05, 1]], dtype=np.float32)
    assert knn_loo_accuracy(x, ["a", "a", "a", "b", "b", "b"], k=1) == 1.0
    # point 1 relabelled "b": its nearest neighbour (point 2) is an "a", so it is wrong; points 0 and 2 are each
    # other's nearest and stay right: 5/6
    assert knn_loo_accuracy(x, ["a", "b", "a", "b", "b", "b"], k=1) == pytest.approx(5 / 6)
    # k=2, third point relabelled "b": points 0 and 1 see one "a" and one "b", a tie that the nearer neighbour
    # (point 2, a "b") decides, so both are wrong; point 2 sees two "a"s, wrong too; the "b" cluster is right: 3/6
    assert knn_loo_accuracy(x, ["a", "a", "b", "b", "b", "b"], k=2) == pytest.approx(0.5)


def test_embed_bare_vision_folder_separates_colours(tiny_base, labelled, tmp_path):
    out = tmp_path / "out"
    res = run_embed(EmbedOptions(checkpoint=tiny_base["vision"], data=str(labelled), out=str(out), method="tsne",
                                 k=3, progress=False))  # fmt: skip
    assert res["n"] == 18 and res["dim"] == 32 and res["method"] == "tsne"
    assert res["classes"] == {"blue": 6, "green": 6, "red": 6}
    assert res["majority_rate"] == pytest.approx(1 / 3)
    # solid colours are far apart even through a random encoder: neighbours share the colour
    assert res["knn_loo_accuracy"] >= 0.9
    assert res["silhouette_cosine"] > 0.2
    x = np.load(out / "embeddings.npy")
    xy = np.load(out / "projection.npy")
    assert x.shape == (18, 32) and xy.shape == (18, 2) and np.isfinite(xy).all()
    labels = json.loads((out / "labels.json").read_text())
    assert [r["label"] for r in labels] == [r["id"].rstrip("0123456789") for r in labels]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["knn_loo_accuracy"] == res["knn_loo_accuracy"]
    with Image.open(out / "tsne.png") as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_labels_independent_of_the_images_are_not_separable(tiny_base, tmp_path):
    data = _write_set(tmp_path / "shuffled", shuffled_labels=True)
    res = run_embed(EmbedOptions(checkpoint=tiny_base["vision"], data=str(data), out=str(tmp_path / "o"),
                                 method="tsne", k=5, progress=False))  # fmt: skip
    assert res["knn_loo_accuracy"] < 0.5
    assert res["silhouette_cosine"] < 0.05


def test_embed_two_tower_clip_folder_via_cli(clip_folder, labelled, tmp_path, capsys):
    out = tmp_path / "clip"
    rc = main(["analyze", "embed", "--checkpoint", str(clip_folder), "--data", str(labelled), "--out", str(out),
               "--method", "tsne", "--k", "3", "--progress", "false"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dim"] == 16 and printed["n"] == 18 and (out / "tsne.png").is_file()
    assert json.loads((out / "results.json").read_text())["encoder"]["model_type"] == "clip"


def test_checkpoint_encoder_and_connector(tiny_ckpt, labelled):
    items = read_labelled(labelled)
    from scitune.infer.generate import open_image

    images = [open_image(it["image"]) for it in items[:4]]
    enc = load_embedder(tiny_ckpt)
    conn = load_embedder(tiny_ckpt, with_connector=True)
    assert enc.connector is None and conn.info["connector"] == "mlp2x-gelu"
    a, b = enc(images), conn(images)
    assert a.shape == (4, 32) and b.shape == (4, 32)
    # the connector output is the mean over tokens of projector(encoder tokens), computed here by hand
    pixels = enc.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = conn.connector(conn.vision(pixels)).mean(dim=1).numpy()
    np.testing.assert_allclose(b, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, b)


def test_bad_input(tiny_base, tiny_ckpt, labelled, tmp_path):
    with pytest.raises(ValueError, match="--with_connector needs a scitune checkpoint"):
        load_embedder(tiny_base["vision"], with_connector=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x1", "image": "img/red0.png"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1 \(id x1\): no label"):
        read_labelled(bad, image_root=labelled.parent)
    bad.write_text("".join(json.dumps({"id": f"m{i}", "image": "nope.png", "label": "a"}) + "\n" for i in range(3)))
    with pytest.raises(DataError, match="3 image file"):
        read_labelled(bad)
    with pytest.raises(ValueError, match="--method must be one of"):
        EmbedOptions(checkpoint="x", data="y", out="z", method="pca")


def test_umap_wiring_with_a_stand_in_module(monkeypatch):
    """How project_2d calls umap-learn (the real library runs in test_analysis_umap.py, slow: numba compiles)."""
    import sys
    import types

    from scitune.analysis.embed import project_2d, resolve_method

    calls = {}

    class FakeUMAP:
        def __init__(self, **kw):
            calls.update(kw)

        def fit_transform(self, x):
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert resolve_method("auto") == "umap"
    np.testing.assert_array_equal(project_2d(x, "umap", seed=3), x * 2)
    assert calls == {"n_components": 2, "n_neighbors": 5, "metric": "cosine", "random_state": 3, "n_jobs": 1}
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    assert resolve_method("auto") == "tsne"
    with pytest.raises(ImportError, match=r"scitune\[analysis\]"):
        project_2d(x, "umap")
