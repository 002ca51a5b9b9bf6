"""bench/scrape_throughput.py's options."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_bad_options_are_refused_before_any_work():
    for option in (["--products", "0"], ["--delay", "-1"], ["--delay", "nan"], ["--concurrency", "5"]):  # the source caps 5 at 2
        run = subprocess.run([sys.executable, str(REPO / "bench" / "scrape_throughput.py"), *option], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and f"argument {option[0]}" in run.stderr and "Traceback" not in run.stderr, (option, run.stderr)
