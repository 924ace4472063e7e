"""Output folders: a folder holding the user's files is refused (nothing touched), ``--overwrite`` builds the new output
beside it and replaces only scitune's own files, an earlier output of the same kind is replaced whole."""

from __future__ import annotations

import json
import shutil

import pytest
from faultkit import assert_refused, inproc_cli, leftovers, snapshot

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_base):
    """A full checkpoint of the tiny model, and a LoRA one on the tiny base LLM saved on disk."""
    from scitune.config.schema import LlmConfig, LoraConfig, ModelConfig, VisionConfig
    from scitune.loader import build, save_checkpoint, tiny_vlm
    from scitune.train.stages import apply_lora

    root = tmp_path_factory.mktemp("ckpts")
    full = save_checkpoint(*tiny_vlm(), root / "full")
    cfg = ModelConfig(vision=VisionConfig(name="clip", path=tiny_base["vision"]), llm=LlmConfig(path=tiny_base["llm"]))
    lora_model, processor = build(cfg)
    apply_lora(lora_model, LoraConfig(r=2))
    lora = save_checkpoint(lora_model, processor, root / "lora")
    return {"full": full, "lora": lora}


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "hf", "--checkpoint", "{full}"],
        ["export", "merge-lora", "--checkpoint", "{lora}"],
        ["import", "hf", "{hf}"],
    ],
    ids=["export-hf", "merge-lora", "import-hf"],
)
def test_a_folder_with_a_users_file_is_refused_then_shared_with_overwrite(argv, checkpoints, tmp_path, capsys):
    hf = tmp_path / "hf-source"
    assert inproc_cli(["export", "hf", "--checkpoint", str(checkpoints["full"]), "--out", str(hf)], capsys).rc == 0
    argv = [a.format(full=checkpoints["full"], lora=checkpoints["lora"], hf=hf) for a in argv]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    (out / "data").mkdir()
    (out / "data" / "train.jsonl").write_text("{}\n")
    before = snapshot(out)
    assert_refused(inproc_cli([*argv, "--out", str(out)], capsys), str(out), "notes.md", "--overwrite")
    assert snapshot(out) == before and not leftovers(tmp_path)

    assert inproc_cli([*argv, "--out", str(out), "--overwrite"], capsys).rc == 0
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # every file of the user's is there, unchanged
    manifest = json.loads((out / "scitune-manifest.json").read_text())
    assert set(after) - set(before) == set(manifest["files"]) | {"scitune-manifest.json"} | (
        {"COMPLETE"} if (out / "COMPLETE").exists() else set()
    )
    assert not leftovers(tmp_path)
    # again with --overwrite: scitune's earlier files are replaced, the user's stay
    victim = sorted(manifest["files"])[0]
    (out / victim).write_text("damaged")  # one of scitune's files: replaced by the new output, not kept
    assert inproc_cli([*argv, "--out", str(out), "--overwrite"], capsys).rc == 0
    again = snapshot(out)
    assert {k: again[k] for k in before} == before and again[victim] == after[victim]


def test_export_again_into_its_own_output_replaces_it_whole(checkpoints, tmp_path, capsys):
    out = tmp_path / "hf"
    argv = ["export", "hf", "--checkpoint", str(checkpoints["full"]), "--out", str(out)]
    assert inproc_cli(argv, capsys).rc == 0
    (out / "stale.bin").write_text("x")  # appears after the export: not scitune's, so the next export keeps it
    assert_refused(inproc_cli(argv, capsys), "stale.bin")
    shutil.rmtree(out)
    assert inproc_cli(argv, capsys).rc == 0
    first = snapshot(out)
    assert inproc_cli(argv, capsys).rc == 0  # an earlier export of the same kind: replaced
    assert set(snapshot(out)) == set(first) and not leftovers(tmp_path)


def test_a_users_file_named_like_an_output_is_never_replaced(checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    argv = ["export", "hf", "--checkpoint", str(checkpoints["full"]), "--out", str(out), "--overwrite"]
    res = inproc_cli(argv, capsys)
    assert_refused(res, str(out / "config.json"), "not written by scitune")
    assert json.loads((out / "config.json").read_text()) == {"mine": True}
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and not leftovers(tmp_path)


def test_an_existing_file_as_out_is_refused(checkpoints, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    res = inproc_cli(["export", "hf", "--checkpoint", str(checkpoints["full"]), "--out", str(out)], capsys)
    assert_refused(res, str(out), "not a folder")
    assert out.read_text() == "keep me"


def test_checkpoints_have_a_manifest_and_complete_written_last(checkpoints):
    from scitune.outputs import file_entries, sha256_file

    ck = checkpoints["full"]
    manifest = json.loads((ck / "scitune-manifest.json").read_text())
    assert manifest["kind"] == "checkpoint" and (ck / "COMPLETE").is_file()
    assert manifest["files"] == file_entries(ck)  # every file, with its size and SHA-256
    assert manifest["files"]["projector.safetensors"]["sha256"] == sha256_file(ck / "projector.safetensors")
