"""Generation speed: scitune's `GenerationEngine` vs transformers' ``LlavaForConditionalGeneration.generate`` on the
same weights, prompts and images, greedy, at batch 1 and 8, in one run.

``python benchmarks/generate.py`` builds a random LLaMA-shaped LLM (~25M parameters) with a small CLIP-like encoder
offline (`train_throughput.build_random_models`), exports it to ``LlavaForConditionalGeneration``
(`scitune.interop.hf_llava.to_hf_llava`) and times, in interleaved repeats (median reported):

- tokens/s: generated tokens / wall time of a whole greedy generation: the median run, and the best run (other load
  on a shared machine only adds time); and per CPU-second of this process (with one torch thread that is close to
  the compute time, and much less disturbed by other load);
- TTFT: time to first token, the wall (and CPU) time of the same request(s) with ``max_new_tokens=1``;

for these workloads (each prompt has one figure; prompts differ in length):

- ``b1``: one request at a time (``--b1-prompts`` of them; tokens/s over all, TTFT their mean);
- ``b8``: 8 requests at once, all ``max_new_tokens`` (HF: one left-padded batch);
- ``b8-mixed``: 8 concurrent requests that want different numbers of new tokens (HF: one left-padded batch run to
  the longest, each row cut to its own length; the engine retires each row when it is done). Only the tokens each
  request asked for are counted.

Parity: both sides must produce the same greedy token ids (reported per workload). The EOS row of the random LM
head is zeroed so that no row ends early by chance: every request runs to its ``max_new_tokens`` on both sides.
Prints a table and writes ``benchmarks/results/generate.json`` (with the machine description). ``--tiny`` runs
the same code on a tiny model in seconds (the smoke test).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_throughput import Profile, build_random_models, clip_shape, hardware, llama_shape, model_config  # noqa: E402

# LLaMA hidden 512 x 6 layers (~25M parameters with a ~4k vocabulary) and a 224px/patch-32 CLIP (49 image tokens).
MODELS = {
    "cpu": Profile("gen-cpu", "cpu", clip_shape(256, 2, 4, 224, 32), llama_shape(512, 1408, 6, 8, 8), 4096, 0, 1, 1,
                   1024, 1, 1, "fp32"),
    "tiny": Profile("gen-tiny", "cpu", clip_shape(32, 1, 2, 32, 8), llama_shape(64, 128, 2, 4, 2), 512, 0, 1, 1,
                    1024, 1, 1, "fp32"),
}  # fmt: skip
QUESTIONS = [
    "What does the figure show?",
    "Describe the plotted quantities and the trend of each series in this figure.",
    "Which axis is logarithmic?",
    "Summarize the figure in one sentence for a reader who has not seen the paper, mentioning its axes, its legend "
    "and the main result it supports.",
    "What is the caption?",
    "Explain what the x-axis and the y-axis measure.",
    "Is there a legend? If so, list every entry in it and say what each one means in the experiment.",
    "Name the figure type.",
]


# ------------------------------------------------------------------ setup
def corpus(model: str) -> list[str]:
    """Text to train the BPE on: the questions, and for the real model the SciCap samples in ../shared/data when
    present (a ~4k vocabulary)."""
    from scitune.io import iter_jsonl

    path = HERE.parent.parent / "shared" / "data" / "scicap_text" / "samples.jsonl"
    texts = list(QUESTIONS)
    if model != "tiny" and path.is_file():
        for _, r in iter_jsonl(path):
            texts += [r.get("caption", "")] + list(r.get("paragraphs", []))
    return texts


def setup(work: Path, model: str) -> tuple[Any, Any, Any]:
    """The scitune model and processor (random weights, EOS row of the LM head zeroed) and its HF export."""
    import torch

    from scitune.interop.hf_llava import to_hf_llava
    from scitune.loader import build

    prof = MODELS[model]
    paths = build_random_models(work, prof, corpus(model))
    torch.manual_seed(0)
    vlm, processor = build(model_config(paths))
    vlm.eval()
    with torch.no_grad():  # greedy never picks EOS (logit 0 against the max of ~4k random logits)
        vlm.llm.get_output_embeddings().weight[processor.tokenizer.eos_token_id] = 0
    hf = to_hf_llava(vlm).eval()
    return vlm, processor, hf


def prompts(processor: Any, n: int, image_size: int) -> list[dict[str, Any]]:
    """``n`` encoded chat prompts, each with its own SciFig figure (`Processor.__call__`, as `scitune generate`
    does)."""
    from PIL import Image

    from scitune.data.conversation import Message

    out = []
    for i in range(n):
        if image_size >= 64:
            from scitune.sources.scifig import make_figure

            image = make_figure(seed=0, index=i, split="bench", image_size=image_size).image.convert("RGB")
        else:  # the tiny model's 32 px input: plain colours (a figure would be a blur; matplotlib takes seconds)
            image = Image.new("RGB", (image_size, image_size), (37 * i % 256, 91 * i % 256, 53 * i % 256))
        text = processor.image_token + "\n" + QUESTIONS[i % len(QUESTIONS)]
        out.append(processor([Message("user", text)], [image], prompt=True))
    return out


# ------------------------------------------------------------------ the two systems
def run_engine(engine: Any, items: list[dict[str, Any]], new_tokens: list[int]) -> list[list[int]]:
    """All ``items`` submitted at once (continuous batching); each request's generated ids."""
    from scitune.infer.engine import GenerationRequest

    reqs = [
        GenerationRequest(it["input_ids"].tolist(), it["pixel_values"], max_new_tokens=n, temperature=0.0)
        for it, n in zip(items, new_tokens)
    ]
    return [c.token_ids for c in engine.run(reqs)]


def run_hf(hf: Any, items: list[dict[str, Any]], new_tokens: list[int], pad_id: int, eos_id: int) -> list[list[int]]:
    """One left-padded ``generate`` call to the longest request; each row cut to its own ``max_new_tokens``."""
    import torch

    lens = [len(it["input_ids"]) for it in items]
    width = max(lens)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (it, n) in enumerate(zip(items, lens)):
        ids[i, width - n :], mask[i, width - n :] = it["input_ids"], 1
    pixels = torch.cat([it["pixel_values"] for it in items])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=max(new_tokens),
                          do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)  # fmt: skip
    return [row[:n] for row, n in zip(out[:, width:].tolist(), new_tokens)]


# ------------------------------------------------------------------ measurement
def workloads(max_new: int, b1_prompts: int) -> dict[str, list[tuple[list[int], list[int]]]]:
    """name -> the calls it makes, each (prompt indices, max_new_tokens per prompt)."""
    mixed = [max(1, max_new * k // 8) for k in (8, 2, 5, 1, 7, 3, 6, 4)]
    return {
        "b1": [([i], [max_new]) for i in range(b1_prompts)],
        "b8": [(list(range(8)), [max_new] * 8)],
        "b8-mixed": [(list(range(8)), mixed)],
    }


def timed_calls(system, items: list[dict[str, Any]], calls: list[tuple[list[int], list[int]]], first_only: bool):
    """Run ``calls`` one after another: (wall s, CPU s of this process, generated ids); ``first_only`` runs each
    call with ``max_new_tokens=1`` (TTFT)."""
    wall = cpu = 0.0
    ids: list[list[int]] = []
    for idx, n in calls:
        its = [items[i] for i in idx]
        w, c = time.perf_counter(), time.process_time()
        out = system(its, [1] * len(idx) if first_only else n)
        wall, cpu, ids = wall + time.perf_counter() - w, cpu + time.process_time() - c, ids + out
    return wall, cpu, ids


def measure(vlm: Any, processor: Any, hf: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every workload on both systems, ``--repeats`` interleaved rounds (the order alternates each round).

    Each round times the whole generation of each workload, and its calls again with ``max_new_tokens=1`` (TTFT;
    b8-mixed has b8's prompts, so it shares b8's TTFT runs).
    """
    from scitune.infer.engine import GenerationEngine

    items = prompts(processor, 8, MODELS[args.model].vision["image_size"])
    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    systems = {
        "engine": lambda its, n: run_engine(GenerationEngine(vlm, processor, max_batch_size=8), its, n),
        "hf": lambda its, n: run_hf(hf, its, n, pad_id, tok.eos_token_id),
    }
    loads = workloads(args.max_new_tokens, args.b1_prompts)
    first = {"b1": "b1", "b8": "b8", "b8-mixed": "b8"}  # workload -> whose TTFT runs it shares
    for name in systems:  # warm-up (allocator, first-call caches), not timed
        systems[name]([items[0]], [2])
        systems[name](items, [2] * 8)
    keys = ("gen_wall", "gen_cpu", "ttft_wall", "ttft_cpu")
    raw = {w: {s: {k: [] for k in keys} for s in systems} for w in loads}
    tokens: dict[str, dict[str, list[list[int]]]] = {w: {} for w in loads}
    for rnd in range(args.repeats):
        for w, calls in loads.items():
            for s in systems if rnd % 2 == 0 else list(systems)[::-1]:
                r = raw[w][s]
                wall, cpu, tokens[w][s] = timed_calls(systems[s], items, calls, first_only=False)
                r["gen_wall"].append(wall)
                r["gen_cpu"].append(cpu)
                if first[w] == w:
                    wall, cpu, _ = timed_calls(systems[s], items, calls, first_only=True)
                    r["ttft_wall"].append(wall / len(calls))
                    r["ttft_cpu"].append(cpu / len(calls))
    rows = []
    for w, calls in loads.items():
        n_tokens = sum(sum(n) for _, n in calls)
        for s in systems:
            got = sum(len(t) for t in tokens[w][s])
            if got != n_tokens:
                raise RuntimeError(f"{s} {w}: generated {got} tokens, expected {n_tokens}")
            r, t = raw[w][s], raw[first[w]][s]
            med = statistics.median
            rows.append({"workload": w, "system": s, "requests": sum(len(i) for i, _ in calls), "tokens": n_tokens,
                         "tokens_per_s": round(n_tokens / med(r["gen_wall"]), 1),
                         "tokens_per_s_best": round(n_tokens / min(r["gen_wall"]), 1),
                         "tokens_per_cpu_s": round(n_tokens / med(r["gen_cpu"]), 1),
                         "ttft_ms": round(1000 * med(t["ttft_wall"]), 1),
                         "ttft_cpu_ms": round(1000 * med(t["ttft_cpu"]), 1),
                         "wall_s_runs": [round(x, 3) for x in r["gen_wall"]],
                         "cpu_s_runs": [round(x, 3) for x in r["gen_cpu"]],
                         "ttft_ms_runs": [round(1000 * x, 1) for x in t["ttft_wall"]]})  # fmt: skip
    for w in loads:
        eng, ref = (next(r for r in rows if r["workload"] == w and r["system"] == s) for s in ("engine", "hf"))
        same = [a == b for a, b in zip(tokens[w]["engine"], tokens[w]["hf"])]
        eng["speedup"] = round(eng["tokens_per_s"] / ref["tokens_per_s"], 2)
        eng["speedup_cpu"] = round(eng["tokens_per_cpu_s"] / ref["tokens_per_cpu_s"], 2)
        eng["speedup_best"] = round(eng["tokens_per_s_best"] / ref["tokens_per_s_best"], 2)
        eng["ttft_ratio"] = round(eng["ttft_ms"] / ref["ttft_ms"], 2)
        eng["ttft_ratio_cpu"] = round(eng["ttft_cpu_ms"] / ref["ttft_cpu_ms"], 2)
        eng["parity"] = ref["parity"] = f"{sum(same)}/{len(same)}"
    return {"rows": rows, "prompt_tokens": [len(it["input_ids"]) for it in items]}


# ------------------------------------------------------------------ report
COLUMNS = [("workload", "workload"), ("system", "system"), ("requests", "requests"), ("tokens", "new tokens"),
           ("tokens_per_s", "tok/s"), ("speedup", "x HF"), ("tokens_per_s_best", "best tok/s"),
           ("speedup_best", "x HF"), ("tokens_per_cpu_s", "tok/CPU-s"), ("speedup_cpu", "x HF"),
           ("ttft_ms", "TTFT ms"), ("ttft_ratio", "/ HF"), ("ttft_cpu_ms", "TTFT CPU-ms"), ("ttft_ratio_cpu", "/ HF"),
           ("parity", "same tokens")]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def machine(threads: int, load_before: tuple[float, ...]) -> dict[str, Any]:
    import torch

    return {**hardware(MODELS["cpu"]), "cpus": os.cpu_count(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "requested_threads": threads,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def params(vlm: Any) -> dict[str, int]:
    return {part: sum(p.numel() for p in getattr(vlm, part).parameters()) for part in ("llm", "vision", "projector")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per request (b1, b8)")
    ap.add_argument("--b1-prompts", type=int, default=4, help="prompts run one at a time in b1 (1..8)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument(
        "--tiny", action="store_true", help="a tiny model, 8 new tokens, 1 round: the code paths in seconds"
    )
    ap.add_argument("--out", default=str(HERE / "results" / "generate.json"))
    a = ap.parse_args(argv)
    if a.tiny:
        a.max_new_tokens, a.repeats = min(a.max_new_tokens, 8), 1
    a.model = "tiny" if a.tiny else "cpu"
    if a.max_new_tokens < 1 or a.repeats < 1 or not 1 <= a.b1_prompts <= 8:
        ap.error("--max-new-tokens and --repeats must be >= 1, --b1-prompts in 1..8")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from scitune.io import write_json

    if a.threads:
        torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scitune-bench-generate-") as tmp:
        vlm, processor, hf = setup(Path(tmp), a.model)
        res = measure(vlm, processor, hf, a)
    print(table(res["rows"]))
    report = {
        "benchmark": "generate",
        "settings": {
            "model": a.model,
            "max_new_tokens": a.max_new_tokens,
            "b1_prompts": a.b1_prompts,
            "repeats": a.repeats,
            "threads": a.threads,
            "greedy": True,
        },
        "model": {
            "params": params(vlm),
            "image_tokens": vlm.num_image_tokens,
            "vocab": len(processor.tokenizer),
            "llm": MODELS[a.model].llm,
            "vision": MODELS[a.model].vision,
        },
        "prompt_tokens": res["prompt_tokens"],
        "machine": machine(a.threads, load_before),
        "rows": res["rows"],
        "parity": {r["workload"]: r["parity"] for r in res["rows"] if r["system"] == "engine"},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_json(a.out, report)
    print(f"wrote {a.out} ({report['wall_s']} s)")
    differ = {w: p for w, p in report["parity"].items() if p.split("/")[0] != p.split("/")[1]}
    if differ:
        print(f"the engine's greedy tokens differ from HF generate's: {differ}", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
