"""Run folders and checkpoints: one run per folder, resumes that refuse other data / settings / base weights, damaged
checkpoints named and skipped, torn metrics, files written with the user's umask, pruning of this run only."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from faultkit import assert_refused, forked_cli, inproc_cli, leftovers, losses, snapshot, weights, write_run_config

pytestmark = pytest.mark.faults


def _train(cfg: Path, out: Path, *extra: str, env: dict | None = None):
    return forked_cli(["train", "--config", str(cfg), "--train.out_dir", str(out), *extra], env=env)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_base):
    """A finished align run (8 steps, a checkpoint every 2) and its config."""
    from conftest import make_color_records

    tmp = tmp_path_factory.mktemp("finished")
    data = make_color_records(tmp / "data")
    cfg = write_run_config(tmp, tiny_base, data, stage="align", save_every=2, keep_last=3)
    res = _train(cfg, tmp / "run")
    assert res.rc == 0, res.err[-3000:]
    return {"tmp": tmp, "cfg": cfg, "data": data, "run": tmp / "run"}


def _copy_run(finished, dest: Path) -> Path:
    shutil.copytree(finished["run"], dest, symlinks=True)
    return dest


def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(finished, tmp_path):
    run = _copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    res = _train(finished["cfg"], run)
    line = assert_refused(res, str(run), "--train.resume latest", "--overwrite")
    assert "finished" in line
    assert snapshot(run) == before  # metrics, checkpoints and config untouched


def test_overwrite_starts_over_and_keeps_the_users_files(finished, tmp_path):
    run = _copy_run(finished, tmp_path / "run")
    (run / "notes.txt").write_text("my notes")
    old_id = json.loads((run / "scitune-run.json").read_text())["run_id"]
    res = _train(finished["cfg"], run, "--overwrite", "--train.max_steps", "2")
    assert res.rc == 0, res.err[-3000:]
    assert (run / "notes.txt").read_text() == "my notes"
    assert json.loads((run / "scitune-run.json").read_text())["run_id"] != old_id
    assert len(losses(run)) == 2  # the new run's metrics only
    assert not [p for p in run.iterdir() if p.name.startswith(".scitune-replaced-")]  # removed once finished


def test_a_folder_of_the_users_files_is_refused_then_shared_with_overwrite(finished, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1")
    assert_refused(_train(finished["cfg"], out), str(out), "thesis.tex", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    res = _train(finished["cfg"], out, "--overwrite", "--train.max_steps", "1")
    assert res.rc == 0, res.err[-3000:]
    assert (out / "thesis.tex").read_text() == "chapter 1" and (out / "final" / "COMPLETE").is_file()


def _interrupted(finished, tmp_path: Path) -> Path:
    """The finished run cut back to its step-4 checkpoint (as if killed there)."""
    run = _copy_run(finished, tmp_path / "run")
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-000006")
    return run


def test_resume_with_changed_data_is_refused_naming_the_change(finished, tmp_path):
    run = _interrupted(finished, tmp_path)
    data = tmp_path / "data.jsonl"
    lines = finished["data"].read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # one record fewer
    cfg = write_run_config(tmp_path, _base(finished), data, stage="align", save_every=2, keep_last=3)
    before = snapshot(run)
    res = _train(cfg, run, "--train.resume", "latest", "--data.image_root", str(finished["data"].parent))
    assert_refused(res, "training data changed", "data.train.sha256", "--train.allow_inexact_resume")
    assert snapshot(run) == before
    res = _train(
        cfg,
        run,
        "--train.resume",
        "latest",
        "--data.image_root",
        str(finished["data"].parent),
        "--train.allow_inexact_resume",
        "true",
    )
    assert res.rc == 0, res.err[-3000:]
    assert "changed (--train.allow_inexact_resume)" in res.err


def _base(finished) -> dict:
    cfg = json.loads(finished["cfg"].read_text())
    return {"vision": cfg["model"]["vision"]["path"], "llm": cfg["model"]["llm"]["path"]}


def test_resume_with_changed_settings_is_refused_naming_them(finished, tmp_path):
    run = _interrupted(finished, tmp_path)
    res = _train(finished["cfg"], run, "--train.resume", "latest", "--optim.lr", "0.1", "--train.seed", "7")
    assert_refused(res, "settings changed", "optim.lr: 0.005 -> 0.1", "train.seed: 42 -> 7")


def test_resume_with_changed_base_weights_is_refused(finished, tmp_path):
    base = {k: str(tmp_path / "base" / k) for k in ("vision", "llm")}
    for k, src in _base(finished).items():
        shutil.copytree(src, base[k])
    cfg = write_run_config(tmp_path, base, finished["data"], stage="align", save_every=2, max_steps=4)
    run = tmp_path / "run"
    assert _train(cfg, run).rc == 0
    shutil.rmtree(run / "final")  # as if killed after the step-2 checkpoint
    weights_file = next(Path(base["llm"]).glob("*.safetensors"))
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights_file.write_bytes(bytes(data))
    res = _train(cfg, run, "--train.resume", "latest")
    assert_refused(res, "base weights changed", f"llm.files.{weights_file.name}.sha256")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - 3] ^= 0xFF  # inside the tensor data (the header stays valid: only a checksum can tell)
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_named_on_load_and_resume_falls_back(finished, tmp_path, capsys):
    run = _interrupted(finished, tmp_path)
    latest = run / "checkpoints" / "step-000004"
    _flip_byte(latest / "projector.safetensors")
    res = inproc_cli(["generate", "--checkpoint", str(latest), "--prompt", "hi", "--gen.max_new_tokens", "2"], capsys)
    assert_refused(res, str(latest), "projector.safetensors", "SHA-256")
    res = inproc_cli(["checkpoint", "verify", str(latest), str(run / "checkpoints" / "step-000002")], capsys)
    assert res.rc == 1 and "DAMAGED" in res.out and "OK" in res.out
    resumed = _train(finished["cfg"], run, "--train.resume", "latest")
    assert resumed.rc == 0, resumed.err[-3000:]
    assert "step-000004 is damaged, falling back" in resumed.err and "projector.safetensors" in resumed.err
    assert f"resumed from {run / 'checkpoints' / 'step-000002'}" in resumed.err
    assert losses(run) == losses(finished["run"])  # an earlier checkpoint resumes exactly too
    assert weights(run / "final") == weights(finished["run"] / "final")


def test_an_incomplete_checkpoint_is_not_loaded(finished, tmp_path, capsys):
    ck = shutil.copytree(finished["run"] / "final", tmp_path / "ck")
    (ck / "COMPLETE").unlink()
    assert_refused(inproc_cli(["generate", "--checkpoint", str(ck), "--prompt", "hi"], capsys), "incomplete")


def test_a_missing_rng_file_needs_consent_to_resume(finished, tmp_path):
    run = _interrupted(finished, tmp_path)
    for ck in (run / "checkpoints").iterdir():  # checkpoints as an older scitune wrote them: no manifest
        (ck / "scitune-manifest.json").unlink()
        (ck / "rng_rank0.safetensors").unlink()
    res = _train(finished["cfg"], run, "--train.resume", "latest")
    assert_refused(res, "rng_rank0.safetensors is missing", "--train.allow_inexact_resume")
    res = _train(finished["cfg"], run, "--train.resume", "latest", "--train.allow_inexact_resume", "true")
    assert res.rc == 0, res.err[-3000:]
    assert "resuming inexactly" in res.err


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(finished, tmp_path):
    run = _interrupted(finished, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 1.2')  # a kill in the middle of an append
    res = _train(finished["cfg"], run, "--train.resume", "latest")
    assert res.rc == 0, res.err[-3000:]
    assert "dropping a torn last line" in res.err
    assert losses(run) == losses(finished["run"])


def test_pruning_touches_only_this_runs_checkpoints(finished, tmp_path):
    run = _interrupted(finished, tmp_path)
    foreign = run / "checkpoints" / "step-000001"
    shutil.copytree(run / "checkpoints" / "step-000002", foreign)
    manifest = json.loads((foreign / "scitune-manifest.json").read_text())
    manifest["run_id"] = "another-run"
    (foreign / "scitune-manifest.json").write_text(json.dumps(manifest))
    res = _train(finished["cfg"], run, "--train.resume", "latest", "--train.keep_last", "1")
    assert res.rc == 0, res.err[-3000:]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-000001", "step-000006"]  # the other run's checkpoint stays; ours are pruned to 1


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_get_the_users_umask(tmp_path, mask):
    import scitune.io as sio
    from scitune.io import write_json
    from scitune.outputs import write_output_folder

    old = os.umask(mask)
    sio._UMASK = None
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        out = write_output_folder(tmp_path / "out", "test", lambda d: (d / "f.txt").write_text("x"))
    finally:
        os.umask(old)
        sio._UMASK = None
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (out / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_full_disk_during_a_save_is_one_line_and_loses_nothing(
    finished, tmp_path, capsys, monkeypatch, fresh_accelerate_state
):
    import errno

    import scitune.train.state as state

    run = _interrupted(finished, tmp_path)
    before = snapshot(run / "checkpoints")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "checkpoints"))

    monkeypatch.setattr(state, "save_file", full)  # the optimizer state is written first: the disk is full
    argv = ["train", "--config", str(finished["cfg"]), "--train.out_dir", str(run), "--train.resume", "latest"]
    res = inproc_cli(argv, capsys)
    assert_refused(res, "no space left on device", "nothing was replaced")
    assert snapshot(run / "checkpoints") == before and not leftovers(run)  # the torn save left nothing behind
    monkeypatch.undo()
    again = _train(finished["cfg"], run, "--train.resume", "latest")
    assert again.rc == 0, again.err[-3000:]
    assert losses(run) == losses(finished["run"])


def test_an_image_that_turns_unreadable_mid_training_skips_its_record(
    tmp_path, tiny_base, capsys, monkeypatch, fresh_accelerate_state
):
    import scitune.train.loop as loop
    from conftest import make_color_records

    data = make_color_records(tmp_path / "data", n=16)
    # one record per micro-batch: the bad record leaves an empty micro-batch, which a stand-in fills at weight 0
    cfg = write_run_config(tmp_path, tiny_base, data, stage="align", epochs=1, micro_batch_size=1)
    real = loop.load_data

    def validated_then_damaged(*args, **kwargs):
        dataset = real(*args, **kwargs)
        (data.parent / "img5.png").write_bytes(b"garbage")  # after validation, before its batch is loaded
        return dataset

    monkeypatch.setattr(loop, "load_data", validated_then_damaged)
    argv = ["train", "--config", str(cfg), "--train.out_dir", str(tmp_path / "run")]
    res = inproc_cli([*argv, "--data.max_bad_fraction", "0.1"], capsys)
    assert res.rc == 0, res.err[-3000:]
    assert "1 record(s) skipped" in res.out
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["id"], "img5.png" in s["problem"]) for s in skipped] == [("r5", True)]
    assert any(
        m.get("skipped_records") == 1
        for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    )
    # the default threshold (0.001 of 16 records) stops the run, naming the record and the file
    make_color_records(tmp_path / "data", n=16)  # the image is good again when the run validates its data
    res = inproc_cli([*argv[:-1], str(tmp_path / "run2")], capsys)
    assert_refused(res, "img5.png", "record r5", "--data.max_bad_fraction")
