"""``report.html``: the demo's ``report.md`` as one self-contained page that opens offline.

The Markdown is rendered with the ``markdown`` package (tables extension); every local image is embedded as a
``data:`` URI and local links stay relative, so the page needs no network and no other file. Links to remote
resources are refused (`remote_references` finds them; a test checks the page has none).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path

from scitune.io import write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; }
code { background: #f6f6f6; padding: 0 3px; }
"""

_SRC = re.compile(r'(<img[^>]*\bsrc=")([^"]+)(")')
_REMOTE = re.compile(r'\b(?:src|href)\s*=\s*["\']?\s*((?:https?:)?//[^"\'\s>]+)', re.IGNORECASE)


def _inline(match: re.Match[str], base: Path) -> str:
    """An ``<img src>`` of a local file as a data: URI (left as it is when the file is missing)."""
    src = match.group(2)
    path = base / src
    if "://" in src or src.startswith("data:") or not path.is_file():
        return match.group(0)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"


def remote_references(html: str) -> list[str]:
    """Every ``src``/``href`` in ``html`` that points at a remote resource (``http(s)://`` or ``//host``)."""
    return _REMOTE.findall(html)


def render_html(markdown_text: str, base: Path, title: str = "scitune demo") -> str:
    """The page of ``markdown_text``, its images (relative to ``base``) embedded."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    body = _SRC.sub(lambda m: _inline(m, base), body)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")  # fmt: skip


def write_html(md_path: Path, html_path: Path) -> Path:
    """Render ``md_path`` (a demo report) to ``html_path``; raise `ValueError` if it would load a remote resource."""
    page = render_html(md_path.read_text(encoding="utf-8"), md_path.parent)
    remote = remote_references(page)
    if remote:
        raise ValueError(
            f"{md_path}: the report links remote resources ({', '.join(remote[:3])}); it must open offline"
        )
    write_text(html_path, page)
    return html_path
