"""The `shazzam` command: the embedded runtime from a terminal.

  shazzam demo      the whole system on a bundled sample shop, then a search (and serve)
  shazzam serve     the web page and the API on 127.0.0.1, the event queue and the schedules
  shazzam ingest    scrape shops now, carry their images through the pipeline, index them
  shazzam scrape    one scrape pass over the sources (or one), with a summary
  shazzam search    search the local catalogue with a photo
  shazzam shops     add or list the shops the scheduled scrape visits
  shazzam invoke    run one function's handler on an event file (see events/)
  shazzam bench     benchmarks (bench search: the index's L1 search)
  shazzam eval      the garment model's figures on clothing-dataset-small vs a baseline, with targets
  shazzam eval-detector  the garment detector's mAP and recall on CCP, speed and size, with targets
Every result has a --json form; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from shazzam import wiring
from shazzam.storage import ObjectNotFound

DEFAULT_DATA_DIR = ".shazzam"
SMALL_DATA_DEFAULT = "../shared/data/clothing-dataset-small"  # beside a checkout; absent on a user's machine


def _runtime(args):
    from shazzam.local.runtime import LocalRuntime

    # The catalogue may live elsewhere (MariaDB, say); the objects always live in the data folder.
    return LocalRuntime(args.data_dir, db_url=os.environ.get("SHAZZAM_DB_URL") or None, model_dir=args.model_dir)


def _progress_bar(description: str, quiet: bool):
    """A tqdm bar whose total grows as handlers queue more events; returns (callback, close)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="event", file=sys.stderr, disable=quiet, total=0)

    def update(done: int, waiting: int) -> None:
        bar.total = done + waiting
        bar.n = done
        bar.refresh()

    return update, bar.close


def ingest_now(runtime, shop_urls: list[str], limit: int | None, quiet: bool) -> dict:
    """Scrape, deliver every event the scrape causes, then index: what the schedules do, at once."""
    from shazzam.lease import LeaseBusy
    from shazzam.pipeline import ScrapeFailed

    scraped: dict[str, int] = {}
    for url in shop_urls or [None]:
        detail = {"shop_url": url} if url else {}
        if limit is not None:
            detail["limit"] = limit
        # The scrape function runs here; each image it uploads queues a detect event.
        while True:
            try:
                report = runtime.fire_schedule("scrape", detail)
            except LeaseBusy as busy:  # another process crawls: Lambda would try again later, so does this
                print(f"scrape: {busy}; waiting on", file=sys.stderr)
                continue
            except ScrapeFailed as failure:  # the invocation failed, as in AWS: the other shops go on
                print(f"scrape: {failure}", file=sys.stderr)
                report = failure.report
            break
        for name, value in report.items():
            scraped[name] = scraped.get(name, 0) + value
    if not quiet:
        print(
            f"scraped {scraped.get('products', 0)} products from {scraped.get('shops', 0)} shop(s): "
            f"{scraped.get('images_uploaded', 0)} images uploaded, {scraped.get('images_unchanged', 0)} unchanged, "
            f"{scraped.get('images_failed', 0)} failed",
            file=sys.stderr,
        )
    update, close = _progress_bar("detect/standardise/embed", quiet)
    drains = [runtime.drain(update)]
    close()
    indexed = runtime.fire_schedule("index")
    # After a model change each index run fetches stale images again: carry them through too, while
    # the stale ones grow fewer (a picture that fails each time must not hold ingest for ever).
    stale = float("inf")
    while indexed.get("reembedding", {}).get("images_uploaded"):
        drains.append(runtime.drain(update))  # the last batch too, or it waits in incoming/ for a schedule
        if indexed["reembedding"]["stale"] >= stale:
            break
        stale = indexed["reembedding"]["stale"]
        indexed = runtime.fire_schedule("index")
    events = {"delivered": sum(d.delivered for d in drains), "failed": sum(d.failed for d in drains)}
    for drained in drains:
        for function, count in drained.by_function.items():
            events[function] = events.get(function, 0) + count
    return {"scrape": scraped, "events": events, "index": indexed}


def print_results(response: dict, out) -> None:
    if not response["garments"]:
        print("no garment found in the photo", file=out)
    for number, garment in enumerate(response["garments"], 1):
        number = garment.get("index", number - 1) + 1  # a garment's number in the full answer
        found = f"[{garment['label']}] " if garment.get("label") else ""
        if not garment.get("searchable", True):
            print(f"garment {number}: {found}nothing of its kind in the catalogue yet, box {garment['box']}", file=out)
            continue
        print(
            f"garment {number}: {found}{garment['category']} ({garment['category_source']}, "
            f"classifier says {garment['predicted_category']} {garment['confidence']:.0%}), box {garment['box']}",
            file=out,
        )
        if not garment["results"]:
            print("  no items in this category yet", file=out)
        for rank, item in enumerate(garment["results"], 1):
            price = f"{item['price']} {item['currency'] or ''}".strip() if item["price"] else "price unknown"
            print(f"  {rank:2d}. {item['title']:<40.40}  {price:>12}  L1 {item['distance']:7.3f}  {item['url']}", file=out)


def cmd_demo(args) -> int:
    from shazzam import catalogue, pipeline
    from shazzam.local.sample_shop import SampleShop, repository_samples_dir
    from shazzam.vision import ModelError

    out = sys.stderr if args.json else sys.stdout
    started = time.perf_counter()
    runtime = _runtime(args)
    samples = repository_samples_dir()
    # The API's port is taken first: a busy one is found before the ingest, not after it.
    server = None if args.no_serve else runtime.start_api(args.host, args.port)
    try:
        try:  # before the ingest, whose every embed event would fail on a model that is not there
            runtime.app.garment_model
        except ModelError as exc:
            print(f"shazzam demo: {exc}", file=sys.stderr)
            return 2
        with SampleShop(port=args.shop_port, limit=args.limit) as shop:
            print(f"sample shop serving on {shop.base_url}", file=out)
            catalogue.add_shop(runtime.db, shop.base_url, name="Shazzam Sample Shop")
            report = ingest_now(runtime, [], None, args.quiet)
            counts = catalogue.counts(runtime.db)
            print(
                f"catalogue: {counts['products']} products, {counts['images']} images "
                f"({counts['images_failed']} failed), {counts['indexed']} garments indexed",
                file=out,
            )
            queries = json.loads((samples / "queries" / "queries.json").read_text())
            query = queries[0]
            query_path = samples / "queries" / query["file"]
            response = pipeline.search(runtime.app, query_path.read_bytes(), k=args.k)
            print(f"\nsearch with {query_path.name} (a {query['category']} not in the catalogue):", file=out)
            print_results(response, out)
            summary = {
                "counts": counts,
                "ingest": report,
                "query": {"file": str(query_path), "category": query["category"]},
                "results": response,
                "wall_s": round(time.perf_counter() - started, 1),
            }
            if server is not None:
                runtime.start_background()
                _serve_until_interrupt(f"\n{_serving_line(args.host, server.server_port)}; Ctrl-C stops", out)
            if args.json:
                print(json.dumps(summary, default=str))
    finally:
        if server is not None:
            server.shutdown()
        runtime.close()
    return _failed_events(runtime, report["events"]["failed"])


def _serve_until_interrupt(line: str, out) -> None:
    """Say `line`, then wait for Ctrl-C, or SIGTERM (what systemd and Docker send): either way the
    caller then closes the server and the runtime, which finish what they were writing. The
    handler is set before the line is said, so a stop sent as soon as it is read is not a kill."""
    import signal

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        print(line, file=out)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _serving_line(host: str, port: int) -> str:
    return f"the page on http://{host}:{port}/ , the API beside it (POST /search; see /openapi.json)"


def cmd_serve(args) -> int:
    runtime = _runtime(args)
    server = runtime.start_api(args.host, args.port)
    runtime.start_background(schedules=not args.no_schedules)
    _serve_until_interrupt(f"{_serving_line(args.host, server.server_port)}; data in {args.data_dir}; Ctrl-C stops", sys.stderr)
    server.shutdown()
    runtime.close()
    return 0


def _failed_events(runtime, failed: int) -> int:
    """Exit status 1, said on stderr, when pipeline events failed (each written to dead-letters/)."""
    if not failed:
        return 0
    print(f"{failed} pipeline event(s) failed: see {runtime.data_dir / 'dead-letters'}", file=sys.stderr)
    return 1


def cmd_ingest(args) -> int:
    from shazzam import catalogue

    runtime = _runtime(args)
    try:
        named: dict[str, str] = {}
        for url in args.shop:  # each before any work; two spellings of one shop scrape it once
            named.setdefault(catalogue.active_shop_id(runtime.db, url), url)
        # Named, a shop is scraped whether its schedule has it due or not: "now" is every shop.
        shop_urls = list(named.values()) or [shop["base_url"] for shop in catalogue.active_shops(runtime.db)]
        report = ingest_now(runtime, shop_urls, args.limit, args.quiet)
        report["counts"] = catalogue.counts(runtime.db)
    finally:
        runtime.close()
    print(json.dumps(report, default=str) if args.json else _format_report(report))
    return _shops_not_scraped(report["scrape"], "shop") or _failed_events(runtime, report["events"]["failed"])


def _shops_not_scraped(report: dict, noun: str) -> int:
    """Exit status 1, said on stderr, when a shop was skipped for its settings or could not be read:
    the others were scraped all the same, but a job that runs the command must not read success."""
    if report.get("shops_skipped"):
        # Named by the scrape's ERROR log lines, which main sends to stderr, before this one.
        print(f"{report['shops_skipped']} {noun}(s) skipped: their saved settings no scrape could use (each named above, with why);"
              " correct them with `shazzam scrape --sources FILE`, or take them off with `shazzam shops remove URL`",
              file=sys.stderr)
    if report.get("shops_failed"):
        print(f"{report['shops_failed']} of {report['shops']} {noun}(s) could not be read", file=sys.stderr)
    return 1 if report.get("shops_skipped") or report.get("shops_failed") else 0


def scrape_summary(report: dict) -> dict:
    """The flat report of pipeline.scrape with its `errors.<kind>` keys folded into `errors`."""
    summary = {name: value for name, value in report.items() if not name.startswith("errors")}
    summary["errors"] = {name.split(".", 1)[1]: value for name, value in report.items() if name.startswith("errors.")}
    return summary


def cmd_scrape(args) -> int:
    from tqdm import tqdm

    from shazzam import catalogue, pipeline
    from shazzam.scrape import load_sources

    runtime = _runtime(args)
    try:
        for source in load_sources(args.sources) if args.sources else []:
            catalogue.save_source(runtime.db, source)
        bar = tqdm(desc="scrape", unit="page", file=sys.stderr, disable=args.quiet, total=0)

        def progress(done: int, total: int) -> None:
            bar.total = max(total, done)
            bar.n = done
            bar.refresh()

        report = pipeline.scrape(runtime.app, limit=args.limit, progress=progress, source=args.source, force=args.force, budget_s=None)
        bar.close()
        summary = scrape_summary(report)
        # Deliver the detect/standardise/embed events the new images caused, as S3 would.
        drained = runtime.drain()
        summary["pipeline"] = {"delivered": drained.delivered, "failed": drained.failed}
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        errors = ", ".join(f"{kind} {n}" for kind, n in summary["errors"].items()) or "none"
        print(
            f"{summary['shops']} source(s): {summary['pages_fetched']} pages fetched, {summary['skipped_by_robots']} skipped by robots.txt\n"
            f"products: {summary['products_new']} new, {summary['products_changed']} changed, {summary['products_unchanged']} unchanged, "
            f"{summary['products_dead']} dead, {summary['products_revived']} revived\n"
            f"images: {summary['images_uploaded']} queued, {summary['images_unchanged']} unchanged, "
            f"{summary['images_duplicate']} duplicates, {summary['images_failed']} failed\n"
            f"pipeline: {summary['pipeline']['delivered']} events delivered, {summary['pipeline']['failed']} failed\n"
            f"errors: {errors}"
        )
    return _shops_not_scraped(summary, "source") or _failed_events(runtime, summary["pipeline"]["failed"])


def _format_report(report: dict) -> str:
    return "\n".join(f"{name}: {value}" for name, value in report.items())


def cmd_search(args) -> int:
    from shazzam import pipeline
    from shazzam.vision import ModelError

    runtime = _runtime(args)
    try:
        image = Path(args.image).read_bytes()
        try:
            try:
                box = [int(v) for v in args.box.split(",")] if args.box else None
            except ValueError:
                raise ValueError(f"--box is four whole numbers left,top,right,bottom in the photo's pixels, not {args.box!r}") from None
            garment = None if args.garment is None else args.garment - 1  # printed from 1, indexed from 0
            response = pipeline.search(runtime.app, image, category=args.category, k=args.k, garment=garment, box=box)
        except pipeline.GarmentNotFound as exc:  # the API counts from 0, this command from 1
            where = f"it has {exc.found}, numbered 1 to {exc.found}" if exc.found else "no garment was found in it"
            print(f"shazzam search: garment {exc.index + 1} is not in this photo: {where}", file=sys.stderr)
            return 2
        except (pipeline.BadRequest, ValueError, ModelError) as exc:  # ModelError: the serving model is not there
            print(f"shazzam search: {exc}", file=sys.stderr)
            return 2
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(response, default=str))
    else:
        print_results(response, sys.stdout)
    return 0


def cmd_shops(args) -> int:
    from shazzam import catalogue
    from shazzam.db import Database, sqlite_url

    db = Database(os.environ.get("SHAZZAM_DB_URL") or sqlite_url(Path(args.data_dir) / "catalogue.db")).open_connection()
    if args.shops_command == "add":
        catalogue.add_shop(db, args.url, name=args.name)
    elif args.shops_command == "remove" and not catalogue.take_shop_off(db, args.url):
        raise ValueError(f"no shop at {args.url}")
    shops = catalogue.active_shops(db)
    progress = catalogue.discovery_progress(db)
    for shop in shops:
        try:
            key = catalogue.source_of_shop(shop).discovery_key()
        except ValueError:  # settings no scrape could use (the scrape skips the shop)
            key = None
        # None: no round under way, none past its start, or one under settings since changed
        shop["round_discovery"] = progress.get((shop["id"], key))
    print(json.dumps(shops, default=str) if args.json else "\n".join(map(_shop_line, shops)))
    return 0


def _shop_line(shop: dict) -> str:
    line = f"{shop['name']}  {shop['base_url']}  last scraped {shop['last_scraped_at'] or 'never'}"
    if found := shop["round_discovery"]:
        line += (f"; this round has found {found['pages_found']:,} pages, read {found['documents_read']:,} sitemaps or listing pages,"
                 f" {found['documents_left']:,} left")
    return line


def event_kind_missing(function: str, event) -> str | None:
    """The kind of event `function` takes, when `event` is not of that kind (else None)."""
    kinds = {type(trigger) for trigger in wiring.by_name(function).triggers}
    if not isinstance(event, dict):
        return "a JSON object"
    if wiring.ObjectCreated in kinds and not isinstance(event.get("Records"), list):
        return "an S3 ObjectCreated notification (its Records), such as events/s3-incoming.json"
    if wiring.Route in kinds and "requestContext" not in event:
        return "an API Gateway HTTP API request, such as events/apigw-health.json"
    if wiring.Schedule in kinds and "detail-type" not in event:
        return "an EventBridge scheduled event, such as events/scheduled-index.json"
    return None


def cmd_invoke(args) -> int:
    event = json.loads(Path(args.event).read_text())
    if wanted := event_kind_missing(args.function, event):
        print(f"shazzam invoke: {args.function} takes {wanted}; {args.event} is not one", file=sys.stderr)
        return 2
    runtime = _runtime(args)
    try:
        result = runtime.invoke(args.function, event)
        drained = runtime.drain() if args.follow else None
    except ObjectNotFound as exc:
        print(f"shazzam invoke: object {exc} not found", file=sys.stderr)
        return 2
    finally:
        runtime.close()
    print(json.dumps({"result": result, "followed": drained and drained.__dict__}, default=str, indent=None if args.json else 2))
    return 0


def cmd_bench(args) -> int:
    from shazzam import bench_search

    report = bench_search.run(args.sizes, args.queries, dim=args.dim, log=(lambda message: None) if args.quiet else None,
                              model_dir=args.model_dir)
    print(json.dumps(report) if args.json else bench_search.format_report(report))
    return 0


def cmd_eval(args) -> int:
    """`shazzam eval`: retrieval, classifier, robustness, speed and size figures vs the targets."""
    from shazzam import evaluation

    try:
        model = evaluation.resolve_manifest(args.model, args.model_dir)
        baseline = None if (args.baseline or "").lower() in ("", "none") else evaluation.resolve_manifest(args.baseline, args.model_dir)
        report = evaluation.run_evaluation(
            args.data,
            model,
            baseline,
            robustness=args.robustness,
            seed=args.seed,
            cache_dir=None if args.cache == "" else (args.cache or Path(args.data_dir) / "eval-cache"),
            vgg16=args.vgg16,
            timing_images=args.timing_images,
            out_dir=None if args.out == "" else (args.out or Path(args.data_dir) / "eval"),
            threads=args.threads,
            progress=not args.quiet,
            ccp_dir=args.ccp or None,
            model_dir=args.model_dir,
            log=None if args.quiet else (lambda message: print(message, file=sys.stderr)),
        )
    except evaluation.EvaluationError as exc:
        print(f"shazzam eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else evaluation.format_report(report))
    return 0


def cmd_eval_detector(args) -> int:
    """`shazzam eval-detector`: the detector on CCP's validation photos and clothing-dataset-small, vs the targets."""
    from shazzam import detection_eval
    from shazzam.detector import detector_manifest_path
    from shazzam.vision import default_model_dir

    if args.model and (args.model.endswith(".json") or os.sep in args.model):
        manifest = Path(args.model)
    elif args.model:
        manifest = Path(args.model_dir or default_model_dir()) / f"{args.model}.json"
    else:
        manifest = detector_manifest_path(args.model_dir)
    if manifest is None or not manifest.is_file():
        print(f"shazzam eval-detector: no detector manifest at {manifest} (is detector_v2 in the model folder?)", file=sys.stderr)
        return 2
    small = Path(args.small_data) if args.small_data else None
    if small is not None and not small.is_dir():
        if args.small_data != SMALL_DATA_DEFAULT:
            print(f"shazzam eval-detector: --small-data {small} is not a folder", file=sys.stderr)
            return 2
        print(f"shazzam eval-detector: no clothing-dataset-small at {small}: the top-label agreement is skipped", file=sys.stderr)
        small = None
    try:
        overrides = detection_eval.postprocess_overrides(args.postprocess or [])
        photos = _photo_range(args.photos)
    except ValueError as exc:
        print(f"shazzam eval-detector: {exc}", file=sys.stderr)
        return 2
    try:
        report = detection_eval.run(manifest, Path(args.data), small,
                                    Path(args.out) if args.out else None, photos=photos, overrides=overrides)
    except (FileNotFoundError, ValueError) as exc:
        print(f"shazzam eval-detector: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else detection_eval.format_report(report))
    return 0


def _photo_range(text: str | None) -> range | None:
    """"601-700" -> range(601, 701), "705" -> range(705, 706); None -> None (the validation photos)."""
    if not text:
        return None
    first, _, last = text.partition("-")
    try:
        start, stop = int(first), int(last or first) + 1
    except ValueError:
        raise ValueError(f"--photos takes FIRST-LAST photo numbers such as 601-700, not {text!r}") from None
    if not 1 <= start < stop:
        raise ValueError(f"--photos {text!r} is an empty or negative range")
    return range(start, stop)


def whole_number_from(least: int):
    """An argparse type: a whole number of at least `least`."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        return value

    return whole_number


positive_int = whole_number_from(1)
non_negative_int = whole_number_from(0)


def shard_sizes(text: str) -> list[int]:
    """An argparse type: comma-separated item counts, each above the bench's k (recall@k needs more)."""
    from shazzam.bench_search import K

    sizes = [positive_int(part.strip()) for part in text.split(",")]
    if any(size <= K for size in sizes):
        raise argparse.ArgumentTypeError(f"each size must be more than {K} items (recall@{K} needs them), not {text!r}")
    return sizes


def results_per_garment(text: str) -> int:
    """An argparse type: -k, 1 to the API's most results per garment."""
    from shazzam.pipeline import MAX_K

    value = positive_int(text)
    if value > MAX_K:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_K}, the most results per garment")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shazzam", description="Visual fashion search, on one machine.")
    parser.add_argument("--data-dir", default=os.environ.get("SHAZZAM_DATA_DIR") or DEFAULT_DATA_DIR, help="local data folder (default %(default)s)")
    parser.add_argument("--model-dir", default=os.environ.get("SHAZZAM_MODEL_DIR"), help="folder of the .tflite models")
    parser.add_argument("--verbose", action="store_true", help="log what the functions do")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="ingest the bundled sample shop, search, then serve the API")
    demo.add_argument("--no-serve", action="store_true", help="exit after the search instead of serving")
    demo.add_argument("--json", action="store_true", help="end with one JSON line: counts and results")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=port_number, default=8000, help="API port (default %(default)s)")
    demo.add_argument("--shop-port", type=port_number, default=8765, help="sample shop port; fixed so reruns see the same URLs")
    demo.add_argument("--limit", type=positive_int, default=None, help="serve only the first N sample products")
    demo.add_argument("-k", type=results_per_garment, default=5, help="results per garment (default %(default)s)")
    demo.set_defaults(run=cmd_demo)

    serve = commands.add_parser("serve", help="serve the web page and the API, and run the schedules")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument("--no-schedules", action="store_true", help="only the API and the event queue")
    serve.set_defaults(run=cmd_serve)

    ingest = commands.add_parser("ingest", help="scrape shops and index their items now")
    ingest.add_argument("--shop", action="append", default=[], help="a registered shop's base URL (repeatable; default: every registered shop, due by its schedule or not)")
    ingest.add_argument("--limit", type=positive_int, help="at most N products per shop")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(run=cmd_ingest)

    scrape = commands.add_parser("scrape", help="one scrape pass over the sources, with a summary")
    scrape.add_argument("source", nargs="?", help="only this source (its name or base URL)")
    scrape.add_argument("--sources", help="a TOML file of [[source]] tables to register (or update) first")
    scrape.add_argument("--limit", type=positive_int, help="at most N product pages per source")
    scrape.add_argument("--force", action="store_true", help="scrape sources whose schedule is not due yet")
    scrape.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    scrape.set_defaults(run=cmd_scrape)

    search = commands.add_parser("search", help="find items similar to the garments in a photo")
    search.add_argument("image", help="path of a photo")
    search.add_argument("--category", help="search this category instead of the classifier's")
    search.add_argument("-k", type=results_per_garment, default=10, help="results per garment (default %(default)s)")
    search.add_argument("--garment", type=positive_int, help="search only this garment (its number as a search of the photo prints it)")
    search.add_argument("--box", help="search only this part of the photo: left,top,right,bottom in pixels")
    search.add_argument("--json", action="store_true")
    search.set_defaults(run=cmd_search)

    shops = commands.add_parser("shops", help="the shops the scheduled scrape visits")
    shops_commands = shops.add_subparsers(dest="shops_command", required=True)
    add = shops_commands.add_parser("add", help="register a shop, or bring back one taken off")
    add.add_argument("url")
    add.add_argument("--name")
    add.add_argument("--json", action="store_true")
    remove = shops_commands.add_parser("remove", help="stop scraping a shop and take its items out of search (add brings it back)")
    remove.add_argument("url")
    remove.add_argument("--json", action="store_true")
    listing = shops_commands.add_parser("list", help="the shops, when each was last scraped, and how far its round's discovery is")
    listing.add_argument("--json", action="store_true")
    shops.set_defaults(run=cmd_shops)

    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    bench_search = bench_commands.add_parser("search", help="exact L1 search: ours, the original's, FAISS")
    bench_search.add_argument("--sizes", type=shard_sizes, default="10000,100000,1000000", help="items per shard (default %(default)s)")
    bench_search.add_argument("--queries", type=positive_int, default=40, help="queries per size (a quarter at 1M)")
    bench_search.add_argument("--dim", type=positive_int, default=None, help="embedding dimension (default: the serving model's, from its manifest)")
    bench_search.add_argument("--json", action="store_true")
    bench_search.set_defaults(run=cmd_bench)

    evaluate = commands.add_parser("eval", help="the garment model's figures vs the baseline and the targets (issue #3)")
    evaluate.add_argument("--data", default="../shared/data/clothing-dataset-small", help="dataset root with train/validation/test (default %(default)s)")
    evaluate.add_argument("--model", help="model name in the model folder, or a manifest path (default: the serving model, $SHAZZAM_MODEL or garment_v5)")
    evaluate.add_argument("--baseline", default="garment_v0", help="baseline model name or manifest path, 'none' to skip (default %(default)s)")
    evaluate.add_argument("--robustness", type=non_negative_int, default=500, help="re-photographed gallery images to search for (default %(default)s; 0 skips)")
    evaluate.add_argument("--seed", type=non_negative_int, default=20261128, help="seed of the re-photographed queries (default %(default)s)")
    evaluate.add_argument("--vgg16", default="build/vgg16_fc7.tflite", help="VGG16 fc7 .tflite to time against (default %(default)s; make vgg16-baseline builds it)")
    evaluate.add_argument("--timing-images", type=positive_int, default=20, help="test images each model is timed on (default %(default)s)")
    evaluate.add_argument("--threads", type=positive_int, default=None, help="interpreter threads while embedding the data set (timing always uses 1)")
    evaluate.add_argument("--cache", default=None, help="embeddings cache folder (default DATA_DIR/eval-cache; '' disables)")
    evaluate.add_argument("--out", default=None, help="folder for the t-SNE PNGs (default DATA_DIR/eval; '' draws none)")
    evaluate.add_argument("--ccp", default=None, help="CCP root: also search and classify the garment crops of its held-out photos 0701-0800 (street photos)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=cmd_eval)

    eval_detector = commands.add_parser("eval-detector", help="the garment detector's mAP, recall, speed and size vs the targets (issue #8)")
    eval_detector.add_argument("--data", default="../shared/data/ccp", help="CCP root; photos 0701-0800 are the validation set (default %(default)s)")
    eval_detector.add_argument("--small-data", default=SMALL_DATA_DEFAULT, help="clothing-dataset-small root for the top-label check (default %(default)s)")
    eval_detector.add_argument("--model", help="detector name in the model folder, or a manifest path (default: $SHAZZAM_DETECTOR or detector_v2)")
    eval_detector.add_argument("--out", help="folder for a PNG of boxes drawn on a few validation photos")
    eval_detector.add_argument("--json", action="store_true", help="print one JSON object")
    eval_detector.add_argument("--photos", metavar="FIRST-LAST",
                               help="CCP photo numbers to score instead of the validation set 701-800 "
                                    "(601-700: training photos, where postprocess settings are chosen)")
    eval_detector.add_argument("--postprocess", action="append", metavar="KEY=VALUE",
                               help="override a manifest postprocess setting (min_area_fraction, score_threshold, "
                                    "min_share_of_largest, upsample, mirror, product_box_fraction, product_cell_share, "
                                    "hypothesis_levels as 0.3,0.1, hypothesis_weight); repeatable")
    eval_detector.set_defaults(run=cmd_eval_detector)

    invoke = commands.add_parser("invoke", help="run one function's handler on an event file")
    invoke.add_argument("function", choices=[function.name for function in wiring.FUNCTIONS], help="the function whose handler runs")
    invoke.add_argument("event", help="an event JSON file, e.g. events/scheduled-index.json")
    invoke.add_argument("--follow", action="store_true", help="also deliver the events the handler causes")
    invoke.add_argument("--json", action="store_true")
    invoke.set_defaults(run=cmd_invoke)
    return parser


def joined_box(argv: list[str]) -> list[str]:
    """`--box -5,0,100,100` as `--box=-5,0,100,100`: argparse takes a value that starts with a
    dash for an option, and a box may start left of or above the photo."""
    joined, pending = [], False
    for arg in argv:
        if pending and arg.startswith("-"):
            joined[-1] = f"--box={arg}"
        else:
            joined.append(arg)
        pending = arg == "--box"
    return joined


def main(argv: list[str] | None = None) -> int:
    from shazzam import handlers

    args = build_parser().parse_args(joined_box(sys.argv[1:] if argv is None else argv))
    level = "INFO" if args.verbose else "WARNING"
    handlers.LOG_STREAM.to_stderr = True  # a --json result is then the whole of stdout
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with handlers.log_level(level):
        try:
            return args.run(args)
        except KeyboardInterrupt:
            print(f"shazzam {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - a person reads this: one line, the traceback on request
            if args.verbose:
                raise
            print(f"shazzam {args.command}: {type(exc).__name__}: {exc} (--verbose shows where)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
