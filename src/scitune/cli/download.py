"""`scitune data download NAME`: fetch a public data release as released (Hugging Face Hub), or, offline or for a
release not on the Hub, say in one line how to get it."""

from __future__ import annotations

import json
from typing import Any

from jsonargparse import ArgumentParser

from scitune.cli.common import parser


def download_parser() -> ArgumentParser:
    """The parser of ``scitune data download``."""
    from scitune.sources.releases import RELEASES

    listing = "\n".join(f"  {name:20s} {r.description}" for name, r in RELEASES.items())
    d = parser("data download", f"Fetch a public release into --out, as released.\n\nReleases:\n{listing}")
    d.add_argument("name", choices=list(RELEASES), help="the release")
    d.add_argument("--out", default=None, help="folder for the files (default: data/<name>)")
    d.add_argument("--images", type=bool, default=False, help="also fetch the image archive (images.zip, 6-27 GB)")
    d.add_argument("--dry_run", type=bool, default=False, help="only print what would be fetched (no network)")
    return d


def download(args: Any) -> int:
    """Run ``scitune data download``: print the plan or what was fetched as JSON."""
    from scitune.sources.releases import download_release

    out = args.out or f"data/{args.name}"
    print(json.dumps(download_release(args.name, out, images=args.images, dry_run=args.dry_run), indent=2))
    return 0
