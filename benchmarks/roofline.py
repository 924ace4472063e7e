"""CPU roofline: achieved model FLOP/s of a training step as a fraction of this machine's measured fp32 GEMM peak.

``python benchmarks/roofline.py`` (a 0.1B-class LLaMA-shaped LLM with a CLIP ViT-B/32-shaped encoder, on the public
SciCap and ScienceQA records of ``../shared/data`` with their real length spread; about 15 minutes on 2 shared cores,
1 torch thread; ``--threads 1,2`` adds 2 threads) measures:

- the fp32 GEMM peak: ``torch.mm`` at the shapes the model's matrix products use and at a large square shape, timed
  in a subprocess with the same thread count as the training step; the peak is the best of them;
- the model FLOPs of each timed step, counted analytically per sample (`sample_flops`) and checked against torch's
  FLOP counter (`torch.utils.flop_counter.FlopCounterMode`) on a real forward and backward of a few samples;
- the training step of the HF baseline (HF Trainer + ``LlavaForConditionalGeneration``, from
  ``train_throughput.py``), of scitune, and of scitune with ``--data.packing`` on the same model, data and global
  batches, for align and finetune.

It reports model FLOPs per CPU-second as a fraction of the GEMM peak per CPU-second (CPU time, so that other jobs on
a shared machine do not count), and scitune's samples per CPU-second against the baseline's. ``--profile tiny`` runs
the same code on tiny shapes in seconds (the smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_throughput as tt  # noqa: E402  (the model builders, the HF baseline and the step clock)
from real_data import prepare_real  # noqa: E402

# A 0.1B-class LLM: LLaMA-shaped, 8 layers of width 768, LLaMA's 32k vocabulary (106 M parameters, 81 M of them
# outside the input embeddings); a CLIP ViT-B/32-shaped encoder (88 M, 49 image tokens). fp32, 1 warm-up + 2 timed
# optimizer steps of global batch 2 (one micro-batch) per configuration.
CPU = tt.Profile("roofline", "cpu", tt.clip_shape(768, 12, 12, 224, 32), tt.llama_shape(768, 2048, 8, 12, 12, 32000),
                 tokenizer_vocab=4096, figures=16, global_batch=2, micro_batch=2, max_length=2048, warmup=1, steps=2,
                 precision="fp32")  # fmt: skip
TINY = replace(tt.TINY, name="roofline-tiny", llm=tt.llama_shape(64, 128, 2, 4, 4, 1024))
PROFILES = {"cpu": CPU, "tiny": TINY}
# --data real: micro-batches of 4 (LLaVA's scripts use 16 per GPU), 2 per optimizer step, 3 timed steps, so that
# each row sees 24 samples of the real length spread (the same 24 for every system)
REAL_BATCH = {"global_batch": 8, "micro_batch": 4, "steps": 3}
SQUARE = {"cpu": 4096, "tiny": 256}  # the large square GEMM


# ------------------------------------------------------------------ analytic model FLOPs
def shapes(prof: tt.Profile, vocab: int) -> dict[str, int]:
    """The sizes the FLOP count needs, from a profile (``vocab``: the LLM's, when the profile leaves it out)."""
    v, m = prof.vision, prof.llm
    heads, kv = m["num_attention_heads"], m["num_key_value_heads"]
    return {"d": m["hidden_size"], "ffn": m["intermediate_size"], "layers": m["num_hidden_layers"],
            "kv_dim": m["hidden_size"] // heads * kv, "vocab": m.get("vocab_size", vocab),
            "vd": v["hidden_size"], "vffn": v["intermediate_size"], "vlayers": v["num_hidden_layers"],
            "patch": v["patch_size"], "patches": (v["image_size"] // v["patch_size"]) ** 2}  # fmt: skip


def sample_flops(stage: str, s: dict[str, int], tokens: int, predicting: int, images: int) -> dict[str, int]:
    """FLOPs of one sample's forward and backward, alone (no padding, no other sample in its attention).

    Matrix products only (``2 m n k`` each), as torch's FLOP counter counts them; norms, activations, the loss and
    the optimizer are left out. LLM: the linear layers at every token, forward (2 per weight) and the gradient of
    their inputs (2), plus the weight gradients (2) in finetune, where the LLM trains; attention over the sample's
    own ``tokens`` (the full square, as the counter counts it: 4 L^2 d forward, 10 L^2 d backward); the LM head only
    at the ``predicting`` positions, whose logits the loss reads. Encoder (frozen): forward only, every layer (they
    all run), patch embedding included, at ``patches + 1`` positions per image. Connector (mlp2x-gelu, trained):
    forward, weight gradients, and the input gradient of its second layer.
    """
    d, n = s["d"], tokens
    per_token = 2 * d * d + 2 * d * s["kv_dim"] + 3 * d * s["ffn"]  # q, o; k, v; gate, up, down
    passes = 6 if stage == "finetune" else 4
    llm = s["layers"] * (passes * per_token * n + (4 + 10) * n * n * d)
    head = passes * predicting * d * s["vocab"]
    vt, vd = s["patches"] + 1, s["vd"]
    vision_layer = 2 * vt * (4 * vd * vd + 2 * vd * s["vffn"]) + 4 * vt * vt * vd
    vision = images * (s["vlayers"] * vision_layer + 2 * s["patches"] * 3 * s["patch"] ** 2 * vd)
    p = images * s["patches"]
    connector = p * (4 * vd * d + 6 * d * d)
    return {"llm": llm, "lm_head": head, "vision": vision, "connector": connector}


def predicting_count(labels: list[int]) -> int:
    """Positions whose next token is labelled (the loss reads their logits)."""
    return sum(1 for t in labels[1:] if t != -100)


def cpu_attention_formulas() -> dict:
    """FLOP formulas for the CPU attention kernel, which torch's counter does not know: those of the other fused
    SDPA kernels (`torch.utils.flop_counter.sdpa_flop_count` and its backward), full square, causal or not."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda g, q, k, v, *_, **__: sdpa_backward_flop_count(g, q, k, v)
        ),
    }


def check_flops(model, processor, paths: dict[str, Any], prof: tt.Profile, s: dict[str, int], n: int) -> list[dict]:
    """Analytic FLOPs against `FlopCounterMode` on scitune's forward + backward of the first ``n`` samples of align
    and of finetune, one sample per micro-batch (so that no padding is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from scitune.config.schema import LoraConfig
    from scitune.data.collate import collate
    from scitune.data.dataset import SupervisedDataset, validate_file
    from scitune.train.loss import batch_loss_sum, logits_mode
    from scitune.train.stages import prepare_stage

    out = []
    for stage in ("align", "finetune"):  # both stages, whichever are timed
        prepare_stage(model, stage, LoraConfig())
        model.train()
        d = paths[stage]
        samples, _ = validate_file(d["data"], processor, d["image_root"], prof.max_length)
        data = SupervisedDataset(samples[:n], processor.images)
        for i in range(min(n, len(samples))):
            batch = collate([data[i]], processor.pad_token_id)
            inputs = {k: v for k, v in batch.items() if k != "labels" and v is not None}
            with FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas()) as counter:
                batch_loss_sum(model, inputs, batch["labels"], logits_mode(model.llm)).backward()
            model.zero_grad(set_to_none=True)
            enc = samples[i].encoded
            analytic = sum(
                sample_flops(stage, s, len(enc), predicting_count(enc.labels), len(samples[i].images)).values()
            )
            counted = counter.get_total_flops()
            out.append({"stage": stage, "sample": i, "analytic": analytic, "counted": counted,
                        "rel_diff": round(analytic / counted - 1, 5)})  # fmt: skip
    return out


# ------------------------------------------------------------------ the GEMM peak (child process)
def gemm_shapes(prof: tt.Profile, s: dict[str, int], tokens: int, square: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the step's main products at a micro-batch of ``tokens`` tokens, and the large square."""
    d, f, vd = s["d"], s["ffn"], s["vd"]
    vt = (s["patches"] + 1) * prof.micro_batch
    return [(tokens, d, d), (tokens, d, f), (tokens, f, d), (d, tokens, f),  # forward; a weight gradient
            (tokens // 2, d, s["vocab"]), (vt, vd, s["vffn"]), (square, square, square)]  # fmt: skip


def gemm_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Best and median FLOP/s of ``torch.mm`` at each shape, per wall second and per CPU-second of this process.

    Each timing covers a block of products lasting about ``block_s`` (at least one product): Linux updates the CPU
    time of a process's other threads only at scheduler ticks, so single short products would be undercounted with
    more than one thread."""
    import torch

    torch.manual_seed(0)
    rows = []
    for m, k, n in spec["shapes"]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        flops = 2 * m * k * n
        t = time.perf_counter()
        torch.mm(a, b)
        reps = max(1, round(spec["block_s"] / max(time.perf_counter() - t, 1e-6)))
        wall, cpu = [], []
        for _ in range(spec["blocks"]):
            t, c = time.perf_counter(), time.process_time()
            for _ in range(reps):
                torch.mm(a, b)
            wall.append((time.perf_counter() - t) / reps)
            cpu.append((time.process_time() - c) / reps)
        wall.sort(), cpu.sort()
        rows.append({"shape": [m, k, n], "products_per_block": reps,
                     "gflops_wall": round(flops / wall[0] / 1e9, 2),
                     "gflops_wall_median": round(flops / wall[len(wall) // 2] / 1e9, 2),
                     "gflops_cpu": round(flops / cpu[0] / 1e9, 2),
                     "gflops_cpu_median": round(flops / cpu[len(cpu) // 2] / 1e9, 2)})  # fmt: skip
    return {"threads": torch.get_num_threads(), "shapes": rows}


def gemm_peak(work: Path, shapes_: list, threads: int, block_s: float, blocks: int = 3) -> dict[str, Any]:
    """`gemm_child` in a subprocess with ``threads`` torch threads; the peak is the best shape per CPU-second."""
    spec = work / f"gemm{threads}.json"
    spec.write_text(json.dumps({"shapes": shapes_, "block_s": block_s, "blocks": blocks}))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--gemm-child", str(spec)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"GEMM measurement failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    best = max(res["shapes"], key=lambda r: r["gflops_cpu"])
    res["peak_gflops_cpu"], res["peak_shape"] = best["gflops_cpu"], best["shape"]
    res["peak_gflops_wall"] = max(r["gflops_wall"] for r in res["shapes"])
    return res


# ------------------------------------------------------------------ the training steps (child processes)
def data_meta(processor, paths: dict[str, Any], prof: tt.Profile, s: dict[str, int]) -> dict[str, Any]:
    """Each sample's exact token count (as `train_throughput.summarize` needs) and its analytic model FLOPs."""
    from scitune.data.dataset import validate_file

    lengths, flops = {}, {}
    for st in prof.stages:
        samples, report = validate_file(paths[st]["data"], processor, paths[st]["image_root"], prof.max_length)
        assert report.ok, report.summary()
        lengths[st] = [len(x.encoded) for x in samples]
        flops[st] = [sample_flops(st, s, len(x.encoded), predicting_count(x.encoded.labels), len(x.images))
                     for x in samples]  # fmt: skip
    return {"lengths": lengths, "flops": flops, "peak_tflops": None}


def run_config(job: dict[str, Any], prof: tt.Profile, work: Path, k: int, meta: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh subprocess (`train_throughput.spawn`): samples and model FLOPs per CPU-second
    and per wall second of its timed steps."""
    job = {**job, "profile": asdict(prof), "cache_dir": None, "cache": False, "compile": False}
    shutil.rmtree(work / f"run{k}", ignore_errors=True)  # a --work folder's earlier run; scitune won't overwrite it
    res = tt.spawn(job, work, k)
    shutil.rmtree(work / f"run{k}", ignore_errors=True)  # its final checkpoint (with optimizer state) is not needed
    row = tt.summarize(job, [res], prof, meta)
    w, n = prof.warmup, prof.warmup + prof.steps
    cpu = sum(res["stamps"][i][1] - res["stamps"][i - 1][1] for i in range(w, n))
    wall = sum(res["stamps"][i][0] - res["stamps"][i - 1][0] for i in range(w, n))
    batches = tt.global_order(len(meta["lengths"][job["stage"]]), prof, n)[w:]
    flops = sum(sum(meta["flops"][job["stage"]][i].values()) for b in batches for i in b)
    return {"stage": job["stage"], "system": job["system"], "packing": job["packing"], "threads": job["threads"],
            "samples_per_cpu_s": round(prof.steps * prof.global_batch / cpu, 4),
            "samples_per_s": row["samples_per_s"], "model_gflop_per_step": round(flops / prof.steps / 1e9, 2),
            "gflops_cpu": round(flops / cpu / 1e9, 2), "gflops_wall": round(flops / wall / 1e9, 2),
            "cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "loss_step1": row["loss_step1"],
            "peak_memory_mb": row["peak_memory_mb"], "peak_rss_mb": row["peak_rss_mb"], "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


SYSTEMS = {"hf": ("hf-trainer", False), "scitune": ("scitune", False), "scitune-pack": ("scitune", True)}


def measure(prof: tt.Profile, work: Path, paths: dict, meta: dict, s: dict, threads: list[int], systems: list[str],
            square: int) -> tuple[dict[int, dict], list[dict]]:  # fmt: skip
    """GEMM peak and every configuration, thread count after thread count."""
    # M of the token-side products: micro-batch x longest sample / 2 (287 in the CPU profile)
    tokens = prof.micro_batch * max(max(v) for v in meta["lengths"].values()) // 2
    peaks, rows, k = {}, [], 0
    for t in threads:
        peaks[t] = gemm_peak(work, gemm_shapes(prof, s, tokens, square), t, 0.3 if prof.name == "roofline" else 0.02)
        print(f"threads={t}: GEMM peak {peaks[t]['peak_gflops_cpu']} GFLOP per CPU-second at "
              f"{peaks[t]['peak_shape']}", flush=True)  # fmt: skip
        for stage in prof.stages:
            for name in systems:
                system, packing = SYSTEMS[name]
                job = {"stage": stage, "system": system, "packing": packing, "threads": t, "paths": paths}
                r = run_config(job, prof, work, k, meta)
                k += 1
                r["fraction_of_peak"] = round(r["gflops_cpu"] / peaks[t]["peak_gflops_cpu"], 3)
                rows.append(r)
                print(f"threads={t} {stage:9s} {name:13s} {r['samples_per_cpu_s']:8.4f} samples/CPU-s "
                      f"{r['gflops_cpu']:7.2f} GFLOP/CPU-s = {r['fraction_of_peak']:.3f} of peak", flush=True)  # fmt: skip
    for r in rows:  # None without a baseline row of the same stage and threads
        key = (r["stage"], r["threads"], "hf-trainer")
        base = next((b for b in rows if (b["stage"], b["threads"], b["system"]) == key), None)
        r["vs_hf_cpu_time"] = round(r["samples_per_cpu_s"] / base["samples_per_cpu_s"], 3) if base else None
        r["vs_hf_wall"] = round(r["samples_per_s"] / base["samples_per_s"], 3) if base else None
    return peaks, rows


def length_spread(lengths: list[int], prof: tt.Profile) -> dict[str, Any]:
    """Token counts of a stage's samples, and the padded tokens of its timed micro-batches over their real tokens (what
    a padded batch computes in its linear layers for each token that counts)."""
    import statistics

    timed = tt.global_order(len(lengths), prof, prof.warmup + prof.steps)[prof.warmup :]
    micro = [b[k : k + prof.micro_batch] for b in timed for k in range(0, len(b), prof.micro_batch)]
    real = sum(lengths[i] for m in micro for i in m)
    padded = sum(len(m) * max(lengths[i] for i in m) for m in micro)
    return {"tokens_min": min(lengths), "tokens_median": statistics.median(lengths),
            "tokens_mean": round(statistics.mean(lengths), 1), "tokens_max": max(lengths),
            "timed_padded_over_real": round(padded / real, 3)}  # fmt: skip


def print_table(peaks: dict[int, dict], rows: list[dict]) -> None:
    cols = ["threads", "stage", "system", "packing", "samples_per_cpu_s", "vs_hf_cpu_time", "model_gflop_per_step",
            "gflops_cpu", "gemm_peak_gflops_cpu", "fraction_of_peak", "samples_per_s", "vs_hf_wall", "loss_step1"]  # fmt: skip
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        r = {**r, "gemm_peak_gflops_cpu": peaks[r["threads"]]["peak_gflops_cpu"]}
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu", help="cpu (default) or tiny (seconds)")
    ap.add_argument("--threads", default="1", help="torch thread counts to measure, comma-separated (e.g. 1,2)")
    ap.add_argument("--stages", default="align,finetune", help="comma-separated subset of align,finetune")
    ap.add_argument("--systems", default="hf,scitune,scitune-pack",
                    help=f"comma-separated, of {','.join(SYSTEMS)} (scitune-pack: --data.packing)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=None, help="timed optimizer steps per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (>= 1)")
    ap.add_argument("--global-batch", type=int, default=None, help="samples per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=None, help="samples per forward")
    ap.add_argument("--data", choices=("real", "scifig"), default="real",
                    help="real: the length spread of the public SciCap/ScienceQA records in ../shared/data (default); "
                    "scifig: SciFig records of similar length")  # fmt: skip
    ap.add_argument("--check-samples", type=int, default=2, help="samples per stage checked against FlopCounterMode")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/roofline_<profile>.json)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--gemm-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gemm_child:
        print(json.dumps(gemm_child(json.loads(Path(a.gemm_child).read_text()))))
        return 0
    prof = replace(PROFILES[a.profile], stages=tuple(a.stages.split(",")))
    if a.data == "real" and a.profile == "cpu":
        prof = replace(prof, **REAL_BATCH)
    for key in ("steps", "warmup", "global_batch", "micro_batch"):
        setattr(prof, key, getattr(a, key) or getattr(prof, key))
    prof.warmup = max(1, prof.warmup)
    systems = a.systems.split(",")
    if unknown := sorted(set(systems) - set(SYSTEMS)):
        ap.error(f"--systems: unknown {unknown}; choose from {sorted(SYSTEMS)}")
    t0, load0 = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scitune-roofline-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data_dir = work / f"data-{prof.name}-{a.data}"  # the records and models; an earlier --work run's are reused
        done = data_dir / "prepared.json"
        if done.exists():
            paths = json.loads(done.read_text())
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            paths = (prepare_real(data_dir, prof, tt.build_random_models, tt.model_config) if a.data == "real"
                     else tt.prepare(data_dir, prof))  # fmt: skip
        done.write_text(json.dumps(paths))
        from scitune.loader import build

        model, processor = build(tt.model_config(paths))
        s = shapes(prof, model.llm.config.vocab_size)
        check = check_flops(model, processor, paths, prof, s, a.check_samples)
        del model
        worst = max(abs(c["rel_diff"]) for c in check)
        print(f"analytic FLOPs vs FlopCounterMode: worst relative difference {worst:.4%} over {len(check)} samples")
        meta = data_meta(processor, paths, prof, s)
        peaks, rows = measure(prof, work, paths, meta, s, [int(t) for t in a.threads.split(",")], systems,
                              SQUARE[a.profile])  # fmt: skip
    print_table(peaks, rows)
    report = {
        "profile": asdict(prof),
        "data": {
            "kind": a.data,
            **{st: {**paths[st], **length_spread(meta["lengths"][st], prof)} for st in prof.stages},
        },
        "hardware": {
            **tt.hardware(prof),
            "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "shapes": s,
        "flop_check": check,
        "flop_check_worst_rel_diff": worst,
        "flops_formula": sample_flops.__doc__.strip(),
        "gemm": {str(t): p for t, p in peaks.items()},
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out or HERE / "results" / f"roofline_{a.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from scitune.io import write_text

    write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
