"""A cache of frozen vision-encoder features: sharded safetensors keyed by image content hash + encoder identity. With
AnyRes an image's entry holds its overview's and tiles' features, and the manifest its grid and size."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scitune.io import DataError, write_json

MANIFEST = "cache.json"


def image_key(path: str | os.PathLike[str]) -> str:
    """sha256 of the image file's bytes (the cache follows content, not names)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encoder_identity(
    vision_identity: dict[str, Any], processor_config: dict[str, Any], num_tokens: int, hidden_size: int
) -> dict[str, Any]:
    """What the features depend on: the encoder and its layer/selection, the preprocessing, the output shape."""
    proc = json.dumps(processor_config, sort_keys=True, default=str)
    return {
        "vision": {k: vision_identity.get(k) for k in ("name", "path", "feature_layer", "select")},
        "processor_sha256": hashlib.sha256(proc.encode()).hexdigest(),
        "num_tokens": int(num_tokens),
        "hidden_size": int(hidden_size),
    }


class FeatureStore:
    """Reads a finished cache; every lookup is checked against the encoder identity it was built with."""

    def __init__(self, root: str | os.PathLike[str], expected_identity: dict[str, Any] | None = None):
        from safetensors import safe_open

        self.root = Path(root)
        mf = self.root / MANIFEST
        if not mf.is_file():
            raise DataError(f"{self.root}: no {MANIFEST}; build it with `scitune data cache-features`")
        self.manifest = json.loads(mf.read_text())
        if expected_identity is not None and self.manifest["identity"] != expected_identity:
            raise DataError(
                f"{self.root}: features were computed with {json.dumps(self.manifest['identity'])}, but this run's "
                f"encoder is {json.dumps(expected_identity)}; rebuild the cache for this encoder/layer/image size"
            )
        self.index: dict[str, str] = self.manifest["index"]  # key -> shard file
        # AnyRes: key -> (rows, cols, height, width), the image's grid and original size
        self.grids: dict[str, list[int]] = self.manifest.get("grids") or {}
        self._open: dict[str, Any] = {}
        self._safe_open = safe_open

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def features(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """A sample's cached inputs for the model, images in order: ``image_features`` (n, N, D); with AnyRes every
        image's overview and tiles, (n_tiles, N, D), and ``image_grids`` (n, 4) as the processor makes them."""
        if not self.grids:
            return {"image_features": torch.stack([self.get(k) for k in keys])}
        missing = [k for k in keys if k not in self.grids]
        if missing:
            raise DataError(
                f"{self.root}: no AnyRes grid for image {missing[0][:12]}…; rebuild the cache for this data"
            )
        return {
            "image_features": torch.cat([self.get(k) for k in keys]),
            "image_grids": torch.tensor([self.grids[k] for k in keys], dtype=torch.long).reshape(-1, 4),
        }

    def get(self, key: str) -> torch.Tensor:
        """Features of one image, (N, D); with AnyRes of its overview and tiles, (1 + rows*cols, N, D)."""
        shard = self.index.get(key)
        if shard is None:
            raise DataError(f"{self.root}: no cached features for image {key[:12]}…; rebuild the cache for this data")
        try:
            if shard not in self._open:
                self._open[shard] = self._safe_open(str(self.root / shard), framework="pt")
            return self._open[shard].get_tensor(key)
        except Exception as e:  # a truncated or corrupt shard
            raise DataError(
                f"{self.root / shard}: cannot read cached features ({type(e).__name__}: {e}); rebuild with "
                "`scitune data cache-features --overwrite`"
            ) from None


class FeatureStoreWriter:
    """Writes shards atomically; the manifest goes last, so an interrupted build is never read as complete."""

    def __init__(self, root: str | os.PathLike[str], identity: dict[str, Any], shard_size: int = 1024):
        self.root, self.identity, self.shard_size = Path(root), identity, shard_size
        self.root.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, str] = {}
        self.grids: dict[str, list[int]] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.n_shards = 0

    def add(self, key: str, features: torch.Tensor, grid: Sequence[int] | None = None) -> None:
        """Store one image's features; with AnyRes ``grid`` is its (rows, cols, height, width)."""
        if key in self.index or key in self.pending:
            return
        if grid is not None:
            self.grids[key] = [int(x) for x in grid]
        self.pending[key] = features.detach().to("cpu").contiguous()
        if len(self.pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        from scitune.io import atomic_path

        if not self.pending:
            return
        name = f"shard-{self.n_shards:05d}.safetensors"
        with atomic_path(self.root / name) as tmp:
            save_file(self.pending, str(tmp))
        self.index.update(dict.fromkeys(self.pending, name))
        self.pending, self.n_shards = {}, self.n_shards + 1

    def close(self) -> dict[str, Any]:
        self.flush()
        manifest = {"identity": self.identity, "index": self.index, "shards": self.n_shards, "images": len(self.index)}
        if self.grids:
            manifest["grids"] = self.grids
        write_json(self.root / MANIFEST, manifest, indent=None)
        return manifest
