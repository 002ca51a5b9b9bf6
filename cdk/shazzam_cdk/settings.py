"""What a deployment may change without touching code: CDK context, with the defaults here."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from constructs import Node
from shazzam import wiring

ROOT = Path(__file__).resolve().parents[2]


def project_context() -> dict:
    """cdk.json's context: what `cdk synth` would pass, for direct runs and the tests."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def context_flag(node: Node, key: str, default: bool) -> bool:
    """A true/false context value: a boolean from cdk.json, or `-c key=true|false` in any case."""
    value = node.try_get_context(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"context {key}: {value!r} is neither true nor false")


RATE = re.compile(r"rate\(([1-9][0-9]*) (minute|hour|day)(s?)\)")
CRON = re.compile(r"cron\((\S+(?: \S+){5})\)")


def is_schedule_expression(expression: object) -> bool:
    """An expression in EventBridge's forms: rate(<n> <unit>), singular for 1 only, or cron(<six
    fields>) with `?` for one of the day of the month and the day of the week (the fields' values are EventBridge's
    to check at deploy)."""
    if not isinstance(expression, str):
        return False
    if rate := RATE.fullmatch(expression):
        return (rate.group(3) == "s") == (int(rate.group(1)) > 1)
    if cron := CRON.fullmatch(expression):
        fields = cron.group(1).split()
        return (fields[2], fields[4]).count("?") == 1
    return False


@dataclass(frozen=True)
class Settings:
    # Folder of the built layers (cdk/build_layers.py); tests point it at small stand-ins.
    layers_dir: Path = ROOT / "build" / "layers"
    # `<function name> -> schedule expression`, overriding shazzam.wiring's (e.g. a slower index).
    schedules: dict = field(default_factory=dict)
    # One NAT gateway (~32 USD/month + data) serves both AZs; 2 removes the single-AZ egress risk.
    nat_gateways: int = 1
    # RDS Proxy pools the many short Lambda connections of a burst of S3 events (min 8 ACU billed).
    rds_proxy: bool = True
    db_min_acu: float = 0.5
    db_max_acu: float = 4
    # Production keeps the database and the bucket when the stack goes; a dev stack may not.
    retain_data: bool = True
    # Scrape Lambdas at once: the crawler lease (shazzam.lease) lets one fetch at a time whatever
    # this says, and more would only wait on it.
    scrape_concurrency: int = 1
    api_rate_limit: int = 50  # requests/s, steady
    api_burst_limit: int = 100
    cors_origins: tuple = ("*",)
    search_p99_ms: int = 2000  # the API latency alarm's threshold
    alarm_email: str | None = None
    # The page under a domain of one's own: its name and an ACM certificate for it in us-east-1
    # (both or neither); without them it is served at the distribution's *.cloudfront.net name.
    site_domain: str | None = None
    site_certificate_arn: str | None = None

    @classmethod
    def from_context(cls, node: Node) -> "Settings":
        def get(key, default):
            value = node.try_get_context(key)
            if value is None:
                return default
            # `-c key=value` arrives as a string; cdk.json values arrive typed.
            if isinstance(value, str) and not isinstance(default, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            return value

        def schedules():
            value = get("schedules", {})
            if not isinstance(value, dict) or not all(isinstance(e, str) for e in value.values()):
                raise ValueError(f'context schedules: {value!r} is not {{"<function>": "<expression>", ...}}')
            scheduled = sorted(f.name for f, _ in wiring.scheduled_functions())
            unknown = sorted(set(value) - set(scheduled))
            if unknown:
                raise ValueError(
                    f"context schedules: no scheduled function {', '.join(map(repr, unknown))}"
                    f" (the scheduled ones: {', '.join(scheduled)})"
                )
            for name, expression in value.items():
                if not is_schedule_expression(expression):
                    raise ValueError(
                        f"context schedules: {name} {expression!r} is not rate(<n> minute[s]|hour[s]|day[s])"
                        " (singular for 1 only) or cron(<minutes> <hours> <day of month> <month> <day of week> <year>)"
                        " with ? for one of the days"
                    )
            return value

        def number(key, default, low, high=math.inf, *, step=1):
            """A whole number (or a multiple of `step`) from low to high, JSON's true and false excluded."""
            value = get(key, default)
            valid = (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and low <= value <= high and value % step == 0
            )
            if not valid:
                kind = "a whole number" if step == 1 else f"a multiple of {step}"
                bounds = f"{low} or more" if high == math.inf else f"from {low} to {high}"
                raise ValueError(f"context {key}: {value!r} is not {kind} {bounds}")
            return int(value) if step == 1 else float(value)

        def text(key):
            """A setting that is text as written (`-c siteDomain=true` is not the flag true)."""
            value = node.try_get_context(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"context {key}: {value!r} is not a non-empty string")
            return value.strip() if value is not None else None

        def origins():
            value = get("corsOrigins", list(defaults.cors_origins))
            # A bare origin is not JSON, so it arrives as the string itself.
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
                raise ValueError(f"context corsOrigins: {value!r} is neither an origin nor a list of origins")
            return tuple(value)

        defaults = cls()
        # Aurora Serverless v2 scales in half ACUs up to 256; a minimum of 0 lets it pause when idle.
        db_min_acu = number("dbMinAcu", defaults.db_min_acu, 0, 256, step=0.5)
        db_max_acu = number("dbMaxAcu", defaults.db_max_acu, 1, 256, step=0.5)
        if db_min_acu > db_max_acu:
            raise ValueError(f"context dbMinAcu: {db_min_acu} is above dbMaxAcu {db_max_acu}")
        return cls(
            layers_dir=Path(get("layersDir", str(defaults.layers_dir))),
            schedules=schedules(),
            # scrape and revalidate reach the shops through a NAT gateway; the VPC has one per AZ at most.
            nat_gateways=number("natGateways", defaults.nat_gateways, 1, 2),
            rds_proxy=context_flag(node, "rdsProxy", defaults.rds_proxy),
            db_min_acu=db_min_acu,
            db_max_acu=db_max_acu,
            retain_data=context_flag(node, "retainData", defaults.retain_data),
            # 0 reserved executions would stop scrape altogether.
            scrape_concurrency=number("scrapeConcurrency", defaults.scrape_concurrency, 1),
            api_rate_limit=number("apiRateLimit", defaults.api_rate_limit, 1),
            api_burst_limit=number("apiBurstLimit", defaults.api_burst_limit, 1),
            cors_origins=origins(),
            # API Gateway gives up on an integration after 30 s: a higher threshold could never be crossed.
            search_p99_ms=number("searchP99Ms", defaults.search_p99_ms, 1, 30000),
            alarm_email=text("alarmEmail"),
            site_domain=text("siteDomain"),
            site_certificate_arn=text("siteCertificateArn"),
        )
