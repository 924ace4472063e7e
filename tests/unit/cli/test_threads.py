"""One thread rule for every command: the CPUs not already busy, overridable by --threads / $SCITUNE_THREADS."""

from __future__ import annotations

import pytest
import torch

from scitune import threads
from scitune.cli import main


@pytest.mark.parametrize(
    ("cpus", "load", "want"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 5.0, 1), (8, 2.6, 5), (16, 0.0, 16), (1, 0.0, 1)],
)
def test_auto_threads_leave_the_busy_cpus_alone(cpus, load, want):
    assert threads.auto_threads(cpus, load) == want


def test_flag_beats_environment_beats_choice(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.requested_threads(None) == 0
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.requested_threads(None) == 3 and threads.requested_threads("2") == 2
    assert threads.requested_threads(0) == 3  # 0 = choose: the environment still decides
    for bad in ("-1", "two"):
        with pytest.raises(ValueError, match="--threads"):
            threads.requested_threads(bad)


def test_split_threads_flag_both_spellings():
    assert threads.split_threads_flag(["--a", "1", "--threads", "3", "--b"]) == (["--a", "1", "--b"], "3")
    assert threads.split_threads_flag(["--threads=2", "x"]) == (["x"], "2")
    assert threads.split_threads_flag(["x"]) == (["x"], None)


def test_every_command_takes_threads(monkeypatch, capsys):
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    try:
        assert main(["ls", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert main(["ls", "--threads=1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["ls", "--threads", "-2"]) == 2
        assert "threads must be >= 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
