"""`scitune analyze embed --method umap` (umap-learn, from the `analysis` extra): its own file because UMAP's first
call compiles numba kernels (~40 s on two cores); skipped where umap-learn is not installed."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from scitune.analysis.embed import EmbedOptions, run_embed

pytest.importorskip("sklearn", reason="scitune analyze embed needs scikit-learn (pip install 'scitune[analysis]')")
pytest.importorskip("umap", reason="umap-learn is not installed (pip install 'scitune[analysis]')")


@pytest.mark.slow
def test_umap_projection(tiny_base, tmp_path):
    rng = random.Random(0)
    lines = []
    for colour, rgb in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        for j in range(8):
            im = Image.new("RGB", (32, 32), tuple(min(255, v + rng.randint(0, 20)) for v in rgb))
            im.save(tmp_path / f"{colour}{j}.png")
            lines.append({"id": f"{colour}{j}", "image": f"{colour}{j}.png", "label": colour})
    data = tmp_path / "labelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    res = run_embed(EmbedOptions(checkpoint=tiny_base["vision"], data=str(data), out=str(tmp_path / "u"),
                                 method="umap", k=3, progress=False))  # fmt: skip
    assert res["method"] == "umap" and (tmp_path / "u" / "umap.png").is_file()
    assert res["knn_loo_accuracy"] == 1.0
    assert res["silhouette_2d"] > 0.2
