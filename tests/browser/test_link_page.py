"""The link pages in a real browser: headless Chromium (Debian's package) driven by Playwright for Python.

Opens a file link and a folder link, clicks Download (and Download all, and one file of the folder),
checks the downloaded bytes, and opens a revoked link to see its error page. Screenshots go to a temp
folder, or to docs/ when BOX_SCREENSHOTS=docs (how the committed ones were made).
No `playwright install`: the browser is /usr/bin/chromium (scripts/install_chromium.sh puts it there).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                "(run scripts/install_chromium.sh as root)")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("BOX_SCREENSHOTS") == "docs":
        folder = Path(__file__).resolve().parents[2] / "docs"
    else:
        folder = tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def alice(make_device: Any) -> Device:
    a = make_device("alice-laptop", user="alice")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "photos", "--device", "alice-laptop")
    return a


def _download(page: Any, selector: str) -> bytes:
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_bytes()


def test_file_and_folder_links_in_chromium(alice: Device, browser: Any, shots: Path) -> None:
    report = os.urandom(300_000)  # a few blocks
    alice.write("trip/report 2026.pdf", report)
    alice.write("trip/notes.txt", "Day 1: arrived.\nDay 2: hiked.\n")
    alice.write("trip/pictures/beach.jpg", os.urandom(50_000))
    alice.write("trip/pictures/hills.jpg", os.urandom(40_000))
    alice.run("push", "-m", "trip")
    file_url = alice.run("link", "trip/report 2026.pdf", "--expires", "7d").out.strip()
    folder_url = alice.run("link", "trip").out.strip()

    context = browser.new_context(accept_downloads=True, viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    # A file link: name, size, time and a Download button that gives the very bytes.
    response = page.goto(file_url)
    assert response is not None and response.status == 200
    assert page.title().startswith("report 2026.pdf")
    assert "293.0 KiB" in page.inner_text("body")
    page.screenshot(path=str(shots / "link-file.png"), full_page=True)
    assert _download(page, "#download") == report

    # A folder link: listing, a download per file, subfolders, and Download all as a zip.
    response = page.goto(folder_url)
    assert response is not None and response.status == 200
    text = page.inner_text("body")
    assert "notes.txt" in text and "report 2026.pdf" in text and "pictures/" in text
    page.screenshot(path=str(shots / "link-folder.png"), full_page=True)
    notes = page.locator("li.file", has_text="notes.txt").locator("a.get")
    with page.expect_download() as info:
        notes.click()
    assert Path(info.value.path()).read_bytes() == b"Day 1: arrived.\nDay 2: hiked.\n"
    zipped = _download(page, "#download-all")
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert zf.read("trip/report 2026.pdf") == report
        assert zf.read("trip/notes.txt") == b"Day 1: arrived.\nDay 2: hiked.\n"
        assert {"trip/pictures/beach.jpg", "trip/pictures/hills.jpg"} <= set(zf.namelist())
    page.click("text=pictures/")
    assert "beach.jpg" in page.inner_text("body") and "hills.jpg" in page.inner_text("body")

    # Revoked: a clear page with 410, and nothing to download.
    alice.run("link", "rm", file_url)
    response = page.goto(file_url)
    assert response is not None and response.status == 410
    assert "revoked" in page.inner_text("body").lower()
    assert page.locator("#download").count() == 0
    page.screenshot(path=str(shots / "link-revoked.png"), full_page=True)
    # no script, no asset blocked by the Content-Security-Policy: only the 410 itself is reported
    assert [e for e in errors if "status of 410" not in e] == [], errors
    context.close()

    # The folder page on a desktop screen too.
    desk = browser.new_context(viewport={"width": 1100, "height": 720})
    page = desk.new_page()
    page.goto(folder_url)
    page.screenshot(path=str(shots / "link-folder-desktop.png"), full_page=True)
    desk.close()
