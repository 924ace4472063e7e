"""NoCaps captioning per encoder in one table, as LiMBeR reports it: CIDEr-D on the in-domain, near-domain and
out-domain images and on all, with CLIPScore and RefCLIPScore over all (`scitune.eval.captioning.cider_d`,
`scitune.eval.clipscore.clip_scores`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.io import DataError, iter_jsonl, read_json, write_json, write_text

__all__ = ["DOMAINS", "NocapsOptions", "read_nocaps", "read_captions", "run_nocaps", "score_encoder"]

DOMAINS = ("in-domain", "near-domain", "out-domain")


@dataclass
class NocapsOptions:
    """NoCaps in/near/out-domain CIDEr-D and CLIPScore of several encoders' captions, in one table."""

    annotations: str
    """NoCaps annotations JSON (nocaps_val_4500_captions.json: "images" with id, file_name and domain;
    "annotations" with image_id and caption)."""
    predictions: dict[str, str]
    """Encoder name -> captions: JSONL {"id", "text"} (id = the image id, its file_name or its stem) or the NoCaps
    submission JSON [{"image_id", "caption"}], e.g. '{"NFRN50": nf/predictions.jsonl, "CLIP": clip/predictions.jsonl}'."""
    out: str
    """Output folder: results.json and table.md."""
    overwrite: bool = False
    """Write into an --out folder that holds files scitune did not write (they are kept, never replaced)."""
    clip: str | None = None
    """A CLIP-like checkpoint folder: adds CLIPScore and RefCLIPScore over all images (needs the images)."""
    image_root: str | None = None
    """Folder of the images' file_name (default: the annotations file's folder)."""
    clip_prefix: str = "A photo depicts"
    """Text put before each caption and reference for CLIPScore ("" for none)."""
    cider_tokenizer: str = "simple"
    """Tokenizer before CIDEr-D: simple (pure Python) or ptb (pycocoevalcap's Java PTBTokenizer)."""
    text_field: str = "text"
    """JSONL field holding the caption."""

    def __post_init__(self):
        if not self.predictions:
            raise ValueError("--predictions needs at least one encoder: '{\"NAME\": predictions.jsonl}'")


def read_nocaps(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The images of a NoCaps annotations file: ``{"id", "file_name", "domain", "references"}`` each."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise DataError(f"{path}: expected NoCaps annotations (an object with 'images' and 'annotations')")
    refs: dict[str, list[str]] = {}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not isinstance(a.get("caption"), str) or "image_id" not in a:
            raise DataError(f"{path}: annotation #{i} needs 'image_id' and a 'caption' string")
        refs.setdefault(str(a["image_id"]), []).append(a["caption"])
    images = []
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or im.get("domain") not in DOMAINS or "id" not in im:
            raise DataError(f"{path}: image #{i} needs an 'id' and a 'domain' ({', '.join(DOMAINS)})")
        ident = str(im["id"])
        if ident not in refs:
            raise DataError(f"{path}: image {ident} has no reference caption")
        images.append({"id": ident, "file_name": str(im.get("file_name", "")), "domain": im["domain"],
                       "references": refs[ident]})  # fmt: skip
    return images


def read_captions(path: str | os.PathLike[str], images: list[dict], text_field: str = "text") -> dict[str, str]:
    """Image id -> caption from a JSONL of ``{"id", text_field}`` or a submission JSON ``[{"image_id", "caption"}]``;
    an id that names no image raises `DataError`."""
    alias = {}
    for im in images:
        for key in (im["id"], im["file_name"], Path(im["file_name"]).stem):
            alias.setdefault(key, im["id"])
    if str(path).endswith(".json"):
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of {{'image_id', 'caption'}}")
        rows = [(f"{path}: item #{i}", r.get("image_id"), r.get("caption")) if isinstance(r, dict) else
                (f"{path}: item #{i}", None, None) for i, r in enumerate(data)]  # fmt: skip
    else:
        rows = [(f"{path}:{n}", r.get("id"), r.get(text_field)) for n, r in iter_jsonl(path)]
    out = {}
    for where, ident, text in rows:
        if ident is None or not isinstance(text, str):
            raise DataError(f"{where}: needs an id and a caption string")
        if str(ident) not in alias:
            raise DataError(f"{where}: id {ident!r} is no image of the annotations")
        out[alias[str(ident)]] = text
    return out


def score_encoder(images: list[dict], captions: dict[str, str], opts: NocapsOptions) -> dict[str, Any]:
    """CIDEr-D per domain and over all (an image without a caption scores as the empty caption), and CLIPScore."""
    from scitune.eval.captioning import cider_d

    hyps = [captions.get(im["id"], "") for im in images]
    res: dict[str, Any] = {"n": len(images), "missing": sum(im["id"] not in captions for im in images)}
    for dom in (*DOMAINS, "all"):
        idx = [i for i, im in enumerate(images) if dom == "all" or im["domain"] == dom]
        score = cider_d([hyps[i] for i in idx], [images[i]["references"] for i in idx], opts.cider_tokenizer)
        res[dom] = score["cider_d"]
        res[f"n_{dom}"] = len(idx)
    if opts.clip:
        from scitune.eval.clipscore import clip_scores

        root = Path(opts.image_root) if opts.image_root else Path(opts.annotations).parent
        paths = [root / im["file_name"] for im in images]
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise DataError(f"{missing}: image not found (CLIPScore needs the images; set --image_root)")
        clip = clip_scores(opts.clip, paths, hyps, [im["references"] for im in images], prefix=opts.clip_prefix)
        res["clipscore"], res["refclipscore"] = clip["clipscore"], clip["refclipscore"]
    return res


def _table(encoders: dict[str, dict], clip: bool) -> str:
    from scitune.eval.report import md_table

    def f(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    head = ["encoder", "CIDEr-D in", "near", "out", "all"] + (["CLIP-S", "Ref-S"] if clip else [])
    rows = [[name] + [f(r[d]) for d in (*DOMAINS, "all")] + ([f(r["clipscore"]), f(r["refclipscore"])] if clip else [])
            for name, r in encoders.items()]  # fmt: skip
    return md_table(head, rows)


def run_nocaps(opts: NocapsOptions) -> dict[str, Any]:
    """Score every encoder's captions; write ``results.json`` and ``table.md`` (scores x100, as LiMBeR prints)."""
    from scitune.outputs import claim_output_folder

    images = read_nocaps(opts.annotations)
    encoders = {}
    for name, path in opts.predictions.items():
        encoders[name] = {"predictions": str(path), **score_encoder(images, read_captions(path, images,
                                                                                           opts.text_field), opts)}  # fmt: skip
    out = claim_output_folder(opts.out, "analysis", ("results.json", "table.md"), opts.overwrite)
    table = _table(encoders, bool(opts.clip))
    note = ("CIDEr-D (pycocoevalcap, document frequencies from each subset's references) and CLIPScore / "
            "RefCLIPScore (w = 2.5), all x100.\n\n")  # fmt: skip
    write_text(out / "table.md", f"# NoCaps per encoder\n\n{note}{table}")
    results = {"annotations": str(opts.annotations), "images": len(images), "clip": opts.clip,
               "cider_tokenizer": opts.cider_tokenizer, "encoders": encoders, "table": table}  # fmt: skip
    write_json(out / "results.json", results)
    return results
