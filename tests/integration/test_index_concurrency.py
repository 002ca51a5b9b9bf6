"""Many embed functions and repeated index runs at once: no vector lost or doubled, no torn shard."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from shazzam.index import CorruptShard, compact, decode_shard, encode_vector, read_manifest
from shazzam.storage import LocalFolderStore, S3Store

DIM = 1280
CATEGORIES = ("dress", "shoes", "hat")


def run_concurrently(store, writers: int, per_writer: int, compactors: int = 2) -> tuple[set[str], list[str]]:
    """`writers` threads put pending vectors as embed does, while compactions and readers loop."""
    written: set[str] = set()
    problems: list[str] = []
    writing_done = threading.Event()
    lock = threading.Lock()

    def writer(number: int) -> None:
        rng = np.random.default_rng(number)
        for item in range(per_writer):
            detection_id = f"w{number}-{item:05d}-000"
            category = CATEGORIES[item % len(CATEGORIES)]
            store.put(f"vectors/pending/{category}/{detection_id}.npy", encode_vector(np.abs(rng.normal(size=DIM)), "garment_v0"))
            with lock:
                written.add(detection_id)

    def compactor() -> None:
        while not writing_done.is_set():
            compact(store, "garment_v0")

    def reader() -> None:
        while not writing_done.is_set():
            manifest, _ = read_manifest(store)
            for category, entry in manifest["shards"].items():
                try:
                    shard = decode_shard(store.get(entry["key"]))
                except CorruptShard as exc:
                    problems.append(f"torn shard {entry['key']}: {exc}")
                    continue
                except KeyError:
                    continue  # collected after its grace period: a reader would re-read the manifest
                if len(shard.ids) != entry["count"] or len(set(shard.ids)) != len(shard.ids):
                    problems.append(f"{entry['key']} holds {len(shard.ids)} ids, manifest says {entry['count']}")
            time.sleep(0.01)

    def reporting(target):
        """`target`, its exception recorded as a problem: a thread's exception would not fail the test."""
        def run(*args) -> None:
            try:
                target(*args)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding here
                problems.append(f"{target.__name__} failed: {exc!r}")
        return run

    threads = [threading.Thread(target=reporting(writer), args=(n,)) for n in range(writers)]
    background = [threading.Thread(target=reporting(compactor)) for _ in range(compactors)]
    background.append(threading.Thread(target=reporting(reader)))
    for thread in threads + background:
        thread.start()
    for thread in threads:
        thread.join()
    writing_done.set()
    for thread in background:
        thread.join()
    compact(store, "garment_v0")  # the next scheduled run picks up what the last overlap left
    return written, problems


def assert_each_vector_once(store, written: set[str]) -> None:
    manifest, _ = read_manifest(store)
    found: list[str] = []
    for category, entry in manifest["shards"].items():
        found += decode_shard(store.get(entry["key"])).ids
    assert len(found) == len(set(found)), "a vector is in the index twice"
    assert set(found) == written, f"{len(written - set(found))} vectors lost"
    assert not list(store.list("vectors/pending/")), "pending vectors left behind"


def test_eight_writers_and_repeated_compactions_lose_nothing(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    written, problems = run_concurrently(store, writers=8, per_writer=500)
    assert len(written) == 4_000
    assert problems == []
    assert_each_vector_once(store, written)


@pytest.mark.usefixtures("s3_bucket")
def test_the_same_holds_on_s3_conditional_writes(s3_bucket):
    store = S3Store(s3_bucket)
    written, problems = run_concurrently(store, writers=8, per_writer=60)
    assert problems == []
    assert_each_vector_once(store, written)
