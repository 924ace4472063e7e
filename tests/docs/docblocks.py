"""The command blocks of README.md and docs/*.md, with the directives that say how the docs test runs them.

A ```bash block runs as written, in order with the other blocks of its file, in one fresh folder per file. An HTML
comment on the line before the fence changes that:

- ``<!-- docs-test: skip gpu -->`` / ``<!-- docs-test: skip network -->``: not run here (it needs a GPU, or a
  download from a model hub / package index); no other reason is accepted.
- ``<!-- docs-test: background 8000 -->``: a server: started in the background, waited for until it answers on
  that port of 127.0.0.1, and stopped after the file's last block.
- ``<!-- docs-test: in-repo -->``: a command about the repository itself (a script under ``tests/`` or
  ``benchmarks/``): run in the repository's root instead of the fresh folder.

Other fences (```text, ```yaml, ...) are listings, not commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_REASONS = ("gpu", "network")
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    doc: str
    line: int
    code: str
    skip: str | None = None
    background_port: int | None = None
    in_repo: bool = False

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The ```bash blocks of ``path``, with their directives."""
    text = path.read_text(encoding="utf-8")
    out: list[Block] = []
    for m in _FENCE.finditer(text):
        if m.group(1) not in ("bash", "sh", "shell"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        block = Block(str(path.relative_to(REPO)), line, m.group(2))
        d = _DIRECTIVE.search(before)
        if d:
            words = d.group(1).split()
            if words[:1] == ["skip"] and len(words) == 2:
                block.skip = words[1]
            elif words[:1] == ["background"] and len(words) == 2 and words[1].isdigit():
                block.background_port = int(words[1])
            elif words == ["in-repo"]:
                block.in_repo = True
            else:
                raise ValueError(f"{block}: unknown docs-test directive {d.group(1)!r}")
        out.append(block)
    return out
