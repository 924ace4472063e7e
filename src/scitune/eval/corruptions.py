"""MSCOCO-C (seed 001's robustness benchmark): the ImageNet-C corruptions (15 types x 5 severities, the
``imagecorruptions`` package) applied on the fly to the images of a captioning or VQA benchmark, scored per
corruption and severity by that benchmark, with a table and a plot (``mscoco-c``)."""

from __future__ import annotations

import sys
import types
import zlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from scitune.eval.benchmark import BENCHMARKS, Benchmark, EvalOptions, Example, ScoreContext
from scitune.io import DataError

__all__ = ["CORRUPTIONS", "CorruptionOptions", "CorruptionBenchmark", "corrupt_image", "load_imagecorruptions"]

CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
"""The 15 ImageNet-C corruptions (``imagecorruptions.get_corruption_names("common")``), in its order."""
CLEAN = "clean"


class _NumpyCompat(types.ModuleType):
    """numpy for imagecorruptions 1.1.2 under numpy 2: forwards everything, and gives back ``np.float_`` (removed in
    numpy 2.0), which its ``fog`` uses. Only that module sees it."""

    def __init__(self, numpy: types.ModuleType) -> None:
        super().__init__("numpy")
        self._np = numpy

    def __getattr__(self, name: str) -> Any:
        if name == "float_":
            return self._np.float64
        return getattr(self._np, name)


def _pkg_resources_shim() -> None:
    """imagecorruptions 1.1.2 imports ``pkg_resources.resource_filename`` (gone from setuptools 81 on) to find its
    frost images: give it the same lookup (a path beside the module) when setuptools no longer has it."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(module: str, path: str) -> str:
            return str(Path(sys.modules[module].__file__ or "").parent / path)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


def load_imagecorruptions() -> Any:
    """``imagecorruptions.corrupt``, with the fixes its last release (1.1.2) needs on current numpy / scikit-image /
    setuptools, applied to its own module only: ``np.float_``, scikit-image's ``gaussian(multichannel=)`` (now
    ``channel_axis``) and ``pkg_resources``. Raises `scitune.extras.MissingExtra` when it is not installed."""
    from scitune.extras import require

    require("eval mscoco-c", "imagecorruptions")
    _pkg_resources_shim()
    import imagecorruptions
    from imagecorruptions import corruptions as mod

    if not isinstance(mod.np, _NumpyCompat):
        mod.np = _NumpyCompat(mod.np)
        gaussian = mod.gaussian

        def gaussian_compat(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
            if multichannel is not None and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1 if multichannel else None
            return gaussian(image, *args, **kwargs)

        mod.gaussian = gaussian_compat
    return imagecorruptions.corrupt


def corrupt_image(src: str, dst: Path, corruption: str, severity: int, seed: int) -> str:
    """Write ``src`` with ``corruption`` at ``severity`` (1-5) applied as PNG ``dst`` (once: an existing file is
    kept); the noise is seeded from ``seed``, the image path, the corruption and the severity, so a rerun writes the
    same pixels. Returns ``str(dst)``."""
    if dst.is_file():
        return str(dst)
    import numpy as np
    from PIL import Image

    from scitune.io import atomic_path

    corrupt = load_imagecorruptions()
    with Image.open(src) as im:
        pixels = np.asarray(im.convert("RGB"))
    if min(pixels.shape[:2]) < 32:
        raise DataError(f"{src}: {pixels.shape[1]}x{pixels.shape[0]} pixels; the corruptions need at least 32x32")
    key = f"{seed}:{src}:{corruption}:{severity}".encode()
    state = np.random.get_state()
    np.random.seed(zlib.crc32(key))  # imagecorruptions draws from numpy's global generator
    try:
        out = corrupt(pixels, corruption_name=corruption, severity=severity)
    finally:
        np.random.set_state(state)
    h, w = pixels.shape[:2]
    image = Image.fromarray(np.uint8(out)[:h, :w])  # a few corruptions return float arrays or a border
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        image.save(tmp, format="png")
    return str(dst)


@dataclass
class CorruptionOptions(EvalOptions):
    """MSCOCO-C: --data and --base_options are those of the --base benchmark (a captioning or VQA set, e.g. COCO
    captions or VQAv2); each of its images is corrupted per corruption and severity (written into
    <out>/corrupted/) and the benchmark's own score is reported per corruption and severity."""

    base: str = "vqa"
    """The benchmark whose examples are corrupted and whose scoring is used (a generation benchmark with images:
    captioning, caption, vqa, pope, ...)."""
    base_options: dict[str, Any] = field(default_factory=dict)
    """Options of --base besides --data, as JSON (e.g. '{"shots": [0], "blind": false}')."""
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    """Corruptions to apply (default: the 15 ImageNet-C ones)."""
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    """Severities (1-5)."""
    metric: str | None = None
    """The --base summary value tabled and plotted; default its first number."""
    clean: bool = True
    """Also score the uncorrupted images (the reference row)."""
    seed: int = 0
    """Seed of the corruption noise (per image, corruption and severity)."""


@BENCHMARKS.register("mscoco-c")
class CorruptionBenchmark(Benchmark):
    """MSCOCO-C: a captioning or VQA benchmark's score per ImageNet-C corruption and severity (table and plot)."""

    name = "mscoco-c"
    mode = "generate"
    Options = CorruptionOptions
    opts: CorruptionOptions
    requires = ("imagecorruptions",)

    def __init__(self, opts: CorruptionOptions) -> None:
        super().__init__(opts)
        cls = BENCHMARKS.get(opts.base)
        if cls is CorruptionBenchmark or cls.mode != "generate":
            raise ValueError(f"--base must be a generation benchmark with images, got {opts.base!r}")
        known = {f.name for f in fields(cls.Options)}
        unknown = sorted(set(opts.base_options) - known)
        if unknown:
            raise ValueError(f"--base_options: {opts.base} has no option(s) {', '.join(unknown)}")
        bad = [c for c in opts.corruptions if c not in CORRUPTIONS]
        if bad or not opts.corruptions:
            raise ValueError(f"--corruptions must be among {', '.join(CORRUPTIONS)}, got {bad or '[]'}")
        if not opts.severities or any(s not in (1, 2, 3, 4, 5) for s in opts.severities):
            raise ValueError(f"--severities must be among 1-5, got {opts.severities}")
        base = {"data": opts.data, "out": opts.out, "checkpoint": opts.checkpoint, "overwrite": opts.overwrite}
        self.base = cls(cls.Options(**{**base, **opts.base_options}))

    def _groups(self) -> list[tuple[str, int]]:
        groups = [(CLEAN, 0)] if self.opts.clean else []
        return groups + [(c, s) for c in self.opts.corruptions for s in self.opts.severities]

    def examples(self) -> list[Example]:
        from tqdm import tqdm

        from scitune.eval.blind import output_folder

        base = [e for e in self.base.examples() if e.images]
        folder = output_folder(self) / "corrupted"
        images = list(dict.fromkeys(p for e in base for p in e.images))
        names = {p: f"{i:06d}-{Path(p).stem}.png" for i, p in enumerate(images)}
        groups = self._groups()
        done: dict[tuple[str, int], dict[str, str]] = {g: {} for g in groups}
        todo = len(images) * sum(c != CLEAN for c, _ in groups)
        with tqdm(total=todo, desc="mscoco-c: corrupt", unit="img", disable=not self.opts.progress) as bar:
            for corruption, severity in groups:
                if corruption != CLEAN:
                    for p in images:
                        dst = folder / corruption / str(severity) / names[p]
                        done[corruption, severity][p] = corrupt_image(p, dst, corruption, severity, self.opts.seed)
                        bar.update(1)
        # question-major, so that --limit N keeps whole questions under every corruption and severity
        return [
            replace(e, id=f"{c}/{s}/{e.id}", images=[done[c, s].get(p, p) for p in e.images],
                    meta={**e.meta, "corruption": c, "severity": s, "base_id": e.id})
            for e in base for c, s in groups
        ]  # fmt: skip

    def prompt_text(self, example: Example) -> str:
        return self.base.prompt_text(example)

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        table: dict[str, dict[str, float | None]] = {}
        metric = self.opts.metric
        for corruption, severity in self._groups():
            group = [e for e in examples if e.meta["corruption"] == corruption and e.meta["severity"] == severity]
            if not group:
                continue
            preds = {e.meta["base_id"]: predictions[e.id] for e in group if e.id in predictions}
            originals = [replace(e, id=e.meta["base_id"]) for e in group]
            summary = self.base.score(originals, preds, ctx)["summary"]
            if metric is None:
                metric = next((k for k, v in summary.items() if isinstance(v, int | float)), None)
                if metric is None:
                    raise ValueError(f"{self.opts.base}: its summary has no number to table")
            if metric not in summary:
                raise ValueError(f"--metric {metric!r} is not in {self.opts.base}'s summary ({', '.join(summary)})")
            table.setdefault(corruption, {})[str(severity)] = summary[metric]
        corrupted = {c: r for c, r in table.items() if c != CLEAN}
        per_sev = {str(s): _mean([r.get(str(s)) for r in corrupted.values()]) for s in self.opts.severities}
        for row in corrupted.values():
            row["mean"] = _mean([row.get(str(s)) for s in self.opts.severities])
        out_summary: dict[str, Any] = {"mean_corrupted": _mean([r["mean"] for r in corrupted.values()])}
        if CLEAN in table:
            out_summary["clean"] = table[CLEAN]["0"]
        out_summary.update({f"severity_{s}": v for s, v in per_sev.items()})
        out_summary.update({f"{c}_mean": r["mean"] for c, r in corrupted.items()})
        return {"summary": out_summary, "metric": metric, "base": self.opts.base, "table": table,
                "per_severity": per_sev}  # fmt: skip

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        sevs = list(results["per_severity"])
        rows = [[c, *(r.get(s) for s in sevs), r.get("mean")] for c, r in results["table"].items() if c != CLEAN]
        rows.append(["mean", *(results["per_severity"][s] for s in sevs), results["summary"]["mean_corrupted"]])
        clean = results["summary"].get("clean")
        head = f"`{results['base']}` {results['metric']} per ImageNet-C corruption and severity"
        head += f"; uncorrupted: {clean:.2f}.\n\n" if isinstance(clean, int | float) else ".\n\n"
        return head + md_table(["corruption", *(f"severity {s}" for s in sevs), "mean"], rows)

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from scitune.io import atomic_path

        sevs = list(results["per_severity"])
        fig, ax = plt.subplots(figsize=(8, 5))
        for c, row in results["table"].items():
            if c != CLEAN:
                ax.plot([int(s) for s in sevs], [row.get(s) for s in sevs], marker="o", label=c, linewidth=1)
        ax.plot([int(s) for s in sevs], [results["per_severity"][s] for s in sevs], "k-", linewidth=3, label="mean")
        clean = results["summary"].get("clean")
        if isinstance(clean, int | float):
            ax.axhline(clean, color="k", linestyle="--", label="clean")
        ax.set(xlabel="severity", ylabel=results["metric"], title=f"MSCOCO-C: {results['base']}",
               xticks=[int(s) for s in sevs])  # fmt: skip
        ax.legend(fontsize=7, ncol=2, loc="best")
        fig.tight_layout()
        with atomic_path(out_dir / "corruptions.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return ["corruptions.png"]


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float)]
    return sum(nums) / len(nums) if nums else None
