"""A data file validated once: one streaming pass checks every record (`scitune.data.record_check`), the verdict is
cached by the file's content and everything else that decides it (`scitune.data.validation_cache`), and training
reads each record back by its byte span when it needs it, as LLaVA's lazy dataset does."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scitune.data.dataset import ImageCheck, Problem, Sample, SupervisedDataset, ValidationReport, check_record
from scitune.data.record_check import RecordChecker
from scitune.data.records import Part, RecordFile, RecordReader, progress_bar
from scitune.images import image_size
from scitune.io import DataError

log = logging.getLogger(__name__)


@dataclass
class Validated:
    """The verdict on a data file: the report of bad records, and where each usable record lies with its length."""

    path: Path
    report: ValidationReport
    starts: np.ndarray
    """Byte offset where each usable record starts (int64)."""
    ends: np.ndarray
    """Byte offset just past each usable record (int64)."""
    numbers: np.ndarray
    """Each usable record's line (JSONL) or index in the list (``.json``), for messages (int64)."""
    lengths: np.ndarray
    """Each usable record's tokens (int32): exact where ``exact``, otherwise a proven upper bound that fits."""
    exact: np.ndarray
    """Whether each length is exact (bool)."""
    seconds: float = 0.0
    """How long the validation took (when it was not read from the cache)."""
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def n_exact(self) -> int:
        return int(self.exact.sum())

    def summary(self) -> str:
        """One line: how the records were checked."""
        how = "read from the cache" if self.from_cache else f"in {self.seconds:.1f} s"
        return (
            f"checked {self.report.total} records {how}: {self.n_exact} usable records counted exactly, "
            f"{len(self) - self.n_exact} shown to fit by an upper bound on their tokens"
        )


def validate_records(
    path: str | os.PathLike[str],
    processor: Any,
    image_root: str | os.PathLike[str] | None = None,
    max_length: int = 2048,
    image_placement: str = "as-is",
    image_check: ImageCheck | None = None,
    progress: bool = False,
    full: bool = False,
    cache: str = "use",
    workers: int | None = None,
) -> Validated:
    """Check every record of ``path`` as training will use it.

    Args:
        path: JSONL or LLaVA ``.json`` list file.
        processor: the processor training uses.
        image_root: folder of relative image paths (default: the data file's folder).
        max_length: the context; a longer record is bad.
        image_placement: --data.image_placement.
        image_check: pixel limit and whether image paths may leave the root.
        progress: show a progress bar over the file's bytes (on a terminal).
        full: the old thorough way: decode every image in full and tokenize every record (never cached).
        cache: ``use`` the cached verdict when there is one, ``refresh`` it (check again and store), or ``off``.
        workers: processes that check parts of a large file side by side (default: `default_workers`); the
            verdict is the same for any number.

    Returns:
        The `Validated` verdict; its report lists every bad record with file, line (or record number), id and
        problem, as `scitune.data.dataset.validate_file` does.
    """
    from scitune.data import validation_cache

    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    check = image_check or ImageCheck()
    file = RecordFile(path)
    start, stat = time.perf_counter(), file.path.stat()  # a file that changes before the end is not cached
    key = entry = None
    if cache != "off" and not full:
        key = validation_cache.cache_key(file.path, processor, root, max_length, image_placement, check)
        if cache == "use":
            entry = validation_cache.load(key)
    if entry is not None:
        found = Validated(path, **entry, from_cache=True)
        found.seconds = time.perf_counter() - start
        return found
    args = (processor, root, max_length, image_placement, check, full)
    result = _check_all(file, args, progress, default_workers() if workers is None else workers)
    result.seconds = time.perf_counter() - start
    after = file.path.stat()
    if key is not None and (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        validation_cache.store(key, result)
    return result


def default_workers() -> int:
    """Processes for checking a large file: half the CPUs this process may use, at most 4 (1 without ``fork``).
    Each process reads the headers of the images its part names, so a part costs more than its share: on a
    machine without idle CPUs one process is faster."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def _check_all(file: RecordFile, args: tuple, progress: bool, workers: int) -> Validated:
    parts = file.split(workers) if workers > 1 else None
    if parts is None:
        found = [_check(file, RecordChecker(*args), file.scan(progress))]
    else:
        found = _check_parts(file, args, parts, progress)
    total = sum(f[-1] for f in found)
    if not total:
        raise DataError(f"{file.path}: no records (the file is empty)")
    report = ValidationReport(str(file.path), total=total, problems=[p for f in found for p in f[5]])
    arrays = [np.frombuffer(b"".join(f[k] for f in found), dtype=t).copy() for k, t in enumerate("qqqi?")]
    return Validated(file.path, report, *arrays)


_JOB: tuple[RecordFile, tuple, Any] | None = None
"""What the forked workers of `_check_parts` check: the file, the checker's arguments, the shared byte count."""


class _Shared:
    """Progress of a worker: bytes read, added to a count the parent shows."""

    def __init__(self, count: Any):
        self.count = count

    def update(self, n: int) -> None:
        with self.count.get_lock():
            self.count.value += n


def _run_part(part: Part) -> tuple:
    file, args, count = _JOB  # type: ignore[misc]
    return _check(file, RecordChecker(*args), file.scan(part=part, bar=_Shared(count)))


def _check_parts(file: RecordFile, args: tuple, parts: list[Part], progress: bool) -> list[tuple]:
    """Check the parts in forked processes (they share the processor with this one, nothing is pickled but the
    results); the results come back in file order."""
    global _JOB
    ctx = multiprocessing.get_context("fork")
    count = ctx.Value("q", 0)
    _JOB = (file, args, count)
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the workers' tokenizers run without threads (fork-safe)
    try:
        pool = ctx.Pool(len(parts))
    finally:
        _JOB = None
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool, progress_bar(file.path.stat().st_size, progress, f"checking {file.path.name}") as bar:
        pending = pool.map_async(_run_part, parts)
        shown = 0
        while not pending.ready():
            pending.wait(0.25)
            bar.update(count.value - shown)
            shown = count.value
        return pending.get()


def _check(file: RecordFile, checker: RecordChecker, records: Any) -> tuple:
    """``(starts, ends, numbers, lengths, exact, problems, total)`` of some records, the arrays as bytes."""
    starts, ends, numbers, lengths = array("q"), array("q"), array("q"), array("i")
    exact = bytearray()
    problems: list[Problem] = []
    total = 0
    for number, start, end, value in records:
        total += 1
        if isinstance(value, Problem):
            problems.append(value)
            continue
        if not isinstance(value, dict):
            problems.append(Problem(file.location(number), "?", f"expected a JSON object, got {type(value).__name__}"))
            continue
        try:
            n, is_exact = checker.check(value)
        except (ValueError, DataError) as e:
            problems.append(Problem(file.location(number), str(value.get("id", "?")), str(e)))
            continue
        starts.append(start)
        ends.append(end)
        numbers.append(number)
        lengths.append(n)
        exact.append(is_exact)
    return starts.tobytes(), ends.tobytes(), numbers.tobytes(), lengths.tobytes(), bytes(exact), problems, total


class RecordError(DataError):
    """A record that fails when training reads it (the file or an image changed after validation)."""

    def __init__(self, message: str, record_id: str):
        super().__init__(message)
        self.record_id = record_id


class RecordSamples(Sequence[Sample]):
    """The usable records of a `Validated` file, each read, checked and encoded when it is asked for (in data-loader
    workers when there are some). A record that fails then raises `RecordError` naming it."""

    def __init__(
        self,
        validated: Validated,
        processor: Any,
        image_root: Path,
        max_length: int,
        placement: str,
        image_check: ImageCheck,
    ):
        self.file = RecordFile(validated.path)
        self.reader = RecordReader(validated.path)
        self.starts, self.ends, self.numbers = validated.starts, validated.ends, validated.numbers
        self.processor, self.root, self.max_length = processor, image_root, max_length
        self.placement, self.image_check = placement, image_check

    def __len__(self) -> int:
        return len(self.starts)

    def _size(self, path: Path) -> tuple[int, int]:
        return image_size(path, self.image_check.max_pixels)  # the header: the dataset decodes the image next

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        rid = "?"
        try:
            rec = self.reader.read(int(self.starts[i]), int(self.ends[i]))
            if not isinstance(rec, dict):
                raise DataError(f"expected a JSON object, got {type(rec).__name__} (the file changed?)")
            rid = str(rec.get("id", "?"))
            return check_record(
                rec, self.processor, self.root, self.max_length, self.placement, self.image_check, self._size
            )
        except (ValueError, DataError) as e:
            raise RecordError(f"{self.file.location(int(self.numbers[i]))} [id={rid}]: {e}", rid) from None


class LazySupervisedDataset(SupervisedDataset):
    """`SupervisedDataset` over `RecordSamples`: records are read and encoded on access; ``lengths`` (for
    --data.group_by_length) are the validation's counts: exact where it counted exactly, otherwise the proven upper
    bound it used (a cheap, consistent estimate, never tokenized for this)."""

    def __init__(
        self,
        samples: RecordSamples,
        lengths: np.ndarray,
        images: Callable[[list[Any]], dict[str, torch.Tensor]],
        feature_store: Any = None,
        max_pixels: int | None = None,
    ):
        super().__init__(samples, images, feature_store, max_pixels)  # type: ignore[arg-type]
        self._lengths = lengths

    @property
    def lengths(self) -> list[int]:
        return self._lengths.tolist()


def lazy_dataset(
    validated: Validated,
    processor: Any,
    image_root: str | os.PathLike[str] | None,
    max_length: int,
    placement: str = "as-is",
    image_check: ImageCheck | None = None,
    feature_store: Any = None,
) -> LazySupervisedDataset:
    """The training dataset of a `validate_records` verdict (the same settings as the validation)."""
    check = image_check or ImageCheck()
    root = Path(image_root) if image_root else validated.path.parent
    samples = RecordSamples(validated, processor, root, max_length, placement, check)
    return LazySupervisedDataset(samples, validated.lengths, processor.images, feature_store, check.max_pixels)
