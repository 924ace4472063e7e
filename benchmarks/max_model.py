"""The largest LLM that finetunes on this device with scitune: full finetune and LoRA, measured, not estimated.

Walks a ladder of LLaMA-shaped LLMs (real model shapes on ``--profile gpu``, small ones on ``--profile cpu``) from
small to large, per mode, and stops a mode at the first shape that does not fit. Every (shape, mode) trial runs in a
fresh subprocess, which builds the random VLM directly on the device (a CLIP-shaped encoder + scitune's mlp2x-gelu
projector + the LLM, through ``scitune.model.builders.assemble``; nothing downloaded or saved), prepares scitune's
finetune stage (``prepare_stage``), builds scitune's AdamW (``build_optimizer``) and runs ``--steps`` real optimizer
steps (forward with one image per sample, scitune's token loss, backward, clipping at 1.0, ``optimizer.step()``).

Modes:
  full  projector + whole LLM trained; weights fp32, bf16 autocast on GPU (scitune's --train.precision bf16).
  lora  LLM frozen (bf16 on GPU, fp32 on CPU) with peft LoRA (--lora-r, alpha 2r) on all linear layers.
Both modes use gradient checkpointing (non-reentrant, as scitune's --train.gradient_checkpointing).

Memory limit: GPU = the device (or --memory-gib through torch.cuda.set_per_process_memory_fraction); a trial that
raises torch.cuda.OutOfMemoryError does not fit. CPU = --memory-gib of address space over what the child has mapped
before building the model (RLIMIT_AS); an allocation failure (MemoryError, RuntimeError about allocating) does not
fit. Peak memory: GPU torch.cuda.max_memory_allocated; CPU peak RSS (VmHWM) minus the RSS before the build.
Any other failure is an error: it is printed with its message and the script exits 1.

  python benchmarks/max_model.py --profile cpu --memory-gib 2      # -> benchmarks/results/max_model_cpu.json
  python benchmarks/max_model.py --profile gpu                     # -> benchmarks/results/max_model_gpu.json
  python benchmarks/max_model.py --profile cpu-tiny --threads 1    # the code paths in seconds (gpu_check --dry-run)

``--start`` skips the small end of a mode's ladder (e.g. ``lora=Llama-2-7B``) and ``--deadline-s`` stops starting
trials after that many seconds (later rows: "not tried"); ``benchmarks/gpu_check.py`` uses both to fit its budget.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OOM_WORDS = ("allocat", "out of memory", "bad_alloc")  # CPU "can't allocate memory", CUBLAS_STATUS_ALLOC_FAILED, ...


def llama(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int = 32000) -> dict[str, int]:
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, vocab_size=vocab)  # fmt: skip


def clip(hidden: int, layers: int, heads: int, image: int, patch: int) -> dict[str, int]:
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=image, patch_size=patch)  # fmt: skip


PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {  # CLIP ViT-L/14-336 (576 image tokens) + real LLaMA shapes
        "device": "cuda", "seq_len": 2048, "memory_gib": None, "vision": clip(1024, 24, 16, 336, 14),
        "ladder": [
            ("TinyLlama-1.1B", llama(2048, 5632, 22, 32, 4)),
            ("open_llama_3b", llama(3200, 8640, 26, 32, 32)),
            ("Llama-2-7B", llama(4096, 11008, 32, 32, 32)),
            ("Llama-2-13B", llama(5120, 13824, 40, 40, 40)),
            ("CodeLlama-34B", llama(8192, 22016, 48, 64, 8)),
            ("Llama-2-70B", llama(8192, 28672, 80, 64, 8)),
        ],
    },
    "cpu": {  # a tiny CLIP (16 image tokens) + small LLaMA shapes, vocab 4096
        "device": "cpu", "seq_len": 256, "memory_gib": 4.0, "vision": clip(64, 2, 2, 32, 8),
        "ladder": [
            ("cpu-h64-L2", llama(64, 176, 2, 4, 4, 4096)),
            ("cpu-h256-L4", llama(256, 688, 4, 4, 4, 4096)),
            ("cpu-h512-L4", llama(512, 1376, 4, 8, 8, 4096)),
            ("cpu-h1024-L8", llama(1024, 2752, 8, 16, 16, 4096)),
            ("cpu-h1536-L8", llama(1536, 4128, 8, 16, 16, 4096)),
            ("cpu-h2048-L8", llama(2048, 5504, 8, 16, 16, 4096)),
        ],
    },
    "cpu-tiny": {  # the code paths in seconds: the first shape fits in 0.5 GiB, the second (110 M) does not
        "device": "cpu", "seq_len": 48, "memory_gib": 0.5, "vision": clip(32, 1, 2, 32, 8),
        "ladder": [
            ("tiny-h64-L2", llama(64, 176, 2, 4, 4, 512)),
            ("tiny-h1024-L8", llama(1024, 2752, 8, 16, 16, 4096)),
        ],
    },
}  # fmt: skip


def llm_params(s: dict[str, int]) -> int:
    """Parameters of a LLaMA of shape ``s`` (untied embeddings, no biases); the child checks it on the real model."""
    h, hd = s["hidden_size"], s["hidden_size"] // s["num_attention_heads"]
    attn = 2 * h * s["num_attention_heads"] * hd + 2 * h * s["num_key_value_heads"] * hd
    layer = attn + 3 * h * s["intermediate_size"] + 2 * h
    return 2 * s["vocab_size"] * h + s["num_hidden_layers"] * layer + h


TRIAL_DEFAULTS = {"seq_len": 256, "micro_batch": 1, "memory_gib": None, "steps": 2, "lora_r": 128, "threads": 0}


def make_job(profile: str, mode: str, name: str, shape: dict[str, int], **settings: Any) -> dict[str, Any]:
    """One trial as the child reads it; ``settings`` override `TRIAL_DEFAULTS` (``threads`` 0 = torch's default)."""
    if set(settings) - set(TRIAL_DEFAULTS):
        raise TypeError(f"unknown trial settings {sorted(set(settings) - set(TRIAL_DEFAULTS))}")
    p = PROFILES[profile]
    return {"profile": profile, "device": p["device"], "mode": mode, "name": name, "llm": shape,
            "vision": p["vision"], **TRIAL_DEFAULTS, **settings}  # fmt: skip


# ---------------------------------------------------------------- child: one trial in a fresh process
def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmSize, VmRSS, VmHWM, VmPeak)."""
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _build(job: dict[str, Any], tok: Any, device: str):
    """The VLM of ``job`` on ``device``, its stage prepared; returns (model, counts)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from scitune.config.schema import DEFAULT_IMAGE_TOKEN, LoraConfig
    from scitune.model.builders import assemble
    from scitune.model.vision import VisionEncoder
    from scitune.train.stages import prepare_stage

    lora = job["mode"] == "lora"
    dtype = torch.bfloat16 if lora and job["device"] != "cpu" else torch.float32  # device may be "meta"
    special = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cfg = LlamaConfig(
        **job["llm"], **special, max_position_embeddings=max(4096, job["seq_len"]), tie_word_embeddings=False
    )
    torch.manual_seed(0)
    with torch.device(device):
        llm = LlamaForCausalLM._from_config(cfg, dtype=dtype)
        vision = CLIPVisionModel._from_config(CLIPVisionConfig(**job["vision"]), dtype=dtype)
        identity = {"vision": {"name": "clip", "feature_layer": -2, "select": "patch"}}
        image_id = tok.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)
        encoder = VisionEncoder(vision, -2, "patch", has_cls=True)
        model = assemble(encoder, llm, "mlp2x-gelu", identity, image_id, len(tok))
        r = job["lora_r"] if lora else 0
        counts = prepare_stage(model, "finetune", LoraConfig(r=r, alpha=2 * r, target_modules="all-linear"))
    model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" not in n)
    return model, {"llm_params": base, "trainable_params": sum(c["trainable"] for c in counts.values())}


def _loss_fn():
    """The loss scitune's loop uses (``scitune.train.loss.batch_loss_sum``), as ``(name, fn(model, inputs, labels))``."""
    from scitune.train.loss import batch_loss_sum, logits_mode

    return "scitune.train.loss.batch_loss_sum", lambda m, inputs, labels: batch_loss_sum(
        m, inputs, labels, logits_mode(m.llm)
    )


def trial(job: dict[str, Any], out: dict[str, Any]) -> None:
    """Build, then run ``job['steps']`` optimizer steps; fills ``out`` as it goes (so an OOM keeps what was known)."""
    import resource
    from contextlib import nullcontext

    import torch

    from scitune.config.schema import OptimConfig
    from scitune.model.builders import tiny_tokenizer
    from scitune.train.optim import build_optimizer

    device, cuda = job["device"], job["device"].startswith("cuda")
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    out["threads"] = torch.get_num_threads()
    tok = tiny_tokenizer(vocab_size=min(400, job["llm"]["vocab_size"]))  # before any limit: the BPE trainer is Rust
    _, out["counts"] = _build(job, tok, "meta")  # exact counts even if the real build does not fit
    out["loss_fn"], loss_sum = _loss_fn()
    img = (job["vision"]["image_size"] // job["vision"]["patch_size"]) ** 2
    if job["seq_len"] <= img + 1:
        raise ValueError(f"--seq-len {job['seq_len']} leaves no text after the {img} image tokens")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        total = torch.cuda.get_device_properties(0).total_memory
        out["device_info"] = {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(total / 2**30, 2)}
        if job["memory_gib"]:
            torch.cuda.set_per_process_memory_fraction(min(1.0, job["memory_gib"] * 2**30 / total))
    elif job["memory_gib"]:
        limit = _status("VmSize") + int(job["memory_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        out["rlimit_as_gib"] = round(limit / 2**30, 3)
    out["base_rss"] = _status("VmRSS")
    t0 = time.perf_counter()
    model, counts = _build(job, tok, device)
    out["build_s"] = round(time.perf_counter() - t0, 2)
    if counts != out["counts"] or counts["llm_params"] != llm_params(job["llm"]):
        raise AssertionError(f"parameter counts {counts} != meta {out['counts']} / formula {llm_params(job['llm'])}")
    optimizer = build_optimizer(model, OptimConfig(lr=1e-5, fused=cuda))
    trainable = [p for p in model.parameters() if p.requires_grad]
    b, n, img = job["micro_batch"], job["seq_len"], model.num_image_tokens
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(tok), (b, n), generator=g)  # ids 0-4 are the chat specials, 4 = <image>
    ids[ids == model.image_token_id] = 5
    ids[:, :img] = model.image_token_id
    labels = ids.clone()
    labels[:, :img] = -100
    pixels = torch.randn(b, 3, job["vision"]["image_size"], job["vision"]["image_size"], generator=g)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
              "pixel_values": pixels.to(device)}  # fmt: skip
    n_tokens = int((labels[:, 1:] != -100).sum())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    model.train()
    out["losses"], out["step_s"] = [], []
    for _ in range(job["steps"]):
        t0 = time.perf_counter()
        with autocast:
            loss = loss_sum(model, inputs, labels.to(device)) / n_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out["losses"].append(float(loss))  # synchronises on GPU
        out["step_s"].append(round(time.perf_counter() - t0, 3))
    if not all(math.isfinite(x) for x in out["losses"]):
        raise FloatingPointError(f"non-finite loss {out['losses']}")


def classify(e: BaseException) -> str:
    """ "oom" for an allocation failure (MemoryError, torch.cuda.OutOfMemoryError, RuntimeError about allocating),
    else "error"."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "oom"
    text = str(e).lower()
    return "oom" if isinstance(e, RuntimeError) and any(w in text for w in OOM_WORDS) else "error"


def child_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    out: dict[str, Any] = {"status": "fits", "message": ""}
    try:
        trial(job, out)
    except Exception as e:  # a bug is reported as an error, never as "oom"
        out.update(status=classify(e), message=f"{type(e).__name__}: {e}"[:2000])
        if out["status"] == "error":
            import traceback

            out["traceback"] = traceback.format_exc()[-4000:]
    gc.collect()  # the traceback's frames (and the model) are gone once the except block ends
    if job["device"].startswith("cuda"):
        import torch

        out["peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        out["peak_bytes"] = _status("VmHWM") - out.get("base_rss", _status("VmRSS"))
        out["vm_peak_bytes"] = _status("VmPeak")
    Path(job["result"]).write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------- parent
def run_trial(job: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run one trial in a fresh ``python max_model.py --child`` process; returns its result dict."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="max_model_") as tmp:
        job = {**job, "result": str(Path(tmp) / "result.json")}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(Path(tmp) / "job.json")]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "error", "message": f"trial timed out after {timeout} s"}
        result = Path(job["result"])
        if result.exists():
            return json.loads(result.read_text())
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        return {"status": "error", "message": f"child wrote no result ({why}): {proc.stderr[-2000:]}"}


def hardware() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    versions = {pkg: metadata.version(pkg) for pkg in ("torch", "transformers", "peft", "accelerate", "scitune")}
    return {"cpu": model.group(1).strip() if model else platform.processor(), "cpu_cores": os.cpu_count(),
            "load_avg": os.getloadavg(), "python": platform.python_version(), "platform": platform.platform(),
            **versions}  # fmt: skip


def fmt_row(r: dict[str, Any]) -> str:
    counts = r.get("counts") or {}
    tr = f"{counts['trainable_params'] / 1e6:,.1f}M" if counts else "-"
    peak = f"{r['peak_bytes'] / 2**30:.2f}" if r.get("peak_bytes") is not None else "-"
    step = f"{r['step_s'][-1]:.2f}" if r.get("step_s") and r["status"] == "fits" else "-"
    fits = {"fits": "yes", "oom": "no (OOM)", "not tried": "not tried", "deadline": "stopped at --deadline-s"}
    fits = fits.get(r["status"], "ERROR")
    return f"| {r['mode']} | {r['name']} | {r['llm_params'] / 1e9:.3f} | {tr} | {fits} | {peak} | {step} |"


def walk(profile: str, mode: str, start: str | None, settings: dict[str, Any], timeout: float,
         deadline: float | None) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """Trials of ``mode`` up the ladder from ``start`` until one does not fit; returns (rows, largest that fits).

    Past ``deadline`` (a `time.perf_counter` value) no trial starts, and a trial still running then is stopped: its
    row reads "deadline" (not an error), and the mode's answer is a lower bound.
    """
    ladder = PROFILES[profile]["ladder"]
    first = [n for n, _ in ladder].index(start) if start else 0
    rows, largest, stopped = [], None, False
    for k, (name, shape) in enumerate(ladder):
        row = {"mode": mode, "name": name, "llm": shape, "llm_params": llm_params(shape), "status": "not tried"}
        left = deadline - time.perf_counter() if deadline else timeout
        if k < first:
            row["skipped"] = "below --start"
        elif not stopped and left <= 0:
            row["skipped"], stopped = "--deadline-s reached", True
        elif not stopped:
            t0 = time.perf_counter()
            row.update(run_trial(make_job(profile, mode, name, shape, **settings), min(timeout, left)))
            row["trial_s"] = round(time.perf_counter() - t0, 1)
            if row["status"] == "error" and row["message"].startswith("trial timed out") and left < timeout:
                row["status"] = "deadline"
            print(f"{mode:4} {name:16} {row['status']:5} {row.get('message', '')[:160]}", file=sys.stderr)
            stopped = row["status"] != "fits"
            largest = name if not stopped else largest
        rows.append(row)
    return rows, largest


def parse_start(text: str, modes: list[str], names: list[str], error) -> dict[str, str]:
    """``--start``: ``NAME`` (every mode) or ``MODE=NAME,...`` -> {mode: first shape}; ``error`` gets a bad value."""
    start: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        mode, _, name = part.rpartition("=")
        start.update({m: name for m in ([mode] if mode else modes)})
    bad = {m: n for m, n in start.items() if m not in modes or n not in names}
    if bad:
        error(f"--start {text!r}: {bad} names no mode of --modes or no shape of the ladder {names}")
    return start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="gpu",
                    help="gpu: TinyLlama-1.1B .. Llama-2-70B shapes + CLIP-L/14-336 on cuda; cpu: small shapes; "
                    "cpu-tiny: 2 tiny shapes (the code paths in seconds)")  # fmt: skip
    ap.add_argument("--modes", default="full,lora", help="comma-separated modes to walk: full, lora (default both)")
    ap.add_argument("--memory-gib", type=float, default=None,
                    help="memory budget in GiB; GPU default = the whole device, CPU default 4 (RLIMIT_AS)")  # fmt: skip
    ap.add_argument("--seq-len", type=int, default=None, help="tokens a sample, image tokens too (gpu 2048, cpu 256)")
    ap.add_argument("--micro-batch", type=int, default=1, help="samples per step, one image each (default 1)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per trial (default 2; step s = the last)")
    ap.add_argument("--lora-r", type=int, default=128, help="LoRA rank; alpha = 2 x rank (default 128 / 256)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per trial (default 0 = torch's)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per trial before it counts as an error")
    ap.add_argument("--start", default="",
                    help="first ladder shape to try: NAME for every mode, or MODE=NAME,... (default: the smallest)")  # fmt: skip
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no trial after this many seconds; each trial's timeout ends there too")  # fmt: skip
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/max_model_<profile>.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child_main(a.child)
    prof = PROFILES[a.profile]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"full", "lora"}:
        ap.error(f"--modes must name full and/or lora, got {a.modes!r}")
    seq_len = a.seq_len or prof["seq_len"]
    memory = a.memory_gib if a.memory_gib is not None else prof["memory_gib"]
    start = parse_start(a.start, modes, [n for n, _ in prof["ladder"]], ap.error)
    deadline = time.perf_counter() + a.deadline_s if a.deadline_s else None
    rows: list[dict[str, Any]] = []
    largest: dict[str, str | None] = {}
    settings = dict(seq_len=seq_len, micro_batch=a.micro_batch, memory_gib=memory, steps=a.steps, lora_r=a.lora_r,
                    threads=a.threads)  # fmt: skip
    for mode in modes:
        mode_rows, largest[mode] = walk(a.profile, mode, start.get(mode), settings, a.timeout, deadline)
        rows += mode_rows
    memory_txt = f"{memory} GiB" if memory else "the whole device"
    print(f"\nprofile {a.profile}, seq len {seq_len}, micro-batch {a.micro_batch}, memory budget {memory_txt}\n")
    print("| mode | shape | LLM params (B) | trainable params | fits | peak GiB | step s |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(fmt_row(r) for r in rows))
    top = prof["ladder"][-1][0]
    for mode in modes:
        name = largest[mode]
        more = " (top of the ladder; larger not tried)" if name == top else ""
        if any(r["mode"] == mode and (r["status"] == "deadline" or "deadline" in r.get("skipped", "")) for r in rows):
            more = " (at least: --deadline-s stopped the walk)"
        print(f"{mode}: largest that finetunes: {name or 'none'}{more}")
    errors = [r for r in rows if r["status"] == "error"]
    for r in errors:
        print(f"\nERROR {r['mode']} {r['name']}: {r['message']}\n{r.get('traceback', '')}", file=sys.stderr)
    hw = hardware()
    hw.update(next((r["device_info"] for r in rows if r.get("device_info")), {}))
    record = {
        "profile": a.profile, "device": prof["device"], "command": [Path(sys.argv[0]).name, *(argv or sys.argv[1:])],
        "settings": {"start": start, "deadline_s": a.deadline_s, "seq_len": seq_len, "micro_batch": a.micro_batch, "memory_gib": memory, "steps": a.steps,
                     "lora_r": a.lora_r, "lora_alpha": 2 * a.lora_r, "threads": a.threads or "torch default",
                     "gradient_checkpointing": True,
                     "precision": "bf16 autocast" if prof["device"] == "cuda" else "fp32",
                     "vision": prof["vision"], "projector": "mlp2x-gelu",
                     "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")},
        "memory_note": "GPU: torch.cuda.max_memory_allocated; CPU: peak RSS (VmHWM) - RSS before the build; "
        "CPU budget enforced as RLIMIT_AS = VmSize before the build + budget",
        "hardware": hw, "largest": largest, "trials": rows,
    }  # fmt: skip
    out = Path(a.out) if a.out else HERE / "results" / f"max_model_{a.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
