"""Public data releases scitune reads as released, and fetching them: from the Hugging Face Hub with
``huggingface_hub`` where they are published there, otherwise the official address to download by hand. Offline, a
fetch stops with one line saying what to do instead."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitune.io import DataError

__all__ = ["RELEASES", "OfflineError", "Release", "download_release", "hub_offline"]


@dataclass(frozen=True)
class Release:
    """One public release: where it lives and how scitune reads it."""

    description: str
    repo_id: str | None
    """Hugging Face dataset repository, or None when the release is not on the Hub."""
    patterns: tuple[str, ...] = ()
    """Files fetched from the repository (``allow_patterns``); the large image archives are opt-in (--images)."""
    image_patterns: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    """Official addresses (the releases not on the Hub; images kept elsewhere)."""
    read_with: str = ""
    """The scitune command that reads it."""


RELEASES: dict[str, Release] = {
    "scienceqa": Release(
        "ScienceQA, Hugging Face parquet release (images inside)",
        "derek-thomas/ScienceQA",
        ("data/*.parquet",),
        read_with="scitune convert scienceqa --src {out} --split train --out sqa_train.json",
    ),
    "llava-pretrain": Release(
        "LLaVA-Pretrain 558K (BLIP captions of LAION/CC/SBU)",
        "liuhaotian/LLaVA-Pretrain",
        ("blip_laion_cc_sbu_558k.json", "blip_laion_cc_sbu_558k_meta.json"),
        ("images.zip",),
        read_with="scitune convert llava-pretrain --src {out} --out align.jsonl",
    ),
    "llava-cc3m-595k": Release(
        "LLaVA's CC3M-595K alignment set (chat.json, metadata.json)",
        "liuhaotian/LLaVA-CC3M-Pretrain-595K",
        ("chat.json", "metadata.json"),
        ("images.zip",),
        read_with="scitune convert llava-pretrain --src {out} --out align.jsonl",
    ),
    "llava-instruct": Release(
        "LLaVA-Instruct-150K (+ the three groups and LLaVA-1.5's 665K mix)",
        "liuhaotian/LLaVA-Instruct-150K",
        (
            "llava_instruct_150k.json",
            "conversation_58k.json",
            "detail_23k.json",
            "complex_reasoning_77k.json",
            "llava_v1_5_mix665k.json",
        ),
        urls=("http://images.cocodataset.org/zips/train2017.zip",),
        read_with="scitune convert llava-json --src {out}/llava_instruct_150k.json --out instruct.jsonl",
    ),
    "coco-karpathy": Release(
        "COCO captions, Karpathy split JSON (dataset_coco.json, as karpathy_coco.json)",
        "openflamingo/eval_benchmark",
        ("mscoco_karpathy/karpathy_coco.json",),
        urls=("http://images.cocodataset.org/zips/val2014.zip", "http://images.cocodataset.org/zips/train2014.zip"),
        read_with="scitune eval captioning --data {out}/mscoco_karpathy/karpathy_coco.json --image_root COCO_ROOT",
    ),
    "flickr30k-karpathy": Release(
        "Flickr30k captions, Karpathy split JSON (dataset_flickr30k.json)",
        "openflamingo/eval_benchmark",
        ("flickr30k/dataset_flickr30k.json",),
        urls=("https://shannon.cs.illinois.edu/DenotationGraph/",),
        read_with="scitune eval captioning --data {out}/flickr30k/dataset_flickr30k.json --image_root IMAGES",
    ),
    "nocaps": Release(
        "NoCaps validation captions (not on the Hub)",
        None,
        urls=(
            "https://nocaps.s3.amazonaws.com/nocaps_val_4500_captions.json",
            "https://nocaps.org/download (images: Open Images V6 validation)",
        ),
        read_with="scitune eval captioning --data nocaps_val_4500_captions.json --image_root IMAGES",
    ),
}
"""Release name (``scitune data download NAME``) -> where it is published."""


class OfflineError(DataError):
    """The Hub cannot be reached; the message says how to fetch the release elsewhere."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (huggingface_hub reads it at import time; so do we)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _manual_steps(name: str, release: Release, out: Path) -> str:
    if release.repo_id is None:
        return f"download {' and '.join(release.urls)} into {out}"
    files = " ".join(f"--include '{p}'" for p in release.patterns)
    return (f"on a machine with internet run `hf download {release.repo_id} --repo-type dataset {files} --local-dir "
            f"{out}` (or `scitune data download {name} --out {out}` there) and copy {out} here")  # fmt: skip


def _plan(name: str, release: Release, out: Path, images: bool) -> dict[str, Any]:
    return {"release": name, "description": release.description, "repo_id": release.repo_id, "out": str(out),
            "files": list(release.patterns) + (list(release.image_patterns) if images else []),
            "also": list(release.urls), "read_with": release.read_with.replace("{out}", str(out))}  # fmt: skip


def download_release(name: str, out: str | os.PathLike[str], images: bool = False, dry_run: bool = False) -> dict:
    """Fetch a public release into ``out`` with ``huggingface_hub.snapshot_download``.

    Args:
        name: a key of `RELEASES`.
        out: the folder the files go to (their repository paths kept).
        images: also fetch the image archive where the release has one (``images.zip``: 6-27 GB).
        dry_run: only say what would be fetched (no network).

    Returns:
        What was (or would be) fetched, the local folder and the command that reads it.

    Raises:
        KeyError: an unknown name (the known ones listed).
        OfflineError: the release is not on the Hub, or the Hub cannot be reached (``HF_HUB_OFFLINE=1``, no
            connection); the message says what to do instead.
    """
    if name not in RELEASES:
        raise KeyError(f"unknown release {name!r}; known: {', '.join(RELEASES)}")
    release, folder = RELEASES[name], Path(out)
    plan = _plan(name, release, folder, images)
    if dry_run:
        return {**plan, "dry_run": True}
    if release.repo_id is None:
        raise OfflineError(f"{name} is not on the Hugging Face Hub: {_manual_steps(name, release, folder)}")
    if hub_offline():
        raise OfflineError(f"cannot fetch {name}: HF_HUB_OFFLINE is set (offline); unset it where the Hub is "
                           f"reachable, or {_manual_steps(name, release, folder)}")  # fmt: skip
    import huggingface_hub
    from huggingface_hub import errors

    # no connection ends in "not in the local cache" (LocalEntryNotFoundError; IncompleteSnapshotError in newer
    # huggingface_hub); the names are looked up so that older versions without some of them work too
    unreachable = tuple(getattr(errors, n) for n in ("LocalEntryNotFoundError", "IncompleteSnapshotError",
                                                     "OfflineModeIsEnabled") if hasattr(errors, n))  # fmt: skip
    try:
        local = huggingface_hub.snapshot_download(release.repo_id, repo_type="dataset", local_dir=str(folder),
                                                  allow_patterns=plan["files"])  # fmt: skip
    except (*unreachable, ConnectionError, TimeoutError) as e:
        raise OfflineError(f"cannot reach the Hugging Face Hub to fetch {name} ({type(e).__name__}): "
                           f"{_manual_steps(name, release, folder)}") from None  # fmt: skip
    except errors.HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"the Hub refused {release.repo_id}: {first}") from None
    return {**plan, "local_dir": str(local)}
