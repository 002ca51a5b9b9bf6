"""`shazzam scrape` as a user runs it: a sources file, one pass, the summary (JSON and text)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from shazzam.local.sample_shop import SampleShop
from tests.support.addresses import unreachable_address
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


def test_a_scrape_whose_pipeline_events_fail_says_so_and_exits_1(tmp_path):
    # One picture, so one failed event: a single one is enough to fail the run a cron job watches.
    with SampleShop(limit=1) as sample:
        assert shazzam("shops", "add", sample.base_url, data_dir=tmp_path).returncode == 0
        empty_models = tmp_path / "no-models"  # a --model-dir typo: every embed fails
        empty_models.mkdir()
        run = shazzam("--quiet", "--model-dir", str(empty_models), "scrape", "--force", data_dir=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pipeline: " in run.stdout and " 0 failed" not in run.stdout.split("pipeline: ")[1].splitlines()[0]
    assert "dead-letters" in run.stderr


def unreachable_shop(sources: Path) -> str:
    """A shop at a port nothing listens on, in a sources file; no retries, so a refused connection
    fails at once instead of after the backoff (1 + 2 + 4 s a page)."""
    address = unreachable_address()
    sources.write_text(f'[[source]]\nbase_url = "{address}"\nlocal = true\n\n[source.fetch]\nretries = 0\n')
    return address


def test_a_scrape_of_a_shop_that_cannot_be_reached_exits_1_and_leaves_it_due(tmp_path):
    unreachable_shop(tmp_path / "sources.toml")
    run = shazzam("--quiet", "scrape", "--sources", str(tmp_path / "sources.toml"), "--json", data_dir=tmp_path)
    assert run.returncode == 1
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["shops_failed"] == 1 and summary["errors"]
    again = shazzam("--quiet", "scrape", "--json", data_dir=tmp_path)  # not marked scraped: still due
    assert json.loads(again.stdout.strip().splitlines()[-1])["shops"] == 1


def spoil_settings(data_dir: Path, url: str) -> None:
    """The shop's row as one saved before today's checks: a strategy no scrape knows."""
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute("UPDATE shops SET strategy = 'crawl-all' WHERE base_url = ?", (url,))


def test_a_scrape_that_skips_a_shop_for_its_settings_names_it_and_exits_1(tmp_path):
    assert shazzam("shops", "add", "https://old.example/", data_dir=tmp_path).returncode == 0
    spoil_settings(tmp_path, "https://old.example/")
    for named in ([], ["https://old.example/"]):
        run = shazzam("--quiet", "scrape", "--force", *named, data_dir=tmp_path)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "https://old.example/ is skipped: unknown strategy 'crawl-all'" in run.stderr
        assert "1 source(s) skipped" in run.stderr
    with SampleShop(limit=1) as sample:  # beside a good shop, which is scraped all the same
        assert shazzam("shops", "add", sample.base_url, data_dir=tmp_path).returncode == 0
        run = shazzam("--quiet", "scrape", "--json", data_dir=tmp_path)
        ingest = shazzam("--quiet", "ingest", "--json", data_dir=tmp_path)
    assert run.returncode == 1 and "1 source(s) skipped" in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["shops"] == 1 and summary["shops_skipped"] == 1 and summary["products_new"] == 1
    assert ingest.returncode == 1 and "1 shop(s) skipped" in ingest.stderr
    assert json.loads(ingest.stdout.strip().splitlines()[-1])["scrape"]["shops_skipped"] == 1


def test_ingest_skips_a_shop_saved_under_an_address_now_refused_and_goes_on_with_the_others(tmp_path):
    # Ingest names each shop by its stored address, which no scrape could use: found as stored, it is
    # skipped and counted, not an error that stops the run before the shops after it.
    assert shazzam("shops", "add", "http://old.example/", data_dir=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "catalogue.db") as db:  # saved before user names were refused; sorts first
        db.execute("UPDATE shops SET base_url = 'http://0:0@old.example/' WHERE base_url = 'http://old.example/'")
    with SampleShop(limit=1) as sample:
        assert shazzam("shops", "add", sample.base_url, data_dir=tmp_path).returncode == 0
        ingest = shazzam("--quiet", "ingest", "--json", data_dir=tmp_path)
        named = shazzam("--quiet", "ingest", "--json", "--shop", "http://0:0@old.example/", data_dir=tmp_path)
    assert ingest.returncode == 1, ingest.stdout + ingest.stderr
    assert "http://0:0@old.example/ is skipped" in ingest.stderr and "1 shop(s) skipped" in ingest.stderr
    report = json.loads(ingest.stdout.strip().splitlines()[-1])
    assert report["scrape"]["shops_skipped"] == 1 and report["scrape"]["products_new"] == 1
    assert report["events"]["embed"] == 1 and report["counts"]["indexed"] == 1
    assert named.returncode == 1 and json.loads(named.stdout.strip().splitlines()[-1])["scrape"]["shops_skipped"] == 1


def test_ingest_names_only_shops_that_are_on_and_brings_none_back(tmp_path):
    assert shazzam("shops", "add", "https://shop.example/", data_dir=tmp_path).returncode == 0
    assert shazzam("shops", "remove", "https://shop.example/", data_dir=tmp_path).returncode == 0
    for url in ("https://shop.example/", "https://typo.example/"):
        run = shazzam("--quiet", "ingest", "--shop", url, data_dir=tmp_path)
        assert run.returncode == 1 and f"no active shop at {url}" in run.stderr and "Traceback" not in run.stderr
    assert json.loads(shazzam("shops", "list", "--json", data_dir=tmp_path).stdout) == []  # neither registered nor back


def test_ingest_scrapes_every_registered_shop_now_whatever_its_schedule(tmp_path):
    with SampleShop(limit=1) as sample:
        sources = tmp_path / "sources.toml"
        sources.write_text(f'[[source]]\nbase_url = "{sample.base_url}"\nschedule = "rate(1 day)"\n')
        assert shazzam("--quiet", "scrape", "--sources", str(sources), data_dir=tmp_path).returncode == 0  # due again in a day
        run = shazzam("--quiet", "ingest", "--json", data_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["scrape"]["shops"] == 1


def test_ingest_goes_on_past_a_shop_that_cannot_be_reached_and_exits_1(tmp_path):
    unreachable = unreachable_shop(tmp_path / "sources.toml")
    assert shazzam("--quiet", "scrape", "--sources", str(tmp_path / "sources.toml"), data_dir=tmp_path).returncode == 1
    with SampleShop(limit=2) as sample:
        assert shazzam("shops", "add", sample.base_url, data_dir=tmp_path).returncode == 0
        run = shazzam("--quiet", "ingest", "--shop", unreachable, "--shop", sample.base_url, "--json", data_dir=tmp_path)
    assert run.returncode == 1 and "could not be read" in run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["scrape"]["shops_failed"] == 1 and report["scrape"]["products_new"] == 2  # the second shop was scraped
    assert report["counts"]["indexed"] > 0


def test_shops_remove_takes_a_shop_off_and_add_brings_it_back(tmp_path):
    assert shazzam("shops", "add", "https://shop.example/", "--name", "Example", data_dir=tmp_path).returncode == 0
    removed = shazzam("shops", "remove", "HTTPS://shop.example", data_dir=tmp_path)
    assert removed.returncode == 0 and "Example" not in removed.stdout
    unknown = shazzam("shops", "remove", "https://nowhere.example/", data_dir=tmp_path)
    assert unknown.returncode == 1 and "no shop at" in unknown.stderr
    secret = shazzam("shops", "add", "https://buyer:s3cret@shop.example/", data_dir=tmp_path)
    assert secret.returncode == 1 and "user name or password" in secret.stderr and "s3cret" not in secret.stdout
    assert "Example" in shazzam("shops", "add", "https://shop.example/", data_dir=tmp_path).stdout
