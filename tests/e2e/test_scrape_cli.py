"""`shazzam scrape` as a user runs it: a sources file, one pass, the summary (JSON and text)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shazzam.local.sample_shop import SampleShop
from tests.support.quirky_shop import QuirkyShop

REPO = Path(__file__).resolve().parents[2]


def shazzam(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shazzam.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )


def test_scrape_json_summary_then_an_unchanged_second_pass(tmp_path):
    with SampleShop(limit=4) as sample, QuirkyShop() as quirky:
        sources = tmp_path / "sources.toml"
        sources.write_text(
            f'[[source]]\nname = "sample"\nbase_url = "{sample.base_url}"\nstrategy = "sitemap"\n\n'
            f'[[source]]\nname = "quirky-listing"\nbase_url = "{quirky.base_url}"\nstrategy = "listing"\n'
            'listing_urls = ["/collections/all"]\nlocal = true\ndelay_s = 0\n'
        )
        first = shazzam("--quiet", "scrape", "--sources", str(sources), "--json", data_dir=tmp_path)
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["shops"] == 2 and summary["products_new"] == 6 and summary["images_uploaded"] == 6
        assert summary["errors"] == {} and summary["pipeline"]["failed"] == 0
        assert summary["pipeline"]["delivered"] == 18  # detect, standardise, embed for each image

        second = shazzam("scrape", "sample", data_dir=tmp_path)  # one source, the text summary
        assert second.returncode == 0, second.stderr
        assert "1 source(s)" in second.stdout
        assert "products: 0 new, 0 changed, 4 unchanged" in second.stdout
        assert "images: 0 queued" in second.stdout and "scrape" in second.stderr  # the progress bar
