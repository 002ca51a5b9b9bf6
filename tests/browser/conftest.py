"""Debian's Chromium driven by Playwright, against `shazzam serve`'s API and page on 127.0.0.1.

Screenshots go to .artefacts/browser/ (git-ignored; CI keeps it as the tests' artefact).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shazzam.detector import Detection
from shazzam.images import Box
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop
from tests.api_fixtures import build_catalogue
from tests.conftest import REPO, unavailable

CHROMIUM = Path(os.environ.get("SHAZZAM_CHROMIUM", "/usr/bin/chromium"))
ARTEFACTS = REPO / ".artefacts" / "browser"


class OutfitDetector:
    """Three boxes (top, bottoms, shoes) at fixed places: stands in for the garment detector, which
    answers one whole-image box until its issue lands, so the page's several outlines are tested."""

    name = "fixed-outfit-boxes"
    BANDS = ((0.12, 0.52), (0.45, 0.86), (0.84, 1.0))

    def detect(self, image):
        return [
            Detection(Box(0, round(top * image.height), image.width, round(bottom * image.height)), None, 1.0)
            for top, bottom in self.BANDS
        ]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")  # module: the detector stand-in must not outlive these tests
def site(tmp_path_factory):
    """The base URL of `shazzam serve` (page and API) over an 80-item catalogue, finding three garments a photo."""
    runtime = LocalRuntime(tmp_path_factory.mktemp("site") / "data")
    with pytest.MonkeyPatch.context() as patch, SampleShop() as shop:
        build_catalogue(runtime, shop, per_category=8)
        patch.setattr("shazzam.detector.load_detector", lambda *args, **kwargs: OutfitDetector())
        server = runtime.start_api(port=0)
        yield f"http://127.0.0.1:{server.server_port}/"
        server.shutdown()
    runtime.close()


@pytest.fixture
def page(browser, request):
    """A fresh page that records console errors; `page.console_errors` is checked by the tests."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    yield page
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
