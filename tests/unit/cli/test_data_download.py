"""`scitune data download NAME`: offline (HF_HUB_OFFLINE, or the Hub unreachable) it ends with one line saying what to
do; a release not on the Hub names its address; --dry_run plans without network; with the Hub (mocked here, never
reached) it calls snapshot_download with the release's repository and files."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
from huggingface_hub import errors

from scitune.cli import main as cli
from scitune.sources import releases
from scitune.sources.releases import RELEASES, OfflineError, download_release


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_offline_says_what_to_do(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append(a) or str(tmp_path))
    assert releases.hub_offline()  # tests run with HF_HUB_OFFLINE=1 (conftest)
    assert cli(["data", "download", "scienceqa", "--out", str(tmp_path / "sqa")]) == 2
    err = _one_line_error(capsys)
    assert "HF_HUB_OFFLINE is set" in err and "hf download derek-thomas/ScienceQA --repo-type dataset" in err
    assert "--include 'data/*.parquet'" in err and str(tmp_path / "sqa") in err
    assert calls == [] and not (tmp_path / "sqa").exists()  # nothing tried, nothing written


def test_unreachable_hub_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(releases, "hub_offline", lambda: False)

    def no_connection(*args, **kwargs):  # what snapshot_download raises when the Hub cannot be reached
        raise errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_connection)
    assert cli(["data", "download", "llava-cc3m-595k", "--out", str(tmp_path / "cc3m")]) == 2
    err = _one_line_error(capsys)
    assert "cannot reach the Hugging Face Hub to fetch llava-cc3m-595k (LocalEntryNotFoundError)" in err
    assert "hf download liuhaotian/LLaVA-CC3M-Pretrain-595K" in err and "--include 'chat.json'" in err


def test_not_on_the_hub_and_dry_run(tmp_path, capsys):
    with pytest.raises(OfflineError, match=r"nocaps is not on the Hugging Face Hub: download https://nocaps"):
        download_release("nocaps", tmp_path)
    assert cli(["data", "download", "coco-karpathy", "--out", str(tmp_path / "k"), "--dry_run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["repo_id"] == "openflamingo/eval_benchmark" and plan["files"] == ["mscoco_karpathy/karpathy_coco.json"]
    assert plan["read_with"].startswith(f"scitune eval captioning --data {tmp_path / 'k'}/mscoco_karpathy/")
    assert cli(["data", "download", "imagenet", "--dry_run"]) == 2
    assert "invalid choice 'imagenet'" in _one_line_error(capsys)
    for release in RELEASES.values():  # every Hub release names its files and how scitune reads them
        assert release.read_with.startswith("scitune ") and (release.repo_id is None or release.patterns)


def test_with_the_hub_calls_snapshot_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(releases, "hub_offline", lambda: False)
    seen = {}

    def fake_snapshot(repo_id, **kwargs):
        seen.update(repo_id=repo_id, **kwargs)
        return kwargs["local_dir"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert cli(["data", "download", "llava-pretrain", "--out", str(tmp_path / "p"), "--images"]) == 0
    assert seen == {"repo_id": "liuhaotian/LLaVA-Pretrain", "repo_type": "dataset", "local_dir": str(tmp_path / "p"),
                    "allow_patterns": ["blip_laion_cc_sbu_558k.json", "blip_laion_cc_sbu_558k_meta.json",
                                       "images.zip"]}  # fmt: skip
    assert json.loads(capsys.readouterr().out)["local_dir"] == str(tmp_path / "p")

    def refused(*args, **kwargs):  # an HTTP error from the Hub (its constructor wants a response: built bare)
        error = errors.HfHubHTTPError.__new__(errors.HfHubHTTPError)
        Exception.__init__(error, "401 Client Error: Unauthorized for url\nmore detail")
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    assert cli(["data", "download", "scienceqa", "--out", str(tmp_path / "s")]) == 2
    assert "the Hub refused derek-thomas/ScienceQA: 401 Client Error" in _one_line_error(capsys)
