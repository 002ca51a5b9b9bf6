"""The page as the stack deploys it, in headless Chromium: served from an origin of its own with
the Content-Security-Policy and headers CloudFront adds, its index.html naming the API (on another
origin) the way BucketDeployment writes it. It must load, search and show results with nothing
blocked. Skips without Chromium outside CI, like tests/browser.

Chromium is driven from a child process: Playwright's sync API allows one instance per thread,
and tests/browser's session-wide one may be running in this process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from shazzam_cdk.site import content_security_policy, page_with_api

from tests.browser.conftest import CHROMIUM, site  # noqa: F401  (site: the API over a small catalogue)
from tests.conftest import REPO, unavailable

PHOTO = REPO / "samples" / "queries" / "dress-query.jpg"

DRIVER = r"""
import json, sys
from playwright.sync_api import expect, sync_playwright

chromium, url, photo = sys.argv[1:4]
errors = []
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    )
    page = browser.new_page()
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(60_000)  # the first search loads the model; slow on a busy machine
    # Selectors and locator assertions only: wait_for_function evaluates a string, which script-src 'self' forbids.
    page.goto(url)
    page.wait_for_selector("#category option >> nth=1", state="attached")  # GET /categories, cross-origin
    page.set_input_files("#file", photo)
    page.wait_for_selector("#items .item")  # POST /search, cross-origin
    pictures = page.locator("#items img").all()[:2]
    for picture in pictures:  # the results' pictures (img-src)
        expect(picture).to_have_js_property("complete", True, timeout=30_000)
        expect(picture).not_to_have_js_property("naturalWidth", 0, timeout=30_000)
    print(json.dumps({"items": page.locator("#items .item").count(), "pictures": len(pictures), "errors": errors}))
    browser.close()
"""


@pytest.fixture(scope="module")
def deployed_page(site, tmp_path_factory):  # noqa: F811
    """web/ as deployed (the API's URL written into index.html), served with the CSP on its own port."""
    folder = tmp_path_factory.mktemp("deployed-web")
    for path in (REPO / "web").iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "index.html").write_text(page_with_api((REPO / "web" / "index.html").read_text(), site))
    api_origin = site.rstrip("/")
    # Locally the API and the sample shop's pictures are plain http on 127.0.0.1; deployed, https.
    policy = content_security_policy(api_origin, upload_hosts=[]).replace("img-src 'self' data: blob: https:", "img-src 'self' data: blob: http:")

    class Handler(SimpleHTTPRequestHandler):
        def end_headers(self):
            self.send_header("Content-Security-Policy", policy)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            super().end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_deployed_page_searches_the_api_under_its_content_security_policy(deployed_page, site):  # noqa: F811
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    assert deployed_page != site  # two origins, as CloudFront and API Gateway are
    process = subprocess.run(
        [sys.executable, "-c", DRIVER, str(CHROMIUM), deployed_page, str(PHOTO)], capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr[-3000:]
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    assert outcome["items"] > 0 and outcome["pictures"] > 0
    assert outcome["errors"] == []  # a CSP violation is reported on the console
