"""`scitune data ACTION`: validate, stats, export, scifig (synthetic figures), ocr (Tesseract), cache-features and
generate-instructions (LLM-written instruction data) for data files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from scitune.cli.common import fail, instantiate, parser, preset_argv
from scitune.cli.download import download, download_parser

DESCRIPTION = """Data tools.

  scitune data validate --data train.jsonl --checkpoint runs/x/final
  scitune data stats    --data train.jsonl --out stats/ [--tokenizer DIR | --checkpoint DIR]
  scitune data export   --format sharegpt --data train.jsonl --out train_sharegpt.json
  scitune data scifig   --n 2000 --out scifig/ --seed 0 --preview
  scitune data ocr      --data scifig/scicap/test.jsonl --image_root scifig --out test_ocr.jsonl
  scitune data cache-features --config scitune-llama-7b/align --data.train scicap_CTOM.jsonl --out cache/
  scitune data download scienceqa --out data/scienceqa   (--dry_run: only say what; offline: says what to do)
  scitune data generate-instructions --data scifig/scicap/train.jsonl --out instruct.jsonl \
      --llm_url http://127.0.0.1:8000/v1 --llm_model gpt-4 --types conversation,detail,complex --workers 4"""


_OVERWRITE = "write into an --out folder that holds files scitune did not write (they are kept, never replaced)"


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _validate_parser() -> ArgumentParser:
    v = parser("data validate", "Report every bad record (file, line, id, problem); exit 1 if any.")
    v.add_argument("--data", required=True, help="JSONL or LLaVA .json list file")
    v.add_argument("--checkpoint", required=True, help="checkpoint whose tokenizer/encoder define the sample")
    v.add_argument("--image_root", default=None, help="folder for relative image paths (default: data's folder)")
    v.add_argument("--template", default=None, help="chat template (default: the checkpoint's)")
    v.add_argument("--max_length", type=int, default=2048, help="context length")
    v.add_argument(
        "--max_image_pixels", type=int, default=50_000_000, help="largest image (width x height); 0 = no limit"
    )
    v.add_argument(
        "--allow_outside_root",
        type=bool,
        default=False,
        help="accept image paths that leave the image root (absolute, '..', symlinks pointing out)",
    )
    v.add_argument(
        "--exact",
        type=bool,
        default=False,
        help="tokenize every record and decode every image in full (slower); by default a record that a proven "
        "token bound shows to fit is not tokenized, and images are read up to their header and end marker",
    )
    v.add_argument("--progress", type=bool, default=True, help="show a progress bar (--no-progress: none)")
    return v


def _validate(args: Any) -> int:
    from scitune.data.dataset import ImageCheck
    from scitune.data.validated import validate_records
    from scitune.io import check_input_file
    from scitune.loader import load_processor

    check_input_file(args.data, "data file")  # before the model loads
    processor = load_processor(args.checkpoint, template=args.template)
    check = ImageCheck(args.max_image_pixels or None, args.allow_outside_root)
    # checked afresh every time (images may have changed); the verdict is stored for training to reuse
    validated = validate_records(Path(args.data), processor, args.image_root, args.max_length, image_check=check,
                                 progress=args.progress, full=args.exact, cache="refresh")  # fmt: skip
    report = validated.report
    print(report.summary(limit=1000))
    print(validated.summary())
    if not report.ok:
        return fail(f"{args.data}: {len(report.problems)} of {report.total} records are bad (listed above)", 1)
    return 0


def _stats_parser() -> ArgumentParser:
    s = parser("data stats", "Counts, images, turns, missing fields and a sample-length histogram (PNG).")
    s.add_argument("--data", required=True, help="JSONL or JSON-list data file")
    s.add_argument("--out", required=True, help="folder for stats.json and length_histogram.png")
    s.add_argument("--tokenizer", default=None, help="HF tokenizer folder: lengths in tokens (default: words)")
    s.add_argument("--checkpoint", default=None, help="scitune checkpoint: exact training lengths in tokens")
    s.add_argument("--image_root", default=None, help="folder for relative image paths (default: data's folder)")
    s.add_argument("--overwrite", type=bool, default=False, help=_OVERWRITE)
    return s


def _stats(args: Any) -> int:
    from scitune.data.stats import HISTOGRAM_FILE, STATS_FILE, write_stats
    from scitune.outputs import claim_output_folder

    if args.tokenizer and args.checkpoint:
        raise ValueError("give --tokenizer or --checkpoint, not both")
    processor = None
    if args.checkpoint:
        from scitune.loader import load_processor

        processor = load_processor(args.checkpoint)
    claim_output_folder(args.out, "data-stats", (STATS_FILE, HISTOGRAM_FILE), args.overwrite)
    _print(write_stats(args.data, args.out, args.tokenizer, processor, args.image_root))
    return 0


def _export_parser() -> ArgumentParser:
    e = parser("data export", "Write records in LLaVA's JSON layout or ShareGPT's (a .json out is a JSON list).")
    e.add_argument("--format", required=True, choices=["llava-json", "sharegpt"], help="output layout")
    e.add_argument("--data", required=True, help="records (canonical, LLaVA JSON or ShareGPT; JSONL or JSON list)")
    e.add_argument("--out", required=True, help="output file: .json = JSON list, otherwise JSONL")
    e.add_argument("--with_meta", type=bool, default=False, help="keep each record's meta")
    return e


def _export(args: Any) -> int:
    from scitune.sources.converters.llava_json import export_file

    _print(export_file(args.data, args.out, args.format, args.with_meta))
    return 0


def _scifig_parser() -> ArgumentParser:
    f = parser("data scifig", "Render N synthetic scientific figures with ground truth (80/10/10 train/val/test).")
    f.add_argument("--n", type=int, default=2000, help="figures in all: val and test get n // 10 each, train the rest")
    f.add_argument("--out", required=True, help="output folder (SciCap-style records + ScienceQA-style problems)")
    f.add_argument("--seed", type=int, default=0, help="base seed: the same seed gives the same files")
    f.add_argument("--image_size", type=int, default=224, help="side of the square PNG images")
    f.add_argument("--questions_per_figure", type=int, default=1, help="multiple-choice image questions per figure")
    f.add_argument(
        "--kinds",
        type=list[str],
        default=[],
        help="image-question kinds to ask (default: all; e.g. "
        "the demo's: figure-type,trend,count-curves,count-groups,count-bars,count-nodes,count-equations,"
        "bar-color,correlation)",
    )
    f.add_argument(
        "--fixed_choices",
        type=bool,
        default=False,
        help="list choices in a fixed order (counts ascending over their whole range, names in vocabulary order) "
        "instead of shuffled",
    )
    f.add_argument("--workers", type=int, default=2, help="rendering processes (the files do not depend on it)")
    f.add_argument("--preview", type=bool, default=False, help="also write OUT/preview.png, a grid of each figure type")
    f.add_argument("--preview_per_type", type=int, default=4, help="figures per type in the preview grid")
    f.add_argument("--progress", type=bool, default=True, help="show a progress bar (--no-progress: none)")
    f.add_argument("--overwrite", type=bool, default=False, help=_OVERWRITE)
    return f


def _scifig(args: Any) -> int:
    from scitune.outputs import claim_output_folder
    from scitune.sources.scifig import SciFigConfig, generate_scifig
    from scitune.sources.scifig.dataset import render_gallery, split_counts

    writes = ("images", "scicap", "scienceqa", "manifest.json", "preview.png", ".scifig-shards")
    claim_output_folder(args.out, "scifig", writes, args.overwrite)
    counts = split_counts(args.n)
    config = SciFigConfig(n_train=counts["train"], n_val=counts["val"], n_test=counts["test"],
                          image_size=args.image_size, seed=args.seed, questions_per_figure=args.questions_per_figure,
                          kinds=tuple(args.kinds), fixed_choices=args.fixed_choices)  # fmt: skip
    manifest = generate_scifig(args.out, config, progress=args.progress, workers=args.workers)
    if args.preview:
        path = Path(args.out) / "preview.png"
        render_gallery(path, args.seed, args.preview_per_type, args.image_size, config.types)
        manifest = {**manifest, "preview": str(path)}
    _print(manifest)
    return 0


def _ocr_parser() -> ArgumentParser:
    o = parser("data ocr", "Fill each record's OCR field with Tesseract; score it where the field held text.")
    o.add_argument("--data", required=True, help="records with an 'image' path (SciCap-style or canonical)")
    o.add_argument("--out", required=True, help="output file: .json = JSON list, otherwise JSONL")
    o.add_argument("--image_root", default=None, help="folder for relative image paths (default: data's folder)")
    o.add_argument("--field", default="ocr_text", help="record field to fill")
    o.add_argument("--lang", default="eng", help="Tesseract language(s)")
    o.add_argument("--psm", type=int, default=11, help="Tesseract page segmentation mode (11: sparse text)")
    o.add_argument("--scale", type=float, default=2.0, help="upscale images by this factor before OCR")
    o.add_argument("--workers", type=int, default=2, help="Tesseract processes at once")
    o.add_argument("--limit", type=int, default=None, help="read the first N records only (a quick CER check)")
    return o


def _ocr(args: Any) -> int:
    from scitune.sources.converters.reading import read_record_source, write_record_file
    from scitune.sources.ocr import OCRConfig, OCRUnavailableError, fill_ocr

    located = read_record_source(args.data)[: args.limit]
    config = OCRConfig(lang=args.lang, psm=args.psm, scale=args.scale, workers=args.workers)
    try:
        records, report = fill_ocr(located, args.image_root or Path(args.data).parent, args.field, config)
    except OCRUnavailableError as e:
        return fail(str(e))
    write_record_file(args.out, records)
    _print({"out": args.out, **report})
    return 0


def _cache_parser() -> ArgumentParser:
    from scitune.cli.common import run_parser

    c = run_parser(
        "data cache-features",
        "Run the frozen vision encoder of a training config once per image of --data.train and store the "
        "features (safetensors shards); train the align stage with --data.feature_cache OUT. Only the encoder "
        "is loaded, never the LLM.",
    )
    c.add_argument("--out", required=True, help="cache folder")
    c.add_argument("--batch_size", type=int, default=32, help="images per encoder batch")
    c.add_argument("--device", default="auto", help="where the encoder runs (auto = cuda when available, else cpu)")
    c.add_argument("--progress", type=bool, default=True, help="show a progress bar (--no-progress: none)")
    c.add_argument("--overwrite", type=bool, default=False, help=_OVERWRITE)
    return c


def _cache(args: Any) -> int:
    from scitune.train.feature_cache import build_feature_cache, build_vision_side

    if not args.data.train:
        return fail("--data.train is required: the records whose images to encode")
    if not isinstance(args.data.train, str) or args.data.train.endswith((".yaml", ".yml")):
        return fail("--data.train: cache-features takes one record file, not a mixture; pass a run's drawn "
                    "mixture/train.jsonl with --data.image_root set to the image_root in its mixture.json")  # fmt: skip
    from scitune.outputs import claim_output_folder

    claim_output_folder(args.out, "feature-cache", ("*.safetensors", "*.json"), args.overwrite)
    vision = build_vision_side(args.model, args.device)
    _print(
        build_feature_cache(
            None,
            args.data.train,
            args.out,
            args.data.image_root,
            args.batch_size,
            args.progress,
            vision=vision,
            allow_outside_root=args.data.allow_outside_root,
            max_pixels=args.data.max_image_pixels or None,
        )
    )
    return 0


def _instruct_parser() -> ArgumentParser:
    from scitune.sources.instruct_gen import LLM_API_KEY_ENV, InstructGenConfig

    g = parser(
        "data generate-instructions",
        "LLaVA's GPT-assisted instruction data: a text-only LLM behind an OpenAI-compatible endpoint writes a "
        "conversation, a detailed description and a complex-reasoning QA per item from its symbolic context "
        f"(captions + object boxes, or a figure's type, caption, OCR and mentions). API key: ${LLM_API_KEY_ENV}. "
        "Finished items are cached; a rerun asks only for the rest. Exit 1 when some items failed (listed).",
    )
    g.add_argument("--data", required=True, help="context records (JSONL / JSON list) or a COCO captions JSON")
    g.add_argument("--out", required=True, help="output JSONL of canonical records (+ .summary.json, .cache.jsonl)")
    g.add_argument("--llm_url", required=True, help="OpenAI-compatible endpoint, e.g. http://host/v1")
    g.add_argument("--llm_model", required=True, help="model name sent to the endpoint")
    g.add_argument("--cache", default=None, help="cache JSONL (default: OUT with suffix .cache.jsonl)")
    g.add_argument("--coco_instances", default=None, help="COCO instances JSON: object boxes for a COCO --data")
    g.add_argument("--limit", type=int, default=None, help="first N items only")
    g.add_argument("--print_prompt", type=bool, default=False, help="print the first item's messages and exit")
    g.add_class_arguments(InstructGenConfig, None)
    return g


def _instruct(args: Any) -> int:
    import dataclasses

    from scitune.llm_client import JudgeClient
    from scitune.sources.instruct_gen import (
        LLM_API_KEY_ENV,
        InstructGenConfig,
        build_messages,
        generate_instructions,
        load_fewshot,
    )
    from scitune.sources.instruct_gen.context import load_contexts

    config = InstructGenConfig(**{f.name: args[f.name] for f in dataclasses.fields(InstructGenConfig)})
    contexts = load_contexts(args.data, config.kind, args.coco_instances, args.limit)
    if args.print_prompt:
        if contexts:
            _print({"messages": build_messages(load_fewshot(config.type_list()[0], contexts[0].kind,
                                                            config.examples), contexts[0])})  # fmt: skip
        return 0
    client = JudgeClient(args.llm_url, args.llm_model, timeout=config.timeout, retries=config.retries,
                         backoff=config.backoff, temperature=config.temperature, max_tokens=config.max_tokens,
                         api_key_env=LLM_API_KEY_ENV)  # fmt: skip
    summary = generate_instructions(contexts, client, args.out, config, args.cache)
    _print({**summary, "failures": summary["failures"][:20]})
    return 1 if summary["failed"] else 0


ACTIONS: dict[str, tuple[Callable[[], ArgumentParser], Callable[[Any], int], str]] = {
    "validate": (_validate_parser, _validate, "validate a data file against a checkpoint"),
    "stats": (_stats_parser, _stats, "counts, images, turns, missing fields, length histogram"),
    "export": (_export_parser, _export, "export records as LLaVA JSON or ShareGPT"),
    "scifig": (_scifig_parser, _scifig, "render the synthetic SciFig dataset (and a preview grid)"),
    "ocr": (_ocr_parser, _ocr, "fill the OCR field with Tesseract and report the character error rate"),
    "cache-features": (_cache_parser, _cache, "store the frozen vision encoder's features for the align stage"),
    "generate-instructions": (_instruct_parser, _instruct, "LLM-written conversation/detail/reasoning data (LLaVA)"),
    "download": (download_parser, download, "fetch a public release (ScienceQA, LLaVA, COCO/Flickr30k Karpathy, ...)"),
}


def main(argv: list[str]) -> int:
    p = parser("data", DESCRIPTION)
    sub = p.add_subcommands(dest="action")
    built = {name: build() for name, (build, _, _) in ACTIONS.items()}
    for name, (_, _, help_) in ACTIONS.items():
        sub.add_subcommand(name, built[name], help=help_)
    ns = p.parse_args(preset_argv(argv))
    if ns.action == "cache-features":  # dataclass sections become config objects
        return _cache(instantiate(built[ns.action], ns[ns.action]))
    return ACTIONS[ns.action][1](ns[ns.action])
