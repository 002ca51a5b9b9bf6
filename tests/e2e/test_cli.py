"""The `shazzam` command as a user runs it: a subprocess, its exit code and its last line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.test_local_pipeline import garment_of

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
    garment = garment_of(summary["results"], "dress")
    assert garment["category"] == "dress" and len(garment["results"]) == 5
    assert "search with dress-query.jpg" in demo.stderr  # the human-readable form goes to stderr with --json

    found = shazzam("search", str(QUERIES / "dress-query.jpg"), "-k", "3", "--json", data_dir=tmp_path)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["results"]) == 3
    picked = shazzam("search", str(QUERIES / "dress-query.jpg"), "--garment", "1", "--category", "skirt", "--json", data_dir=tmp_path)
    (garment,) = json.loads(picked.stdout)["garments"]
    assert garment["index"] == 0 and garment["category"] == "skirt" and garment["category_source"] == "request"

    text = shazzam("search", str(QUERIES / "dress-query.jpg"), "--category", "dress", "-k", "2", data_dir=tmp_path)
    searched = text.stdout.count("(request, ")  # each searchable garment, searched in dress
    assert text.returncode == 0 and searched >= 1 and text.stdout.count(" L1 ") == 2 * searched, text.stdout

    refused = shazzam("search", str(REPO / "README.md"), data_dir=tmp_path)
    assert refused.returncode == 2 and "image rejected" in refused.stderr
    absent = shazzam("search", str(QUERIES / "dress-query.jpg"), "--garment", "9", data_dir=tmp_path)
    assert absent.returncode == 2 and "garment 9 is not in this photo: it has" in absent.stderr and "numbered 1 to" in absent.stderr

    invoked = shazzam("invoke", "search", str(REPO / "events" / "apigw-categories.json"), "--json", data_dir=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    mismatched = shazzam("invoke", "detect", str(REPO / "events" / "scheduled-index.json"), data_dir=tmp_path)
    assert mismatched.returncode == 2 and "detect takes an S3 ObjectCreated notification" in mismatched.stderr
    categories = json.loads(json.loads(invoked.stdout)["result"]["body"])["categories"]
    assert sum(c["items"] for c in categories) == 40


def test_eval_detector_scores_the_committed_detector(tmp_path, shared_data):
    from tests.support.detectors import real_detector_manifest

    manifest = real_detector_manifest()
    run = shazzam(
        "eval-detector", "--json", "--model", str(manifest), "--data", str(shared_data / "ccp"),
        "--small-data", "", "--out", str(tmp_path / "eval"), data_dir=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["photos"] == 100 and 0 <= report["metrics"]["map50"] <= 1
    assert set(report["metrics"]["per_class"]) == {"top", "outerwear", "pants", "dress", "skirt", "footwear", "bag", "hat", "eyewear", "belt"}
    assert report["latency_ms"]["median"] > 0 and report["model_bytes"] > 0
    assert {check["name"] for check in report["targets"]} >= {"mAP@0.5", "model bytes", "top-label agreement", "recall@0.5 top (shown)"}
    # the boxes shown are the confident top of the ranked list the AP is measured on
    shown, scored = report["served"]["per_class"], report["metrics"]["per_class"]
    assert all(shown[label]["predicted"] <= scored[label]["predicted"] for label in scored)
    assert sum(entry["predicted"] for entry in scored.values()) > sum(entry["predicted"] for entry in shown.values())
    assert Path(report["picture"]).is_file()


def test_eval_detector_without_a_model_says_so(tmp_path):
    run = shazzam("eval-detector", "--model", str(tmp_path / "nothing.json"), data_dir=tmp_path)
    assert run.returncode == 2 and "no detector manifest" in run.stderr


def test_eval_detector_scores_training_photos_with_other_settings_when_told(tmp_path, shared_data):
    from tests.support.detectors import real_detector_manifest

    run = shazzam(
        "eval-detector", "--model", str(real_detector_manifest()), "--data", str(shared_data / "ccp"), "--small-data", "",
        "--photos", "691-700", "--postprocess", "upsample=1", "--postprocess", "mirror=false",
        "--postprocess", "hypothesis_levels=0.2", data_dir=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "10 CCP photos, TRAINING photos among them (not a held-out figure) (0691-0700)" in run.stdout
    assert "'upsample': 1, 'mirror': False" in run.stdout and "'hypothesis_levels': (0.2,)" in run.stdout
    past_the_last = shazzam("eval-detector", "--model", str(real_detector_manifest()), "--data", str(shared_data / "ccp"),
                            "--small-data", "", "--photos", "799-900", "--json", data_dir=tmp_path)
    report = json.loads(past_the_last.stdout.strip().splitlines()[-1])
    assert (report["photos"], report["photo_range"], report["held_out"]) == (2, [799, 800], True)  # those scored


def test_eval_detector_refuses_bad_options(tmp_path):
    from tests.support.detectors import real_detector_manifest

    for option, says in ((["--photos", "700-601"], "empty"), (["--photos", "six"], "FIRST-LAST"),
                         (["--postprocess", "upsample=3"], "does not divide"), (["--postprocess", "wings=2"], "KEY=VALUE"),
                         (["--postprocess", "score_threshold=nan"], "fractions"), (["--postprocess", "min_share_of_largest=7"], "fractions"),
                         (["--postprocess", "min_area_fraction=-3"], "fractions"),
                         (["--small-data", str(tmp_path / "missing")], "is not a folder")):
        run = shazzam("eval-detector", "--model", str(real_detector_manifest()), "--data", str(tmp_path), *option, data_dir=tmp_path)
        assert run.returncode == 2 and says in run.stderr, (option, run.stderr)


def test_a_shop_url_no_scrape_could_use_is_refused_before_it_is_saved(tmp_path):
    refused = shazzam("shops", "add", "shop.example.com", data_dir=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "base_url must be an http(s) URL" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert shazzam("shops", "list", "--json", data_dir=tmp_path).stdout.strip() == "[]"


def test_shops_list_says_how_far_each_rounds_discovery_is(tmp_path):
    from shazzam import catalogue
    from shazzam.db import Database, sqlite_url
    from shazzam.scrape import ShopSource

    assert shazzam("shops", "add", "https://shop.example/", data_dir=tmp_path).returncode == 0
    db = Database(sqlite_url(tmp_path / "catalogue.db")).open_connection()
    shop = catalogue.active_shops(db)[0]
    key = catalogue.source_of_shop(shop).discovery_key()
    catalogue.record_discovery(db, shop["id"], key, None, [{"url": f"https://shop.example/list/{n}", "kind": "listing"} for n in (1, 2)])
    catalogue.record_discovery(db, shop["id"], key, {"url": "https://shop.example/list/1", "kind": "listing", "outcome": "listed"},
                               [{"url": "https://shop.example/p/1", "kind": "page"}])
    db.close()
    (listed,) = json.loads(shazzam("shops", "list", "--json", data_dir=tmp_path).stdout)
    assert listed["round_discovery"] == {"pages_found": 1, "documents_read": 1, "documents_left": 1} and listed["last_scraped_at"] is None
    assert shazzam("shops", "list", data_dir=tmp_path).stdout.strip() == (
        "https://shop.example/  https://shop.example/  last scraped never; this round has found 1 pages, read 1 sitemaps or listing pages, 1 left")
    db = Database(sqlite_url(tmp_path / "catalogue.db")).open_connection()
    catalogue.save_source(db, ShopSource(base_url="https://shop.example/", strategy="shopify"))  # what was found is no round of these settings
    db.close()
    (listed,) = json.loads(shazzam("shops", "list", "--json", data_dir=tmp_path).stdout)
    assert listed["strategy"] == "shopify" and listed["round_discovery"] is None


def test_user_errors_are_one_line_and_verbose_shows_where(tmp_path):
    missing = shazzam("search", str(tmp_path / "nope.jpg"), data_dir=tmp_path)
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith("shazzam search: FileNotFoundError")
    assert "Traceback" not in missing.stderr
    verbose = subprocess.run([sys.executable, "-m", "shazzam.cli", "--data-dir", str(tmp_path), "--verbose", "search", str(tmp_path / "nope.jpg")],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    for args in (("search", "x.jpg", "-k", "0"), ("serve", "--port", "70000"), ("eval", "--timing-images", "0"),
                 ("bench", "search", "--sizes", "10"), ("bench", "search", "--sizes", "1000,1e4")):
        rejected = shazzam(*args, data_dir=tmp_path)
        assert rejected.returncode == 2 and "Traceback" not in rejected.stderr, args  # argparse: before any work
    for option, value in (("--robustness", "-5"), ("--seed", "-1")):  # numpy's ValueError, once the data set was read
        rejected = shazzam("eval", option, value, data_dir=tmp_path)
        assert rejected.returncode == 2 and f"argument {option}: {value} is less than 0" in rejected.stderr, rejected.stderr


def test_a_json_result_is_the_whole_of_stdout_and_the_functions_log_to_stderr(tmp_path):
    run = shazzam("--verbose", "invoke", "index", str(REPO / "events" / "scheduled-index.json"), "--json", data_dir=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"result": {}, "followed": None}  # powertools wrote its lines here once
    assert '"message":"done"' in run.stderr


def test_the_search_function_logs_to_stderr_under_the_command_too(tmp_path, monkeypatch, capsys):
    from shazzam import cli, pipeline

    def broken_search(*_args, **_kwargs):
        raise RuntimeError("the database went away")  # the API logs it: a fault of ours

    monkeypatch.setattr(pipeline, "search", broken_search)
    status = cli.main(["--data-dir", str(tmp_path), "invoke", "search", str(REPO / "events" / "apigw-search.json"), "--json"])
    out, err = capsys.readouterr()
    assert status == 0 and json.loads(out)["result"]["statusCode"] == 500
    assert '"message":"unhandled error"' in err and '"service":"shazzam-search"' in err


def test_each_command_in_a_process_logs_at_its_own_level_and_leaves_the_environment_as_it_was(tmp_path, monkeypatch, capsys, caplog):
    """main() set $POWERTOOLS_LOG_LEVEL for good: a --verbose command after a quiet one in the same
    process logged nothing, and the rest of the process inherited the quiet one's WARNING. The
    root logger's level, which the stdlib loggers (the scraper's) follow, was set only by the
    process's first command, and kept after it."""
    from shazzam import cli

    monkeypatch.delenv("POWERTOOLS_LOG_LEVEL", raising=False)
    invoke = cli.cmd_invoke

    def invoke_as_the_scraper_logs(args):
        logging.getLogger("shazzam.scrape.extract").info("scraped")
        return invoke(args)

    monkeypatch.setattr(cli, "cmd_invoke", invoke_as_the_scraper_logs)
    root_level = logging.getLogger().level

    def logged_done(*options: str) -> tuple[bool, bool]:
        """Whether the function's logger, and the scraper's, logged at INFO."""
        caplog.clear()
        event = str(REPO / "events" / "scheduled-index.json")
        assert cli.main(["--data-dir", str(tmp_path), "--quiet", *options, "invoke", "index", event, "--json"]) == 0
        return '"message":"done"' in capsys.readouterr().err, "scraped" in caplog.messages

    assert [logged_done(), logged_done("--verbose"), logged_done()] == [(False, False), (True, True), (False, False)]
    assert logged_done("--verbose") == (True, True) and logging.getLogger().level == root_level
    assert "POWERTOOLS_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")  # the user's own wins
    assert logged_done()[0] and os.environ["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_a_serving_model_that_is_not_there_is_one_line_and_status_2(tmp_path):
    from shazzam.vision import manifest_path

    missing = tmp_path / "no-models"
    for args in (("search", str(QUERIES / "dress-query.jpg")), ("demo", "--no-serve", "--limit", "2", "--shop-port", "0")):
        run = shazzam("--model-dir", str(missing), *args, data_dir=tmp_path)
        assert run.returncode == 2, run.stderr  # search: 1, as for a mistake; demo: after its whole ingest
        assert run.stderr.strip().splitlines() == [f"shazzam {args[0]}: no model manifest at {manifest_path(str(missing))}"]


def test_a_data_folder_whose_name_looks_like_url_syntax_keeps_its_database(tmp_path):
    folder = tmp_path / "pct%20dir?q"
    assert shazzam("shops", "add", "http://127.0.0.1:9/", data_dir=folder).returncode == 0
    assert (folder / "catalogue.db").is_file() and not (tmp_path / "pct dir").exists()


def test_the_demo_finds_a_busy_port_before_its_ingest(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = shazzam("demo", "--port", str(taken.getsockname()[1]), "--shop-port", "0", data_dir=tmp_path)
    assert busy.returncode == 1 and "Address already in use" in busy.stderr and "Traceback" not in busy.stderr
    assert "sample shop serving" not in busy.stdout  # it stopped before the ingest began


def test_a_box_may_start_left_of_or_above_the_photo():
    from shazzam import cli

    argv = cli.joined_box(["search", "photo.jpg", "--box", "-5,-2,100,100", "--json"])
    args = cli.build_parser().parse_args(argv)
    assert args.box == "-5,-2,100,100" and args.json
    assert cli.joined_box(["search", "photo.jpg", "--box", "5,0,9,9"]) == ["search", "photo.jpg", "--box", "5,0,9,9"]


def test_ingest_stops_re_embedding_when_the_stale_pictures_stop_growing_fewer():
    from shazzam.cli import ingest_now
    from shazzam.local.runtime import DrainReport

    class Runtime:  # a picture that fails each time it is fetched again: one stale, one uploaded, every run
        index_runs = 0

        def fire_schedule(self, name, detail=None):
            if name == "scrape":
                return {"shops": 1}
            self.index_runs += 1
            assert self.index_runs < 10, "ingest never ends"
            return {"reembedding": {"stale": 1, "images_uploaded": 1}}

        def drain(self, _update=None):
            return DrainReport(delivered=1, failed=1, by_function={"detect": 1})

    runtime = Runtime()
    report = ingest_now(runtime, [], None, quiet=True)
    # The second run's picture is carried through detect and embed all the same.
    assert runtime.index_runs == 2 and report["events"] == {"delivered": 3, "failed": 3, "detect": 3}


def test_ingest_scrapes_a_shop_named_twice_once(tmp_path, monkeypatch):
    from shazzam import cli

    assert shazzam("shops", "add", "https://shop.example/", data_dir=tmp_path).returncode == 0
    scraped = []
    monkeypatch.setattr(cli, "ingest_now", lambda _runtime, urls, _limit, _quiet: scraped.append(urls) or {"scrape": {}, "events": {"failed": 0}})
    args = cli.build_parser().parse_args(["--data-dir", str(tmp_path), "ingest", "--json",
                                          "--shop", "https://shop.example/", "--shop", "HTTPS://Shop.example", "--shop", "https://shop.example/"])
    assert cli.cmd_ingest(args) == 0
    assert scraped == [["https://shop.example/"]]  # it was scraped three times, its counts added up


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    """systemd and Docker stop a service with SIGTERM: it closes the server and the runtime as Ctrl-C does."""
    import signal

    server = subprocess.Popen(
        [sys.executable, "-m", "shazzam.cli", "--data-dir", str(tmp_path), "serve", "--port", "0", "--no-schedules"],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        for line in server.stderr:
            if "Ctrl-C stops" in line:
                break
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
        server.wait()
