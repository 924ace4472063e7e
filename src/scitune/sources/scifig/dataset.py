"""SciFig on disk: the dataset layout rendered by worker processes (the same files for any number of workers), the
train/val/test split of a figure count, and the preview gallery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from scitune.io import DataError, atomic_path, read_json, write_json, write_jsonl
from scitune.sources import scifig

Task = tuple[int, str, int, str, int, int, list[str], bool]  # (seed, split, index, type, size, questions, kinds, fixed)


def split_counts(n: int) -> dict[str, int]:
    """Split ``n`` figures 80/10/10: val and test get ``n // 10`` each, train the rest."""
    if n < 0:
        raise ValueError(f"the number of figures must be >= 0, got {n}")
    return {"train": n - 2 * (n // 10), "val": n // 10, "test": n // 10}


def render_to_disk(task: Task, out: Path) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    """Draw one figure and its questions, write ``out/images/<id>.png``; return its id, record and problems."""
    seed, split, index, figure_type, image_size, n_questions, kinds, fixed = task
    fig = scifig.make_figure(seed, index, split, figure_type, image_size)
    with atomic_path(out / "images" / f"{fig.id}.png") as tmp:
        fig.image.save(tmp, format="PNG")
    return fig.id, fig.to_record(), scifig.make_questions(fig, n_questions, tuple(kinds), fixed)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _shards(tasks: list[Task], out: Path, workers: int, bar: tqdm) -> list[tuple[str, dict, dict]]:
    """`render_to_disk` over ``tasks`` in ``workers`` fresh interpreters (``python -m`` this module), each taking
    every ``workers``-th task; results come back in task order. Fresh processes share no matplotlib state (forked
    ones share open font files) and need no importable ``__main__`` (spawned ones do)."""
    shard_dir = out / ".scifig-shards"
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir(parents=True)
    (shard_dir / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the scitune package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    procs = []
    try:
        for k in range(workers):
            with open(shard_dir / f"shard-{k}.log", "wb") as log:
                cmd = [sys.executable, "-m", __name__, str(shard_dir), str(k), str(workers), str(out)]
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
            bar.update(sum(_lines(shard_dir / f"shard-{k}.jsonl") for k in range(workers)) - bar.n)
        for k, p in enumerate(procs):
            if p.returncode:
                tail = (shard_dir / f"shard-{k}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SciFig worker {k} failed (exit {p.returncode}):\n{tail}")
        done = [[json.loads(line) for line in (shard_dir / f"shard-{k}.jsonl").read_text("utf-8").splitlines()]
                for k in range(workers)]  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(shard_dir, ignore_errors=True)
    bar.update(len(tasks) - bar.n)
    return [tuple(done[i % workers][i // workers]) for i in range(len(tasks))]


def _shard_main(shard_dir: str, k: str, workers: str, out: str) -> None:
    """Worker entry point: render tasks ``k, k + workers, ...`` and write one JSON line per figure."""
    tasks = json.loads((Path(shard_dir) / "tasks.json").read_text(encoding="utf-8"))
    with open(Path(shard_dir) / f"shard-{k}.jsonl", "w", encoding="utf-8") as f:
        for task in tasks[int(k) :: int(workers)]:
            f.write(json.dumps(render_to_disk(tuple(task), Path(out)), ensure_ascii=False) + "\n")
            f.flush()


FIGURES_PER_WORKER = 40


def _rendered(tasks: list[Task], out: Path, workers: int, bar: tqdm) -> list[tuple[str, dict, dict]]:
    """`render_to_disk` over ``tasks``, in this process or in ``workers`` processes; results in task order.

    A worker costs a Python start and a matplotlib import (~2 s, about 40 figures' rendering), so each takes at
    least `FIGURES_PER_WORKER` figures: a small set renders here, in this process."""
    workers = min(workers, len(tasks) // FIGURES_PER_WORKER)
    if workers <= 1:
        results = []
        for task in tasks:
            results.append(render_to_disk(task, out))
            bar.update(1)
        return results
    return _shards(tasks, out, min(workers, len(tasks)), bar)


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` atomically (a copy where links are not supported)."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _existing_manifest(path: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest at ``path`` if it describes ``wanted``; otherwise remove it (files are about to change)."""
    if not path.exists():
        return None
    try:
        old = read_json(path)
    except DataError:
        old = None
    if isinstance(old, dict) and old.get("config") == wanted and old.get("format_version") == scifig.FORMAT_VERSION:
        return old
    path.unlink()  # never leave a manifest that describes other files
    return None


def write_scifig(out_dir: str | os.PathLike[str], config: scifig.SciFigConfig, progress: bool, workers: int) -> dict:
    """`scifig.generate_scifig`: render every figure (``workers`` processes) and write the layout in order."""
    out = Path(out_dir)
    wanted = {**asdict(config), "types": list(config.types), "kinds": list(config.kinds)}
    manifest_path = out / "manifest.json"
    old = _existing_manifest(manifest_path, wanted)
    if old is not None:
        return old
    counts = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    tasks = [(config.seed, split, i, config.types[i % len(config.types)], config.image_size,
              config.questions_per_figure, list(config.kinds), config.fixed_choices)
             for split in scifig.SPLITS for i in range(counts[split])]  # fmt: skip
    problems: dict[str, dict[str, Any]] = {}
    pid_splits: dict[str, list[str]] = {s: [] for s in scifig.SPLITS}
    type_counts = {s: dict.fromkeys(config.types, 0) for s in scifig.SPLITS}
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in scifig.SPLITS}
    with tqdm(total=len(tasks), desc="SciFig", unit="fig", disable=not progress) as bar:
        results = _rendered(tasks, out, workers, bar)
    for (_, split, *_), (fig_id, record, fig_problems) in zip(tasks, results):
        png = out / "images" / f"{fig_id}.png"
        records[split].append(record)
        type_counts[split][record["figure_type"]] += 1
        for pid, prob in fig_problems.items():
            if prob["image"]:
                _link(png, out / "scienceqa" / "images" / pid / "image.png")
            problems[pid] = prob
            pid_splits[split].append(pid)
    for split in scifig.SPLITS:
        write_jsonl(out / "scicap" / f"{split}.jsonl", records[split])
    write_json(out / "scienceqa" / "problems.json", problems, indent=None)
    write_json(out / "scienceqa" / "pid_splits.json", pid_splits)
    contexts = {"image": 0, "text": 0, "none": 0}
    for p in problems.values():
        contexts["image" if p["image"] else ("text" if p["hint"] else "none")] += 1
    manifest = {"name": "scifig", "format_version": scifig.FORMAT_VERSION, "config": wanted, "counts": counts,
                "type_counts": type_counts, "problems": {s: len(v) for s, v in pid_splits.items()},
                "problem_contexts": contexts}  # fmt: skip
    write_json(manifest_path, manifest)
    return manifest


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels, or PIL's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):  # pragma: no cover
        return ImageFont.load_default()


def render_gallery(
    path: str | os.PathLike[str],
    seed: int = 0,
    per_type: int = 4,
    image_size: int = 224,
    types: tuple[str, ...] = scifig.FIGURE_TYPES,
) -> Path:
    """Write a PNG grid, one row per figure type with ``per_type`` figures, atomically.

    The figures are the train figures of a dataset generated with ``seed``, ``image_size`` and ``types``: figure
    ``i`` has type ``types[i % len(types)]``, so row ``k`` shows train figures ``k``, ``k + len(types)``, ...

    Args:
        path: Output PNG.
        seed: Dataset seed.
        per_type: Figures per row.
        image_size: Side of each figure in pixels (drawn unscaled).
        types: Figure types, in the dataset's order.

    Returns:
        The path written.
    """
    if per_type < 1:
        raise ValueError(f"per_type must be >= 1, got {per_type}")
    pad, label_w = 8, 150
    font = _font(18)
    grid = Image.new("RGB", (label_w + per_type * (image_size + pad) + pad, len(types) * (image_size + pad) + pad),
                     "white")  # fmt: skip
    draw = ImageDraw.Draw(grid)
    for row, figure_type in enumerate(types):
        y = pad + row * (image_size + pad)
        draw.text((pad, y + image_size // 2), figure_type, fill="black", font=font, anchor="lm")
        for col in range(per_type):
            fig = scifig.make_figure(seed, row + col * len(types), "train", figure_type, image_size)
            grid.paste(fig.image, (label_w + pad + col * (image_size + pad), y))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)


if __name__ == "__main__":
    _shard_main(*sys.argv[1:])
