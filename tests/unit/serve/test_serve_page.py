"""The chat page in headless Chromium: load it, upload a figure, ask, and see the streamed answer appear."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from serve_browser import Browser, find_chromium
from serve_testkit import MODEL, client, data_url, image_message, running_server

pytest.importorskip("fastapi", reason="needs the serve extras: pip install -e .[serve]")
pytest.importorskip("openai", reason="needs the serve extras: pip install -e .[serve]")

QUESTION = "What type of figure is this?"
MAX_TOKENS = 24


@pytest.fixture
def figure(tmp_path) -> Path:
    from scitune.sources.scifig import make_figure

    path = tmp_path / "figure.png"
    make_figure(seed=0, index=0, split="test", image_size=224).image.save(path)
    return path


def test_chat_page_upload_ask_and_stream(tmp_path, figure):
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not found (Debian: apt-get install -y chromium)")
    with running_server() as (base, app):
        browser = Browser(exe, tmp_path / "chromium-profile")
        try:
            browser.send("Page.navigate", {"url": base + "/"})
            model = browser.wait_for("(t => t.startsWith('model') && t)(document.getElementById('model').textContent)")
            assert model == f"model: {MODEL}"
            browser.set_files("#file", [str(figure)])
            browser.wait_for("!document.getElementById('preview').hidden")
            browser.eval(f"document.getElementById('max-tokens').value = '{MAX_TOKENS}'")
            browser.eval(f"document.getElementById('question').value = {json.dumps(QUESTION)}")
            browser.eval("document.getElementById('send').click()")
            state = browser.wait_for("document.querySelector('.msg.assistant')?.dataset.state !== 'streaming' "
                                     "&& document.querySelector('.msg.assistant')?.dataset.state", timeout=60)  # fmt: skip
            answer = browser.eval("document.querySelector('.msg.assistant .text').textContent")
            assert state == "done", answer
            assert browser.eval("document.querySelector('.msg.user img').naturalWidth") == 224
            assert browser.eval("document.querySelector('.msg.user .text').textContent") == QUESTION
            shot = Path(os.environ.get("SCITUNE_SCREENSHOT") or tmp_path / "chat_page.png")
            browser.screenshot(shot)
            assert shot.stat().st_size > 1000
        finally:
            browser.close()
        # the page got exactly what the API answers for the same image and question (greedy decoding)
        direct = client(base).chat.completions.create(
            model=MODEL, messages=image_message(data_url(figure.read_bytes()), QUESTION), max_tokens=MAX_TOKENS,
            temperature=0,
        )  # fmt: skip
        assert answer == (direct.choices[0].message.content or "(empty answer)")
        assert app.state.batcher.stats.requests == 2
