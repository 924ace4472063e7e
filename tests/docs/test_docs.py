"""Every command block of README.md and docs/*.md runs as written, in a fresh folder per file, offline
(`docblocks` says how blocks are marked; only blocks that need a GPU or the network are skipped). ``scitune`` lines
start through a fork server (`forkserver`: no interpreter start-up per line); ``SCITUNE_DOCS_REAL_CLI=1`` runs
the real entry point instead."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docblocks import REPO, SKIP_REASONS, Block, blocks, doc_files

pytestmark = pytest.mark.docs
BLOCK_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    """The folder of the ``scitune`` shim (None: the real entry point), with its fork server running."""
    if os.environ.get("SCITUNE_DOCS_REAL_CLI", "") not in ("", "0"):
        yield None
        return
    import tempfile

    from forkserver import write_shim

    home = tmp_path_factory.mktemp("docs-cli")
    sock_dir = tempfile.mkdtemp(prefix="scitune-docs-")  # a short path: Unix sockets allow ~100 characters
    sock = os.path.join(sock_dir, "cli.sock")
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkserver.py")), sock],
                              env=_env(home), stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert server.stdout.readline().strip() == b"ready", "the docs fork server did not start"
        yield write_shim(home / "bin", sock).parent
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        Path(sock).unlink(missing_ok=True)
        os.rmdir(sock_dir)


def _env(folder: Path, shim: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCITUNE_", "HF_", "TRANSFORMERS_"))}
    path = [str(shim)] if shim else []
    env.update(
        PATH=os.pathsep.join([*path, str(Path(sys.executable).parent), env.get("PATH", "")]),
        SCITUNE_CACHE_DIR=str(folder / ".scitune-cache"),
        HF_HOME=str(folder / ".hf-home"),
        HF_HUB_OFFLINE="1",  # a command that would download fails at once instead
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    from conftest import SHARED_DATA

    env["SCITUNE_SHARED_DATA"] = str(SHARED_DATA)  # docs/eval.md's example on the real ScienceQA sample
    return env


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the background command exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"nothing answered on 127.0.0.1:{port} after {timeout_s:.0f} s")


def _run(block: Block, folder: Path, env: dict[str, str], log: Path) -> subprocess.Popen | None:
    script = "set -eo pipefail\n" + block.code
    folder = REPO if block.in_repo else folder
    with open(log, "ab") as out:
        out.write(f"\n===== {block} =====\n{block.code}".encode())
        out.flush()
        if block.background_port:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", block.background_port)) == 0:
                    raise AssertionError(f"{block}: port {block.background_port} is already taken on this machine")
            proc = subprocess.Popen(["bash", "-c", script], cwd=folder, env=env, stdout=out, stderr=out,
                                    start_new_session=True)  # fmt: skip
            _wait_for_port(block.background_port, proc)
            return proc
        try:
            done = subprocess.run(["bash", "-c", script], cwd=folder, env=env, stdout=out, stderr=out,
                                  timeout=BLOCK_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{block}: still running after {BLOCK_TIMEOUT_S} s") from None
    if done.returncode:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"{block}: exited with status {done.returncode}\n--- output (tail) ---\n{tail}")
    return None


def _docs_with_commands() -> list[Path]:
    return [p for p in doc_files() if blocks(p)]


def test_directives_are_known():
    for path in doc_files():
        for block in blocks(path):  # raises on an unknown directive
            assert block.skip in (None, *SKIP_REASONS), f"{block}: skip {block.skip!r}: only {SKIP_REASONS}"


@pytest.mark.parametrize("doc", _docs_with_commands(), ids=lambda p: p.name)
def test_doc_commands_run_as_written(doc: Path, tmp_path: Path, shim_dir: Path | None):
    folder = tmp_path / "fresh"
    folder.mkdir()
    env, log = _env(folder, shim_dir), tmp_path / "docs.log"
    background: list[subprocess.Popen] = []
    try:
        for block in blocks(doc):
            if block.skip:
                continue
            started = time.monotonic()
            proc = _run(block, folder, env, log)
            print(f"{block}: {time.monotonic() - started:.1f} s")  # shown with -s, or on a failure
            if proc:
                background.append(proc)
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
