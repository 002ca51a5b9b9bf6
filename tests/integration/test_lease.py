"""shazzam.lease: one crawler at a time across processes and machines, on SQLite and on MariaDB."""

from __future__ import annotations

import threading
import time

import pytest

from shazzam import lease
from shazzam.db import Database


@pytest.fixture
def db(db_url):
    database = Database(db_url).open_connection()
    yield database
    database.close()


def test_one_holder_at_a_time(db):
    assert lease.holder(db, lease.CRAWLER) is None
    with lease.held(db, lease.CRAWLER, "scrape"):
        assert lease.holder(db, lease.CRAWLER).startswith("scrape ")
        with pytest.raises(lease.LeaseBusy, match="held by scrape "):
            with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0):
                pytest.fail("two holders at once")
        with lease.held(db, "another", "revalidate"):  # leases of other names are apart
            pass
    assert lease.holder(db, lease.CRAWLER) is None
    with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0):  # released on leaving the block
        assert lease.holder(db, lease.CRAWLER).startswith("revalidate ")


def test_released_when_the_holder_fails(db):
    with pytest.raises(ZeroDivisionError):
        with lease.held(db, lease.CRAWLER, "scrape"):
            1 / 0
    assert lease.holder(db, lease.CRAWLER) is None


def test_a_holder_that_died_keeps_the_others_out_until_its_lease_expires(db):
    assert lease._take(db, lease.CRAWLER, "scrape killed", hold_s=1.5)  # never released nor renewed
    with pytest.raises(lease.LeaseBusy):
        with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0):
            pass
    time.sleep(2.6)  # MySQL's DATETIME keeps whole seconds
    with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0):
        pass


def test_a_working_holder_renews_its_lease(db):
    with lease.held(db, lease.CRAWLER, "scrape", hold_s=1.5, renew_s=0.2):
        time.sleep(3.5)  # more than twice its hold
        with pytest.raises(lease.LeaseBusy):
            with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0):
                pass


def test_a_waiting_holder_takes_the_lease_once_released(db, monkeypatch, caplog):
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    took = threading.Event()

    def second():
        with lease.held(db, lease.CRAWLER, "revalidate", wait_s=None) as waited_s:
            assert waited_s >= 0.3
            took.set()

    with lease.held(db, lease.CRAWLER, "scrape"):
        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.5)
        assert not took.is_set()
    waiting.join(10)
    assert took.is_set()
    assert "revalidate is waiting for the crawler lease, held by scrape " in caplog.text


def test_a_bounded_wait_gives_up_with_who_holds_it(db, monkeypatch):
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    with lease.held(db, lease.CRAWLER, "scrape"):
        started = time.monotonic()
        with pytest.raises(lease.LeaseBusy, match=r"held by scrape \w+; waited 0 s") as busy:
            with lease.held(db, lease.CRAWLER, "revalidate", wait_s=0.3):
                pass
        assert 0.3 <= time.monotonic() - started < 5
        assert busy.value.holder.startswith("scrape ")


def test_many_at_once_one_takes_it(db):
    start, holders, busy = threading.Barrier(6), [], []

    def contend(name):
        start.wait()
        try:
            with lease.held(db, lease.CRAWLER, name, wait_s=0):
                holders.append(name)
                time.sleep(1)
        except lease.LeaseBusy:
            busy.append(name)

    threads = [threading.Thread(target=contend, args=(f"crawler-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(holders) == 1 and len(busy) == 5


def test_a_process_that_stops_lets_go_of_what_its_threads_hold(db):
    """`serve` stopped while its schedules' daemon thread crawls: the thread dies with the
    process, without leaving its block, and the lease is let go at once, not HOLD_S later."""
    holding, stopped = threading.Event(), threading.Event()

    def crawl():
        with lease.held(db, lease.CRAWLER, "scrape", renew_s=0.05):
            holding.set()
            stopped.wait(10)
            time.sleep(0.2)  # renewals would come due here, after the release

    worker = threading.Thread(target=crawl, daemon=True)
    worker.start()
    assert holding.wait(10) and lease.holder(db, lease.CRAWLER).startswith("scrape ")
    lease.release_all(db)
    assert lease.holder(db, lease.CRAWLER) is None
    stopped.set()
    worker.join(10)
    assert lease.holder(db, lease.CRAWLER) is None
