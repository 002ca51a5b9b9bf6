"""The function table: every function has a handler, keys route to the right stage, schedules parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from shazzam import ids, wiring
from shazzam.wiring import FUNCTIONS, ObjectCreated, Schedule, by_name, functions_for_key

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.name)
def test_every_function_has_a_handler(function):
    handler = REPO / "functions" / function.name / "handler.py"
    assert handler.is_file(), f"missing {handler}"
    assert "lambda_handler" in handler.read_text()


def test_every_handler_folder_is_a_function():
    folders = {path.parent.name for path in (REPO / "functions").glob("*/handler.py")}
    assert folders == {function.name for function in FUNCTIONS}


def test_function_names_are_unique():
    names = [function.name for function in FUNCTIONS]
    assert len(names) == len(set(names))
    assert by_name("embed").name == "embed"
    with pytest.raises(KeyError):
        by_name("nope")


def names(key: str) -> list[str]:
    return [function.name for function in functions_for_key(key)]


@pytest.mark.parametrize(
    "key, expected",
    [
        ("incoming/abc", ["detect"]),
        (ids.incoming_key("0" * 40), ["detect"]),
        ("detections/x.json", ["standardise"]),
        (ids.detections_key("0" * 40), ["standardise"]),
        ("detections/x.txt", []),
        ("standard/x.png", ["embed"]),
        (ids.standard_key(ids.detection_id("0" * 40, 2)), ["embed"]),
        ("standard/x.jpg", []),
        ("vectors/pending/x", []),
        (ids.pending_vector_key("top", "abc-000"), []),
        ("index/manifest.json", []),
        ("index/top/1.h5", []),
        ("xincoming/abc", []),
    ],
)
def test_functions_for_key(key, expected):
    assert names(key) == expected


def test_object_created_matches_prefix_and_suffix():
    trigger = ObjectCreated("standard/", ".png")
    assert trigger.matches("standard/a.png")
    assert not trigger.matches("standard/a.png.bak")
    assert not trigger.matches("other/standard/a.png")
    assert ObjectCreated("incoming/").matches("incoming/anything.at.all")


@pytest.mark.parametrize(
    "expression, seconds",
    [("rate(5 minutes)", 300), ("rate(1 minute)", 60), ("rate(1 day)", 86400), ("rate(2 hours)", 7200), ("rate(3 days)", 259200),
     ("cron(0 2 * * ? *)", 86400), ("cron(59 23 * * ? *)", 86400)],
)
def test_schedule_interval(expression, seconds):
    assert Schedule(expression).interval_seconds() == seconds


@pytest.mark.parametrize(
    "expression",
    ["cron(0 12 * * MON *)", "cron(60 12 * * ? *)", "cron(0 24 * * ? *)", "cron(0/5 * * * ? *)", "rate(5 weeks)", "rate(minutes)", "rate(-1 minutes)", "rate(5  minutes)", "5 minutes", ""],
)
def test_schedule_rejects_other_expressions(expression):
    with pytest.raises(ValueError):
        Schedule(expression).interval_seconds()


def test_scheduled_functions_and_routes():
    scheduled = {function.name: schedule.interval_seconds() for function, schedule in wiring.scheduled_functions()}
    assert scheduled == {"scrape": 86400, "index": 300, "revalidate": 86400}
    assert {(route.method, route.path) for _, route in wiring.routes()} == {
        ("POST", "/search"), ("POST", "/uploads"), ("GET", "/categories"), ("GET", "/items/{item_id}"),
        ("GET", "/health"), ("GET", "/openapi.json"),
    }
    assert {function.name for function, _ in wiring.routes()} == {"search"}


@pytest.mark.parametrize("name", ["index", "revalidate"])
def test_functions_that_publish_shards_have_room_for_a_400k_category(name):
    """Both publish whole category shards (index.compact, pipeline.drop_dead_vectors): a category
    of 400k items peaks at 420 MiB through S3 (README, "The index"). 512 MB left no room for the
    Python and S3 client overhead that varies: a publish of before, at 518 MiB, was killed."""
    assert by_name(name).memory_mb >= 2 * 420
