"""`scitune serve` from the command line: help, argument checks, and a real server process on loopback."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from serve_testkit import MODEL, client, free_port, raw_get, tiny_checkpoint

from scitune.cli.serve import main
from scitune.serve.config import ServeConfig


def test_help_lists_the_settings(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--checkpoint", "--host", "--port", "--api_key", "--image_root", "--max_batch_size", "--timeout_s"):
        assert flag in out
    assert "--served_model_name" in out and "/v1/completions" in out
    assert "127.0.0.1" in out


def test_bad_settings_name_the_flag():
    with pytest.raises(ValueError, match="--checkpoint"):
        main(["--port", "9"])
    with pytest.raises(ValueError, match="--max_batch_size"):
        ServeConfig(checkpoint="x", max_batch_size=0)


def test_main_serves_until_stopped(monkeypatch):
    """``main`` loads the checkpoint, takes the key from SCITUNE_API_KEY, serves, and returns 0 when stopped."""
    pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")
    openai = pytest.importorskip("openai", reason="needs the serve extras: pip install -e .[serve]")
    import scitune.serve.app as app_module

    servers = []
    real = app_module.make_server
    monkeypatch.setattr(app_module, "make_server", lambda app, cfg: servers.append(real(app, cfg)) or servers[-1])
    monkeypatch.setenv("SCITUNE_API_KEY", "k3y")
    port = free_port()
    args = ["--checkpoint", str(tiny_checkpoint()), "--port", str(port), "--log_level", "warning", "--threads", "1"]
    result: dict = {}
    threads = torch.get_num_threads()
    thread = threading.Thread(target=lambda: result.update(code=main(args)), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (servers and servers[0].started):
            assert thread.is_alive() and time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert raw_get(base, "/health")[1]["model"] == MODEL
        with pytest.raises(openai.AuthenticationError):
            client(base).models.list()
        r = client(base, api_key="k3y").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
        )
        assert r.usage.completion_tokens > 0
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(timeout=30)
        torch.set_num_threads(threads)  # --threads is process-wide: give the other tests theirs back
    assert result == {"code": 0}
