"""Record validation benchmark: a synthetic LLaVA-1.5-mix-shaped ``.json`` list (665K records by default) checked
the way training starts, cold (no cached verdict) and warm (the verdict cached by the first run), against the
per-record path scitune had before (full image decode + tokenizing every record), in one run.

``python benchmarks/validate.py`` builds everything under ``--workdir`` once (a LLaMA-like 32K byte-fallback BPE
trained on the text of ``../shared/data``, a pool of small JPEGs, the data file) and reuses it. The baseline runs on
the first ``--baseline`` records and is extrapolated to the whole file. Prints a table and writes
``benchmarks/results/validate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent.parent / "shared" / "data"
SPECIALS = ["<unk>", "<s>", "</s>"]
# LLaVA-1.5's mix (paper, Table 7), in thousands of records: kind -> count
MIX = {
    "conversation": 58,
    "detail": 23,
    "complex": 77,
    "sharegpt": 40,
    "vqav2": 83,
    "gqa": 72,
    "okvqa": 9,
    "aokvqa": 66,
    "ocrvqa": 80,
    "textcaps": 22,
    "refcoco": 48,
    "vg": 86,
}
FOLDERS = ["coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K"]
SHORT = "Answer the question using a single word or phrase."


# ---- inputs, built once
def corpus_sentences(root: Path) -> list[str]:
    """Sentences of every string in the JSON/JSONL files under ``root`` (real English science text)."""
    texts: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, str) and len(x) > 20:
            texts.add(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for p in sorted(root.rglob("*.json*")):
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines() if p.suffix == ".jsonl" else [None]
        for line in lines:
            try:
                walk(json.loads(line if line is not None else p.read_text(encoding="utf-8")))
            except ValueError:
                continue
    sentences = {s.strip() for t in texts for s in re.split(r"(?<=[.?!])\s+", t) if 10 < len(s.strip()) < 400}
    return sorted(s for s in sentences if "<image>" not in s)  # the placeholder goes where the generator puts it


def build_tokenizer(work: Path, sentences: list[str], vocab: int) -> Path:
    """A LLaMA-2-style tokenizer.json: BPE with byte fallback trained with SentencePiece's word boundaries, stored as
    transformers stores LLaMA's (``Prepend('▁')`` + ``Replace(' ', '▁')`` normalizer, no pre-tokenizer)."""
    path = work / "tokenizer" / "tokenizer.json"
    if path.is_file():
        return path
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS + byte_tokens, show_progress=False)
    tok.train_from_iterator(sentences, trainer)
    spec = json.loads(tok.to_str())
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    spec["pre_tokenizer"] = None
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] in SPECIALS]  # bytes: plain vocabulary
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


def build_processor(tokenizer_json: Path, image_tokens: int) -> Any:
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    from scitune.processor import ImageTokenRule, Processor

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(tokenizer_json)), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    return Processor(tok, CLIPImageProcessor(), "vicuna-v1", ImageTokenRule(image_tokens))


def build_images(work: Path, n: int, seed: int) -> list[str]:
    """``n`` small JPEGs (48-160 px a side) in LLaVA's image folders; paths relative to ``work``."""
    from PIL import Image

    rels = [f"{FOLDERS[i % len(FOLDERS)]}/{i:07d}.jpg" for i in range(n)]
    done = work / f".images-{n}"
    if done.is_file():
        return rels
    rng = random.Random(seed)
    for rel in rels:
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (rng.randint(48, 160), rng.randint(48, 160))
        Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(path, quality=80)
    done.write_text("ok\n")
    return rels


class TextMaker:
    """Text of about a given length from the corpus' sentences."""

    def __init__(self, sentences: list[str], rng: random.Random):
        self.sentences, self.rng = sentences, rng

    def text(self, n: int) -> str:
        out, size = [], 0
        while size < n:
            s = self.rng.choice(self.sentences)
            out.append(s)
            size += len(s) + 1
        return " ".join(out)[: max(n, 1)].rstrip() or "Yes."

    def question(self, lo: int = 25, hi: int = 70) -> str:
        return self.text(self.rng.randint(lo, hi)).rstrip(".!") + "?"

    def words(self, k: int) -> str:
        return " ".join(self.text(40).split()[:k]) or "yes"


def make_turns(kind: str, m: TextMaker, rng: random.Random) -> list[tuple[str, str]]:
    """The (question, answer) turns of one record of ``kind``, sized like LLaVA-1.5's (see the README)."""

    def box() -> str:
        a, b = sorted(rng.random() for _ in range(2))
        c, d = sorted(rng.random() for _ in range(2))
        return f"[{a:.2f}, {c:.2f}, {b:.2f}, {d:.2f}]"

    if kind == "conversation":
        return [(m.question(30, 110), m.text(rng.randint(120, 650))) for _ in range(rng.randint(2, 5))]
    if kind == "detail":
        return [(m.question(40, 90), m.text(rng.randint(500, 1300)))]
    if kind == "complex":
        return [(m.question(60, 200), m.text(rng.randint(400, 1200)))]
    if kind == "sharegpt":
        return [(m.text(rng.randint(60, 600)), m.text(rng.randint(200, 1300))) for _ in range(rng.randint(1, 4))]
    if kind in ("vqav2", "gqa", "okvqa", "ocrvqa"):
        k = {"vqav2": (2, 8), "gqa": (4, 20), "okvqa": (1, 2), "ocrvqa": (3, 8)}[kind]
        return [(f"{m.question()}\n{SHORT}", m.words(rng.randint(1, 4))) for _ in range(rng.randint(*k))]
    if kind == "aokvqa":
        opts = "\n".join(f"{c}. {m.words(rng.randint(1, 4))}" for c in "ABCD")
        ask = "Answer with the option's letter from the given choices directly."
        return [(f"{m.question()}\n{opts}\n{ask}", rng.choice("ABCD")) for _ in range(rng.randint(1, 2))]
    if kind == "textcaps":
        return [("Provide a one-sentence caption for the provided image.", m.text(rng.randint(40, 140)))]
    ask = "Please provide the bounding box coordinate of the region this sentence describes: "
    tell = "Please provide a short description for this region: "
    k = (3, 10) if kind == "refcoco" else (5, 14)
    return [
        (ask + m.words(rng.randint(2, 8)), box()) if rng.random() < 0.5 else (tell + box(), m.words(6))
        for _ in range(rng.randint(*k))
    ]


def write_record(f: Any, rid: str, image: str | None, turns: list[tuple[str, str]], first: bool) -> None:
    """One element of the list, indented by 2 as ``json.dump(..., indent=2)`` writes it (strings via the C
    encoder: dumping 665K records with ``indent`` through the pure-Python encoder takes minutes)."""
    d = json.dumps
    conv = ",\n".join(
        f'      {{\n        "from": "{who}",\n        "value": {d(v, ensure_ascii=False)}\n      }}'
        for q, a in turns
        for who, v in (("human", q), ("gpt", a))
    )
    img = f'    "image": {d(image)},\n' if image else ""
    f.write(("" if first else ",\n") + f'  {{\n    "id": {d(rid)},\n{img}    "conversations": [\n{conv}\n    ]\n  }}')


def build_data(work: Path, n: int, images: list[str], sentences: list[str], seed: int) -> Path:
    path = work / f"llava_mix_{n}.json"
    if path.is_file():
        return path
    rng = random.Random(seed + 1)
    maker = TextMaker(sentences, rng)
    kinds = [k for k, v in MIX.items() for _ in range(v)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(n):
            kind = kinds[rng.randrange(len(kinds))]
            turns = make_turns(kind, maker, rng)
            image = None if kind == "sharegpt" else images[rng.randrange(len(images))]
            if image:
                q = turns[0][0]
                turns[0] = (f"<image>\n{q}" if rng.random() < 0.8 else f"{q}\n<image>", turns[0][1])
            write_record(f, f"{kind}-{i:07d}", image, turns, i == 0)
        f.write("\n]\n")
    os.replace(tmp, path)
    return path


# ---- timings
def slice_file(data: Path, n: int) -> Path:
    """The first ``n`` records of the list, as their own ``.json`` file (the baseline's input)."""
    out = data.with_name(f"{data.stem}_head{n}.json")
    if not out.is_file():
        from scitune.data.records import RecordFile

        with open(data, "rb") as src, open(out, "wb") as f:
            f.write(b"[\n  ")
            for number, start, end, _ in RecordFile(data).scan():
                if number >= n:
                    break
                src.seek(start)
                f.write((b",\n  " if number else b"") + src.read(end - start))
            f.write(b"\n]\n")
    return out


def stats_of(data: Path) -> dict[str, Any]:
    """Records, text characters per record and file size, from one pass."""
    from scitune.data.records import RecordFile

    n = chars = 0
    for _, _, _, rec in RecordFile(data).scan():
        n += 1
        chars += sum(len(t["value"]) for t in rec["conversations"])
    return {"records": n, "mean_text_chars": round(chars / n, 1), "file_mb": round(data.stat().st_size / 1e6, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from scitune.data.dataset import ImageCheck, validate_file
    from scitune.data.validated import RecordSamples, default_workers, validate_records

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    sentences = corpus_sentences(Path(args.corpus))
    tokenizer = build_tokenizer(work, sentences, args.vocab)
    images = build_images(work, args.images, args.seed)
    data = build_data(work, args.records, images, sentences, args.seed)
    print(f"inputs ready in {time.perf_counter() - t:.0f} s: {data}", flush=True)
    processor = build_processor(tokenizer, args.image_tokens)
    info = stats_of(data)
    print(f"data: {info}", flush=True)

    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["SCITUNE_CACHE_DIR"] = str(cache)  # read when the cache is used: a fresh, empty one
    check = ImageCheck()
    workers = default_workers() if args.workers is None else args.workers
    timings = {}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    for name in ("first", "second"):
        t = time.perf_counter()
        v = validate_records(data, processor, work, args.max_length, "as-is", check, args.progress, workers=workers)
        timings[name] = (time.perf_counter() - t, v)
        print(f"{name}: {timings[name][0]:.2f} s, from cache: {v.from_cache}; {v.summary()}", flush=True)
    cold = timings["first"][1]
    piece = slice_file(data, args.baseline)
    t = time.perf_counter()
    samples, report = validate_file(piece, processor, work, args.max_length, "as-is", check)
    base = time.perf_counter() - t
    scale = info["records"] / report.total
    print(f"baseline: {base:.2f} s for {report.total} records (x{scale:.1f})", flush=True)

    lazy = RecordSamples(cold, processor, work, args.max_length, "as-is", check)
    picks = random.Random(0).sample(range(len(lazy)), min(200, len(lazy)))
    t = time.perf_counter()
    for i in picks:
        lazy[i]
    per_item = (time.perf_counter() - t) / len(picks)

    def row(system: str, seconds: float, note: str) -> dict[str, Any]:
        return {
            "run": system,
            "records": info["records"],
            "seconds": round(seconds, 2),
            "records_per_s": round(info["records"] / seconds),
            "note": note,
        }

    n_bad = len(cold.report.problems)
    rows = [
        row(
            "before: check_record per record (full decode + tokenize)",
            base * scale,
            f"measured on the first {report.total} records ({base:.2f} s), x{scale:.1f}",
        ),
        row(
            "first launch (cold cache)",
            timings["first"][0],
            f"{cold.n_exact} counted exactly, {len(cold) - cold.n_exact} by the bound, {n_bad} bad",
        ),
        row("second launch (cached verdict)", timings["second"][0], "no JSON parsed, no image opened"),
    ]
    lengths = cold.lengths
    return {
        "rows": rows,
        "data": {
            **info,
            "images": args.images,
            "usable": len(cold),
            "bad": n_bad,
            "mean_length_estimate": round(float(np.mean(lengths)), 1),
            "exact_fraction": round(cold.n_exact / max(1, len(cold)), 4),
        },
        "lazy_item_ms": round(per_item * 1000, 3),
        "settings": {
            "max_length": args.max_length,
            "image_tokens": args.image_tokens,
            "vocab": args.vocab,
            "template": "vicuna-v1",
            "threads": args.threads,
            "workers": workers,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["run", "records", "seconds", "records_per_s", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=665_000, help="records in the synthetic file")
    ap.add_argument("--images", type=int, default=50_000, help="distinct image files the records point into")
    ap.add_argument("--baseline", type=int, default=5_000, help="records the old path is measured on")
    ap.add_argument("--workdir", default=os.path.join("/tmp", "scitune-bench-validate"), help="inputs, built once")
    ap.add_argument("--corpus", default=str(CORPUS), help="folder of JSON text the tokenizer and records draw on")
    ap.add_argument("--vocab", type=int, default=32_000, help="tokenizer vocabulary (LLaMA's: 32000)")
    ap.add_argument("--image_tokens", type=int, default=576, help="tokens per image (LLaVA-1.5: 576)")
    ap.add_argument("--max_length", type=int, default=2048, help="context (LLaVA-1.5: 2048)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workers", type=int, default=None, help="validation processes (default: scitune's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help="show the validation's progress bar")
    ap.add_argument("--out", default=str(HERE / "results" / "validate.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args)
    print(table(result["rows"]))
    print(f"lazy dataset: {result['lazy_item_ms']} ms per record read + checked + encoded (on access, in workers)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
