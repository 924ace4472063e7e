"""mscoco-c: every ImageNet-C corruption and severity through imagecorruptions, seeded and cached, and a VQA set
scored per corruption and severity (predictions and a tiny model), with its table and plot."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from tests.unit.eval.evalkit import is_png, session_checkpoint

from scitune.cli.eval import main
from scitune.eval.corruptions import CORRUPTIONS, corrupt_image
from scitune.extras import missing
from scitune.io import DataError

# imagecorruptions is the corruptions extra (in dev); it is imported through scitune's loader (it needs shims)
pytestmark = pytest.mark.skipif(bool(missing("imagecorruptions")), reason="imagecorruptions is not installed")


def _vqa_set(root, n=3):
    """n VQA questions {id, image, question, answers} on n small images."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    lines = []
    for i in range(n):
        Image.fromarray((rng.rand(36, 40, 3) * 255).astype("uint8")).save(root / f"im{i}.png")
        lines.append({"id": f"q{i}", "image": f"im{i}.png", "question": "What is it?", "answers": ["noise"] * 10})
    path = root / "vqa.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_all_corruptions_and_severities(tmp_path):
    import numpy as np

    data = _vqa_set(tmp_path, n=1)
    src = str(data.parent / "im0.png")
    clean = np.asarray(Image.open(src))
    for c in CORRUPTIONS:
        pixels = []
        for s in (1, 3, 5):
            path = corrupt_image(src, tmp_path / c / f"{s}.png", c, s, seed=0)
            with Image.open(path) as im:
                assert im.size == (40, 36) and im.mode == "RGB", c
                pixels.append(np.asarray(im).astype(int))
        assert any((p != clean).any() for p in pixels), f"{c} changed nothing"
        assert (pixels[0] != pixels[2]).any(), f"{c}: severity 1 and 5 are the same"
    # seeded: written again, the noise is the same; a kept file is not rewritten
    first = np.asarray(Image.open(tmp_path / "gaussian_noise" / "5.png"))
    (tmp_path / "gaussian_noise" / "5.png").unlink()
    corrupt_image(src, tmp_path / "gaussian_noise" / "5.png", "gaussian_noise", 5, seed=0)
    assert (np.asarray(Image.open(tmp_path / "gaussian_noise" / "5.png")) == first).all()
    other = corrupt_image(src, tmp_path / "seed1.png", "gaussian_noise", 5, seed=1)
    assert (np.asarray(Image.open(other)) != first).any()
    Image.new("RGB", (31, 40)).save(tmp_path / "small.png")
    with pytest.raises(DataError, match=r"small.png: 31x40 pixels; the corruptions need at least 32x32"):
        corrupt_image(str(tmp_path / "small.png"), tmp_path / "x.png", "fog", 1, seed=0)


def test_table_from_predictions_equals_the_base_scores(tmp_path):
    data = _vqa_set(tmp_path / "set")
    groups = [("clean", 0)] + [(c, s) for c in ("fog", "pixelate") for s in (1, 5)]
    # answer right for q0 always, q1 only on clean and severity 1, q2 never
    preds = []
    for c, s in groups:
        for i in range(3):
            right = i == 0 or (i == 1 and s <= 1)
            preds.append({"id": f"{c}/{s}/0-shot/q{i}", "text": "noise" if right else "cat"})
    pfile = tmp_path / "p.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "out"
    assert main(["mscoco-c", "--data", str(data), "--base", "vqa", "--base_options", '{"shots": [0], "blind": false}',
                 "--corruptions", '["fog", "pixelate"]', "--severities", "[1, 5]", "--predictions", str(pfile),
                 "--out", str(out), "--progress", "false"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["metric"] == "0-shot" and res["input"]["missing"] == 0
    assert res["table"]["fog"] == {"1": pytest.approx(200 / 3), "5": pytest.approx(100 / 3), "mean": 50.0}
    assert res["summary"]["clean"] == pytest.approx(200 / 3) and res["summary"]["severity_5"] == pytest.approx(100 / 3)
    assert res["summary"]["mean_corrupted"] == 50.0
    assert len(list((out / "corrupted" / "pixelate" / "5").glob("*.png"))) == 3
    assert "| fog |" in (out / "report.md").read_text() and is_png(out / "corruptions.png")


def test_bad_options(tmp_path):
    data = str(_vqa_set(tmp_path))
    with pytest.raises(ValueError, match="--corruptions must be among"):
        main(
            [
                "mscoco-c",
                "--data",
                data,
                "--corruptions",
                '["rain"]',
                "--predictions",
                data,
                "--out",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(ValueError, match="--base_options: vqa has no option"):
        main(["mscoco-c", "--data", data, "--base_options", '{"nope": 1}', "--predictions", data, "--out",
              str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(ValueError, match="--base must be a generation benchmark"):
        main(
            ["mscoco-c", "--data", data, "--base", "truthfulqa-mc", "--predictions", data, "--out", str(tmp_path / "o")]
        )


def test_tiny_model_run(tmp_path, tmp_path_factory):
    data = _vqa_set(tmp_path / "set", n=2)
    ck = session_checkpoint(tmp_path_factory)["checkpoint"]
    out = tmp_path / "out"
    assert main(["mscoco-c", "--data", str(data), "--base_options", '{"shots": [0], "blind": false}', "--corruptions",
                 '["gaussian_noise", "motion_blur", "frost"]', "--severities", "[1, 3, 5]", "--checkpoint", ck, "--out",
                 str(out), "--max-new-tokens", "3", "--progress", "false", "--device", "cpu"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * (1 + 3 * 3) and set(res["table"]) == {"clean", "gaussian_noise", "motion_blur", "frost"}
    assert all(set(r) == {"1", "3", "5", "mean"} for c, r in res["table"].items() if c != "clean")
    assert is_png(out / "corruptions.png")
