"""Training-data mixtures: several sources (each its file, reader, image root, transforms and an optional sample
size) drawn with a seed into one record file that trains like a single ``--data.train`` file.

A mixture is ``--data.train`` given as a list of `DataSource` (in a config, or a ``.yaml`` file holding the list).
Each source is read (``format``: ``records`` = canonical JSONL / LLaVA .json, or a converter's reader), its
``transforms`` applied in order (a transform may drop a record), then ``count`` or ``fraction`` of the records drawn
without repeats (``upsample``: repeats when ``count`` is larger) by a generator seeded with ``--data.sample_seed`` and
the source's name, so adding a source never changes what another draws. Records keep their file order; their ids
become ``name/id``, and image paths are rewritten relative to the common folder of all sources' image roots (an
absolute path, or one that leaves its own root through '..', is refused first, as for one file). The run folder
gets ``mixture/train.jsonl`` (what trains), ``mixture/ids.json`` (the chosen ids per source, as in the source),
``mixture/positions.json`` (where each chosen record is in its source) and ``mixture/mixture.json`` (the summary).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scitune.config.schema import DEFAULT_IMAGE_TOKEN, DataSource, data_sources
from scitune.data.conversation import from_messages, record_images
from scitune.io import DataError, read_records, write_json, write_jsonl
from scitune.registry import Registry

log = logging.getLogger(__name__)

Located = list[tuple[str, dict[str, Any]]]
"""Records each with its location (``file:line`` or ``file: record #i``) for messages."""
Reader = Callable[[str], Located]
TRANSFORMS: Registry[Callable[[dict[str, Any]], dict[str, Any] | None]] = Registry("data transform")
"""Named record transforms of a mixture source: a record in, the new record (or None: drop it) out."""
MIXTURE_DIR = "mixture"

DETAIL_QUESTIONS: tuple[str, ...] = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
)
"""LLaVA's 16 detail-description questions (``detail_describe_instructions``; SciTune's Table 7), in order."""
DETAIL_PROMPTS = frozenset(DETAIL_QUESTIONS)
"""The detailed-description instructions of LLaVA-Instruct's ``detail_23k`` (LLaVA paper, Table 9)."""


def _without_token(text: str, token: str = DEFAULT_IMAGE_TOKEN) -> str:
    """``text`` without its image placeholders and the line breaks that set them apart (LLaVA puts ``<image>\\n``
    first or ``\\n<image>`` last)."""
    if token not in text:
        return text
    return text.replace(token + "\n", "").replace("\n" + token, "").replace(token, "").strip()


@TRANSFORMS.register("strip-images")
def strip_images(record: dict[str, Any]) -> dict[str, Any]:
    """The record as text only: no image, every ``<image>`` placeholder (and its line break) removed, text kept."""
    out = {k: v for k, v in record.items() if k not in ("image", "images")}
    out["conversations"] = [{**t, "value": _without_token(t["value"])} for t in record["conversations"]]
    return out


def llava_group(record: dict[str, Any]) -> str:
    """Which LLaVA-Instruct-158K group a record belongs to: ``detail`` (one exchange whose instruction is one of
    `DETAIL_PROMPTS`), ``conversation`` (more than one exchange) or ``complex-reasoning`` (one other exchange).

    This reads the structure of LLaVA's three released files (detail_23k, conversation_58k, complex_reasoning_77k);
    a one-exchange conversation would count as complex reasoning, so use those files themselves where you have them.
    """
    human = [t["value"] for t in record["conversations"] if t["from"] in ("human", "user")]
    if len(human) > 1:
        return "conversation"
    return "detail" if human and _without_token(human[0]) in DETAIL_PROMPTS else "complex-reasoning"


def _group_filter(group: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def keep(record: dict[str, Any]) -> dict[str, Any] | None:
        return record if llava_group(record) == group else None

    keep.__doc__ = f"Keep the LLaVA-Instruct records of the {group} group (`llava_group`); drop the rest."
    return keep


for _group in ("conversation", "detail", "complex-reasoning"):
    TRANSFORMS.add(f"llava-group-{_group}", _group_filter(_group))


@dataclass
class Mixture:
    """The drawn records of every source, ready to write."""

    records: list[dict[str, Any]]
    image_root: str
    """The folder the records' image paths are relative to."""
    chosen: dict[str, list[str]] = field(default_factory=dict)
    """Per source name, the ids drawn (as in the source; repeats of an upsampled record suffixed ``#k``)."""
    positions: dict[str, list[int]] = field(default_factory=dict)
    """Per source name, the position of each drawn record among those its reader gives (0-based): exact where a
    source repeats ids (LLaVA-Instruct-158K holds one image's records of all three groups under one id)."""
    summary: list[dict[str, Any]] = field(default_factory=list)


def mixture_sources(train: Any) -> list[DataSource] | None:
    """The sources of ``--data.train``, or None when it is one data file (trained as before, no mixture).

    A ``.yaml``/``.yml`` path is a file holding the list of sources; their relative paths are taken from its folder.
    """
    if isinstance(train, list):
        sources = data_sources(train)
    elif isinstance(train, str) and train.endswith((".yaml", ".yml")):
        sources = _sources_file(Path(train))
    else:
        return None
    if not sources:
        raise ValueError("--data.train: the mixture lists no sources")
    names = [source_name(s, i) for i, s in enumerate(sources)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--data.train: two sources are named {twice[0]!r}; give each a distinct 'name'")
    return sources


def _sources_file(path: Path) -> list[DataSource]:
    import yaml

    from scitune.io import check_input_file, read_text

    check_input_file(path, "mixture file")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: a mixture file holds a YAML list of sources (path, format, count, ...)")
    try:
        sources = data_sources(data)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: {e}") from None
    for s in sources:
        s.path = str(path.parent / s.path)
        if s.image_root:
            s.image_root = str(path.parent / s.image_root)
    return sources


def source_name(source: DataSource, index: int = 0) -> str:
    """The source's name: its ``name``, else its file's stem."""
    return source.name or Path(source.path).stem or f"source{index}"


def source_spec(source: DataSource, default_root: str | None = None) -> dict[str, Any]:
    """What decides a source's records besides its file's content (the path itself may move)."""
    spec = {k: v for k, v in asdict(source).items() if k != "path"}
    spec["image_root"] = source.image_root or default_root
    return spec


def mixture_fingerprint(sources: list[DataSource], seed: int, default_root: str | None) -> dict[str, Any]:
    """The content hash of every source file with its settings, and the sampling seed: a resume of a mixture run
    refuses when any of them changed."""
    from scitune.fingerprint import fingerprint_data_file

    out = []
    for i, s in enumerate(sources):
        fp = fingerprint_data_file(s.path)
        out.append(
            {"name": source_name(s, i), "size": fp["size"], "sha256": fp["sha256"], **source_spec(s, default_root)}
        )
    return {"mixture": {str(i): x for i, x in enumerate(out)}, "sample_seed": seed}


def read_source_records(path: str) -> Located:
    """The ``records`` format: canonical JSONL or a LLaVA .json list, read as ``--data.train`` reads one file."""
    from scitune.io import check_input_file

    check_input_file(path, "data file")
    return read_records(path)


def draw(n: int, source: DataSource, name: str, seed: int) -> list[int]:
    """Indices (into the source's ``n`` records after transforms) to train on, in file order (repeats follow)."""
    if source.count is None and source.fraction is None:
        return list(range(n))
    want = source.count if source.count is not None else round(n * source.fraction)
    if want < 1:
        raise DataError(f"--data.train source {name!r}: fraction {source.fraction} of {n} records draws none")
    rng = random.Random(f"{seed}/{name}")
    if want <= n:
        return sorted(rng.sample(range(n), want))
    if not source.upsample:
        raise DataError(
            f"--data.train source {name!r}: count {want} but it has {n} records (after its transforms); lower the "
            "count, or set upsample: true to repeat records"
        )
    copies, rest = divmod(want, n)
    return list(range(n)) * copies + sorted(rng.sample(range(n), rest))


def _canonical(where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        rec = from_messages(raw)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None
    if not isinstance(rec.get("conversations"), list):
        raise DataError(f"{where}: needs a 'conversations' (or 'messages') list")
    return rec


def build_mixture(
    sources: list[DataSource],
    seed: int,
    reader_for: Callable[[str], Reader],
    default_root: str | None = None,
    allow_outside_root: bool = False,
) -> Mixture:
    """Read, transform and draw every source; image paths made relative to the sources' common image folder.

    Args:
        sources: the mixture (`mixture_sources`).
        seed: ``--data.sample_seed``.
        reader_for: the reader of a ``format`` (raises ``KeyError`` naming the known ones).
        default_root: ``--data.image_root``, the image root of a source that names none (else its file's folder).
        allow_outside_root: ``--data.allow_outside_root``: image paths may leave their source's image root.
    """
    drawn: list[tuple[str, Path, list[dict[str, Any]]]] = []
    mix = Mixture(records=[], image_root="")
    for i, src in enumerate(sources):
        name = source_name(src, i)
        try:
            read = reader_for(src.format)
            fns = [TRANSFORMS.get(t) for t in src.transforms]
        except KeyError as e:
            raise DataError(f"--data.train source {name!r}: {e.args[0]}") from None
        kept, places = [], []
        for place, (where, raw) in enumerate(read(src.path)):
            rec = _canonical(where, raw)
            for fn in fns:
                rec = fn(rec) if rec is not None else None
            if rec is not None:
                kept.append(rec)
                places.append(place)
        if not kept:
            raise DataError(f"--data.train source {name!r}: {src.path}: no records left (after its transforms)")
        picks = draw(len(kept), src, name, seed)
        seen: dict[int, int] = {}
        out, ids = [], []
        for j in picks:
            rec, k = kept[j], seen.get(j, 0)
            seen[j] = k + 1
            rid = str(rec.get("id", j)) + (f"#{k}" if k else "")
            ids.append(rid)
            out.append({**rec, "id": f"{name}/{rid}"})
        root = Path(os.path.abspath(src.image_root or default_root or Path(src.path).parent))
        drawn.append((name, root, out))
        mix.chosen[name] = ids
        mix.positions[name] = [places[j] for j in picks]
        images = sum(bool(record_images(r)) for r in out)
        mix.summary.append({"name": name, "path": src.path, "format": src.format, "read": len(kept), "drawn": len(out),
                            "with_image": images, "text_only": len(out) - images})  # fmt: skip
    roots = [str(root) for _, root, recs in drawn if any(record_images(r) for r in recs)]
    common = Path(os.path.commonpath(roots)) if roots else drawn[0][1]
    mix.image_root = str(common)
    for name, root, recs in drawn:
        prefix = os.path.relpath(root, common)
        for rec in recs:
            paths = record_images(rec)
            if not paths:
                continue
            try:
                moved = [_under(prefix, root, p, allow_outside_root) for p in paths]
            except DataError as e:
                raise DataError(f"--data.train source {name!r}, record {rec['id']!r}: {e}") from None
            rec["image"] = moved[0] if len(moved) == 1 else moved
        mix.records.extend(recs)
    return mix


def _under(prefix: str, root: Path, path: str, allow_outside: bool) -> str:
    """``path`` (relative to ``root``) relative to the common root that ``root`` is ``prefix`` below; an absolute path
    or one that leaves ``root`` through '..' is refused unless ``allow_outside`` (checked by name: validation then
    resolves symlinks against the common root)."""
    if os.path.isabs(path):
        if not allow_outside:
            raise DataError(
                f"image path {path!r} is absolute; image paths are relative to the image root {root} "
                "(pass --data.allow_outside_root true to read it anyway)"
            )
        return path
    norm = os.path.normpath(path)
    if not allow_outside and (norm == ".." or norm.startswith("../")):
        raise DataError(
            f"image path {path!r} leads outside the image root {root} (through '..'); "
            "pass --data.allow_outside_root true to read it anyway"
        )
    return norm if prefix == "." else os.path.normpath(os.path.join(prefix, norm))


def write_mixture(mix: Mixture, folder: Path, seed: int, is_main: bool) -> Path:
    """Write the mixture's records (every process: the same bytes, atomically) and, on the main process, the
    chosen ids, their positions in the sources and the summary; return the records file."""
    path = folder / "train.jsonl"
    write_jsonl(path, mix.records)
    if is_main:
        write_json(folder / "ids.json", mix.chosen, indent=None)
        write_json(folder / "positions.json", mix.positions, indent=None)
        write_json(folder / "mixture.json", {"sample_seed": seed, "image_root": mix.image_root,
                                             "records": len(mix.records), "sources": mix.summary})  # fmt: skip
    return path
