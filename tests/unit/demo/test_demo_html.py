"""The demo's HTML report opens offline: images embedded, no remote resource (checked in the markup and, when
Chromium is installed, by loading the page headless with the network switched off); the first table's chance row
uses the official scorer's groups."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("markdown", reason="the HTML report needs the eval extra: pip install -e .[eval]")

REPORT = """# scitune demo (test)

## ScienceQA accuracy (official rule)

| model | Avg | IMG |
|---|---|---|
| with figure | 55.00 | 60.00 |

![loss curves](report/losses.png)

- [`eval/scifig-mcq`](eval/scifig-mcq/report.md): `scitune eval scifig-mcq --out x`
"""


@pytest.fixture
def report(tmp_path) -> Path:
    from PIL import Image

    (tmp_path / "report").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "report" / "losses.png")
    path = tmp_path / "report.md"
    path.write_text(REPORT)
    return path


def test_html_embeds_images_and_links_nothing_remote(report):
    from scitune.demo.html import remote_references, write_html

    html = write_html(report, report.parent / "report.html").read_text()
    assert "<table>" in html and "<td>55.00</td>" in html
    assert 'src="data:image/png;base64,' in html and "report/losses.png" not in html
    assert 'href="eval/scifig-mcq/report.md"' in html  # local links stay relative
    assert remote_references(html) == []


def test_remote_resources_are_found_and_refused(report, tmp_path):
    from scitune.demo.html import remote_references, write_html

    page = '<img src="https://x.org/a.png"><link href="//cdn.example/s.css"><a href="report.md">ok</a>'
    assert remote_references(page) == ["https://x.org/a.png", "//cdn.example/s.css"]
    report.write_text(REPORT + "\n![remote](http://example.com/plot.png)\n")
    with pytest.raises(ValueError, match="remote resources .*example.com"):
        write_html(report, tmp_path / "bad.html")
    assert not (tmp_path / "bad.html").exists()


def test_html_loads_in_chromium_with_the_network_off(report, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    from serve_browser import Browser, find_chromium

    from scitune.demo.html import write_html

    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not found (Debian: apt-get install -y chromium)")
    page = write_html(report, report.parent / "report.html")
    browser = Browser(exe, tmp_path / "chromium-profile")
    try:
        browser.send("Network.enable")
        browser.send("Network.emulateNetworkConditions",
                     {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})  # fmt: skip
        browser.send("Page.navigate", {"url": page.as_uri()})
        browser.wait_for("document.readyState === 'complete'")
        images = browser.eval("[...document.images].map(i => i.complete && i.naturalWidth)")
        assert images == [40]  # the embedded plot drew without any request
        fetched = browser.eval("performance.getEntriesByType('resource').map(e => e.name)")
        assert [u for u in fetched if not u.startswith("data:")] == []
        assert browser.eval("document.querySelectorAll('table td').length") == 3
    finally:
        browser.close()


def test_chance_row_uses_the_scorers_groups():
    from scitune.demo.paper import chance_groups

    def prob(n: int, image: bool, hint: str = "") -> dict:
        return {"choices": [str(i) for i in range(n)], "answer": 0, "hint": hint, "image": "i.png" if image else None,
                "subject": "natural science", "grade": "grade3", "topic": "t", "category": "c"}  # fmt: skip

    problems = {"a": prob(4, True), "b": prob(2, True), "c": prob(3, False, "data"), "d": prob(5, False)}
    chance = chance_groups(problems, list(problems))
    assert chance["Avg"] == {"count": 4, "acc": pytest.approx(100 * (1 / 4 + 1 / 2 + 1 / 3 + 1 / 5) / 4, abs=0.01)}
    assert chance["IMG"] == {"count": 2, "acc": 37.5}
    assert chance["TXT"]["acc"] == pytest.approx(33.33) and chance["NO"]["acc"] == 20.0
    assert chance["SOC"]["count"] == 0 and chance["SOC"]["acc"] is None
