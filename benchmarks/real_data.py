"""Benchmark data with the length spread of real training data, from the public records in ``../shared/data``.

- align: the SciTune authors' own SciCap instruction generator output (CTOM: type, caption, OCR text, paragraphs,
  mentions) on 300 real SciCap Challenge records (``scicap_text/scitune_reference/scitune_scicap_val.json``), in
  LLaVA's layout, as SciTune's stage 1 trains on it;
- finetune: LLaVA's ScienceQA converter output in SciTune's stage-2 format QCM-LEPA on the 100 real ScienceQA
  problems (``scienceqa/llava_reference/llava_{train,val}_QCM-LEPA.json``); the 57 text-only problems stay text-only.

Neither set ships images. Each record that names an image gets one of the 13 real SciCap figures
(``scicap_images/images``), round-robin, under the path the record names. Records whose tokens exceed the context are
left out (and counted), since neither system truncates silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALIGN = SHARED / "scicap_text" / "scitune_reference" / "scitune_scicap_val.json"
FINETUNE = [SHARED / "scienceqa" / "llava_reference" / f"llava_{split}_QCM-LEPA.json" for split in ("train", "val")]
FIGURES = SHARED / "scicap_images" / "images"


def available() -> bool:
    return ALIGN.exists() and all(p.exists() for p in FINETUNE) and FIGURES.is_dir()


def _with_figures(records: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Copy a real figure to every image path the records name (the same record keeps the same figure)."""
    figures = sorted(p for p in FIGURES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    k = 0
    for r in records:
        if r.get("image"):
            dest = root / r["image"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(figures[k % len(figures)], dest)
            k += 1
    return records


def real_records(work: Path) -> dict[str, tuple[list[dict[str, Any]], Path]]:
    """{stage: (records, image root)} with the figures in place under ``work``."""
    if not available():
        raise SystemExit(f"--data real needs the public records under {SHARED} (see its README.md)")
    align = json.loads(ALIGN.read_text())
    finetune = [r for p in FINETUNE for r in json.loads(p.read_text())]
    return {
        "align": (_with_figures(align, work / "images-align"), work / "images-align"),
        "finetune": (_with_figures(finetune, work / "images-finetune"), work / "images-finetune"),
    }


def prepare_real(work: Path, prof, build_models, model_config) -> dict[str, Any]:
    """Write align/finetune records (those that fit ``prof.max_length``), train the BPE and build the random models
    (``build_models(work, prof, texts)`` of train_throughput.py); returns the paths as `train_throughput.prepare`."""
    from scitune.data.dataset import _line_of, validate_file
    from scitune.io import write_jsonl
    from scitune.loader import build

    sets = real_records(work)
    texts = [c["value"] for recs, _ in sets.values() for r in recs for c in r["conversations"]]
    paths: dict[str, Any] = build_models(work, prof, texts)
    _, processor = build(model_config(paths))
    for stage, (records, root) in sets.items():
        raw = work / f"{stage}-all.jsonl"
        write_jsonl(raw, records)
        samples, report = validate_file(raw, processor, root, prof.max_length)
        too_long = {_line_of(p.location) - 1 for p in report.problems if "max_length" in p.message}
        if len(too_long) != len(report.problems):
            raise SystemExit(report.summary())
        kept = [r for i, r in enumerate(records) if i not in too_long]
        write_jsonl(work / f"{stage}.jsonl", kept)
        paths[stage] = {"data": str(work / f"{stage}.jsonl"), "image_root": str(root), "records": len(kept),
                        "left_out_too_long": len(too_long), "source": [str(p) for p in ([ALIGN] if stage == "align" else FINETUNE)]}  # fmt: skip
    return paths
