"""The blind baseline shared by the image benchmarks: the same model and questions with every image replaced by a
blank (white) image of the same size, run beside the image run and reported next to it (``--blind``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from scitune.eval.benchmark import Benchmark, Example, ScoreContext

__all__ = [
    "BLIND_PREFIX",
    "BlindBaseline",
    "blank_image",
    "blank_images",
    "blind_table",
    "output_folder",
    "with_blind",
]

T = TypeVar("T", bound=type)

BLIND_PREFIX = "blind/"
"""Id prefix of the blind copy of an example (``blind/<id>``) in predictions.jsonl."""


def blank_image(path: str, folder: Path) -> str:
    """A white RGB image of the size of the image at ``path``, written once as ``folder/blank-<w>x<h>.png``; its
    path (``path`` itself when that image cannot be read: the runner then reports it as missing)."""
    from PIL import Image

    from scitune.io import atomic_path

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError):
        return path
    blank = folder / f"blank-{w}x{h}.png"
    if not blank.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(blank) as tmp:
            Image.new("RGB", (w, h), "white").save(tmp, format="png")
    return str(blank)


def blank_images(paths: list[str], folder: Path, cache: dict[str, str] | None = None) -> list[str]:
    """`blank_image` of each path (``cache``: path -> blank path, shared across calls so each size is read once)."""
    cache = {} if cache is None else cache
    return [cache[p] if p in cache else cache.setdefault(p, blank_image(p, folder)) for p in paths]


def output_folder(bench: Benchmark) -> Path:
    """The run's output folder (the runner's rule), claimed as the runner claims it, so blank images can go in."""
    from scitune.eval.runner import EVAL_WRITES
    from scitune.outputs import claim_output_folder

    opts = bench.opts
    if opts.out:
        out = Path(opts.out)
    elif opts.checkpoint:
        out = Path(opts.checkpoint) / "eval" / bench.name
    else:
        raise ValueError("--blind needs --out or --checkpoint: its blank images are written into the output folder")
    return claim_output_folder(out, "eval", EVAL_WRITES, opts.overwrite)


def blind_table(image: dict[str, Any], blind: dict[str, Any]) -> list[list[Any]]:
    """``[metric, image, blind, image - blind]`` rows of the numeric summary values both runs have."""
    rows = []
    for key, value in image.items():
        other = blind.get(key)
        if isinstance(value, int | float) and isinstance(other, int | float) and not isinstance(value, bool):
            rows.append([key, value, other, value - other])
    return rows


class BlindBaseline:
    """Mixin (listed before the benchmark class) adding ``--blind``: every example with images is asked a second time
    with blank images of the same sizes (id ``blind/<id>``), and the blind run is scored as the benchmark scores
    the image run: ``results["blind"]`` holds its results, ``summary["blind_<metric>"]`` its headline numbers and
    the report puts both side by side. Examples without an image reuse the image run's prediction in the blind
    score (the prompt is the same). A subclass that handles ``--blind`` itself sets ``blind_beside = False``."""

    blind_beside: ClassVar[bool] = True

    def _blind_on(self) -> bool:
        return bool(getattr(self.opts, "blind", False)) and self.blind_beside  # type: ignore[attr-defined]

    def examples(self) -> list[Example]:
        examples = super().examples()  # type: ignore[misc]
        if not self._blind_on() or not any(e.images for e in examples):
            return examples
        folder, cache = output_folder(self), {}  # type: ignore[arg-type]
        copies = [replace(e, id=BLIND_PREFIX + e.id, images=blank_images(e.images, folder, cache),
                          meta={**e.meta, "blind": True}) for e in examples if e.images]  # fmt: skip
        return examples + copies

    def prediction_key(self, record: dict[str, Any], examples_by_id: dict[str, Example]) -> str | None:
        ident = record.get("id")
        if isinstance(ident, str) and ident.startswith(BLIND_PREFIX) and ident in examples_by_id:
            return ident
        return super().prediction_key(record, examples_by_id)  # type: ignore[misc]

    def score(self, examples: list[Example], predictions: dict[str, dict[str, Any]], ctx: ScoreContext) -> dict:
        if not self._blind_on():
            return super().score(examples, predictions, ctx)  # type: ignore[misc]
        image = [e for e in examples if not e.meta.get("blind")]
        blind = [e for e in examples if e.meta.get("blind")]
        own = {k: v for k, v in predictions.items() if not k.startswith(BLIND_PREFIX)}
        results = super().score(image, own, ctx)  # type: ignore[misc]
        if not blind or not self._blind_on():
            return results
        done = {e.id[len(BLIND_PREFIX) :] for e in blind}
        # the blind run over the same questions: blank-image answers, and the image run's for image-less questions
        preds = {k: v for k, v in own.items() if k not in done}
        preds.update({k[len(BLIND_PREFIX) :]: v for k, v in predictions.items() if k.startswith(BLIND_PREFIX)})
        self.scoring_blind = True  # benchmarks may skip image-only extras (figure-type's CLIP baseline) on this pass
        try:
            blind_results = super().score(image, preds, ctx)  # type: ignore[misc]
        finally:
            self.scoring_blind = False
        results["blind"] = blind_results
        results["summary"].update({f"blind_{k}": v for k, v in blind_results["summary"].items()})
        return results

    def report(self, results: dict[str, Any]) -> str:
        from scitune.eval.report import md_table

        text = super().report(results)  # type: ignore[misc]
        if not self._blind_on() or not isinstance(results.get("blind"), dict):
            return text
        summary = {k: v for k, v in results["summary"].items() if not k.startswith("blind_")}
        rows = blind_table(summary, results["blind"]["summary"])
        return (
            text + "\n## Blind baseline\n\nThe same questions with every image replaced by a white image of its size "
            "(image-less questions keep the image run's answer).\n\n"
            + md_table(["metric", "with images", "blind", "difference"], rows)
            + "\n### Blind run\n\n"
            + super().report(results["blind"])  # type: ignore[misc]
        )

    def plots(self, results: dict[str, Any], out_dir: Path) -> list[str]:
        names = super().plots(results, out_dir)  # type: ignore[misc]
        if not self._blind_on() or not isinstance(results.get("blind"), dict):
            return names
        from scitune.eval.plots import bar_chart

        summary = {k: v for k, v in results["summary"].items() if not k.startswith("blind_")}
        rows = blind_table(summary, results["blind"]["summary"])[:12]
        if rows:
            series = {"with images": [r[1] for r in rows], "blind": [r[2] for r in rows]}
            bar_chart(out_dir / "blind.png", [r[0] for r in rows], series, title=f"{self.name}: images vs blind")  # type: ignore[attr-defined]
            names.append("blind.png")
        return names


def with_blind(cls: T) -> T:
    """Class decorator: ``cls`` with `BlindBaseline` wrapped around its methods (same name, module and docstring),
    so that ``--blind`` (a ``blind: bool`` field of its options) runs the blind baseline beside the image run."""
    attrs = {"__doc__": cls.__doc__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls.__name__, (BlindBaseline, cls), attrs)  # type: ignore[return-value]
