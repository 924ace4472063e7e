"""`scitune checkpoint verify DIR...`: check checkpoints against their manifests (every file's SHA-256, the base
weights they load from their own paths)."""

from __future__ import annotations

from scitune.cli.common import fail, parser


def main(argv: list[str]) -> int:
    from scitune.io import DataError
    from scitune.model.checkpoint import verify_checkpoint

    p = parser(
        "checkpoint",
        "Checkpoint tools.\n\n  scitune checkpoint verify runs/x/final runs/x/checkpoints/step-000100",
    )
    sub = p.add_subcommands(dest="action")
    v = parser("checkpoint verify", "Check every file's size and SHA-256 against the manifest, and the base weights.")
    v.add_argument("folders", nargs="+", help="checkpoint folders")
    sub.add_subcommand("verify", v, help="verify checkpoints (exit 1 if any is damaged)")
    args = p.parse_args(argv)
    damaged = []
    for folder in args.verify.folders:
        try:
            manifest = verify_checkpoint(folder, "full")
        except DataError as e:
            print(f"DAMAGED {e}", flush=True)
            damaged.append(folder)
            continue
        if manifest is None:
            print(f"UNCHECKED {folder}: no manifest (written by an older scitune)", flush=True)
            continue
        size = sum(f["size"] for f in manifest["files"].values())
        bases = ", ".join(sorted(manifest.get("base_weights") or {})) or "none"
        print(f"OK {folder}: {len(manifest['files'])} files ({size / 2**20:.1f} MiB) match; base weights: {bases}")
    if damaged:
        return fail(f"{', '.join(damaged)}: damaged (see above)", 1)
    return 0
