"""bench/load_api.py on a tiny catalogue: its searches answer, with results for every garment."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_the_load_benchmark_times_searches_that_answer():
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load_api.py"), "--per-category", "5", "--garments", "2",
                          "--requests", "3", "--concurrency", "1", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert [level["errors"] for level in summary["levels"]] == [{}, {}]
    assert all(level["searches_per_s"] > 0 and level["p50_ms"] <= level["p99_ms"] for level in summary["levels"])


def test_bad_options_are_refused_before_any_work():
    for option in (["--per-category", "-1"], ["--concurrency", "0"], ["--photo", "/nope.jpg"], ["--garments", "0"], ["--requests", "0"]):
        run = subprocess.run([sys.executable, str(REPO / "bench" / "load_api.py"), *option], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and f"argument {option[0]}" in run.stderr and "Traceback" not in run.stderr, (option, run.stderr)
