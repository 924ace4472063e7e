"""The one training loop for both stages: accumulation, clipping, schedule, logging, atomic checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.utils.data import DataLoader

from scitune.config.schema import RunConfig
from scitune.data.sampler import BatchPlan
from scitune.data.tokenize import IGNORE_INDEX
from scitune.io import DataError, fsync_file, read_log_lines, write_text
from scitune.loader import build, load_checkpoint, save_files, with_template
from scitune.model.checkpoint import RUN_CONFIG_FILE, write_checkpoint
from scitune.model.varlen import packed_kwargs, varlen_attention
from scitune.outputs import read_manifest
from scitune.train import run_dir as runs
from scitune.train.batches import StepSampler, collate_batch, load_data, packed_row_length, packing_is_exact
from scitune.train.checkpointing import checkpoint_step, latest_checkpoint, prune_checkpoints, resolve_resume
from scitune.train.distributed import configure_accumulation, gather_objects, make_accelerator, reduce_sum
from scitune.train.fsdp_state import FOLDER as FSDP_FOLDER
from scitune.train.fsdp_state import load_fsdp_state, save_fsdp_state
from scitune.train.loss import batch_loss_sum, logits_mode
from scitune.train.optim import build_optimizer, build_scheduler
from scitune.train.stages import prepare_stage, trains_llm, trains_vision
from scitune.train.state import load_training_state, rng_state, save_training_state, save_zero_shard
from scitune.train.trackers import start_trackers

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run reports."""

    steps: int
    losses: list[float]
    final_checkpoint: str
    parameter_counts: dict[str, dict[str, int]]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """Records skipped because their image could not be read during training (id, file, problem)."""


__all__ = ["TrainResult", "Trainer", "latest_checkpoint", "load_data", "train"]


def require_extras(cfg: RunConfig) -> None:
    """The packages the run's options need, checked before any model loads (`scitune.extras.require`)."""
    from scitune.extras import require

    if cfg.train.lora.r:
        require("--train.lora.r (LoRA)", "peft")
    if cfg.train.lora.quantize != "none":
        require("--train.lora.quantize 4bit (QLoRA)", "bitsandbytes")
    for tracker in cfg.train.report_to:
        require(f"--train.report_to {tracker}", {"tensorboard": "tensorboard", "wandb": "wandb"}.get(tracker, tracker))


def _fault(name: str, step: int) -> None:
    """Test hook: SCITUNE_FAULT_AFTER_STEP / SCITUNE_FAULT_IN_SAVE=N kill this process with SIGKILL at step N."""
    if os.environ.get(name) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


class Trainer:
    """Runs one stage. Build with a `RunConfig`, call `run()`.

    Args:
        cfg: the run's settings.
        overwrite: start over in a folder that holds another run (it is removed once this run finishes).
        config_text: the resolved YAML of ``cfg``, written to ``config.yaml`` in the run folder.
    """

    def __init__(self, cfg: RunConfig, overwrite: bool = False, config_text: str | None = None):
        self.cfg = cfg
        self.overwrite, self.config_text = overwrite, config_text
        self.out = Path(cfg.train.out_dir)
        require_extras(cfg)
        self.acc = make_accelerator(cfg.train.precision, cfg.train.report_to, str(self.out))
        self.world, self.rank = self.acc.num_processes, self.acc.process_index
        self.run_record: dict[str, Any] = {}
        self.fingerprint: dict[str, Any] = {}
        self.saved_fingerprint: dict[str, Any] | None = None
        self.skipped: dict[str, dict[str, Any]] = {}
        self._last_good: dict[str, Any] | None = None
        self.varlen = False  # packed rows attend per sample (set for the training loop)
        self.packing = False  # --data.packing, where packed rows stay exact
        if not self.acc.is_main_process:  # one copy of each log line
            logging.getLogger().setLevel(logging.WARNING)

    def _build(self, resume_dir: Path | None):
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        if cfg.train.lora.quantize != "none":
            from scitune.model.llm import check_qlora_available

            check_qlora_available()
        if resume_dir is not None:  # verified in full already
            model, processor = load_checkpoint(resume_dir, trainable_lora=True, verify="sizes")
        else:
            model, processor = build(cfg.model, cfg.data.template, cfg.train.lora.quantize)
        self.processor = with_template(processor, cfg.data.template)
        counts = prepare_stage(model, cfg.train.stage, cfg.train.lora, cfg.model.vision.trainable)
        if cfg.train.gradient_checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.train.compile:
            model.llm.compile()  # in place: parameter names (and checkpoints) stay the same
        return model, counts

    def _start(self) -> tuple[Path | None, str | None]:
        """Check the run folder and the resume point on every process (read only, so all agree), before any work.

        Returns the checkpoint to resume from and, with ``--overwrite``, whether an old run is to be moved aside.
        """
        tc = self.cfg.train
        if not self.cfg.data.train:
            raise ValueError("--data.train: no training data given (a JSONL or LLaVA .json file of records)")
        action = runs.check_run_dir(self.out, bool(tc.resume), self.overwrite)
        resume_dir = resolve_resume(tc.resume, self.out) if action != "replace" else None
        self.fingerprint = {"data": runs.data_fingerprint(self.cfg), "settings": runs.run_settings(self.cfg)}
        self.saved_fingerprint = saved = self._saved_fingerprint(resume_dir) if tc.resume else None
        if saved:
            for what, key, prefix in (("training data", "data", "data."), ("settings", "settings", "")):
                diffs = runs.changes(saved.get(key, {}), self.fingerprint[key], prefix)
                runs.refuse_changes(what, diffs, tc.allow_inexact_resume)
        return resume_dir, action

    def _saved_fingerprint(self, resume_dir: Path | None) -> dict[str, Any] | None:
        """What the run being resumed recorded: its checkpoint's fingerprint, or the run file's before any save."""
        if resume_dir is not None:
            manifest = read_manifest(resume_dir)
            if manifest is None or "fingerprint" not in manifest:
                log.warning(
                    "%s: written before fingerprints: cannot check that the data and settings are the same", resume_dir
                )
                return None
            return manifest["fingerprint"]
        return (runs.read_run_file(self.out) or {}).get("fingerprint")

    def _claim(self, action: str, saved_base: dict[str, Any] | None) -> None:
        """Record the run in its folder (main process), after the base weights are known."""
        tc, acc = self.cfg.train, self.acc
        if saved_base is not None:
            runs.refuse_changes(
                "base weights", runs.changes(saved_base, self.fingerprint["base"], "base."), tc.allow_inexact_resume
            )
        if acc.is_main_process:
            replaced = runs.move_aside(self.out) if action == "replace" else None
            self.out.mkdir(parents=True, exist_ok=True)
            self.run_record = runs.load_or_start_run(self.out, self.cfg, self.fingerprint, replaced)
            if self.config_text is not None:
                write_text(self.out / "config.yaml", self.config_text)
        acc.wait_for_everyone()

    def run(self) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        tc = cfg.train
        resume_dir, action = self._start()
        model, counts = self._build(resume_dir)
        self.fingerprint["base"] = runs.base_fingerprint(cfg)
        self._claim(action, (self.saved_fingerprint or {}).get("base"))
        data = load_data(cfg, model, self.processor, self.out, acc.is_main_process)
        per_step = tc.micro_batch_size * self.world
        if tc.global_batch_size % per_step:
            raise ValueError(
                f"--train.global_batch_size {tc.global_batch_size} is not a multiple of micro batch "
                f"{tc.micro_batch_size} x {self.world} processes"
            )
        accum = tc.global_batch_size // per_step
        plan = BatchPlan(
            len(data), tc.micro_batch_size, accum, self.world, tc.seed, data.lengths, cfg.data.group_by_length
        )
        # --train.max_steps wins over the epochs when set, as in HF Trainer (the data order continues into more epochs)
        total = tc.max_steps if tc.max_steps > 0 else math.ceil(tc.epochs * plan.steps_per_epoch)
        if resume_dir is not None and checkpoint_step(resume_dir) >= total:
            return self._finished(resume_dir, total, counts)
        optimizer = build_optimizer(model, cfg.optim)
        scheduler = build_scheduler(optimizer, total, cfg.optim)
        configure_accumulation(acc, tc.micro_batch_size, accum, cfg.optim.max_grad_norm)
        model, optimizer = acc.prepare(model, optimizer)
        self.model = model
        step = 0
        if resume_dir is not None:
            progress = load_training_state(resume_dir, optimizer, scheduler, self.rank, tc.allow_inexact_resume)
            if progress.get("fsdp"):  # the sharded model and optimizer state, resharded to this run's processes
                load_fsdp_state(resume_dir / progress["fsdp"], model, optimizer)
            step = int(progress["step"])
            self.skipped = {r["id"]: r for r in progress.get("skipped", [])}
            log.info("resumed from %s at step %d", resume_dir, step)
        if acc.is_main_process:
            runs.trim_metrics(self.out, step)
            start_trackers(acc, cfg) if tc.report_to else None
        log.info(
            "training %s: %d steps, %d samples, global batch %d (micro %d x accum %d x %d procs)",
            tc.stage,
            total,
            len(data),
            tc.global_batch_size,
            tc.micro_batch_size,
            accum,
            self.world,
        )
        # packed rows on SDPA: attention per sample, not over the whole row under a mask (the saved config keeps sdpa)
        with varlen_attention(self._unwrapped(model).llm, cfg.data.packing and not tc.compile) as self.varlen:
            self.packing = cfg.data.packing and packing_is_exact(cfg, self.varlen)
            if cfg.data.packing and not self.packing:
                attn = cfg.model.llm.attn_implementation or "sdpa"
                log.warning(
                    "--data.packing is off: this transformers lets packed samples attend to each other under %s "
                    "attention (use transformers >= 4.53, or FlashAttention-2)",
                    attn,
                )
            losses = self._loop(model, optimizer, scheduler, data, plan, step, total)
        final = self._save(model, optimizer, scheduler, total, self.out / "final")
        acc.end_training() if tc.report_to else None
        if acc.is_main_process:
            runs.remove_replaced(self.out, self.run_record.get("replaces"))
        return TrainResult(total, losses, str(final), counts, list(self.skipped.values()))

    def _finished(self, final: Path, total: int, counts: dict[str, dict[str, int]]) -> TrainResult:
        """A resume of a run that already reached its last step: nothing to train, nothing rewritten."""
        log.info("the run in %s already finished at step %d (%s); nothing to do", self.out, total, final)
        losses = [m["loss"] for m in read_log_lines(self.out / runs.METRICS) if "loss" in m]
        return TrainResult(total, losses, str(self.out / "final"), counts)

    def _loop(self, model, optimizer, scheduler, data, plan: BatchPlan, step: int, total: int) -> list[float]:
        from tqdm.auto import tqdm

        tc, acc = self.cfg.train, self.acc
        pad = self.processor.pad_token_id
        trainable = [p for p in model.parameters() if p.requires_grad]
        bar = tqdm(total=total, initial=step, disable=not (tc.progress and acc.is_main_process), desc=tc.stage)
        losses: list[float] = []
        model.train()
        batches = iter(self._loader(data, plan, step, total, pad))
        mode = logits_mode(self._unwrapped(model).llm)
        while step < total:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(plan.accum)]
            self._skip_bad(micro, step + 1, len(data))
            local_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro if not b.get("empty"))
            # a step whose every record was skipped has no tokens: its gradient is zero, not a division by zero
            n_tokens = reduce_sum(acc, torch.tensor(float(local_tokens), device=acc.device)).clamp(min=1.0)
            loss_sum = torch.zeros((), device=acc.device)
            for b, weight in self._stand_ins(micro):
                # accelerate counts the micro-batches: gradients are reduced (DDP/FSDP) and DeepSpeed steps its
                # engine only on the last of the step's `plan.accum` (the accelerator's gradient_accumulation_steps)
                with acc.accumulate(model), acc.autocast(), self._activation_offload():
                    ce = batch_loss_sum(model, _to_device(b, acc.device, self.varlen), b["labels"], mode) * weight
                    # normalise by the global token count; DDP averages over processes, so scale by world; and
                    # accelerate (or DeepSpeed) divides by the accumulation steps, which the token count already did
                    acc.backward(ce / n_tokens * (self.world * plan.accum))
                loss_sum += ce.detach()
            grad_norm = acc.clip_grad_norm_(trainable, tc_max(self.cfg)) if tc_max(self.cfg) > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss = float(reduce_sum(acc, loss_sum) / n_tokens)
            losses.append(loss)
            dt = time.perf_counter() - t0
            lr = scheduler.get_last_lr()[0]
            record = {
                "step": step,
                "epoch": round(step / plan.steps_per_epoch, 4),
                "loss": loss,
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "samples_per_s": round(plan.global_batch / dt, 2),
                "tokens": int(n_tokens),
                **({"skipped_records": len(self.skipped)} if self.skipped else {}),
            }
            self._log(record, step)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", sps=record["samples_per_s"])
            bar.update(1)
            _fault("SCITUNE_FAULT_AFTER_STEP_NOSAVE", step)
            if tc.save_every and step % tc.save_every == 0 and step < total:
                self._save(model, optimizer, scheduler, step, self.out / "checkpoints" / f"step-{step:06d}")
                self._prune()
                _fault("SCITUNE_FAULT_AFTER_STEP", step)
        bar.close()
        return losses

    def _activation_offload(self):
        """``--train.offload_activations``: torch's saved-tensor hooks that move activations to host memory."""
        if not self.cfg.train.offload_activations:
            return _nullcontext()
        return torch.autograd.graph.save_on_cpu(pin_memory=self.acc.device.type == "cuda")

    def _loader(self, data, plan: BatchPlan, step: int, total: int, pad: int) -> DataLoader:
        """Micro-batches of steps ``step .. total - 1``; with ``--data.num_workers`` N > 0, N processes prepare
        them ahead of the training step (images decoded and processed, rows collated)."""
        dc = self.cfg.data
        workers = max(0, dc.num_workers)
        row = packed_row_length(self.cfg, self.varlen)
        return DataLoader(
            data,
            batch_sampler=StepSampler(plan, step, total, self.rank),
            collate_fn=partial(collate_batch, pad=pad, packing=self.packing, row_length=row),
            num_workers=workers,
            prefetch_factor=2 * plan.accum if workers else None,
            pin_memory=self.acc.device.type == "cuda",
            # the iterator draws its base seed from this generator, not from torch's global RNG, so creating it
            # after a resume restored the RNG (dropout, LoRA dropout) leaves that state exactly as it was saved
            generator=torch.Generator().manual_seed(self.cfg.train.seed * 1000003 + step),
        )

    def _stand_ins(self, micro: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
        """``(batch, weight)`` per micro-batch: a batch whose every record was skipped is replaced by the last good one
        at weight 0, so every process still runs the same forward and backward passes (DDP reduces gradients in
        backward; a process that skipped one would leave the others waiting)."""
        out = []
        for b in micro:
            if not b.get("empty"):
                self._last_good = b
                out.append((b, 1.0))
            elif self._last_good is not None:
                out.append((self._last_good, 0.0))
            else:
                good = next((x for x in micro if not x.get("empty")), None)
                if good is None:
                    raise DataError("the first micro-batches of the run hold no readable record (see skipped.jsonl)")
                out.append((good, 0.0))
        return out

    def _skip_bad(self, micro: list[dict[str, Any]], step: int, n_records: int) -> None:
        """Count records whose image could not be read (logged with id and file); stop past --data.max_bad_fraction."""
        for b in micro:
            for bad in b.get("bad", []):
                if bad["id"] not in self.skipped:
                    log.warning("step %d: skipping record %s: %s", step, bad["id"], bad["problem"])
                    self.skipped[bad["id"]] = {**bad, "step": step}
                    if self.acc.is_main_process:
                        with open(self.out / "skipped.jsonl", "a", encoding="utf-8") as f:
                            f.write(json.dumps({**bad, "step": step, "phase": "train"}) + "\n")
        n_bad = len(self.skipped)
        if self.world > 1:
            n_bad = int(reduce_sum(self.acc, torch.tensor(float(n_bad), device=self.acc.device)))
        limit = self.cfg.data.max_bad_fraction * n_records
        if n_bad > limit:
            first = next(iter(self.skipped.values()), {"id": "?", "problem": "on another process"})
            raise DataError(
                f"{first['problem']} (record {first['id']}); {n_bad} record(s) could not be read during training, "
                f"more than --data.max_bad_fraction {self.cfg.data.max_bad_fraction} of {n_records}: fix the images "
                "and resume with --train.resume latest (skipped.jsonl lists them)"
            )

    def _log(self, record: dict[str, Any], step: int) -> None:
        if not self.acc.is_main_process or step % max(1, self.cfg.train.log_every):
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.cfg.train.report_to:
            self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def _unwrapped(self, model):
        return self.acc.unwrap_model(model)

    def _save(self, model, optimizer, scheduler, step: int, path: Path) -> Path:
        acc = self.acc
        rngs = gather_objects(acc, rng_state())
        # every process takes part in gathering the full state (FSDP shards it); only the main one writes
        state_dict = acc.get_state_dict(model)
        # ZeRO and FSDP: every process writes its own part of the optimizer (FSDP: and model) state into a staging
        # folder, moved into the checkpoint before its atomic rename
        fsdp = acc.distributed_type == DistributedType.FSDP
        sharded = acc.state.deepspeed_plugin is not None or fsdp
        staging = path.parent / f".zero-{path.name}"
        shards = 0
        if sharded:
            if acc.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            acc.wait_for_everyone()
            if fsdp:
                save_fsdp_state(staging / FSDP_FOLDER, model, optimizer)
            else:
                shards = self.world if save_zero_shard(staging, optimizer, self.rank) else 0
        acc.wait_for_everyone()
        if acc.is_main_process:
            m = self._unwrapped(model)
            tc = self.cfg.train

            def writer(tmp: Path) -> None:
                save_files(
                    m,
                    self.processor,
                    tmp,
                    llm_changed=trains_llm(tc.stage),
                    vision_changed=trains_vision(tc.stage, self.cfg.model.vision.trainable),
                    state_dict=state_dict,
                )
                _fault("SCITUNE_FAULT_IN_SAVE", step)
                progress = {"step": step, "stage": tc.stage, **({"zero_shards": shards} if shards else {})}
                if fsdp:
                    progress["fsdp"] = FSDP_FOLDER
                    os.replace(staging / FSDP_FOLDER, tmp / FSDP_FOLDER)
                if self.skipped:
                    progress["skipped"] = list(self.skipped.values())
                save_training_state(tmp, None if sharded else optimizer, scheduler, progress, rngs)
                for f in staging.glob("zero_rank*") if shards else ():  # never a stale folder's shards
                    os.replace(f, tmp / f.name)
                (tmp / RUN_CONFIG_FILE).write_text(json.dumps(asdict(self.cfg), indent=2))

            if (self.out / runs.METRICS).is_file():
                fsync_file(self.out / runs.METRICS)  # the metrics up to this step are as durable as the checkpoint
            extra = {"run_id": self.run_record.get("run_id"), "fingerprint": self.fingerprint}
            write_checkpoint(path, writer, extra=extra)
            shutil.rmtree(staging, ignore_errors=True)
            log.info("saved checkpoint %s", path)
        acc.wait_for_everyone()
        return path

    def _prune(self) -> None:
        if self.acc.is_main_process:
            prune_checkpoints(self.out, self.cfg.train.keep_last, self.run_record.get("run_id", ""))


def _to_device(batch: dict[str, Any], device, varlen: bool = False) -> dict[str, Any]:
    """The model's inputs of a collated batch, on ``device`` (labels stay where they are); with ``varlen``, a
    packed batch also gets its sample spans (`packed_kwargs`) for per-sample attention."""
    keys = ("input_ids", "attention_mask", "pixel_values", "position_ids", "image_features", "image_grids")
    out = {k: batch[k].to(device) for k in keys if batch.get(k) is not None}
    if varlen and "position_ids" in out and "attention_mask" not in out:
        out.update(packed_kwargs(out["position_ids"]))
    return out


def tc_max(cfg: RunConfig) -> float:
    return cfg.optim.max_grad_norm


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train(cfg: RunConfig, overwrite: bool = False, config_text: str | None = None) -> TrainResult:
    """Train one stage as configured; see `Trainer`."""
    return Trainer(cfg, overwrite, config_text).run()
