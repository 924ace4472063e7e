"""The ``caption`` benchmark (SciTune §3.1.2, Table 2): the first generated sentence against the reference caption,
scored with BLEU (Google-BLEU as SciTune, plus sacreBLEU corpus BLEU), ROUGE-L and CIDEr-D (pycocoevalcap), and with
--clip CLIPScore / RefCLIPScore, on SciCap-style records, VisText and SciFig; and the ``captioning`` benchmark: COCO,
Flickr30k, NoCaps (per domain) and LLaVA caption sets scored with pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L, CIDEr."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext, resolve_image
from scitune.eval.figure_type import FIGURE_TYPES, SCITUNE_QUESTION, scicap_examples
from scitune.eval.metrics import first_sentence, google_bleu, mean_std, rouge_l, sacrebleu_corpus
from scitune.io import read_json
from scitune.sources.converters.caption_sets import CAPTION_QUESTION

__all__ = [
    "CaptionBenchmark",
    "CaptionOptions",
    "CaptioningBenchmark",
    "CaptioningOptions",
    "cider_d",
    "coco_tokenize",
    "strip_figure_type",
]

# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing
_COCO_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_TOKEN = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*|n't|'[a-z]+|\S")
_LEADING_TYPE = re.compile(r"^\s*(?:" + "|".join(re.escape(t) for t in FIGURE_TYPES) + r")\b[\s:.-]*", re.IGNORECASE)


def coco_tokenize(text: str) -> str:
    """A pure-Python stand-in for pycocoevalcap's Java PTBTokenizer (``-lowerCase``, punctuation removed).

    Lower-cases, keeps numbers like ``1.5`` and ``10,000`` and words with inner apostrophes whole, splits every
    other punctuation mark off and drops the marks PTBTokenizer's wrapper drops. It differs from the Java tokenizer
    on contractions (``don't`` stays one token; PTB gives ``do n't``) and on brackets (dropped here as symbols).
    """
    tokens = _TOKEN.findall(text.lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in _COCO_PUNCT and re.search(r"[a-z0-9]", t))


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = "simple") -> dict:
    """Corpus CIDEr-D with pycocoevalcap's ``Cider`` (n = 1..4, sigma = 6, clipping, x10; it is CIDEr-D even though
    pycocoevalcap calls it CIDEr). Document frequencies come from these references, as in the COCO eval.

    Args:
        predictions: one generated caption per item.
        references: the reference captions of each item (one or more).
        tokenizer: ``simple`` (`coco_tokenize`, pure Python) or ``ptb`` (pycocoevalcap's PTBTokenizer; needs java).

    Returns:
        ``{"cider_d": corpus score, "per_item": [scores], "tokenizer": name}``; the corpus score is None for fewer
        than two items (the IDF term is log(N) = 0 for one).
    """
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError as e:
        raise ImportError("CIDEr needs pycocoevalcap: pip install pycocoevalcap") from e
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if len(predictions) < 2:
        return {"cider_d": None, "per_item": [], "tokenizer": tokenizer}
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
        gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    elif tokenizer == "simple":
        res = {i: [coco_tokenize(p)] for i, p in enumerate(predictions)}
        gts = {i: [coco_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    else:
        raise ValueError(f"unknown CIDEr tokenizer {tokenizer!r}; known: simple, ptb")
    score, scores = Cider().compute_score(gts, res)
    return {"cider_d": float(score), "per_item": [float(s) for s in scores], "tokenizer": tokenizer}


def strip_figure_type(text: str) -> str:
    """Drop a figure-type name that starts the text ("Graph Plot The ratio ..." -> "The ratio ...")."""
    return _LEADING_TYPE.sub("", text, count=1)


@dataclass
class CaptionOptions(EvalOptions):
    """Captioning: --data SciCap-style records (JSONL / JSON / folder with image and caption, e.g. SciFig's
    scicap/test.jsonl) or a VisText split file (data_test.json with img_id, caption_L1, caption_L2L3)."""

    image_root: str | None = None
    """Image folder; default: the data file's folder then its parent (SciCap), <data dir>/images (VisText)."""
    question: str = SCITUNE_QUESTION
    """The instruction asked with each figure."""
    vistext_caption: str = "L2L3"
    """VisText reference: L1 (synthetic: chart type, axes), L2L3 (human-written trends) or L1L2L3 (both, joined
    with a space), as `scitune convert vistext --level` writes the training captions."""
    split: str = "test"
    """VisText split when --data is its data/ folder (train, val, test)."""
    strip_type: bool = False
    """Remove a leading figure-type name before taking the first sentence (SciTune's outputs start with the type;
    the paper takes the first sentence as it is)."""
    cider_tokenizer: str = "simple"
    """Tokenizer before CIDEr: simple (pure-Python PTB-like) or ptb (pycocoevalcap's Java PTBTokenizer)."""
    clip: str | None = None
    """A CLIP-like checkpoint folder (CLIPModel.from_pretrained with its tokenizer and image processor, e.g. the
    demo's <demo_out>/models/clip): adds CLIPScore and RefCLIPScore (Hessel et al. 2021) of the captions."""
    clip_prefix: str = "A photo depicts"
    """Text put before each caption and reference for CLIPScore (the authors' code's prompt; "" for none)."""


def vistext_examples(src: Path, image_root: str | None, question: str, which: str, split: str) -> list[Example]:
    """Examples from a VisText split (file or data/ folder); references per `CaptionOptions.vistext_caption`."""
    from scitune.sources.converters.vistext import LEVELS, load_vistext

    if which not in LEVELS:
        raise ValueError(f"--vistext_caption must be one of {', '.join(LEVELS)}, got {which!r}")
    folder, located = load_vistext(src, split)
    roots = [Path(image_root)] if image_root else [folder / "images", folder]
    out = []
    for _, rec in located:
        ref = " ".join(rec[k].strip() for k in LEVELS[which])
        ident = str(rec.get("caption_id", rec["img_id"]))
        out.append(Example(ident, question, [resolve_image(f"{rec['img_id']}.png", roots)], target=ref))
    return out


def _is_vistext(path: Path) -> bool:
    if path.is_dir():
        return any((path / f"data_{s}.json").is_file() for s in ("train", "validation", "test"))
    if path.suffix != ".json" or not path.is_file():
        return False
    data = read_json(path)
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "caption_L1" in data[0]


@BENCHMARKS.register("caption")
class CaptionBenchmark(Benchmark):
    """Figure captioning: BLEU, ROUGE-L and CIDEr-D of the first generated sentence vs the reference caption."""

    name = "caption"
    mode = "generate"
    Options = CaptionOptions
    opts: CaptionOptions

    def examples(self) -> list[Example]:
        path = Path(self.opts.data)
        if _is_vistext(path):
            self.source = "vistext"
            return vistext_examples(path, self.opts.image_root, self.opts.question, self.opts.vistext_caption,
                                    self.opts.split)  # fmt: skip
        self.source = "scicap"
        return scicap_examples(self.opts.data, self.opts.image_root, self.opts.question)[0]

    def prompt_text(self, example: Example) -> str:
        return f"{example.text}\n<image>" if example.images else example.text

    def caption_of(self, text: str) -> str:
        """The generated caption: the first sentence (after the optional type strip)."""
        return first_sentence(strip_figure_type(text) if self.opts.strip_type else text)

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        hyps = [self.caption_of(predictions[e.id].get("text", "")) if e.id in predictions else "" for e in examples]
        refs = [e.target for e in examples]
        bleus = [google_bleu(h, r) for h, r in zip(hyps, refs)]
        rouges = [rouge_l(h, r) for h, r in zip(hyps, refs)]
        try:
            cider = cider_d(hyps, [[r] for r in refs], self.opts.cider_tokenizer)
        except ImportError as e:  # pycocoevalcap comes with the eval extra; BLEU and ROUGE-L need no extra
            cider = {"cider_d": None, "tokenizer": self.opts.cider_tokenizer, "missing": f"{e} (or 'scitune[eval]')"}
        bleu, rouge = mean_std(bleus), mean_std(rouges)
        results: dict[str, Any] = {
            "summary": {
                "bleu": bleu["mean"],
                "rouge_l": rouge["mean"],
                "cider_d": cider["cider_d"],
                "sacrebleu": sacrebleu_corpus(hyps, refs),
            },  # fmt: skip
            "data_format": getattr(self, "source", "scicap"),
            "count": len(hyps),
            "bleu": bleu,
            "rouge_l": rouge,
            "cider": {k: v for k, v in cider.items() if k != "per_item"},
            "per_caption": {"bleu": bleus, "rouge_l": rouges},
            "samples": [{"id": e.id, "caption": h, "reference": e.target} for e, h in list(zip(examples, hyps))[:5]],
        }
        if self.opts.clip:
            self._add_clipscore(results, examples, hyps)
        return results

    def _add_clipscore(self, results: dict[str, Any], examples: list[Example], hyps: list[str]) -> None:
        """CLIPScore / RefCLIPScore of the captions of figures that have an image (--clip)."""
        from scitune.eval.clipscore import clip_scores

        kept = [i for i, e in enumerate(examples) if e.images]
        clip = clip_scores(self.opts.clip, [examples[i].images[0] for i in kept], [hyps[i] for i in kept],
                           [[examples[i].target] for i in kept], prefix=self.opts.clip_prefix)  # fmt: skip
        results["summary"].update(clipscore=clip["clipscore"], refclipscore=clip["refclipscore"])
        results["clip"] = {k: clip[k] for k in ("clipscore", "refclipscore", "count", "w", "prefix")}
        results["clip"]["model"] = self.opts.clip
        results["per_caption"]["clipscore"] = clip["per_item"]["clipscore"]
        results["per_caption"]["refclipscore"] = clip["per_item"]["refclipscore"]

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        b, r, s = results["bleu"], results["rouge_l"], results["summary"]
        rows = [
            ["BLEU (Google-BLEU, sentence, mean ± std)", f"{_pm(b)}"],
            ["ROUGE-L (rouge-score F, mean ± std)", f"{_pm(r)}"],
            [
                f"CIDEr-D (pycocoevalcap, {results['cider']['tokenizer']} tokens)",
                s["cider_d"] if "missing" not in results["cider"] else f"- ({results['cider']['missing']})",
            ],
            ["sacreBLEU corpus BLEU (13a, 0-100)", s["sacrebleu"]],
        ]
        if "clip" in results:
            c = results["clip"]
            rows += [[f"CLIPScore (w = {c['w']}, {c['count']} figures, raw; papers print x100)", c["clipscore"]],
                     ["RefCLIPScore (harmonic mean with the best reference cosine)", c["refclipscore"]]]  # fmt: skip
        text = (
            f"{results['count']} {results['data_format']} captions; the caption is the first generated sentence.\n\n"
            "BLEU variant: sentence-level Google-BLEU (GLEU: min of n-gram precision and recall over 1-4-grams, 13a "
            "tokens), what SciTune computed with HF `evaluate`'s google_bleu per caption; sacreBLEU's standard corpus "
            "BLEU is given too.\n\n" + md_table(["metric", "value"], rows, 3) + "\n### Samples\n\n"
        )
        samples = [[x["id"], x["caption"], x["reference"]] for x in results["samples"]]
        return text + md_table(["id", "generated caption", "reference"], samples)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import histograms

        per = results["per_caption"]
        histograms(out_dir / "caption_scores.png", {"Google-BLEU": per["bleu"], "ROUGE-L": per["rouge_l"]},
                   title="per-caption scores", xlabel="score")  # fmt: skip
        return ["caption_scores.png"]


def _pm(stats: dict[str, float | None]) -> str:
    mean, std = stats["mean"], stats["std"]
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


# --------------------------------------------------------------------------------------------------------------------
# `captioning`: COCO / Flickr30k (Karpathy), NoCaps and LLaVA caption sets, scored with pycocoevalcap
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class CaptioningOptions(EvalOptions):
    """Captioning as the COCO caption papers score it: --data a Karpathy split file (dataset_coco.json,
    dataset_flickr30k.json; --split), NoCaps' nocaps_val_4500_captions.json (scored per domain), COCO's
    captions_val2014.json, LLaVA's chat.json (CC3M-595K) or caption records ({"id", "image", "caption(s)"})."""

    image_root: str | None = None
    """Image folder; default: the layout's usual places beside the data file (e.g. <dir>/val2014 via the Karpathy
    filepath, <dir>/flickr30k-images, <dir>/validation for NoCaps, <dir>/images for LLaVA)."""
    split: str | None = None
    """Karpathy split(s), comma-separated (default test); other layouts are one split per file."""
    prompt: str = CAPTION_QUESTION
    """The instruction asked with each image (LLaVA-1.5's caption prompt by default)."""
    caption: str = "full"
    """What of the generated text is the caption: full (stripped) or first-sentence."""
    tokenizer: str = "auto"
    """auto (pycocoevalcap's Java PTBTokenizer where java exists, else simple), ptb, or simple (pure Python)."""
    meteor: str = "auto"
    """METEOR: auto (where java exists; left out with the reason otherwise), on (java required) or off."""
    spice: bool = False
    """Also SPICE (java and SPICE's Stanford CoreNLP jars required; never downloaded)."""


_SUMMARY_NAMES = {"Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4",
                  "METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider", "SPICE": "spice"}  # fmt: skip


@BENCHMARKS.register("captioning")
class CaptioningBenchmark(Benchmark):
    """Image captioning (COCO, Flickr30k, NoCaps, CC3M): BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap)."""

    name = "captioning"
    mode = "generate"
    Options = CaptioningOptions
    requires = ("pycocoevalcap",)
    opts: CaptioningOptions

    def examples(self) -> list[Example]:
        from scitune.sources.converters.caption_sets import read_caption_set

        if self.opts.caption not in ("full", "first-sentence"):
            raise ValueError(f"--caption must be full or first-sentence, got {self.opts.caption!r}")
        cs = read_caption_set(self.opts.data, self.opts.split)
        self.layout = cs.layout
        roots = [Path(self.opts.image_root)] if self.opts.image_root else cs.image_roots
        return [Example(it.id, self.opts.prompt, [resolve_image(it.image, roots)], target=it.references,
                        meta={k: v for k, v in it.meta.items() if k in ("domain", "split")})
                for it in cs.items]  # fmt: skip

    def prompt_text(self, example: Example) -> str:
        return f"{example.text}\n<image>"

    def read_predictions(self, path: Any, examples: list[Example]) -> Any:
        """Also reads a COCO caption result file: a JSON list of ``{"image_id", "caption"}``."""
        from scitune.eval.benchmark import PredictionSet
        from scitune.io import check_input_file

        raw = read_json(check_input_file(path, "predictions file")) if str(path).endswith(".json") else None
        if not (isinstance(raw, list) and raw and isinstance(raw[0], dict) and "image_id" in raw[0]):
            return super().read_predictions(path, examples)
        pset = PredictionSet()
        for i, rec in enumerate(raw):
            if not isinstance(rec, dict) or "image_id" not in rec or not isinstance(rec.get("caption"), str):
                pset.malformed.append(f"{path}: record #{i}: needs 'image_id' and a 'caption' string")
                continue
            key = str(rec["image_id"])
            if key in pset.records:
                pset.duplicates.append(key)
            pset.records[key] = {"text": rec["caption"]}
        return pset

    def caption_of(self, text: str) -> str:
        """The caption scored: the generation stripped, or its first sentence (--caption first-sentence)."""
        return first_sentence(text) if self.opts.caption == "first-sentence" else text.strip()

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        from scitune.eval.coco_caption import score_by_group, score_captions
        from scitune.sources.converters.nocaps import DOMAINS

        hyps = {e.id: self.caption_of(predictions[e.id].get("text", "")) for e in examples if e.id in predictions}
        refs = {e.id: list(e.target) for e in examples}
        options = {"tokenizer": self.opts.tokenizer, "meteor": self.opts.meteor, "spice": self.opts.spice}
        domains = {e.id: e.meta["domain"] for e in examples if "domain" in e.meta}
        if domains:
            by_group = score_by_group(hyps, refs, domains, DOMAINS, **options)
            overall = by_group["overall"]
        else:
            by_group, overall = {}, score_captions(hyps, refs, **options)
        summary = {_SUMMARY_NAMES[k]: (None if v is None else 100 * v) for k, v in overall["scores"].items()}
        for group, res in by_group.items():
            if group != "overall":
                summary[f"{group}/cider"] = 100 * res["scores"]["CIDEr"]
        results: dict[str, Any] = {
            "summary": summary,
            "data_format": getattr(self, "layout", ""),
            "count": len(refs),
            "scores": overall["scores"],
            "tokenizer": overall["tokenizer"],
            "skipped": overall["skipped"],
            "per_caption": {_SUMMARY_NAMES[k]: [v.get(e.id) for e in examples] for k, v in overall["per_item"].items()},
            "samples": [{"id": e.id, "caption": hyps.get(e.id, ""), "references": e.target[:3]} for e in examples[:5]],
        }
        if by_group:
            results["domains"] = {g: {"count": r["count"], **r["scores"]} for g, r in by_group.items()}
        return results

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        names = [k for k in _SUMMARY_NAMES if k in results["scores"]]
        head = ["", *[k.replace("Bleu_", "BLEU-").replace("ROUGE_L", "ROUGE-L") for k in names]]
        groups = results.get("domains") or {"all": {"count": results["count"], **results["scores"]}}
        rows = [[f"{g} ({r['count']})", *[None if r.get(k) is None else 100 * r[k] for k in names]]
                for g, r in groups.items()]  # fmt: skip
        text = (f"{results['count']} images ({results['data_format']}); pycocoevalcap scores x100, tokens: "
                f"{results['tokenizer']} tokenizer.\n\n" + md_table(head, rows, 1))  # fmt: skip
        for metric, reason in results["skipped"].items():
            text += f"\n{metric} left out: {reason}.\n"
        samples = [[x["id"], x["caption"], " / ".join(x["references"])] for x in results["samples"]]
        return text + "\n### Samples\n\n" + md_table(["id", "generated caption", "references"], samples)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        from scitune.eval.plots import bar_chart

        groups = results.get("domains")
        if not groups:
            return []
        names = [k for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE") if results["scores"].get(k) is not None]
        series = {_SUMMARY_NAMES[k]: [100 * groups[g][k] for g in groups] for k in names}
        bar_chart(out_dir / "domains.png", list(groups), series, title="NoCaps by domain", ylabel="score x100")
        return ["domains.png"]
