"""CDK context as `-c key=value` gives it (strings) and as cdk.json gives it (typed values)."""

from __future__ import annotations

import aws_cdk
import pytest
from shazzam_cdk.settings import Settings, context_flag


def settings(**context) -> Settings:
    return Settings.from_context(aws_cdk.App(context=context).node)


def test_a_bare_origin_is_one_origin():
    assert settings(corsOrigins="https://shop.example").cors_origins == ("https://shop.example",)


def test_a_json_list_of_origins_is_read_as_a_list():
    origins = settings(corsOrigins='["https://a.example", "https://b.example"]').cors_origins
    assert origins == ("https://a.example", "https://b.example")
    assert settings(corsOrigins=["https://a.example"]).cors_origins == ("https://a.example",)


def test_origins_that_are_not_text_are_refused():
    with pytest.raises(ValueError, match="corsOrigins"):
        settings(corsOrigins="[1, 2]")


@pytest.mark.parametrize("text, expected", [("false", False), ("False", False), ("TRUE", True), (True, True), (False, False)])
def test_flags_read_true_or_false_in_any_case(text, expected):
    read = settings(rdsProxy=text, retainData=text)
    assert (read.rds_proxy, read.retain_data) == (expected, expected)


@pytest.mark.parametrize("text", ["no", "0", "", 1])
def test_a_flag_that_is_not_true_or_false_is_refused(text):
    with pytest.raises(ValueError, match=r"rdsProxy.*neither true nor false"):
        settings(rdsProxy=text)


def test_nag_is_a_flag_too():
    node = aws_cdk.App(context={"nag": "False"}).node
    assert context_flag(node, "nag", True) is False
    with pytest.raises(ValueError, match="nag"):
        context_flag(aws_cdk.App(context={"nag": "off"}).node, "nag", True)


def test_a_schedule_for_a_known_function_is_kept():
    assert settings(schedules='{"index": "rate(15 minutes)"}').schedules == {"index": "rate(15 minutes)"}


def test_a_schedule_for_an_unknown_function_is_refused_naming_the_scheduled_ones():
    with pytest.raises(ValueError, match=r"'indx'.*index, revalidate, scrape"):
        settings(schedules='{"indx": "rate(15 minutes)"}')


@pytest.mark.parametrize("schedules", ["rate(15 minutes)", '{"index": 15}'])
def test_schedules_that_are_not_names_to_expressions_are_refused(schedules):
    with pytest.raises(ValueError, match="schedules"):
        settings(schedules=schedules)
