"""Checkpoints: safetensors weights + `scitune.json` identity (+ the processor's files), written atomically and\nverified; `load_model` rebuilds the model part."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from scitune.io import DataError, read_json
from scitune.model.adapters import AdapterSet
from scitune.model.anyres import parse_grids
from scitune.model.llm import DTYPES, fit_vocab, load_llm
from scitune.model.projector import build_projector
from scitune.model.vision import load_vision_encoder
from scitune.model.vlm import VisionLanguageModel
from scitune.outputs import COMPLETE, DamagedOutput, verify_output, write_output_folder

log = logging.getLogger(__name__)

META_FILE = "scitune.json"
FORMAT_VERSION = 1
RUN_CONFIG_FILE = "scitune_run.json"
"""The resolved run config (`RunConfig` as JSON) a training checkpoint was saved with. Not ``config.json``: HF loaders
(``AutoConfig``) read that name as a model config."""
LEGACY_RUN_CONFIG_FILE = "config.json"
"""Its name in checkpoints written before; still read (`read_run_config`)."""


def _unwrap(llm):
    return llm.get_base_model() if hasattr(llm, "peft_config") else llm


def _llm_mode(model: VisionLanguageModel, llm_changed: bool) -> str:
    if hasattr(model.llm, "peft_config"):
        return "lora"
    return "full" if llm_changed else "base"


def save_model_files(
    model: VisionLanguageModel,
    out: Path,
    llm_changed: bool,
    vision_changed: bool,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Write the model's files into the (new, empty) folder ``out``; return the `scitune.json` content.

    The processor's files go beside them (`scitune.processor.Processor.save_pretrained`); a checkpoint needs both.
    """
    from scitune import __version__

    out.mkdir(parents=True, exist_ok=True)
    # state_dict: the full (gathered) model state, e.g. from accelerate's get_state_dict under FSDP
    sd = state_dict if state_dict is not None else model.state_dict()
    part = {p: {k[len(p) + 1 :]: v for k, v in sd.items() if k.startswith(p + ".")} for p in ("projector", "llm")}
    _save_tensors(part["projector"], out / "projector.safetensors")
    if model.adapters is not None:
        _save_tensors(
            {k[len("adapters.") :]: v for k, v in sd.items() if k.startswith("adapters.")}, out / "adapters.safetensors"
        )
    ident = json.loads(json.dumps(model.identity))
    # a model loaded from a checkpoint with saved weights must save them again, trained this run or not
    # (and parts built in memory, with no path to reload them from, are always saved)
    llm_changed = llm_changed or ident.get("llm", {}).get("saved") == "full" or not ident.get("llm", {}).get("path")
    vision_changed = (
        vision_changed or bool(ident.get("vision", {}).get("saved")) or not ident.get("vision", {}).get("path")
    )
    mode = _llm_mode(model, llm_changed)
    if mode == "lora":
        model.llm.save_pretrained(out / "llm_lora", state_dict=part["llm"] if state_dict is not None else None)
    elif mode == "full":
        model.llm.save_pretrained(out / "llm", state_dict=part["llm"])
    if mode != "full":  # the rows the processor's tokens added to the base vocabulary (trained or not)
        _save_tensors(added_rows(model, part["llm"] if state_dict is not None else None), out / ADDED_ROWS_FILE)
    if vision_changed:  # trained (or built in memory): the encoder's own weights, reloadable with from_pretrained
        vision_sd = None
        if state_dict is not None:
            vision_sd = {k[len("vision.model.") :]: v for k, v in sd.items() if k.startswith("vision.model.")}
        model.vision.model.save_pretrained(out / "vision", state_dict=vision_sd, safe_serialization=True)
    ident["llm"] = {**ident.get("llm", {}), "saved": mode}
    ident["vision"] = {**ident.get("vision", {}), "saved": bool(vision_changed)}
    meta = {
        "format": FORMAT_VERSION,
        "scitune_version": __version__,
        **ident,
        "image_token_id": model.image_token_id,
        "num_image_tokens": model.num_image_tokens,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


ADDED_ROWS_FILE = "added_tokens.safetensors"
"""Embedding rows of the tokens added to a base LLM's vocabulary (image token, ``<im_start>``/``<im_end>``)."""


def added_rows(model: VisionLanguageModel, llm_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The input (and untied output) embedding rows past the base LLM's vocabulary, ``{"input": (n, D), ...}``."""
    base = model.identity.get("llm", {}).get("base_vocab")
    llm = _unwrap(model.llm)
    inp, outp = llm.get_input_embeddings().weight, getattr(llm.get_output_embeddings(), "weight", None)
    if base is None:
        return {}
    rows = {"input": inp[base:]}
    if outp is not None and outp.data_ptr() != inp.data_ptr():
        rows["output"] = outp[base:]
    return rows


@torch.no_grad()
def load_added_rows(model: VisionLanguageModel, path: Path) -> None:
    """Put saved added-token rows back into the LLM's embeddings (after the vocabulary was grown to fit them)."""
    if not path.is_file():
        return
    base = model.identity.get("llm", {}).get("base_vocab")
    saved = load_file(str(path))
    llm = _unwrap(model.llm)
    llm.get_input_embeddings().weight[base:] = saved["input"]
    if "output" in saved:
        llm.get_output_embeddings().weight[base:] = saved["output"]


def base_fingerprints(meta: dict[str, Any]) -> dict[str, Any]:
    """Fingerprints of the base weights that a checkpoint with identity ``meta`` loads from their own paths."""
    from scitune.fingerprint import fingerprint_model

    out = {}
    v, lm = meta.get("vision", {}), meta.get("llm", {})
    if not v.get("saved") and v.get("path"):
        out["vision"] = fingerprint_model(v["path"])
    if lm.get("saved", "base") != "full" and lm.get("path"):
        out["llm"] = fingerprint_model(lm["path"])
    return out


def write_checkpoint(
    final_dir: str | os.PathLike[str],
    writer: Callable[[Path], Any],
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder: ``writer(tmp)`` fills a hidden temp folder, then the manifest (size and SHA-256 of
    every file, the base-weight fingerprints, ``extra``) and ``COMPLETE`` are written after fsync, and the folder is
    renamed into place (`scitune.outputs.write_output_folder`). An interrupted write leaves only a hidden temp folder,
    which `latest_checkpoint` never picks; ``final_dir`` holding files scitune did not write is refused unless
    ``overwrite`` (and then only scitune's files are replaced).
    """

    def write(tmp: Path) -> None:
        writer(tmp)
        if (tmp / META_FILE).is_file():
            fingerprints.update(base_fingerprints(read_meta(tmp)))

    fingerprints: dict[str, Any] = {}
    info = {"base_weights": fingerprints, **(extra or {})}
    return write_output_folder(final_dir, "checkpoint", write, overwrite, info, complete_marker=True)


def is_complete(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return (p / META_FILE).is_file() and (p / COMPLETE).is_file()


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not (p / META_FILE).is_file():
        raise DataError(f"{p}: not a scitune checkpoint (no {META_FILE})")
    return read_json(p / META_FILE)


def read_run_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run config a checkpoint was trained with (`RUN_CONFIG_FILE`, or the older ``config.json`` when it holds a
    scitune run config rather than a model's), None when it has none (built, imported or merged, not trained)."""
    p = Path(path)
    if (p / RUN_CONFIG_FILE).is_file():
        return read_json(p / RUN_CONFIG_FILE)
    if (p / LEGACY_RUN_CONFIG_FILE).is_file():
        cfg = read_json(p / LEGACY_RUN_CONFIG_FILE)
        if isinstance(cfg, dict) and {"model", "data", "train"} <= cfg.keys() and "model_type" not in cfg:
            return cfg
    return None


def verify_checkpoint(path: str | os.PathLike[str], level: str = "quick", bases: bool = True) -> dict[str, Any] | None:
    """Check a checkpoint before it is used; raise `DamagedOutput` naming what is wrong; return its manifest.

    ``COMPLETE`` and every file's size are always checked, SHA-256 hashes as ``level`` says (`verify_output`), and
    the base weights it loads from their own paths against their recorded fingerprints (their hashes are computed
    once per file change and cached by size and mtime; only sizes with ``sizes``). A checkpoint from before
    manifests is loaded with a warning. ``bases=False`` checks the checkpoint's own files only (a resume compares
    the base weights with the run's fingerprint instead).
    """
    from scitune.fingerprint import check_model_fingerprint

    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: checkpoint folder not found" if not p.exists() else f"{p}: not a checkpoint folder")
    read_meta(p)
    manifest = verify_output(p, level, complete=True)
    if manifest is None:
        log.warning("%s: written without a manifest (an older scitune); its files cannot be verified", p)
        return None
    problems = []
    for role, fp in (manifest.get("base_weights") or {}).items() if bases else ():  # hashed once per change (cached)
        problems += check_model_fingerprint(role, fp, full=level != "sizes")
    if problems:
        raise DamagedOutput(f"{p}: the base weights changed since it was written: " + "; ".join(problems))
    return manifest


def load_model(
    path: str | os.PathLike[str],
    vocab_size: int,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    trainable_lora: bool = False,
    verify: str = "quick",
) -> VisionLanguageModel:
    """Rebuild the `VisionLanguageModel` of a checkpoint folder (its `scitune.json` says what to load); use
    `scitune.loader.load` to get it with its processor.

    Args:
        path: the checkpoint folder.
        vocab_size: the length of the checkpoint's tokenizer (the LLM's vocabulary is grown to it).
        device: where to put the model.
        dtype: override the LLM dtype recorded in the checkpoint (float32, bfloat16, float16).
        trainable_lora: load LoRA adapters as trainable (to continue training).
        verify: how much of the checkpoint to check first (`verify_checkpoint`): ``quick`` (sizes, and the SHA-256
            of every file up to 256 MiB), ``full`` (every SHA-256) or ``sizes``.
    """
    p = Path(path)
    verify_checkpoint(p, verify)
    meta = read_meta(p)
    v, lm = meta["vision"], meta["llm"]
    dtype = dtype or lm.get("dtype", "float32")
    vpath = str(p / "vision") if v.get("saved") else v.get("path")

    fresh = bool(v.get("random_init")) and not v.get("saved")  # rebuilt under the same seed as when trained
    vision, _ = load_vision_encoder(v["name"], vpath, v["feature_layer"], v["select"], DTYPES[dtype], random_init=fresh)
    mode = lm.get("saved", "base")
    llm = load_llm(str(p / "llm") if mode == "full" else lm["path"], dtype, lm.get("attn"))
    fit_vocab(llm, vocab_size)
    if mode == "lora":
        from peft import PeftModel

        llm = PeftModel.from_pretrained(llm, p / "llm_lora", is_trainable=trainable_lora)
    llm_dim = _unwrap(llm).get_input_embeddings().embedding_dim
    pm = meta["projector"]
    projector = build_projector(pm["name"], vision.hidden_size, llm_dim, pm.get("num_tokens", 0))
    adapters = None
    if meta.get("adapter"):
        adapters = AdapterSet(llm, meta["adapter"]["name"], meta["adapter"]["downsample_factor"])
        adapters.load_state_dict(load_file(str(p / "adapters.safetensors")))
    ident = {k: meta[k] for k in ("vision", "llm", "projector", "adapter") if k in meta}
    grids = parse_grids(v.get("anyres", []))
    # an AnyRes checkpoint that does not name its layout predates llava-next: tiles
    layout = v.get("anyres_layout", "tiles")
    model = VisionLanguageModel(vision, projector, llm, meta["image_token_id"], ident, adapters, grids, layout)
    model.projector.load_state_dict(load_file(str(p / "projector.safetensors")))  # with the model's image_newline
    load_added_rows(model, p / ADDED_ROWS_FILE)
    if model.num_image_tokens != meta["num_image_tokens"]:
        raise ValueError(
            f"{p}: encoder yields {model.num_image_tokens} tokens, checkpoint says {meta['num_image_tokens']}"
        )
    return model.to(device).eval()
