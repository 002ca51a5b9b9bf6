"""The `shazzam` command as a user runs it: a subprocess, its exit code and its last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "samples" / "queries"


def shazzam(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shazzam.cli", "--data-dir", str(data_dir), "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_demo_then_search_and_invoke(tmp_path):
    demo = shazzam("demo", "--no-serve", "--json", "--limit", "40", "--shop-port", "0", data_dir=tmp_path)
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout.strip().splitlines()[-1])
    assert summary["counts"]["products"] == 40 and summary["counts"]["indexed"] == 40
    (garment,) = summary["results"]["garments"]
    assert garment["category"] == "dress" and len(garment["results"]) == 5
    assert "search with dress-query.jpg" in demo.stderr  # the human-readable form goes to stderr with --json

    found = shazzam("search", str(QUERIES / "dress-query.jpg"), "-k", "3", "--json", data_dir=tmp_path)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["garments"][0]["results"]) == 3

    text = shazzam("search", str(QUERIES / "dress-query.jpg"), "--category", "dress", "-k", "2", data_dir=tmp_path)
    assert text.returncode == 0 and text.stdout.count(" L1 ") == 2

    refused = shazzam("search", str(REPO / "README.md"), data_dir=tmp_path)
    assert refused.returncode == 2 and "image rejected" in refused.stderr

    invoked = shazzam("invoke", "search", str(REPO / "events" / "apigw-categories.json"), "--json", data_dir=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    categories = json.loads(json.loads(invoked.stdout)["result"]["body"])["categories"]
    assert sum(c["items"] for c in categories) == 40
