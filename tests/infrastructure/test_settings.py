"""CDK context as `-c key=value` gives it (strings) and as cdk.json gives it (typed values)."""

from __future__ import annotations

import re

import aws_cdk
import pytest
from shazzam import wiring
from shazzam_cdk.settings import Settings, context_flag, is_schedule_expression


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


@pytest.mark.parametrize("expression", ["rate(1 minute)", "rate(15 minutes)", "rate(2 hours)", "rate(1 day)", "cron(30 3 * * ? *)",
                                        "cron(0 2 ? * MON *)", "cron(0/15 * * * ? *)"])
def test_a_schedule_in_eventbridges_forms_is_kept(expression):
    assert settings(schedules={"index": expression}).schedules == {"index": expression}


@pytest.mark.parametrize(
    "expression", ["every five minutes", "rate(0 minutes)", "rate(1 minutes)", "rate(5 minute)", "rate(2 weeks)", "cron(0 12 * * MON *)",
                   "cron(0 12 * * ?)", "cron(0 12 ? * ? *)", ""]
)
def test_a_schedule_expression_eventbridge_cannot_read_is_refused(expression):
    with pytest.raises(ValueError, match=rf"schedules: index {re.escape(repr(expression))} is not rate\("):
        settings(schedules={"index": expression})


def test_the_wiring_tables_own_schedules_would_be_accepted():
    for function, schedule in wiring.scheduled_functions():
        assert is_schedule_expression(schedule.expression), function.name


def test_numbers_from_the_command_line_and_from_cdk_json_are_read_alike():
    typed = settings(natGateways=2, dbMinAcu=0, dbMaxAcu=16, scrapeConcurrency=3, apiRateLimit=10, apiBurstLimit=20, searchP99Ms=5000)
    text = settings(natGateways="2", dbMinAcu="0", dbMaxAcu="16", scrapeConcurrency="3", apiRateLimit="10", apiBurstLimit="20", searchP99Ms="5000")
    assert typed == text
    assert (text.nat_gateways, text.db_min_acu, text.db_max_acu, text.scrape_concurrency) == (2, 0.0, 16.0, 3)
    assert (text.api_rate_limit, text.api_burst_limit, text.search_p99_ms) == (10, 20, 5000)
    assert settings(dbMinAcu="1.5", dbMaxAcu=2.5, natGateways=2.0).db_min_acu == 1.5
    assert isinstance(settings(natGateways=2.0).nat_gateways, int)


@pytest.mark.parametrize(
    "key, value",
    [
        ("natGateways", "two"), ("natGateways", "0"), ("natGateways", "3"), ("natGateways", "1.5"), ("natGateways", "true"),
        ("dbMinAcu", "abc"), ("dbMinAcu", "-0.5"), ("dbMinAcu", "0.3"), ("dbMinAcu", "NaN"),
        ("dbMaxAcu", "0.5"), ("dbMaxAcu", "300"), ("dbMaxAcu", "Infinity"),
        ("scrapeConcurrency", "0"), ("scrapeConcurrency", "-1"), ("scrapeConcurrency", "[1]"), ("scrapeConcurrency", True),
        ("apiRateLimit", "-5"), ("apiRateLimit", "0"), ("apiBurstLimit", "0"), ("apiBurstLimit", "lots"),
        ("searchP99Ms", "0"), ("searchP99Ms", "60000"),
    ],
)
def test_a_number_that_is_not_one_or_out_of_range_is_refused_naming_the_setting(key, value):
    with pytest.raises(ValueError, match=rf"context {key}: .* is not a (whole number|multiple of 0.5) (from|\d+ or more)"):
        settings(**{key: value})


def test_a_minimum_capacity_above_the_maximum_is_refused():
    with pytest.raises(ValueError, match="dbMinAcu: 8.0 is above dbMaxAcu 1.0"):
        settings(dbMinAcu="8", dbMaxAcu="1")
    assert settings(dbMinAcu="4", dbMaxAcu="4").db_max_acu == 4


@pytest.mark.parametrize("key", ["alarmEmail", "siteDomain", "siteCertificateArn"])
def test_text_settings_are_read_as_written(key):
    assert getattr(settings(**{key: "true"}), {"alarmEmail": "alarm_email", "siteDomain": "site_domain",
                                               "siteCertificateArn": "site_certificate_arn"}[key]) == "true"
    with pytest.raises(ValueError, match=f"context {key}: 123 is not a non-empty string"):
        settings(**{key: 123})
