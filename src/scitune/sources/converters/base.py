"""The converter registry: pure functions from source records to canonical scitune records."""

from __future__ import annotations

from scitune.registry import Registry

CONVERTERS: Registry = Registry("converter")
