"""`scitune export hf` read by transformers 5 (this process) and transformers 4.x (a subprocess with a 4.x overlay on
PYTHONPATH, torch from this venv): every Auto class loads, no weight is re-initialised, the chat template renders
scitune's training text byte for byte, and the inputs, logits and greedy tokens (stops included) are scitune's.

The overlay is never downloaded here: it is looked for at ``$SCITUNE_TF4_OVERLAY`` (default ``<repo>/.cache/tf4``,
built once with ``pip install --target .cache/tf4 --no-deps "transformers==4.57.*" "tokenizers>=0.22,<0.23"
"huggingface_hub>=0.34,<1.0" requests urllib3 certifi charset_normalizer``). Without it the 4.x tests skip, saying
so, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from exportkit import (
    CONVERSATION,
    QUESTION,
    probe_image,
    scitune_expectations,
    steer,
    wide_vlm,
    write_trained_checkpoint,
)
from hf_reader import read_export

REPO = Path(__file__).resolve().parents[3]
OVERLAY_ENV = "SCITUNE_TF4_OVERLAY"
MAX_NEW_TOKENS = 12
CASES = ("scitune-linear", "plain-narrow", "next-llava-v0")
"""SciTune's linear connector on an LM wider than the encoder (the exact ReLU form, rope scaling, a trained checkpoint,
steered into its ``###`` stop, exported through the CLI); a linear connector on an LM as wide as the encoder (the
``linear`` activation form) with the ``plain`` template's one-token stop; an AnyRes LlavaNext export (gelu MLP,
LLaVA-v0 text)."""


def overlay() -> Path:
    """The transformers 4.x overlay; skips (fails under CI=true) when it is not there."""
    path = Path(os.environ.get(OVERLAY_ENV) or REPO / ".cache" / "tf4")
    if not (path / "transformers" / "__init__.py").is_file():
        msg = (
            f"no transformers 4.x overlay at {path} (set ${OVERLAY_ENV}, or build it: pip install --target {path} "
            '--no-deps "transformers==4.57.*" "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" requests '
            "urllib3 certifi charset_normalizer)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the transformers 4.x export tests: " + msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict]:
    """The three exports and what scitune renders, encodes and generates for each."""
    from scitune.cli import main as cli
    from scitune.interop.hf_llava import export_hf
    from scitune.loader import load, tiny_vlm

    root = tmp_path_factory.mktemp("exports")
    image = probe_image()
    image.save(root / "image.png")
    out = {}

    m, p = wide_vlm(rope={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0})
    steer(m, p, image, ["##", "#"])  # the reply ends in "###": scitune's stop, two tokens of the tiny vocabulary
    (root / "train.jsonl").write_text('{"id": "a"}\n')
    write_trained_checkpoint(m, p, root / "ckpt", root / "train.jsonl")
    assert cli(["export", "hf", "--checkpoint", str(root / "ckpt"), "--out", str(root / "scitune-linear")]) == 0
    out["scitune-linear"] = load(root / "ckpt")  # as `scitune generate --checkpoint` loads it

    m, p = tiny_vlm(projector="linear", template="plain")
    p = p.replace(image_aspect="pad")  # LLaVA-1.5's expand2square: exported as LlavaImageProcessor(do_pad=True)
    steer(m, p, image, ["Ċ"])  # a newline: the plain template's stop, one byte
    export_hf(m, p, root / "plain-narrow")
    out["plain-narrow"] = (m, p)

    m, p = tiny_vlm(anyres=["1x1", "1x2", "2x1", "2x2"], template="llava-v0")
    export_hf(m, p, root / "next-llava-v0")
    out["next-llava-v0"] = (m, p)

    cases = {}
    for name, (m, p) in out.items():
        cases[name] = {
            "name": name,
            "folder": str(root / name),
            "model_class": json.loads((root / name / "scitune_export.json").read_text())["model_class"],
            "image": str(root / "image.png"),
            "question": QUESTION,
            "conversation": CONVERSATION,
            "max_new_tokens": MAX_NEW_TOKENS,
            "expect": scitune_expectations(m, p, image, MAX_NEW_TOKENS),
        }
    return cases


@pytest.fixture(scope="module")
def new_line(exports) -> dict[str, tuple[dict, dict]]:
    """transformers 5 (this process) reading the exports."""
    return {name: read_export(case) for name, case in exports.items()}


@pytest.fixture(scope="module")
def old_line(request, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """transformers 4.x (the overlay) reading the exports, in a subprocess."""
    path = overlay()  # before the exports are built
    exports = request.getfixturevalue("exports")
    work = tmp_path_factory.mktemp("old-line")
    spec = [{k: v for k, v in case.items() if k != "expect"} for case in exports.values()]
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("hf_reader.py")), str(work / "spec.json"), str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    reports = json.loads((work / "reports.json").read_text())
    print(f"transformers {next(iter(reports.values()))['transformers']}: {time.monotonic() - started:.1f} s")
    return {n: (r, torch.load(work / f"{n}.pt", weights_only=True)) for n, r in reports.items()}


LINES = ["old_line", "new_line"]


@pytest.mark.parametrize("line", LINES)
def test_every_auto_class_loads_the_export_and_no_weight_is_reinitialised(line, request, exports):
    results = request.getfixturevalue(line)
    want_major = "4" if line == "old_line" else transformers.__version__.split(".")[0]  # this process's (5 in CI)
    for name, (report, _) in results.items():
        assert report["transformers"].split(".")[0] == want_major
        assert report["loading"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}, name
        assert report["n_params"] > 50 and report["parameter_problems"] == [], (name, report["parameter_problems"])
        classes = report["classes"]
        llava = "LlavaNext" if exports[name]["model_class"].startswith("LlavaNext") else "Llava"
        assert classes["config"] == f"{llava}Config" and classes["processor"] == f"{llava}Processor", name
        want = {"plain-narrow": "LlavaImageProcessor", "next-llava-v0": "LlavaNextImageProcessor"}  # pad / AnyRes
        assert classes["image_processor"].removesuffix("Pil").removesuffix("Fast") == want.get(
            name, "CLIPImageProcessor"
        ), name
        assert classes["tokenizer"] == classes["processor_tokenizer"]


@pytest.mark.parametrize("line", LINES)
def test_the_chat_template_renders_scitunes_training_text_byte_for_byte(line, request, exports):
    for name, (report, _) in request.getfixturevalue(line).items():
        expect = exports[name]["expect"]
        texts = report["texts"]
        assert texts["tokenizer_train"] == texts["processor_train"] == expect["train_text"], name
        assert texts["tokenizer_prompt"] == texts["processor_prompt"] == expect["prompt_text"], name


@pytest.mark.parametrize("line", LINES)
def test_same_inputs_logits_and_greedy_tokens_as_scitune_generate(line, request, exports):
    for name, (report, tensors) in request.getfixturevalue(line).items():
        expect = exports[name]["expect"]
        assert report["input_ids"] == expect["input_ids"], name
        n_tiles = expect["pixel_values"].shape[0]  # LlavaNext pads every image to the most tiles
        assert torch.equal(tensors["pixel_values"].reshape(-1, *expect["pixel_values"].shape[1:])[:n_tiles],
                           expect["pixel_values"]), name  # fmt: skip
        diff = (tensors["logits"] - expect["logits"]).abs().max().item()
        print(f"{line} {name}: max |logit difference| {diff:.2e}, tokens {report['tokens']}")
        assert diff < 1e-5, (name, diff)
        assert report["tokens"] == expect["tokens"], name  # stopped at the same token, or ran as long
    for name in ("scitune-linear", "plain-narrow"):  # steered into their stops: a real stop, not the length limit
        assert exports[name]["expect"]["finish"] == "stop" and len(exports[name]["expect"]["tokens"]) < MAX_NEW_TOKENS


def test_stops_are_written_as_each_line_honours_them(new_line):
    gens = {name: report["generation"] for name, (report, _) in new_line.items()}
    assert gens["scitune-linear"]["stop_strings"] == ["###"]  # several tokens: stop_strings (generate needs tokenizer=)
    assert gens["plain-narrow"]["stop_strings"] is None and isinstance(gens["plain-narrow"]["eos_token_id"], list)
