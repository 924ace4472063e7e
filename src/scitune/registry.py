"""The one `Registry` class: named, kebab-case, exact-match lookup tables for pluggable parts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_KEY = re.compile(r"^[a-z0-9]+(?:[-./][a-z0-9]+)*$")


class Registry(Generic[T]):
    """A name -> object table filled by the `register` decorator where each object is defined.

    Keys are exact lower-case kebab-case strings (dots allowed for versions, e.g. ``llava-v1.5``).
    Registering a key twice raises, and looking up an unknown key raises ``KeyError`` listing every known key.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` (non-decorator form)."""
        if not _KEY.match(name):
            raise ValueError(f"{self.kind} key {name!r} must be lower-case kebab-case (e.g. 'mlp2x-gelu')")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the entry for ``name``; raise ``KeyError`` naming every known key otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            import difflib

            known = ", ".join(sorted(self._entries)) or "(none)"
            close = difflib.get_close_matches(str(name), sorted(self._entries), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def names(self) -> list[str]:
        """All registered keys, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def build(registry: Registry[Callable[..., Any]], name: str, **kwargs: Any) -> Any:
    """Look up ``name`` in ``registry`` and call it with ``kwargs``."""
    return registry.get(name)(**kwargs)
