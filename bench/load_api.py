"""Load benchmark of the local API server: searches per second and latency at several concurrencies.

    .venv/bin/python bench/load_api.py [--per-category 10000] [--garments 3] [--requests 200]
                                        [--concurrency 1 4 16] [--photo PATH] [--json]

It builds a synthetic catalogue in a temporary folder (random unit vectors, `--per-category` items
in each of the 10 category shards, with their catalogue rows), starts the server of `shazzam
serve` in a child process on 127.0.0.1 with a detector that finds `--garments` boxes in every photo
(the v0 detector finds one: the whole photo), warms it, then for each concurrency sends a bounded
number of POST /search requests from that many client threads over keep-alive connections. It
prints searches/s, p50/p99 latency and the count of errors; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from shazzam.cli import positive_int

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTO = REPO / "samples" / "queries" / "dress-query.jpg"


# --- the server (child process) -----------------------------------------------------------------


class BandsDetector:
    """`garments` horizontal bands over the photo: stands in for a detector finding that many garments."""

    name = "bench-bands"

    def __init__(self, garments: int):
        self.garments = garments

    def detect(self, image, *, masks: bool = False):
        from shazzam.detector import Detection
        from shazzam.images import Box

        step = image.height / self.garments
        return [Detection(Box(0, round(i * step), image.width, round((i + 1) * step)), None, 1.0) for i in range(self.garments)]


def fill_catalogue(runtime, per_category: int, seed: int = 6) -> None:
    """`per_category` live items in every category: catalogue rows and a shard of random unit vectors."""
    import numpy as np
    import sqlalchemy as sa

    from shazzam.db import detections, images, products, shops, utcnow
    from shazzam.index import publish

    rng = np.random.default_rng(seed)
    now = utcnow()
    model = runtime.app.garment_model
    with runtime.db.transaction() as connection:
        connection.execute(sa.insert(shops), [{"id": "bench-shop", "base_url": "http://127.0.0.1/", "name": "Bench shop", "active": True, "created_at": now}])
    for category in model.categories:
        rows = [f"{category}-{n:06d}" for n in range(per_category)]
        with runtime.db.transaction() as connection:
            connection.execute(
                sa.insert(products),
                [
                    {"id": row, "shop_id": "bench-shop", "url": f"http://127.0.0.1/p/{row}", "title": f"Bench {row}", "price": 10 + n % 90,
                     "currency": "EUR", "category": category, "is_dead": False, "created_at": now, "last_seen_at": now}
                    for n, row in enumerate(rows)
                ],
            )
            connection.execute(
                sa.insert(images),
                [{"id": row, "product_id": row, "src_link": f"http://127.0.0.1/i/{row}.jpg", "status": "detected", "is_dead": False, "created_at": now, "updated_at": now} for row in rows],
            )
            connection.execute(
                sa.insert(detections),
                [
                    {"id": row, "image_id": row, "box_left": 0, "box_top": 0, "box_right": 1, "box_bottom": 1, "score": 1.0, "category": category,
                     "embedding_status": "indexed", "created_at": now, "updated_at": now}
                    for row in rows
                ],
            )
        vectors = rng.standard_normal((per_category, model.embedding_dim)).astype(np.float32)
        publish(runtime.store, category, add=dict(zip(rows, vectors, strict=True)), model=model.name)  # what searches ask for


def serve(data_dir: str, per_category: int, garments: int) -> None:
    """Child process: build the catalogue, serve it, print the port, run until stdin closes."""
    from shazzam import detector
    from shazzam.local.runtime import LocalRuntime

    runtime = LocalRuntime(data_dir)
    fill_catalogue(runtime, per_category)
    detector.load_detector = lambda *_args, **_kwargs: BandsDetector(garments)  # App.detector passes its model folder
    server = runtime.start_api(port=0)
    print(server.server_port, flush=True)
    sys.stdin.read()
    server.shutdown()
    runtime.close()


# --- the client -------------------------------------------------------------------------------------


def run_level(port: int, photo: bytes, concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            started = time.perf_counter()
            try:
                connection.request("POST", "/search?k=10", body=photo, headers={"content-type": "image/jpeg"})
                response = connection.getresponse()
                response.read()
                outcome = None if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                if outcome is None:
                    latencies.append(elapsed)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def percentile(fraction: float) -> float | None:
        """Nearest rank: the smallest latency at least `fraction` of them do not exceed."""
        return round(1000 * ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 1) if ordered else None

    return {
        "concurrency": concurrency,
        "requests": requests,
        "searches_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": percentile(0.99),
        "errors": errors,
    }


def check_searches_answer(port: int, photo: bytes, garments: int) -> None:
    """SystemExit unless a search answers 200 with results for each garment: a benchmark of errors
    or of empty answers (no shard searched) would time nothing it claims to."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/search?k=10", body=photo, headers={"content-type": "image/jpeg"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit(f"load_api: a search answered {response.status}: {body[:300]!r}")
    found = json.loads(body).get("garments", [])
    if len(found) != garments or not all(garment.get("results") for garment in found):
        raise SystemExit(f"load_api: a search found {len(found)} garment(s), not all with results: {body[:300]!r}")


def existing_file(text: str) -> Path:
    """An argparse type: the path of a file that is there."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return Path(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=positive_int, default=10_000, help="items in each category shard (default %(default)s)")
    parser.add_argument("--garments", type=positive_int, default=3, help="garments found per photo (default %(default)s)")
    parser.add_argument("--requests", type=positive_int, default=200, help="searches per concurrency level (default %(default)s)")
    parser.add_argument("--concurrency", type=positive_int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--photo", type=existing_file, default=DEFAULT_PHOTO)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    parser.add_argument("--serve", metavar="DATA_DIR", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.per_category, args.garments)
        return 0

    photo = args.photo.read_bytes()
    with tempfile.TemporaryDirectory(prefix="shazzam-bench-") as data_dir:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, "--per-category", str(args.per_category), "--garments", str(args.garments)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING"},
        )
        try:
            port = int(child.stdout.readline())
            print(f"catalogue of {10 * args.per_category} items built and served in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            check_searches_answer(port, photo, args.garments)
            run_level(port, photo, 1, 5)  # warm: model loaded, shards cached
            levels = [run_level(port, photo, concurrency, args.requests) for concurrency in args.concurrency]
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    summary = {"per_category": args.per_category, "garments": args.garments, "photo": args.photo.name, "cpus": os.cpu_count(), "levels": levels}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.garments} garments per photo, {args.per_category} items per category, {os.cpu_count()} CPUs")
        print(f"{'concurrency':>11} {'searches/s':>10} {'p50 ms':>8} {'p99 ms':>8}  errors")
        for level in levels:
            print(f"{level['concurrency']:>11} {level['searches_per_s']:>10} {level['p50_ms']:>8} {level['p99_ms']:>8}  {level['errors'] or 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
