"""Every malformed input of `catalog.CASES`: one ``scitune: error:`` line naming the file (and line) or the flag, a
non-zero exit, no traceback, and no file of the case's folder lost, changed or left half-written."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from catalog import CASES, Ctx, big_png, markdown_table
from faultkit import assert_refused, inproc_cli, leftovers, snapshot

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_base):
    """A checkpoint of the tiny model and one 12000 x 12000 PNG, made once."""
    from scitune.loader import save_checkpoint, tiny_vlm

    root = tmp_path_factory.mktemp("fault-inputs")
    ckpt = save_checkpoint(*tiny_vlm(), root / "ckpt")
    return {"ckpt": ckpt, "big": big_png(root / "big.png"), "base": tiny_base}


def _hang_guard(seconds: int):
    """Fail the test instead of hanging (a FIFO opened by mistake would block forever)."""

    def alarm(*_):
        raise TimeoutError(f"the command hung for {seconds} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_ends_in_one_clear_error(case, tmp_path, shared, capsys, fresh_accelerate_state):
    from conftest import make_color_records

    make_color_records(tmp_path / "data", n=4)
    ctx = Ctx(tmp_path, shared["ckpt"], shared["base"], shared["big"])
    argv = case.argv(ctx)
    before = snapshot(tmp_path)
    _hang_guard(120)
    try:
        res = inproc_cli(argv, capsys)
    finally:
        signal.alarm(0)
    line = assert_refused(res, code=case.code)
    said = line + "\n" + res.out  # data validate lists every bad record on stdout, then its error line
    for name in case.names:
        assert name in said, f"{name!r} not in {said[-1500:]!r}"
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before, "a file of the case's folder was lost or changed"
    assert not leftovers(tmp_path), leftovers(tmp_path)


def test_at_least_100_malformed_inputs_with_the_other_fault_tests():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


def test_docs_list_every_case():
    """docs/reliability.md holds the table that `python tests/faults/catalog.py` prints."""
    assert markdown_table() in (REPO / "docs" / "reliability.md").read_text()
