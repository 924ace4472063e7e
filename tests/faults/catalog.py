"""The malformed inputs of the fault suite: each case builds its input in a fresh folder and gives the command line;
the suite checks that scitune ends with one error line naming what the case names, a non-zero exit, and no file lost
or half-written. ``python tests/faults/catalog.py`` prints the table of docs/reliability.md."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class Ctx:
    """One case's folder: a good data file with its images, a checkpoint and a training config to break."""

    tmp: Path
    ckpt: Path
    base: dict
    big_png: Path

    @property
    def root(self) -> Path:
        return self.tmp / "data"

    def record(self, image: object = "img0.png", question: str = "<image>\nWhat color is this?", **kw) -> dict:
        rec = {
            "id": "r0",
            "image": image,
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "The image is red."}],
        }
        rec.update(kw)
        return {k: v for k, v in rec.items() if v is not None}

    def jsonl(self, *records: object, name: str = "bad.jsonl") -> Path:
        path = self.root / name
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
        return path

    def latin1_line2(self) -> Path:
        """A data file whose line 2 holds a Latin-1 'é' (not UTF-8)."""
        bad = json.dumps(self.record(question="<image>\ncaf\u00e9?"), ensure_ascii=False).encode("latin-1")
        return self.raw("l.jsonl", json.dumps(self.record()).encode() + b"\n" + bad + b"\n")

    def raw(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def fifo(self, name: str) -> Path:
        path = self.root / name
        os.mkfifo(path)
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path

    def truncated_png(self, name: str = "trunc.png") -> Path:
        good = (self.root / "img0.png").read_bytes()
        return self.raw(name, good[: len(good) // 2])

    def big(self, name: str = "big.png") -> Path:
        path = self.root / name
        shutil.copyfile(self.big_png, path)
        return path

    def cfg(self, **train) -> Path:
        from faultkit import write_run_config

        data = self.root / "data.jsonl"
        return write_run_config(self.tmp, self.base, data, stage="align", name="run.yaml", max_steps=1, **train)

    def damaged_ckpt(self) -> Path:
        ck = shutil.copytree(self.ckpt, self.tmp / "damaged-ckpt")
        data = bytearray((ck / "projector.safetensors").read_bytes())
        data[-2] ^= 0xFF
        (ck / "projector.safetensors").write_bytes(bytes(data))
        return ck

    def incomplete_ckpt(self) -> Path:
        ck = shutil.copytree(self.ckpt, self.tmp / "incomplete-ckpt")
        (ck / "COMPLETE").unlink()
        return ck

    def users_folder(self, name: str = "out") -> Path:
        out = self.tmp / name
        out.mkdir()
        (out / "notes.md").write_text("mine")
        return out

    def sqa(self) -> Path:
        """A two-problem ScienceQA folder (problems.json + pid_splits.json)."""
        folder = self.tmp / "sqa"
        folder.mkdir()
        problems = {
            str(i): {
                "question": "Which is a mammal?",
                "choices": ["ant", "cow"],
                "answer": 1,
                "hint": "",
                "image": None,
                "lecture": "L.",
                "solution": "S.",
                "subject": "natural science",
                "grade": "grade2",
                "category": "Animals",
                "topic": "biology",
                "skill": "x",
                "task": "closed choice",
                "split": "test",
            }
            for i in (1, 2)
        }
        (folder / "problems.json").write_text(json.dumps(problems))
        (folder / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"], "train": [], "val": []}))
        return folder


@dataclass
class Case:
    """One malformed input: what it is, the command line that gets it, what the error line must name."""

    id: str
    command: str
    what: str
    argv: Callable[[Ctx], list[str]]
    names: tuple[str, ...] = ()
    """Substrings of the error line (or, for ``data validate``, of its report)."""
    code: int | None = None
    extra: dict = field(default_factory=dict)


def big_png(path: Path) -> Path:
    """A real 12000 x 12000 PNG (bilevel, so it is small on disk; decoded as RGB it would take 432 MB)."""
    Image.new("1", (12000, 12000)).save(path, optimize=False)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header, with one short IDAT (a decompression bomb's shape: a decoder would
    allocate width x height x 3 bytes before finding out the data is missing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _validate(ctx: Ctx, data: Path, *extra: str) -> list[str]:
    return [
        "data",
        "validate",
        "--data",
        str(data),
        "--checkpoint",
        str(ctx.ckpt),
        "--image_root",
        str(ctx.root),
        *extra,
    ]


def _train(ctx: Ctx, *extra: str, data: Path | None = None, **train) -> list[str]:
    argv = ["train", "--config", str(ctx.cfg(**train)), "--train.out_dir", str(ctx.tmp / "run")]
    if data is not None:
        argv += ["--data.train", str(data)]
    return argv + list(extra)


def _gen(ctx: Ctx, *extra: str, ckpt: Path | None = None) -> list[str]:
    return ["generate", "--checkpoint", str(ckpt or ctx.ckpt), "--prompt", "What is this?", *extra]


def _img_record(ctx: Ctx, image: object) -> Path:
    return ctx.jsonl(ctx.record(image=image))


def _sqa_eval(ctx: Ctx, preds: Path, *extra: str) -> list[str]:
    out = str(ctx.tmp / "eval")
    return [
        "eval",
        "scienceqa",
        "--predictions",
        str(preds),
        "--data",
        str(ctx.sqa()),
        "--split",
        "test",
        "--out",
        out,
        *extra,
    ]


def _convert(ctx: Ctx, name: str, src: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["convert", name, "--src", str(src), "--out", str(out or ctx.tmp / "conv" / "out.jsonl"), *extra]


SCICAP = {"id": "f1", "image": "f1.png", "caption": "A plot of x.", "figure_type": "Graph Plot"}
LLAVA = [{"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]

CASES: list[Case] = [
    # ---------------------------------------------------------------- data validate
    Case(
        "validate-missing-file",
        "data validate",
        "data file does not exist",
        lambda c: _validate(c, c.root / "nope.jsonl"),
        ("nope.jsonl", "not found"),
    ),
    Case(
        "validate-folder",
        "data validate",
        "a folder given as the data file",
        lambda c: _validate(c, c.folder("adir")),
        ("adir", "is a folder"),
    ),
    Case(
        "validate-fifo",
        "data validate",
        "a FIFO given as the data file (never opened, no hang)",
        lambda c: _validate(c, c.fifo("pipe.jsonl")),
        ("pipe.jsonl", "not a regular file"),
    ),
    Case(
        "validate-empty",
        "data validate",
        "an empty data file",
        lambda c: _validate(c, c.raw("e.jsonl", b"")),
        ("e.jsonl", "no records"),
    ),
    Case(
        "validate-blank-lines",
        "data validate",
        "a data file of blank lines only",
        lambda c: _validate(c, c.raw("b.jsonl", b"\n \n\n")),
        ("b.jsonl", "no records"),
    ),
    Case(
        "validate-non-utf8",
        "data validate",
        "a Latin-1 byte in line 2",
        lambda c: _validate(c, c.latin1_line2()),
        ("l.jsonl:2", "not UTF-8"),
    ),
    Case(
        "validate-binary",
        "data validate",
        "a binary file (a PNG) given as data",
        lambda c: _validate(c, c.raw("x.jsonl", (c.root / "img0.png").read_bytes())),
        ("x.jsonl:1", "not UTF-8"),
    ),
    Case(
        "validate-bad-json-line",
        "data validate",
        "a malformed JSON line",
        lambda c: _validate(c, c.jsonl(c.record(), '{"id": "r1", "image": ')),
        ("bad.jsonl:2", "malformed JSON"),
    ),
    Case(
        "validate-bad-json-list",
        "data validate",
        "a .json list with a syntax error",
        lambda c: _validate(c, c.raw("l.json", b'[{"id": 1},\n {"id": ]')),
        ("l.json:2", "malformed JSON"),
    ),
    Case(
        "validate-not-object",
        "data validate",
        "a line that is a JSON list, not an object",
        lambda c: _validate(c, c.jsonl([1, 2])),
        ("bad.jsonl:1", "expected a JSON object"),
    ),
    Case(
        "validate-image-missing",
        "data validate",
        "an image file that does not exist",
        lambda c: _validate(c, _img_record(c, "gone.png")),
        ("gone.png", "image not found"),
    ),
    Case(
        "validate-image-truncated",
        "data validate",
        "a truncated PNG",
        lambda c: _validate(c, _img_record(c, c.truncated_png().name)),
        ("trunc.png", "cannot read image"),
    ),
    Case(
        "validate-image-empty",
        "data validate",
        "a zero-byte image file",
        lambda c: _validate(c, _img_record(c, c.raw("zero.png", b"").name)),
        ("zero.png", "cannot read image"),
    ),
    Case(
        "validate-image-text",
        "data validate",
        "a text file named .png",
        lambda c: _validate(c, _img_record(c, c.raw("t.png", b"hello").name)),
        ("t.png", "cannot read image"),
    ),
    Case(
        "validate-image-folder",
        "data validate",
        "a folder where the image should be",
        lambda c: _validate(c, _img_record(c, c.folder("imgdir").name)),
        ("imgdir", "is a folder"),
    ),
    Case(
        "validate-image-fifo",
        "data validate",
        "a FIFO as the image (never opened)",
        lambda c: _validate(c, _img_record(c, c.fifo("p.png").name)),
        ("p.png", "not a regular file"),
    ),
    Case(
        "validate-image-huge",
        "data validate",
        "a real 12000x12000 PNG (144 megapixels)",
        lambda c: _validate(c, _img_record(c, c.big().name)),
        ("big.png", "12000x12000", "over the limit"),
    ),
    Case(
        "validate-image-bomb-header",
        "data validate",
        "a PNG header claiming 100000x100000 pixels",
        lambda c: _validate(c, _img_record(c, c.raw("bomb.png", png_header_only(100000, 100000)).name)),
        ("bomb.png", "over the limit"),
    ),
    Case(
        "validate-image-dotdot",
        "data validate",
        "an image path with '..' leaving the image root",
        lambda c: _validate(c, _img_record(c, "../secret.png")),
        ("../secret.png", "outside the image root"),
    ),
    Case(
        "validate-image-absolute",
        "data validate",
        "an absolute image path",
        lambda c: _validate(c, _img_record(c, str(c.root / "img0.png"))),
        ("is absolute",),
    ),
    Case(
        "validate-image-symlink-out",
        "data validate",
        "a symlink in the root pointing outside it",
        lambda c: _validate(c, _img_record(c, _link_out(c))),
        ("link.png", "outside the image root"),
    ),
    Case(
        "validate-image-number",
        "data validate",
        "'image' is a number",
        lambda c: _validate(c, _img_record(c, 7)),
        ("bad.jsonl:1", "image"),
    ),
    Case(
        "validate-no-conversations",
        "data validate",
        "a record without conversations",
        lambda c: _validate(c, c.jsonl({"id": "r0", "image": "img0.png"})),
        ("bad.jsonl:1", "conversations"),
    ),
    Case(
        "validate-conversations-string",
        "data validate",
        "'conversations' is a string",
        lambda c: _validate(c, c.jsonl({"id": "r0", "conversations": "hi"})),
        ("bad.jsonl:1", "conversations"),
    ),
    Case(
        "validate-no-answer",
        "data validate",
        "a conversation without an assistant turn",
        lambda c: _validate(c, c.jsonl({"id": "r0", "conversations": [{"from": "human", "value": "hi"}]})),
        ("bad.jsonl:1",),
    ),
    Case(
        "validate-placeholders",
        "data validate",
        "two <image> placeholders for one image",
        lambda c: _validate(c, c.jsonl(c.record(question="<image><image>\nWhat?"))),
        ("placeholder",),
    ),
    Case(
        "validate-too-long",
        "data validate",
        "a sample longer than --max_length",
        lambda c: _validate(c, c.jsonl(c.record()), "--max_length", "8"),
        ("over the context",),
    ),
    Case(
        "validate-ckpt-missing",
        "data validate",
        "the checkpoint folder does not exist",
        lambda c: ["data", "validate", "--data", str(c.root / "data.jsonl"), "--checkpoint", str(c.tmp / "nock")],
        ("nock", "not found"),
    ),
    Case(
        "validate-ckpt-file",
        "data validate",
        "a file given as the checkpoint",
        lambda c: [
            "data",
            "validate",
            "--data",
            str(c.root / "data.jsonl"),
            "--checkpoint",
            str(c.root / "data.jsonl"),
        ],
        ("not a checkpoint folder",),
    ),
    Case(
        "validate-ckpt-damaged",
        "data validate",
        "a checkpoint with one flipped byte in the projector",
        lambda c: ["data", "validate", "--data", str(c.root / "data.jsonl"), "--checkpoint", str(c.damaged_ckpt())],
        ("projector.safetensors", "SHA-256"),
    ),
    Case(
        "validate-ckpt-incomplete",
        "data validate",
        "a checkpoint without COMPLETE (an interrupted save)",
        lambda c: ["data", "validate", "--data", str(c.root / "data.jsonl"), "--checkpoint", str(c.incomplete_ckpt())],
        ("incomplete",),
    ),
    Case(
        "validate-unknown-template",
        "data validate",
        "an unknown chat template",
        lambda c: _validate(c, c.root / "data.jsonl", "--template", "nope"),
        ("nope",),
    ),
    # ---------------------------------------------------------------- convert
    Case(
        "convert-missing",
        "convert",
        "scicap: the source does not exist",
        lambda c: _convert(c, "scicap", c.root / "none.json"),
        ("none.json", "not found"),
    ),
    Case(
        "convert-fifo",
        "convert",
        "scicap: a FIFO as the source",
        lambda c: _convert(c, "scicap", c.fifo("s.jsonl")),
        ("s.jsonl", "not a regular file"),
    ),
    Case(
        "convert-empty",
        "convert",
        "scicap: an empty source file",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", b"")),
        ("s.jsonl",),
    ),
    Case(
        "convert-non-utf8",
        "convert",
        "scicap: a Latin-1 byte",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", json.dumps(SCICAP).encode().replace(b"x.", b"\xe9.") + b"\n")),
        ("s.jsonl:1", "not UTF-8"),
    ),
    Case(
        "convert-bad-json",
        "convert",
        "scicap: malformed JSON line",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", b'{"id": "f1", "caption": \n')),
        ("s.jsonl:1", "JSON"),
    ),
    Case(
        "convert-no-caption",
        "convert",
        "scicap: a record without a caption",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", json.dumps({"id": "f1", "image": "f1.png"}).encode() + b"\n")),
        ("s.jsonl",),
    ),
    Case(
        "convert-bad-variant",
        "convert",
        "scicap: an unknown variant",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", json.dumps(SCICAP).encode() + b"\n"), "--variant", "XYZ"),
        ("XYZ",),
    ),
    Case(
        "convert-out-is-folder",
        "convert",
        "--out is an existing folder",
        lambda c: _convert(c, "scicap", c.raw("s.jsonl", json.dumps(SCICAP).encode() + b"\n"), out=c.folder("outdir")),
        ("outdir", "folder"),
    ),
    Case(
        "convert-out-under-file",
        "convert",
        "--out inside a path that is a file",
        lambda c: _convert(
            c, "scicap", c.raw("s.jsonl", json.dumps(SCICAP).encode() + b"\n"), out=c.root / "data.jsonl" / "x.jsonl"
        ),
        ("data.jsonl",),
    ),
    Case(
        "convert-llava-not-list",
        "convert",
        "llava-json: a number instead of records",
        lambda c: _convert(c, "llava-json", c.raw("l.json", b"42")),
        ("l.json",),
    ),
    Case(
        "convert-llava-no-conv",
        "convert",
        "llava-json: a record without conversations",
        lambda c: _convert(c, "llava-json", c.raw("l.json", json.dumps([{"id": "a"}]).encode())),
        ("l.json",),
    ),
    Case(
        "convert-sqa-missing",
        "convert",
        "scienceqa: problems.json does not exist",
        lambda c: _convert(c, "scienceqa", c.tmp / "nosqa" / "problems.json"),
        ("problems.json",),
    ),
    Case(
        "convert-sqa-bad-json",
        "convert",
        "scienceqa: problems.json is malformed",
        lambda c: _convert(c, "scienceqa", _sqa_broken(c)),
        ("problems.json", "JSON"),
    ),
    Case(
        "convert-sqa-bad-format",
        "convert",
        "scienceqa: an unknown prompt format",
        lambda c: _convert(c, "scienceqa", c.sqa() / "problems.json", "--split", "test", "--prompt_format", "ZZZ"),
        ("ZZZ",),
    ),
    Case(
        "convert-sqa-bad-split",
        "convert",
        "scienceqa: a split pid_splits.json lacks",
        lambda c: _convert(c, "scienceqa", c.sqa() / "problems.json", "--split", "nosplit"),
        ("nosplit",),
    ),
    Case(
        "convert-sqa-image-escape",
        "convert",
        "scienceqa: an image path leaving --image_root",
        lambda c: _convert(
            c, "scienceqa", _sqa_with_image(c, "../../etc/passwd"), "--split", "test", "--image_root", str(c.root)
        ),
        ("outside the image root",),
    ),
    Case(
        "convert-vistext-missing",
        "convert",
        "vistext: the source does not exist",
        lambda c: _convert(c, "vistext", c.root / "nodata"),
        ("nodata",),
    ),
    # ---------------------------------------------------------------- data stats
    Case(
        "stats-missing",
        "data stats",
        "data file does not exist",
        lambda c: ["data", "stats", "--data", str(c.root / "no.jsonl"), "--out", str(c.tmp / "st")],
        ("no.jsonl", "not found"),
    ),
    Case(
        "stats-folder",
        "data stats",
        "a folder as the data file",
        lambda c: ["data", "stats", "--data", str(c.folder("d")), "--out", str(c.tmp / "st")],
        ("is a folder",),
    ),
    Case(
        "stats-fifo",
        "data stats",
        "a FIFO as the data file",
        lambda c: ["data", "stats", "--data", str(c.fifo("f.jsonl")), "--out", str(c.tmp / "st")],
        ("not a regular file",),
    ),
    Case(
        "stats-empty",
        "data stats",
        "an empty data file",
        lambda c: ["data", "stats", "--data", str(c.raw("e.jsonl", b"")), "--out", str(c.tmp / "st")],
        ("no records",),
    ),
    Case(
        "stats-non-utf8",
        "data stats",
        "a Latin-1 byte in line 1",
        lambda c: [
            "data",
            "stats",
            "--data",
            str(c.raw("l.jsonl", b'{"id": "caf\xe9"}\n')),
            "--out",
            str(c.tmp / "st"),
        ],
        ("l.jsonl:1", "not UTF-8"),
    ),
    Case(
        "stats-out-file",
        "data stats",
        "--out is an existing file",
        lambda c: ["data", "stats", "--data", str(c.root / "data.jsonl"), "--out", str(c.root / "img0.png")],
        ("img0.png", "not a folder"),
    ),
    Case(
        "stats-out-users",
        "data stats",
        "--out holds the user's files",
        lambda c: ["data", "stats", "--data", str(c.root / "data.jsonl"), "--out", str(c.users_folder())],
        ("notes.md", "--overwrite"),
    ),
    # ---------------------------------------------------------------- train
    Case(
        "train-global-batch-0",
        "train",
        "--train.global_batch_size 0",
        lambda c: _train(c, "--train.global_batch_size", "0"),
        ("--train.global_batch_size", ">= 1"),
    ),
    Case(
        "train-micro-batch-0",
        "train",
        "--train.micro_batch_size 0",
        lambda c: _train(c, "--train.micro_batch_size", "0"),
        ("--train.micro_batch_size",),
    ),
    Case(
        "train-batch-not-multiple",
        "train",
        "global batch not a multiple of the micro batch",
        lambda c: _train(c, "--train.global_batch_size", "3"),
        ("--train.global_batch_size", "multiple"),
    ),
    Case("train-lr-negative", "train", "--optim.lr -1", lambda c: _train(c, "--optim.lr", "-1"), ("--optim.lr",)),
    Case(
        "train-warmup",
        "train",
        "--optim.warmup_ratio 1.5",
        lambda c: _train(c, "--optim.warmup_ratio", "1.5"),
        ("--optim.warmup_ratio",),
    ),
    Case(
        "train-epochs-0", "train", "--train.epochs 0", lambda c: _train(c, "--train.epochs", "0"), ("--train.epochs",)
    ),
    Case(
        "train-lora-dropout",
        "train",
        "--train.lora.dropout 1.5",
        lambda c: _train(c, "--train.stage", "finetune", "--train.lora.r", "4", "--train.lora.dropout", "1.5"),
        ("--train.lora.dropout",),
    ),
    Case(
        "train-bad-stage",
        "train",
        "--train.stage alig (a typo)",
        lambda c: _train(c, "--train.stage", "alig"),
        ("--train.stage", "alig"),
    ),
    Case(
        "train-not-an-int",
        "train",
        "--train.max_steps abc",
        lambda c: _train(c, "--train.max_steps", "abc"),
        ("--train.max_steps", "abc"),
    ),
    Case(
        "train-unknown-flag", "train", "an unknown flag", lambda c: _train(c, "--train.bogus", "1"), ("--train.bogus",)
    ),
    Case(
        "train-max-length-0",
        "train",
        "--data.max_length 0",
        lambda c: _train(c, "--data.max_length", "0"),
        ("--data.max_length",),
    ),
    Case(
        "train-workers-negative",
        "train",
        "--data.num_workers -1",
        lambda c: _train(c, "--data.num_workers", "-1"),
        ("--data.num_workers",),
    ),
    Case(
        "train-bad-fraction",
        "train",
        "--data.max_bad_fraction 2",
        lambda c: _train(c, "--data.max_bad_fraction", "2"),
        ("--data.max_bad_fraction",),
    ),
    Case(
        "train-unknown-preset",
        "train",
        "--config names no preset",
        lambda c: ["train", "--config", "llava-v9/align"],
        ("llava-v9/align",),
    ),
    Case(
        "train-config-bad-yaml",
        "train",
        "--config file is not valid YAML",
        lambda c: ["train", "--config", str(c.raw("bad.yaml", b"model: [unclosed\n"))],
        ("bad.yaml",),
    ),
    Case(
        "train-out-is-file",
        "train",
        "--train.out_dir is an existing file",
        lambda c: _train(c, "--train.out_dir", str(c.root / "data.jsonl")),
        ("data.jsonl", "not a folder"),
    ),
    Case(
        "train-out-users",
        "train",
        "--train.out_dir holds the user's files",
        lambda c: _train(c, "--train.out_dir", str(c.users_folder())),
        ("notes.md", "--overwrite"),
    ),
    Case(
        "train-data-missing",
        "train",
        "--data.train does not exist",
        lambda c: _train(c, data=c.root / "none.jsonl"),
        ("none.jsonl", "not found"),
    ),
    Case(
        "train-data-folder",
        "train",
        "--data.train is a folder",
        lambda c: _train(c, data=c.folder("dd")),
        ("dd", "is a folder"),
    ),
    Case(
        "train-data-empty",
        "train",
        "--data.train is empty",
        lambda c: _train(c, data=c.raw("e.jsonl", b"")),
        ("e.jsonl", "no records"),
    ),
    Case(
        "train-data-non-utf8",
        "train",
        "--data.train has a Latin-1 byte in line 2",
        lambda c: _train(c, data=c.latin1_line2()),
        ("l.jsonl:2", "not UTF-8"),
    ),
    Case(
        "train-image-truncated",
        "train",
        "a truncated PNG in the data",
        lambda c: _train(c, data=_img_record(c, c.truncated_png().name)),
        ("trunc.png", "cannot read image"),
    ),
    Case(
        "train-image-fifo",
        "train",
        "a FIFO as an image",
        lambda c: _train(c, data=_img_record(c, c.fifo("p.png").name)),
        ("p.png", "not a regular file"),
    ),
    Case(
        "train-image-folder",
        "train",
        "a folder as an image",
        lambda c: _train(c, data=_img_record(c, c.folder("imgd").name)),
        ("imgd", "is a folder"),
    ),
    Case(
        "train-image-huge",
        "train",
        "a real 12000x12000 PNG",
        lambda c: _train(c, data=_img_record(c, c.big().name)),
        ("big.png", "over the limit"),
    ),
    Case(
        "train-image-outside",
        "train",
        "an image path leaving the image root",
        lambda c: _train(c, data=_img_record(c, "../x.png")),
        ("outside the image root",),
    ),
    Case(
        "train-resume-not-ckpt",
        "train",
        "--train.resume names a folder that is no checkpoint",
        lambda c: _train(c, "--train.resume", str(c.folder("notck"))),
        ("notck",),
    ),
    Case(
        "train-resume-damaged",
        "train",
        "--train.resume names a damaged checkpoint",
        lambda c: _train(c, "--train.resume", str(c.damaged_ckpt())),
        ("damaged",),
    ),
    Case(
        "train-unknown-template",
        "train",
        "--data.template nope",
        lambda c: _train(c, "--data.template", "nope"),
        ("nope",),
    ),
    # ---------------------------------------------------------------- generate
    Case(
        "generate-ckpt-missing",
        "generate",
        "the checkpoint does not exist",
        lambda c: _gen(c, ckpt=c.tmp / "gone"),
        ("gone", "not found"),
    ),
    Case(
        "generate-ckpt-damaged",
        "generate",
        "one flipped byte in the projector",
        lambda c: _gen(c, ckpt=c.damaged_ckpt()),
        ("projector.safetensors", "SHA-256"),
    ),
    Case(
        "generate-ckpt-incomplete",
        "generate",
        "a checkpoint without COMPLETE",
        lambda c: _gen(c, ckpt=c.incomplete_ckpt()),
        ("incomplete",),
    ),
    Case(
        "generate-ckpt-run-folder",
        "generate",
        "a folder that is no checkpoint",
        lambda c: _gen(c, ckpt=c.root),
        ("not a scitune checkpoint",),
    ),
    Case(
        "generate-image-missing",
        "generate",
        "--image does not exist",
        lambda c: _gen(c, "--image", str(c.root / "no.png")),
        ("no.png", "not found"),
    ),
    Case(
        "generate-image-truncated",
        "generate",
        "--image is a truncated PNG",
        lambda c: _gen(c, "--image", str(c.truncated_png())),
        ("trunc.png", "cannot read image"),
    ),
    Case(
        "generate-image-fifo",
        "generate",
        "--image is a FIFO (no hang)",
        lambda c: _gen(c, "--image", str(c.fifo("p.png"))),
        ("p.png", "not a regular file"),
    ),
    Case(
        "generate-image-folder",
        "generate",
        "--image is a folder",
        lambda c: _gen(c, "--image", str(c.root)),
        ("is a folder",),
    ),
    Case(
        "generate-image-huge",
        "generate",
        "--image is a real 12000x12000 PNG",
        lambda c: _gen(c, "--image", str(c.big())),
        ("big.png", "over the limit"),
    ),
    Case(
        "generate-image-text",
        "generate",
        "--image is a text file",
        lambda c: _gen(c, "--image", str(c.raw("t.png", b"just text"))),
        ("t.png", "cannot read image"),
    ),
    Case(
        "generate-context",
        "generate",
        "prompt + --gen.max_new_tokens over the model's context",
        lambda c: _gen(c, "--gen.max_new_tokens", "100000"),
        ("--gen.max_new_tokens", "context"),
    ),
    Case(
        "generate-temperature",
        "generate",
        "--gen.temperature -1",
        lambda c: _gen(c, "--gen.temperature", "-1"),
        ("--gen.temperature",),
    ),
    Case("generate-top-p-0", "generate", "--gen.top_p 0", lambda c: _gen(c, "--gen.top_p", "0"), ("--gen.top_p",)),
    Case("generate-top-p-2", "generate", "--gen.top_p 2", lambda c: _gen(c, "--gen.top_p", "2"), ("--gen.top_p",)),
    Case(
        "generate-max-new-0",
        "generate",
        "--gen.max_new_tokens 0",
        lambda c: _gen(c, "--gen.max_new_tokens", "0"),
        ("--gen.max_new_tokens",),
    ),
    Case(
        "generate-placeholders",
        "generate",
        "two <image> in the prompt for one image",
        lambda c: [
            "generate",
            "--checkpoint",
            str(c.ckpt),
            "--prompt",
            "<image><image>",
            "--image",
            str(c.root / "img0.png"),
        ],
        ("placeholder",),
    ),
    # ---------------------------------------------------------------- eval
    Case(
        "eval-preds-missing",
        "eval",
        "--predictions does not exist",
        lambda c: _sqa_eval(c, c.root / "p.jsonl"),
        ("p.jsonl", "not found"),
    ),
    Case(
        "eval-preds-empty",
        "eval",
        "--predictions is empty",
        lambda c: _sqa_eval(c, c.raw("p.jsonl", b"")),
        ("p.jsonl", "empty"),
    ),
    Case(
        "eval-preds-unusable",
        "eval",
        "--predictions has no usable record",
        lambda c: _sqa_eval(c, c.raw("p.jsonl", b'{"foo": 1}\nnot json\n')),
        ("p.jsonl", "no usable prediction"),
    ),
    Case(
        "eval-preds-non-utf8",
        "eval",
        "--predictions has a Latin-1 byte",
        lambda c: _sqa_eval(c, c.raw("p.jsonl", b'{"question_id": "1", "text": "caf\xe9"}\n')),
        ("p.jsonl:1", "not UTF-8"),
    ),
    Case(
        "eval-preds-folder",
        "eval",
        "--predictions is a folder",
        lambda c: _sqa_eval(c, c.folder("pp")),
        ("pp", "is a folder"),
    ),
    Case(
        "eval-preds-fifo",
        "eval",
        "--predictions is a FIFO",
        lambda c: _sqa_eval(c, c.fifo("p.jsonl")),
        ("not a regular file",),
    ),
    Case(
        "eval-data-missing",
        "eval",
        "--data does not exist",
        lambda c: [
            "eval",
            "scienceqa",
            "--predictions",
            str(c.raw("p.jsonl", b'{"question_id": "1", "text": "A"}')),
            "--data",
            str(c.tmp / "nodata"),
            "--out",
            str(c.tmp / "ev"),
        ],
        ("nodata",),
    ),
    Case(
        "eval-out-file",
        "eval",
        "--out is an existing file",
        lambda c: _sqa_eval(
            c,
            c.raw("p.jsonl", b'{"question_id": "1", "text": "The answer is B."}\n'),
            "--out",
            str(c.root / "img0.png"),
        ),
        ("img0.png", "not a folder"),
    ),
    Case(
        "eval-out-users",
        "eval",
        "--out holds the user's files",
        lambda c: _sqa_eval(
            c, c.raw("p.jsonl", b'{"question_id": "1", "text": "The answer is B."}\n'), "--out", str(c.users_folder())
        ),
        ("notes.md", "--overwrite"),
    ),
    Case(
        "eval-two-sources",
        "eval",
        "both --checkpoint and --predictions",
        lambda c: _sqa_eval(c, c.raw("p.jsonl", b"{}"), "--checkpoint", str(c.ckpt)),
        ("exactly one",),
    ),
    Case(
        "eval-unknown-benchmark",
        "eval",
        "an unknown benchmark",
        lambda c: ["eval", "sciencqa", "--data", "x"],
        ("sciencqa",),
    ),
    # ---------------------------------------------------------------- export / import
    Case(
        "export-ckpt-missing",
        "export",
        "the checkpoint does not exist",
        lambda c: ["export", "hf", "--checkpoint", str(c.tmp / "gone"), "--out", str(c.tmp / "hf")],
        ("gone", "not found"),
    ),
    Case(
        "export-ckpt-damaged",
        "export",
        "one flipped byte in the projector",
        lambda c: ["export", "hf", "--checkpoint", str(c.damaged_ckpt()), "--out", str(c.tmp / "hf")],
        ("projector.safetensors",),
    ),
    Case(
        "export-out-users",
        "export",
        "--out holds the user's files",
        lambda c: ["export", "hf", "--checkpoint", str(c.ckpt), "--out", str(c.users_folder())],
        ("notes.md", "--overwrite"),
    ),
    Case(
        "export-out-file",
        "export",
        "--out is an existing file",
        lambda c: ["export", "hf", "--checkpoint", str(c.ckpt), "--out", str(c.root / "img0.png")],
        ("img0.png", "not a folder"),
    ),
    Case(
        "export-merge-no-lora",
        "export",
        "merge-lora on a checkpoint without LoRA",
        lambda c: ["export", "merge-lora", "--checkpoint", str(c.ckpt), "--out", str(c.tmp / "m")],
        ("no LoRA",),
    ),
    Case(
        "import-missing",
        "import",
        "import hf from a folder that does not exist",
        lambda c: ["import", "hf", str(c.tmp / "nohf"), "--out", str(c.tmp / "ck")],
        ("nohf",),
    ),
    Case(
        "import-not-llava",
        "import",
        "import hf from a folder that is no llava-hf model",
        lambda c: ["import", "hf", str(c.base["llm"]), "--out", str(c.tmp / "ck")],
        ("llava",),
    ),
    Case(
        "checkpoint-verify-damaged",
        "checkpoint",
        "verify a checkpoint with a flipped byte",
        lambda c: ["checkpoint", "verify", str(c.damaged_ckpt())],
        ("damaged",),
        code=1,
    ),
]


def _link_out(ctx: Ctx) -> str:
    shutil.copyfile(ctx.root / "img0.png", ctx.tmp / "outside.png")
    os.symlink(ctx.tmp / "outside.png", ctx.root / "link.png")
    return "link.png"


def _sqa_broken(ctx: Ctx) -> Path:
    path = ctx.sqa() / "problems.json"
    path.write_text('{"1": {')
    return path


def _sqa_with_image(ctx: Ctx, image: str) -> Path:
    folder = ctx.sqa()
    problems = json.loads((folder / "problems.json").read_text())
    problems["1"]["image"] = image
    (folder / "problems.json").write_text(json.dumps(problems))
    return folder / "problems.json"


def markdown_table() -> str:
    """The fault table of docs/reliability.md, from `CASES`."""
    rows = [
        "| case | command | input | the error line names | exit | lost |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        names = ", ".join(f"`{n}`".replace("|", "\\|") for n in case.names) or "the problem"
        code = case.code if case.code is not None else "non-zero"
        rows.append(f"| `{case.id}` | `scitune {case.command}` | {case.what} | {names} | {code} | nothing |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
