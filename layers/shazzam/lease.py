"""Leases in the catalogue database: one holder at a time, whatever machine it runs on.

Scrape, revalidate and re-embedding all fetch from the shops. Two of them at once would each keep
its own pace, and a shop would see twice the requests it asked for (its robots.txt Crawl-delay,
its Retry-After). In the cloud they are separate Lambdas, so only the database they share can
make them take turns: each holds the crawler lease while it fetches.

A lease is held for HOLD_S and renewed every RENEW_S by a thread while its holder works, so a
holder that dies (a Lambda timed out, a process killed) keeps the others out for HOLD_S at most.
Times are the holders' own clocks (NTP keeps Lambdas within milliseconds of each other), written
as UTC datetimes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Callable, Iterator

import sqlalchemy as sa

from shazzam.db import Database, leases, retried_on_deadlock, upsert, utcnow

log = logging.getLogger(__name__)

CRAWLER = "crawler"
HOLD_S = 120.0
RENEW_S = 30.0
POLL_S = 2.0
RELEASED = datetime(1970, 1, 1)


class LeaseBusy(RuntimeError):
    """Another holder kept the lease for as long as this one would wait."""

    def __init__(self, name: str, holder: str | None, waited_s: float):
        super().__init__(f"the {name} lease is held by {holder or 'another holder'}; waited {waited_s:.0f} s for it")
        self.holder = holder


@retried_on_deadlock
def _take(db: Database, name: str, holder: str, hold_s: float) -> bool:
    """Take the lease (or extend it, when `holder` has it already); False when another holds it."""
    now = utcnow()
    with db.transaction() as connection:
        connection.execute(upsert(connection, leases, {"name": name, "holder": None, "expires_at": RELEASED}, update=()))
        taken = connection.execute(
            leases.update()
            .where(leases.c.name == name, sa.or_(leases.c.expires_at <= now, leases.c.holder == holder))
            .values(holder=holder, expires_at=now + timedelta(seconds=hold_s))
        )
        return taken.rowcount == 1


@retried_on_deadlock
def _release(db: Database, name: str, holder: str) -> None:
    with db.transaction() as connection:
        connection.execute(leases.update().where(leases.c.name == name, leases.c.holder == holder).values(expires_at=RELEASED))


def holder(db: Database, name: str) -> str | None:
    """Who holds the lease now; None when nobody does."""
    row = db.run_query(sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name))
    return row[0]["holder"] if row and row[0]["expires_at"] > utcnow() else None


@contextmanager
def held(db: Database, name: str, who: str, wait_s: float | None = 0.0, hold_s: float = HOLD_S,
         renew_s: float = RENEW_S) -> Iterator[float]:
    """Hold lease `name` for the block, renewed meanwhile; yields the seconds spent waiting for it.

    Waits up to `wait_s` seconds for another holder to finish (None: for as long as it takes,
    saying so once), then raises LeaseBusy."""
    holder_id = f"{who} {uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    warned = False
    while not _take(db, name, holder_id, hold_s):
        waited = time.monotonic() - started
        if wait_s is not None and waited >= wait_s:
            raise LeaseBusy(name, holder(db, name), waited)
        if not warned:
            log.warning("%s is waiting for the %s lease, held by %s", who, name, holder(db, name) or "another holder")
            warned = True
        time.sleep(POLL_S if wait_s is None else max(0.0, min(POLL_S, wait_s - waited)))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(renew_s):
            try:
                if not _take(db, name, holder_id, hold_s):
                    log.error("%s lost the %s lease (it expired and was taken meanwhile)", who, name)
                    return
            except Exception:  # noqa: BLE001 - a renewal missed is tried again; the work goes on
                log.exception("%s could not renew the %s lease", who, name)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    letting_go = functools.partial(_let_go, db, name, holder_id, stop, renewer)
    with _lock:
        _held[holder_id] = (db, letting_go)
    try:
        yield time.monotonic() - started
    finally:
        with _lock:
            still_held = _held.pop(holder_id, None) is not None  # else release_all let it go already
        if still_held:
            letting_go()


def _let_go(db: Database, name: str, holder_id: str, stop: threading.Event, renewer: threading.Thread) -> None:
    stop.set()
    renewer.join()  # a renewal under way would take the lease back after the release
    _release(db, name, holder_id)


def release_all(db: Database) -> None:
    """Release the leases this process holds on `db`, whoever holds them: a process that stops
    while a daemon thread works under one (`serve` on Ctrl-C) lets the others in at once, not
    HOLD_S later."""
    with _lock:
        mine = [holder_id for holder_id, (held_on, _release_it) in _held.items() if held_on is db]
        letting_go = [_held.pop(holder_id)[1] for holder_id in mine]
    for release in letting_go:
        release()


_lock = threading.Lock()
_held: dict[str, tuple[Database, Callable[[], None]]] = {}  # holder id -> (its database, its release)
