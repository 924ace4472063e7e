"""The demo's steps 1-7 (step 8, the evaluation, is `scitune.demo.evaluate`); each takes the `Demo` and returns a
summary dict with a one-line ``line``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scitune.io import read_json, write_jsonl

if TYPE_CHECKING:
    from scitune.demo.runner import Demo


def _records(root: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (root / "scicap" / f"{split}.jsonl").read_text().splitlines() if x.strip()]


OCR_SAMPLE = 20
"""Test figures Tesseract reads in ``--demo.ocr auto`` to measure it against SciFig's OCR truth."""


def run_ocr(demo: Demo) -> dict[str, Any]:
    """OCR per ``--demo.ocr``: measure Tesseract on a sample (auto) or read every figure (tesseract), or skip.

    With ``tesseract`` the records with Tesseract's text are written to ``data/scicap-ocr/<split>.jsonl`` and stage 1
    is converted from them; otherwise stage 1 uses SciFig's OCR truth. The returned ``why`` says which and why.
    """
    mode, root = demo.cfg.ocr, demo.path("scifig")
    if mode == "truth":
        return {"ocr": "truth", "why": "--demo.ocr truth: SciFig's OCR truth is used"}
    from scitune.sources.ocr import fill_ocr, tesseract_missing

    missing = tesseract_missing()
    if missing:
        return {"ocr": "truth", "why": f"no OCR ({missing}); SciFig's OCR truth is used"}
    if mode == "auto":
        sample = [(f"test #{i}", r) for i, r in enumerate(_records(root, "test")[:OCR_SAMPLE])]
        _, rep = fill_ocr(sample, root, progress=demo.cfg.progress)
        return {"ocr": "truth", "tesseract_cer": rep["cer"],
                "why": f"Tesseract read {rep['records']} test figures at {demo.size.image_size} px with character "
                f"error rate {rep['cer']} against the truth; the demo trains on SciFig's OCR truth "
                "(--demo.ocr tesseract trains on Tesseract's text)"}  # fmt: skip
    reports = {}
    for split in ("train", "val", "test"):
        located = [(f"{split} #{i}", r) for i, r in enumerate(_records(root, split))]
        records, reports[split] = fill_ocr(located, root, progress=demo.cfg.progress)
        write_jsonl(demo.path("data", "scicap-ocr", f"{split}.jsonl"), records)
    cer = reports["test"]["cer"]
    return {"ocr": "tesseract", "tesseract_cer": cer,
            "why": f"Tesseract's text is used (character error rate {cer} on test against the truth)"}  # fmt: skip


def scicap_source(demo: Demo, split: str) -> Path:
    """The SciCap-style records stage 1 is converted from: Tesseract's OCR if it ran on every figure, else SciFig's."""
    ocr = demo.path("data", "scicap-ocr", f"{split}.jsonl")
    return ocr if demo.cfg.ocr == "tesseract" and ocr.is_file() else demo.path("scifig", "scicap", f"{split}.jsonl")


def make_data(demo: Demo) -> dict[str, Any]:
    """Step 1: render SciFig (train/val/test) with its questions, then OCR per ``--demo.ocr``."""
    from scitune.sources.scifig import SciFigConfig, generate_scifig
    from scitune.threads import usable_cpus

    s = demo.size
    cfg = SciFigConfig(n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, image_size=s.image_size,
                       seed=demo.cfg.seed, questions_per_figure=s.questions_per_figure, kinds=s.kinds,
                       fixed_choices=s.fixed_choices)  # fmt: skip
    workers = usable_cpus()  # the files do not depend on it; on a busy machine more processes get a larger share
    manifest = generate_scifig(demo.path("scifig"), cfg, progress=demo.cfg.progress, workers=workers)
    note = run_ocr(demo)
    counts, probs = manifest["counts"], manifest["problems"]
    line = (f"{sum(counts.values())} figures {counts}, {sum(probs.values())} MCQs "
            f"{manifest['problem_contexts']}; OCR: {note['why']}")  # fmt: skip
    return {"line": line, "counts": counts, "problems": probs, "contexts": manifest["problem_contexts"], **note}


def _corpus(root: Path) -> dict[str, list[str]]:
    """Train-split texts: figure texts (caption, OCR, mentions, paragraphs) and MCQ texts (lecture, solution...)."""
    figs = _records(root, "train")
    problems = read_json(root / "scienceqa" / "problems.json")
    train = [problems[p] for p in read_json(root / "scienceqa" / "pid_splits.json")["train"]]
    return {
        "captions": [r["caption"] for r in figs],
        "mentions": [m for r in figs for m in r["mentions"]],
        "paragraphs": [p for r in figs for p in r["paragraphs"]],
        "ocr": [r["ocr_text"] for r in figs],
        "lectures": sorted({p["lecture"] for p in train}),
        "solutions": [p["solution"] for p in train],
        "questions": [f"{p['question']} {p['hint']} {' '.join(p['choices'])}" for p in train],
    }


def make_tokenizer(demo: Demo) -> dict[str, Any]:
    """Step 2: a byte-level BPE tokenizer on the SciFig train text, with the chat special tokens."""
    from scitune.pretrain.tokenizer import train_bpe_tokenizer
    from scitune.sources.converters.scicap import QUESTIONS

    corpus = _corpus(demo.path("scifig"))
    texts = [t for part in corpus.values() for t in part] + list(QUESTIONS) + [demo_template_text()] * 50
    tok = train_bpe_tokenizer(texts, demo.size.vocab_size)
    tok.save_pretrained(demo.path("models", "tokenizer"))
    sample = corpus["captions"][0]
    n_tok, n_words = len(tok(sample)["input_ids"]), len(sample.split())
    line = f"vocab {len(tok)} from {len(texts)} texts; e.g. a {n_words}-word caption is {n_tok} tokens"
    return {"line": line, "vocab": len(tok), "texts": len(texts)}


def demo_template_text() -> str:
    from scitune.demo.runner import SYSTEM_AND_TEMPLATE

    return SYSTEM_AND_TEMPLATE


def _tokenizer(demo: Demo) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo.path("models", "tokenizer"))


def make_clip(demo: Demo) -> dict[str, Any]:
    """Step 3: pretrain the micro CLIP contrastively on (figure, caption) train pairs; held-out retrieval on val."""
    from scitune.infer.generate import open_image
    from scitune.pretrain.clip import pretrain_clip, retrieval_accuracy

    root = demo.path("scifig")
    figs = _records(root, "train")
    images = [open_image(root / r["image"]) for r in figs]
    cfg = demo.size.clip
    res = pretrain_clip(images, [r["caption"] for r in figs], _tokenizer(demo), cfg, demo.path("models", "clip"),
                        progress=demo.cfg.progress)  # fmt: skip
    val = _records(root, "val")
    if val:
        res["val_retrieval_acc"] = retrieval_accuracy(
            demo.path("models", "clip"), [open_image(root / r["image"]) for r in val], [r["caption"] for r in val]
        )
    line = (f"{res['parameters']:,} params, {res['steps']} steps, loss {res['losses'][0]:.2f} -> "
            f"{res['losses'][-1]:.2f}, val image->caption top-1 {res.get('val_retrieval_acc', float('nan')):.2f}")  # fmt: skip
    return {"line": line, **res}


def chat_documents(records: list[dict[str, Any]], tokenizer: Any, template: str = "scitune") -> list[list[int]]:
    """Canonical records as text-only dialogues, tokenized turn by turn as training does (image placeholders cut)."""
    from scitune.config.schema import DEFAULT_IMAGE_TOKEN as IMG
    from scitune.data.conversation import Message, record_messages
    from scitune.data.templates import get_template
    from scitune.data.tokenize import encode_segments

    tpl, out = get_template(template), []
    for rec in records:
        msgs = [
            Message(m.role, m.content.replace("\n" + IMG, "").replace(IMG, "").strip()) for m in record_messages(rec)
        ]
        out.append(encode_segments(tpl.render(msgs, tokenizer), tokenizer, None, tpl.add_bos).input_ids)
    return out


def lm_corpus(demo: Demo, tokenizer: Any) -> list[Any]:
    """The micro LM's pretraining text: the SciFig train split as text-only SciTune dialogues, and the lectures.

    Figure texts (type, caption, OCR, paragraph, mentions: CTOM) answer the 16 describe questions, and each MCQ's
    explanation and answer (in the stage-2 format) answers its question: the language a real LLM brings; only the
    images are new to it in stages 1 and 2.
    """
    from scitune.sources.converters.scicap import build_records, load_scicap
    from scitune.sources.converters.scienceqa import convert_scienceqa, load_scienceqa

    root = demo.path("scifig", "scienceqa")
    figures, _ = build_records(load_scicap(scicap_source(demo, "train")), "CTOM", demo.cfg.seed)
    corpus = _corpus(demo.path("scifig"))
    sqa = load_scienceqa(root / "problems.json", root / "pid_splits.json", "train")
    if not demo.size.lm_mcq_dialogues:  # the MCQs are stage 2's to learn, with their figures
        return chat_documents(figures, tokenizer) + corpus["lectures"] + corpus["solutions"]
    mcqs = convert_scienceqa(sqa.problems, sqa.pids, demo.size.prompt_format)
    return chat_documents(figures + mcqs, tokenizer) + corpus["lectures"]


def make_lm(demo: Demo) -> dict[str, Any]:
    """Step 4: pretrain the micro LM on the SciFig train text (`lm_corpus`)."""
    from scitune.pretrain.lm import pretrain_lm

    tok = _tokenizer(demo)
    texts = lm_corpus(demo, tok)
    res = pretrain_lm(texts, tok, demo.size.lm, demo.path("models", "lm"), progress=demo.cfg.progress)
    line = (f"{res['parameters']:,} params, {len(texts)} documents, {res['tokens']:,} tokens, {res['steps']} steps, "
            f"loss {res['losses'][0]:.2f} -> {res['losses'][-1]:.2f}")  # fmt: skip
    return {"line": line, **res}


def convert(demo: Demo) -> dict[str, Any]:
    """Step 5: SciFig -> stage-1 records (scicap converter, CTOM and for the ablation C) and stage-2 records."""
    from scitune.sources.converters import SciCapConverter, ScienceQAConverter

    root, out = demo.path("scifig"), {}
    for v in demo.variants:
        rep = SciCapConverter().run(str(scicap_source(demo, "train")), str(demo.path("data", f"align-{v}.jsonl")),
                                    variant=v, seed=demo.cfg.seed)  # fmt: skip
        out[f"align_{v}"] = rep["written"]
    fmt, src = demo.size.prompt_format, root / "scienceqa"
    rep = ScienceQAConverter().run(str(src), str(demo.path("data", "finetune.jsonl")), split="train",
                                   prompt_format=fmt)  # fmt: skip
    out["finetune"] = rep["records"]
    parts = ", ".join(f"{n} align-{v}" for v, n in ((v, out[f"align_{v}"]) for v in demo.variants))
    line = f"{parts} records (scicap converter); {rep['records']} finetune records (scienceqa, {fmt})"
    return {"line": line, "records": out, "prompt_format": fmt}


def run_config(demo: Demo, stage: str, variant: str) -> Any:
    """The `RunConfig` of one training stage (the same object ``scitune train`` builds from flags)."""
    from scitune.config.schema import (
        DataConfig,
        LlmConfig,
        ModelConfig,
        OptimConfig,
        ProjectorConfig,
        RunConfig,
        TrainConfig,  # fmt: skip
        VisionConfig,
    )

    s, root = demo.size, demo.path("scifig")
    st = s.align if stage == "align" else s.finetune
    if stage == "align":
        vision = VisionConfig(name="clip", path=str(demo.path("models", "clip")), feature_layer=s.feature_layer,
                              select=s.select)  # fmt: skip
        model = ModelConfig(vision=vision, projector=ProjectorConfig(s.projector),
                            llm=LlmConfig(path=str(demo.path("models", "lm"))))  # fmt: skip
        data = DataConfig(train=str(demo.path("data", f"align-{variant}.jsonl")), image_root=str(root),
                          max_length=1024)  # fmt: skip
    else:
        model = ModelConfig(init_from=str(demo.path("runs", f"align-{variant}", "final")),
                            vision=VisionConfig(trainable=s.finetune_vision))  # fmt: skip
        data = DataConfig(train=str(demo.path("data", "finetune.jsonl")), image_root=str(root / "scienceqa" / "images"),
                          max_length=1024)  # fmt: skip
    n = sum(1 for _ in open(data.train, encoding="utf-8"))
    steps = max(1, int(st.epochs * n) // st.batch) if st.max_steps < 0 else st.max_steps
    train = TrainConfig(stage=stage, out_dir=str(demo.path("runs", f"{stage}-{variant}")), epochs=st.epochs,
                        max_steps=st.max_steps, global_batch_size=st.batch, micro_batch_size=st.batch,
                        seed=demo.cfg.seed, progress=demo.cfg.progress, resume="latest",
                        save_every=max(1, steps // 4))  # fmt: skip
    return RunConfig(model=model, data=data, optim=OptimConfig(lr=st.lr, warmup_ratio=0.05), train=train)


def train_stage(demo: Demo, stage: str, variant: str) -> dict[str, Any]:
    """Steps 6 and 7: stage 1 (connector only) or stage 2 (connector + LLM) with scitune's training loop.

    An interrupted run resumes from its newest step checkpoint (``--train.resume latest``).
    """
    from scitune.train.loop import train

    cfg = run_config(demo, stage, variant)
    r = train(cfg)
    losses = [json.loads(x)["loss"] for x in (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()]
    trained = {k: v["trainable"] for k, v in r.parameter_counts.items()}
    line = (f"{r.steps} steps, loss {losses[0]:.3f} -> {sum(losses[-5:]) / len(losses[-5:]):.3f} (last 5), "
            f"trainable {trained}")  # fmt: skip
    return {"line": line, "steps": r.steps, "losses": losses, "trainable": trained, "checkpoint": r.final_checkpoint}
