"""The run folder: one run per folder, a record of what the run trains on (data content, base weights, config), and
the checks that make a resume continue that same run or refuse, listing what changed."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scitune.config.schema import RunConfig
from scitune.io import DataError, make_temp_dir, read_json, read_log_lines, write_json, write_jsonl

log = logging.getLogger(__name__)

RUN_FILE = "scitune-run.json"
METRICS = "metrics.jsonl"
RUN_ENTRIES = ("config.yaml", METRICS, RUN_FILE, "skipped.jsonl", "checkpoints", "final", "scitune", "mixture")
"""What a run writes at the top of its folder (``scitune``: the trackers' logs); nothing else there is the run's."""
REPLACED_PREFIX = ".scitune-replaced-"

# settings that do not change what a step computes: a resume may change them freely
VOLATILE = {
    "data": {"train", "num_workers", "feature_cache", "sample_seed"},  # a mixture's: in its data fingerprint
    "train": {
        "out_dir",
        "resume",
        "progress",
        "log_every",
        "save_every",
        "keep_last",
        "report_to",
        "compile",
        "gradient_checkpointing",
        "offload_activations",
        "allow_inexact_resume",
    },
}


def run_settings(cfg: RunConfig) -> dict[str, Any]:
    """The config sections that decide the run's steps (model, data, optimizer, training), volatile fields left out."""
    out = {}
    for section, values in asdict(cfg).items():
        out[section] = {k: v for k, v in values.items() if k not in VOLATILE.get(section, ())}
    return json.loads(json.dumps(out))  # as it reads back from a manifest (tuples become lists)


def data_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """A content hash of every training data file (the image root by path); of a mixture, every source's with its
    settings and the sampling seed."""
    from scitune.data.mixture import mixture_fingerprint, mixture_sources
    from scitune.fingerprint import fingerprint_data_file

    sources = mixture_sources(cfg.data.train)
    if sources is not None:
        return mixture_fingerprint(sources, cfg.data.sample_seed, cfg.data.image_root)
    fp = fingerprint_data_file(cfg.data.train)
    return {"train": {"size": fp["size"], "sha256": fp["sha256"]}, "image_root": cfg.data.image_root}


def base_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The base weights the run starts from: the vision encoder's and the LLM's weight files (local folders, or hub
    ids in the local cache), and the ``--model.init_from`` checkpoint's manifest."""
    from scitune.fingerprint import fingerprint_model
    from scitune.outputs import MANIFEST, sha256_file

    out: dict[str, Any] = {}
    if cfg.model.init_from:
        manifest = Path(cfg.model.init_from) / MANIFEST
        digest = sha256_file(manifest) if manifest.is_file() else None
        out["init_from"] = {"source": str(cfg.model.init_from), "manifest_sha256": digest}
        return out  # the checkpoint's own manifest pins its base weights
    for role, source in (("vision", cfg.model.vision.path), ("llm", cfg.model.llm.path)):
        fp = fingerprint_model(source)
        if fp:
            out[role] = fp
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (``prefix.a.b: old -> new``)."""
    a, b = _flat(old, prefix.rstrip(".")), _flat(new, prefix.rstrip("."))
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {_short(a.get(key))} -> {_short(b.get(key))}")
    return out


def _short(v: Any) -> str:
    s = "(none)" if v is None else str(v)
    return s[:12] + "…" if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


def refuse_changes(what: str, diffs: list[str], allow: bool) -> None:
    """Refuse a resume whose ``what`` changed, unless the user accepts an inexact resume."""
    if not diffs:
        return
    listed = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    if allow:
        log.warning("resuming although the %s changed (--train.allow_inexact_resume): %s", what, listed)
        return
    raise DataError(
        f"--train.resume: the {what} changed since the run started: {listed}. Resume with what it was started with, "
        "start a new run in another --train.out_dir, or pass --train.allow_inexact_resume true to go on anyway"
    )


def describe_run(out: Path) -> str:
    info = read_run_file(out) or {}
    metrics = read_log_lines(out / METRICS) if (out / METRICS).is_file() else []
    step = metrics[-1].get("step", 0) if metrics else 0
    done = "finished" if (out / "final" / "COMPLETE").is_file() else f"stopped at step {step}"
    return f"a training run (stage {info.get('stage', '?')}), {done}"


def read_run_file(out: Path) -> dict[str, Any] | None:
    """The run folder's record (``scitune-run.json``), or None."""
    path = out / RUN_FILE
    try:
        return read_json(path) if path.is_file() else None
    except DataError:
        return None


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds a scitune run (or one from before run files: a config.yaml beside checkpoints/metrics)."""
    if (out / RUN_FILE).is_file():
        return True
    return (out / "config.yaml").is_file() and any((out / n).exists() for n in (METRICS, "checkpoints", "final"))


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> str:
    """Whether ``out`` may take this run (read only): ``new``, ``resume`` or ``replace``, or a `DataError`.

    A folder holding a run is continued only with ``--train.resume`` and replaced only with ``--overwrite`` (the old
    run is moved into a hidden folder and removed when the new run finishes). A folder holding files that are not a
    run is refused; with ``--overwrite`` the run writes beside them (never over them).
    """
    if out.exists() and not out.is_dir():
        raise DataError(f"--train.out_dir {out}: exists and is not a folder")
    entries = [p.name for p in out.iterdir() if not p.name.startswith(REPLACED_PREFIX)] if out.is_dir() else []
    if not entries:
        return "new"
    if holds_run(out):
        if resume:
            return "resume"
        if not overwrite:
            raise DataError(
                f"--train.out_dir {out}: holds {describe_run(out)}. Continue it with --train.resume latest, start "
                "over with --overwrite (the old run is removed once the new one finishes), or choose another "
                "--train.out_dir"
            )
        return "replace"
    clash = sorted(e for e in entries if e in RUN_ENTRIES)
    if clash:
        raise DataError(
            f"{out / clash[0]}: exists and was not written by a scitune run; move it or choose another --train.out_dir"
        )
    if not overwrite:
        foreign = sorted(entries)
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"--train.out_dir {out}: holds files scitune did not write ({shown}); choose another --train.out_dir, "
            "or pass --overwrite to write the run beside them (they are kept)"
        )
    return "new"


def move_aside(out: Path) -> str:
    """Move the old run's own entries into a hidden folder of ``out``; the user's other files stay where they are."""
    import os

    aside = make_temp_dir(out, REPLACED_PREFIX)
    for name in RUN_ENTRIES:
        if (out / name).exists():
            os.replace(out / name, aside / name)
    log.info("--overwrite: the earlier run in %s is moved to %s and removed when this run finishes", out, aside.name)
    return aside.name


def remove_replaced(out: Path, name: str | None) -> None:
    """Delete the old run that ``--overwrite`` moved aside (only that hidden folder, which scitune made)."""
    if name and name.startswith(REPLACED_PREFIX) and (out / name).is_dir():
        shutil.rmtree(out / name, ignore_errors=True)


def new_run_record(cfg: RunConfig, fingerprint: dict[str, Any], replaced: str | None) -> dict[str, Any]:
    from scitune import __version__

    return {
        "run_id": uuid.uuid4().hex,
        "stage": cfg.train.stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scitune_version": __version__,
        "fingerprint": fingerprint,
        **({"replaces": replaced} if replaced else {}),
    }


def load_or_start_run(out: Path, cfg: RunConfig, fingerprint: dict[str, Any], replaced: str | None) -> dict:
    """This folder's run record: the existing one (a resume) or a new one, written now."""
    old = read_run_file(out)
    if old is not None and not replaced:
        return old
    record = new_run_record(cfg, fingerprint, replaced)
    write_json(out / RUN_FILE, record)
    return record


def trim_metrics(out: Path, step: int) -> None:
    """Keep the metrics of steps up to ``step`` (the step being resumed); a torn last line is dropped."""
    path = out / METRICS
    if not path.exists():
        return
    kept = [m for m in read_log_lines(path) if m.get("step", 0) <= step]
    write_jsonl(path, kept)
