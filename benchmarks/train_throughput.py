"""Training throughput: scitune's loop vs transformers' LlavaForConditionalGeneration + HF Trainer, same model and data.

``python benchmarks/train_throughput.py`` (CPU profile, a few minutes on 2 cores) or ``--gpu`` (~1B-class model);
``--profile tiny`` runs the same code on CPU with tiny shapes in seconds (``benchmarks/gpu_check.py --dry-run``).
Each configuration runs in a fresh subprocess; the table is printed and written to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 1234
# Dense bf16 tensor-core peaks (no sparsity), from NVIDIA's data sheets; matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass
class Profile:
    """One profile: `CLIPVisionConfig` fields of the random encoder (``vision``), `LlamaConfig` fields of the random
    LLM (``llm``; no ``vocab_size`` = the tokenizer's), the vocabulary of the BPE trained on the benchmark's records,
    figures to render, batch, context, warmup and timed steps, precision."""

    name: str
    device: str
    vision: dict[str, int]
    llm: dict[str, int]
    tokenizer_vocab: int
    figures: int
    global_batch: int
    micro_batch: int
    max_length: int
    warmup: int
    steps: int
    precision: str
    stages: tuple[str, ...] = ("align", "finetune")
    workers: int = 0  # data-loading processes, the same for both systems


def clip_shape(hidden: int, layers: int, heads: int, image: int, patch: int) -> dict[str, int]:
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=image, patch_size=patch)  # fmt: skip


def llama_shape(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int = 0) -> dict[str, int]:
    shape = dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                 num_key_value_heads=kv)  # fmt: skip
    return {**shape, "vocab_size": vocab} if vocab else shape


# The BPE trained on the records stops at ~1.6k tokens (~3.9 characters a token, like LLaMA's on English text).
CPU = Profile("cpu", "cpu", clip_shape(256, 4, 4, 224, 16), llama_shape(256, 688, 4, 4, 4), tokenizer_vocab=4096,
              figures=64, global_batch=4, micro_batch=2, max_length=1024, warmup=3, steps=6, precision="fp32")  # fmt: skip
# CLIP ViT-L/14-336 shape + a TinyLlama-1.1B-shaped LLaMA (22 layers, GQA 32/4 heads, vocab 32000).
GPU = Profile("gpu", "cuda", clip_shape(1024, 24, 16, 336, 14), llama_shape(2048, 5632, 22, 32, 4, 32000),
              tokenizer_vocab=8192, figures=512, global_batch=64, micro_batch=8, max_length=2048, warmup=3, steps=10,
              precision="bf16", workers=4)  # fmt: skip
# The code paths of the others in seconds on CPU (gpu_check.py --dry-run): 16 image tokens, a 2-layer LLM, 1 + 1 steps
# of global batch 2 in micro-batches of 1 (so gradient accumulation runs too).
TINY = Profile("tiny", "cpu", clip_shape(32, 1, 2, 32, 8), llama_shape(64, 128, 2, 4, 2), tokenizer_vocab=512,
               figures=8, global_batch=2, micro_batch=1, max_length=1024, warmup=1, steps=1, precision="fp32")  # fmt: skip
PROFILES = {p.name: p for p in (CPU, GPU, TINY)}


def jobs(stages: tuple[str, ...], compiled: bool, configs: str = "all") -> list[dict[str, Any]]:
    """The configurations: the HF baseline, then scitune with packing on/off and (frozen encoder) cache on/off; with
    ``compiled`` also both systems with torch.compile (HF: ``torch_compile=True``; scitune: ``--train.compile``).
    ``configs="pair"`` keeps the like-for-like pair of each stage: the baseline and scitune without packing or cache
    (with ``compiled``, both compiled too)."""
    full = [(False, False), (True, False), (False, True), (True, True)]
    grid, best = (full, (True, True)) if configs == "all" else ([(False, False)], (False, False))
    out = []
    for stage in stages:
        out.append({"stage": stage, "system": "hf-trainer", "packing": False, "cache": False, "compile": False})
        out += [{"stage": stage, "system": "scitune", "packing": p, "cache": c, "compile": False} for p, c in grid]
        if compiled:
            out.append({"stage": stage, "system": "hf-trainer", "packing": False, "cache": False, "compile": True})
            out.append({"stage": stage, "system": "scitune", "packing": best[0], "cache": best[1], "compile": True})
    return out


# ------------------------------------------------------------------ preparation (parent process)
def prepare(work: Path, prof: Profile) -> dict[str, Any]:
    """SciFig -> records (scicap CTOM for align, scienceqa QCM-LEA for finetune), a BPE tokenizer, random models."""
    from scitune.io import write_jsonl
    from scitune.sources.converters.scicap import convert_scicap, load_scicap
    from scitune.sources.converters.scienceqa import convert_scienceqa, load_scienceqa
    from scitune.sources.scifig import SciFigConfig, generate_scifig

    sf = work / "scifig"
    generate_scifig(sf, SciFigConfig(n_train=prof.figures, n_val=0, n_test=0), progress=False, workers=os.cpu_count())
    align, _ = convert_scicap([f for _, f in load_scicap(sf / "scicap" / "train.jsonl")], "CTOM")
    sqa = load_scienceqa(sf / "scienceqa" / "problems.json", sf / "scienceqa" / "pid_splits.json", "train")
    finetune = convert_scienceqa(sqa.problems, sqa.pids, "QCM-LEA")
    write_jsonl(work / "align.jsonl", align)
    write_jsonl(work / "finetune.jsonl", finetune)
    texts = [c["value"] for r in align + finetune for c in r["conversations"]]
    texts += [r["meta"]["system"] for r in align[:1]]
    paths = build_random_models(work, prof, texts)
    return {**paths, "align": {"data": str(work / "align.jsonl"), "image_root": str(sf), "records": len(align)},
            "finetune": {"data": str(work / "finetune.jsonl"), "image_root": str(sf / "scienceqa" / "images"),
                         "records": len(finetune)}}  # fmt: skip


def build_random_models(work: Path, prof: Profile, corpus: list[str]) -> dict[str, str]:
    """Save a random CLIP encoder (+ processor) and a random LLaMA (+ tokenizer) as HF folders."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from scitune.model.builders import tiny_tokenizer

    tok = tiny_tokenizer(corpus, prof.tokenizer_vocab)
    torch.manual_seed(SEED)
    v = prof.vision
    CLIPVisionModel(CLIPVisionConfig(**v, projection_dim=v["hidden_size"])).save_pretrained(work / "vision")
    side = v["image_size"]
    proc = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    proc.save_pretrained(work / "vision")
    cfg = LlamaConfig(**{"vocab_size": len(tok), **prof.llm}, max_position_embeddings=4096, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(work / "llm")
    tok.save_pretrained(work / "llm")
    return {"vision": str(work / "vision"), "llm": str(work / "llm")}


def model_config(paths: dict[str, Any]):
    from scitune.config.schema import LlmConfig, ModelConfig, ProjectorConfig, VisionConfig

    return ModelConfig(
        vision=VisionConfig(name="clip", path=paths["vision"]),
        projector=ProjectorConfig("mlp2x-gelu"),  # = LlavaMultiModalProjector, so both sides run the same layers
        llm=LlmConfig(path=paths["llm"]),
    )


def build_cache(work: Path, paths: dict[str, Any], stage: str, device: str) -> float:
    """Run the frozen encoder once per image of ``stage``'s data (`build_feature_cache`); returns seconds."""
    from scitune.loader import build
    from scitune.train.feature_cache import build_feature_cache

    model, processor = build(model_config(paths))
    model.vision.to(device)
    model.projector.to(device)
    t0 = time.perf_counter()
    d = paths[stage]
    build_feature_cache(
        (model, processor), d["data"], work / f"cache-{stage}", image_root=d["image_root"], progress=False
    )
    return time.perf_counter() - t0


# ------------------------------------------------------------------ measurement helpers (child processes)
class StepClock:
    """Stamps (wall, CPU) time after each optimizer step; measures peak memory from `start` to the last step.

    GPU: `torch.cuda.max_memory_allocated`. CPU: Linux peak RSS (VmHWM, reset through /proc/self/clear_refs at the
    start) minus the RSS at the start, i.e. what training adds on top of the built model and the tokenized data.
    """

    def __init__(self, device: str, total: int):
        self.device, self.total, self.base, self.stamps, self.memory_mb = device, total, 0, [], None
        self.peak_rss_mb: float | None = None  # CPU: the process's whole peak RSS while training

    @staticmethod
    def _status(key: str) -> int:
        return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024

    def start(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:  # hand freed heap pages back first (the baseline drops a converted model), so reuse can't hide growth
            gc.collect()
            ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = self._status("VmRSS")

    def tick(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        self.stamps.append((time.perf_counter(), time.process_time()))
        if len(self.stamps) == self.total:
            if self.device == "cuda":
                self.memory_mb = torch.cuda.max_memory_allocated() / 2**20
            else:  # one read of the peak for both numbers
                peak = self._status("VmHWM")
                self.memory_mb, self.peak_rss_mb = (peak - self.base) / 2**20, peak / 2**20


def global_order(n: int, prof: Profile, total_steps: int) -> list[list[int]]:
    """Sample indices of each global batch, exactly as scitune's `BatchPlan` draws them (epoch after epoch)."""
    from scitune.data.sampler import BatchPlan

    plan = BatchPlan(n, prof.micro_batch, prof.global_batch // prof.micro_batch, 1, SEED)
    batches = [b for epoch in range(total_steps // plan.steps_per_epoch + 1) for b in plan.global_batches(epoch)]
    return batches[:total_steps]


def run_scitune(job: dict[str, Any], prof: Profile) -> dict[str, Any]:
    """scitune's `Trainer` with a clock on each optimizer step (the loop's own per-step log hook)."""
    from scitune.config.schema import DataConfig, OptimConfig, RunConfig, TrainConfig
    from scitune.train.loop import Trainer

    total = prof.warmup + prof.steps
    d = job["paths"][job["stage"]]
    data = DataConfig(train=d["data"], image_root=d["image_root"], max_length=prof.max_length, packing=job["packing"],
                      feature_cache=job.get("cache_dir"), num_workers=prof.workers)  # fmt: skip
    optim = OptimConfig(lr=1e-4, warmup_ratio=0.0, schedule="constant", fused=True)  # fused AdamW: HF's default
    tc = TrainConfig(stage=job["stage"], out_dir=job["out_dir"], epochs=float(total), max_steps=total, seed=SEED,
                     global_batch_size=prof.global_batch, micro_batch_size=prof.micro_batch, precision=prof.precision,
                     progress=False, compile=job["compile"])  # fmt: skip
    cfg = RunConfig(model=model_config(job["paths"]), data=data, optim=optim, train=tc)
    clock, lengths = StepClock(prof.device, total), []

    class ClockedTrainer(Trainer):
        def _loop(self, model, optimizer, scheduler, data, plan, step, total):
            lengths.extend(data.lengths)
            clock.start()
            return super()._loop(model, optimizer, scheduler, data, plan, step, total)

        def _log(self, record, step):  # called once after every optimizer step
            clock.tick()
            super()._log(record, step)

    result = ClockedTrainer(cfg).run()
    return {
        "stamps": clock.stamps,
        "losses": result.losses,
        "lengths": lengths,
        "memory_mb": clock.memory_mb,
        "peak_rss_mb": clock.peak_rss_mb,
    }


class LlavaCollator:
    """The baseline's data path: pad LLaVA-style token rows, run the image processor on the batch's images."""

    def __init__(self, processor: Any, pad_id: int):
        self.processor, self.pad_id = processor, pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from scitune.data.dataset import load_image

        shape = (len(items), max(len(x["input_ids"]) for x in items))
        ids, labels, mask = torch.full(shape, self.pad_id), torch.full(shape, -100), torch.full(shape, 0)
        for i, x in enumerate(items):
            n = len(x["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(x["input_ids"]), torch.tensor(x["labels"]), 1
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        images = [load_image(Path(p)) for x in items for p in x["images"]]
        if images:
            out["pixel_values"] = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return out


def hf_baseline(job: dict[str, Any], prof: Profile) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The same weights as `LlavaForConditionalGeneration`, its processor, and the records as LLaVA token rows."""
    import torch

    from scitune.data.dataset import validate_file
    from scitune.interop.hf_llava import to_hf_llava
    from scitune.loader import build

    torch.manual_seed(SEED)  # as scitune's loop does before building: the same projector initialisation
    vlm, processor = build(model_config(job["paths"]), "scitune")
    d = job["paths"][job["stage"]]
    samples, report = validate_file(d["data"], processor, d["image_root"], prof.max_length)
    assert report.ok, report.summary()
    rows = [{"input_ids": s.encoded.input_ids, "labels": s.encoded.labels, "images": [str(p) for p in s.images]}
            for s in samples]  # fmt: skip
    hf = to_hf_llava(vlm).float().train()
    hf.requires_grad_(False)
    hf.model.multi_modal_projector.requires_grad_(True)
    if job["stage"] == "finetune":
        hf.model.language_model.requires_grad_(True)
        hf.lm_head.requires_grad_(True)
    return hf, (processor.image_processor, processor.pad_token_id), rows


def run_hf(job: dict[str, Any], prof: Profile) -> dict[str, Any]:
    """HF `Trainer` on `LlavaForConditionalGeneration`, fed the same global batches in the same order."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    total = prof.warmup + prof.steps
    hf, (processor, pad_id), rows = hf_baseline(job, prof)
    ordered = [rows[i] for batch in global_order(len(rows), prof, total) for i in batch]
    clock, losses = StepClock(prof.device, total), []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.start()

        def on_step_end(self, args, state, control, **kw):
            clock.tick()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class InOrderTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

    # the defaults a user gets (adamw_torch_fused, sdpa attention), with scitune's lr/schedule/clipping settings
    args = TrainingArguments(output_dir=job["out_dir"], per_device_train_batch_size=prof.micro_batch,
                             gradient_accumulation_steps=prof.global_batch // prof.micro_batch, max_steps=total,
                             learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
                             logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED,
                             use_cpu=prof.device == "cpu", bf16=prof.precision == "bf16",
                             dataloader_num_workers=prof.workers, torch_compile=job["compile"],
                             remove_unused_columns=False)  # fmt: skip
    trainer = InOrderTrainer(
        model=hf, args=args, train_dataset=ordered, data_collator=LlavaCollator(processor, pad_id), callbacks=[Clock()]
    )
    trainer.train()
    lengths = [len(r["input_ids"]) for r in rows]
    return {
        "stamps": clock.stamps,
        "losses": losses,
        "lengths": lengths,
        "memory_mb": clock.memory_mb,
        "peak_rss_mb": clock.peak_rss_mb,
    }


def child_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    prof = Profile(**job["profile"])
    out = run_hf(job, prof) if job["system"] == "hf-trainer" else run_scitune(job, prof)
    Path(job["result"]).write_text(json.dumps(out))
    return 0


# ------------------------------------------------------------------ orchestration and report (parent process)
def model_flops(stage: str, cached: bool, params: dict[str, int], tokens: int, patches: int) -> float:
    """Model FLOPs of the timed steps.

    finetune: 6 * N_llm * T (forward 2N + backward 4N); align: 4 * N_llm * T (the frozen LLM still back-propagates
    to its inputs, but computes no weight gradients); plus the frozen encoder's forward 2 * N_vis * image patches
    unless the features come from the cache. N_llm excludes the input embedding table (a lookup); T counts every
    non-padding token, image tokens included. Attention's L^2 term is left out, as in the usual 6ND estimate.
    """
    per_token = 6 if stage == "finetune" else 4
    return per_token * params["llm"] * tokens + (0 if cached else 2 * params["vision"] * patches)


def summarize(job: dict[str, Any], runs: list[dict[str, Any]], prof: Profile, meta: dict[str, Any]) -> dict[str, Any]:
    """samples/s, tokens/s, memory (and MFU on GPU) of the timed steps (warmup excluded) of one configuration.

    Every run of every configuration trains on the same global batches in the same order, so step ``i`` is the
    same work in each run: its time is the fastest of the runs (others' load on a shared machine only adds time).
    Wall-clock rates are the result. Rates per CPU-second (user + system time of all the run's threads) are kept
    too: with ``--threads 1`` they are close to pure compute time (with more threads, OpenMP's spin-waiting under
    contention counts as CPU time).
    """
    w, s, res = prof.warmup, prof.steps, runs[0]
    lengths = meta["lengths"][job["stage"]]  # exact; the loop's own data.lengths may be upper bounds (fast validation)
    if len(res["lengths"]) != len(lengths):
        raise RuntimeError(
            f"{job['system']} {job['stage']} trained on {len(res['lengths'])} records, not {len(lengths)}"
        )
    batches = global_order(len(lengths), prof, w + s)[w:]
    tokens = sum(lengths[i] for b in batches for i in b)
    per_step = [[min(r["stamps"][i][j] - r["stamps"][i - 1][j] for r in runs) for i in range(w, w + s)] for j in (0, 1)]
    wall, cpu, n = sum(per_step[0]), sum(per_step[1]), s * prof.global_batch
    row = {
        **{k: job[k] for k in ("stage", "system", "packing", "cache", "compile")},
        "samples_per_s": round(n / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "samples_per_cpu_s": round(n / cpu, 3),
        "samples_per_s_each_run": [round(n / (r["stamps"][-1][0] - r["stamps"][w - 1][0]), 3) for r in runs],
        "peak_memory_mb": round(min(r["memory_mb"] for r in runs), 1),
        "peak_rss_mb": None if runs[0].get("peak_rss_mb") is None else round(min(r["peak_rss_mb"] for r in runs), 1),
        "loss_step1": round(res["losses"][0], 4),
    }
    if meta["peak_tflops"]:  # GPU: always (peak by name); CPU: only against an explicit --peak-tflops
        n_img = sum(1 for b in batches for i in b if meta["has_image"][job["stage"]][i])
        flops = model_flops(job["stage"], job["cache"], meta["params"], tokens, n_img * meta["patches"])
        row["mfu"] = round(flops / wall / (meta["peak_tflops"] * 1e12), 4)
    return row


def spawn(job: dict[str, Any], work: Path, k: int) -> dict[str, Any]:
    job_path, job["result"], job["out_dir"] = work / f"job{k}.json", str(work / f"res{k}.json"), str(work / f"run{k}")
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update({"OMP_NUM_THREADS": str(job["threads"])} if job["threads"] else {})  # torch reads it at start
    proc = subprocess.run([sys.executable, __file__, "--child", str(job_path)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{job['system']} {job['stage']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(Path(job["result"]).read_text())


def data_meta(paths: dict[str, Any], prof: Profile, peak: float | None) -> dict[str, Any]:
    """Parameter counts (the LLM's without its input embeddings), encoder tokens per image, which samples have one,
    and each sample's exact token count (`validate_file`, as the baseline's rows)."""
    from scitune.data.dataset import validate_file
    from scitune.io import iter_jsonl
    from scitune.loader import build

    vlm, processor = build(model_config(paths))
    count = {part: sum(p.numel() for p in getattr(vlm, part).parameters()) for part in ("llm", "vision", "projector")}
    count["llm"] -= vlm.llm.get_input_embeddings().weight.numel()
    images = {st: [bool(r.get("image")) for _, r in iter_jsonl(paths[st]["data"])] for st in prof.stages}
    lengths = {}
    for st in prof.stages:
        samples, report = validate_file(paths[st]["data"], processor, paths[st]["image_root"], prof.max_length)
        assert report.ok, report.summary()
        lengths[st] = [len(x.encoded) for x in samples]
    return {"params": count, "image_tokens": vlm.num_image_tokens, "patches": vlm.num_image_tokens + 1,
            "has_image": images, "lengths": lengths, "peak_tflops": peak}  # fmt: skip


def gpu_peak(override: float | None) -> float:
    import torch

    name = torch.cuda.get_device_name()
    known = [tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name]  # "H100 PCIe" is tried before "H100"
    if not (override or known):
        raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops (dense bf16 peak of this GPU)")
    return override or known[0]


def hardware(prof: Profile) -> dict[str, Any]:
    import torch
    import transformers

    cpu = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()) if sys.platform == "linux" else []
    hw = {"cpu": cpu[0] if cpu else platform.processor(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
          "transformers": transformers.__version__, "python": platform.python_version()}  # fmt: skip
    return {**hw, "gpu": torch.cuda.get_device_name()} if prof.device == "cuda" else hw


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["stage", "system", "packing", "cache", "compile", "samples_per_s", "tokens_per_s", "speedup", "speedup_cpu_time",
            "peak_memory_mb", *(["mfu"] if any("mfu" in r for r in rows) else []), "loss_step1"]  # fmt: skip
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="the ~1B-class GPU profile (needs CUDA); = --profile gpu")
    ap.add_argument("--profile", choices=sorted(PROFILES), default=None,
                    help="cpu (default), gpu (= --gpu) or tiny (the code paths on CPU in seconds)")  # fmt: skip
    ap.add_argument("--configs", choices=("all", "pair"), default="all",
                    help="all configurations, or per stage only the HF baseline and plain scitune")  # fmt: skip
    ap.add_argument("--stages", default=None, help="comma-separated subset of align,finetune")
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (>= 1)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the fastest run of each is kept")
    ap.add_argument("--compile", action="store_true", help="also both systems with torch.compile (slow to start)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads in each run (0 = torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak for MFU (GPU default: by name; on CPU MFU is computed only with this)")  # fmt: skip
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/train_throughput_<p>.json)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child_main(a.child)
    if a.gpu and a.profile not in (None, "gpu"):
        ap.error(f"--gpu contradicts --profile {a.profile}")
    prof = PROFILES["gpu" if a.gpu else a.profile or "cpu"]
    if a.stages:
        prof.stages = tuple(a.stages.split(","))
    prof.steps, prof.warmup = a.steps or prof.steps, max(1, a.warmup or prof.warmup)
    with tempfile.TemporaryDirectory(prefix="scitune-bench-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        return run_all(prof, work, a)


def measure(prof: Profile, work: Path, paths: dict, meta: dict[str, Any], repeats: int, threads: int,
            compiled: bool, configs: str = "all") -> list[dict]:  # fmt: skip
    """Run every configuration ``repeats`` times, in interleaved rounds, and summarize each over its runs."""
    cache_s: dict[str, float] = {}
    todo = jobs(prof.stages, compiled, configs)
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in range(len(todo))}
    for rnd in range(repeats):
        for k, job in enumerate(todo):
            if job["cache"] and job["stage"] not in cache_s:
                cache_s[job["stage"]] = round(build_cache(work, paths, job["stage"], prof.device), 2)
            job.update(paths=paths, profile=asdict(prof), threads=threads)
            job["cache_dir"] = str(work / f"cache-{job['stage']}") if job["cache"] else None
            shutil.rmtree(work / f"run{k}", ignore_errors=True)  # the last round's run: scitune won't overwrite it
            runs[k].append({**spawn(job, work, k), "load_avg_1m": os.getloadavg()[0]})
            rate = summarize(job, runs[k][-1:], prof, meta)["samples_per_s"]
            print(f"round {rnd + 1}: {job['stage']:9s} {job['system']:10s} packing={job['packing']!s:5s} "
                  f"cache={job['cache']!s:5s} compile={job['compile']!s:5s} {rate:8.3f} samples/s", flush=True)  # fmt: skip
    rows = [summarize(job, runs[k], prof, meta) for k, job in enumerate(todo)]
    for k, r in enumerate(rows):
        base = next(b for b in rows if b["stage"] == r["stage"] and b["system"] == "hf-trainer" and not b["compile"])
        r["speedup"] = round(r["samples_per_s"] / base["samples_per_s"], 2)
        r["speedup_cpu_time"] = round(r["samples_per_cpu_s"] / base["samples_per_cpu_s"], 2)
        r["cache_build_s"] = cache_s.get(r["stage"]) if r["cache"] else None
        r["load_avg_1m"] = [round(x["load_avg_1m"], 2) for x in runs[k]]
    return rows


def run_all(prof: Profile, work: Path, a: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    paths = prepare(work, prof)
    meta = data_meta(paths, prof, gpu_peak(a.peak_tflops) if prof.device == "cuda" else a.peak_tflops)
    rows = measure(prof, work, paths, meta, a.repeats, a.threads, a.compile, a.configs)
    print_table(rows)
    report = {
        "profile": asdict(prof),
        "hardware": hardware(prof),
        "params": meta["params"],
        "image_tokens_per_image": meta["image_tokens"],
        "records": {st: paths[st]["records"] for st in prof.stages},
        "configs": a.configs,
        "repeats": a.repeats,
        "torch_threads": a.threads or "default",
        "memory": "GPU: torch.cuda.max_memory_allocated; CPU: peak RSS (VmHWM reset at training start) - start RSS; "
        "peak_rss_mb: that peak RSS itself (the whole process: model, data, activations, optimizer)",
        "mfu_formula": model_flops.__doc__.strip() if meta["peak_tflops"] else None,
        "peak_bf16_tflops": meta["peak_tflops"],
        "rows": rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = Path(a.out or HERE / "results" / f"train_throughput_{prof.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
