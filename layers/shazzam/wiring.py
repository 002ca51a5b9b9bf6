"""Which function answers which trigger: declared once, read by the CDK app and the local runtime."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectCreated:
    """S3 ObjectCreated notifications for keys under `prefix` (and ending with `suffix`)."""

    prefix: str
    suffix: str = ""

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix) and key.endswith(self.suffix)


@dataclass(frozen=True)
class Schedule:
    """An EventBridge schedule: `rate(...)`, or `cron(M H * * ? *)` (daily at H:M UTC). Locally
    each runs on a timer of its interval, counted from the runtime's start."""

    expression: str

    def interval_seconds(self) -> float:
        daily = re.fullmatch(r"cron\(([0-9]|[1-5][0-9]) ([0-9]|1[0-9]|2[0-3]) \* \* \? \*\)", self.expression)
        if daily:
            return 86400
        match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", self.expression)
        if not match:
            raise ValueError(f"unsupported schedule expression {self.expression!r}")
        unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
        return int(match.group(1)) * unit


@dataclass(frozen=True)
class Route:
    """An API Gateway HTTP API (v2) route."""

    method: str
    path: str


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    triggers: tuple
    memory_mb: int = 512
    timeout_s: int = 60


FUNCTIONS: tuple[Function, ...] = (
    Function(
        "scrape",
        "Discover product pages of each shop, store products and images, upload new images to incoming/",
        # At fixed hours twelve apart, scrape and revalidate do not wait for each other (both hold
        # the crawler lease, shazzam.lease): rate(1 day) rules made in one deploy fire together.
        (Schedule("cron(0 2 * * ? *)"),),
        memory_mb=512,
        timeout_s=900,
    ),
    Function("detect", "Find garments in an incoming image", (ObjectCreated("incoming/"),), memory_mb=1024),
    # 1 GB: a 40-megapixel photo with transparency takes about 700 MB to decode and flatten.
    Function("standardise", "Crop and standardise each detected garment", (ObjectCreated("detections/", ".json"),), memory_mb=1024),
    Function("embed", "Embed and categorise a standardised garment", (ObjectCreated("standard/", ".png"),), memory_mb=1024),
    # 1 GB: both publish whole category shards (index.compact, pipeline.drop_dead_vectors), which
    # peaks at about 160 MiB + 0.65 MiB per 1,000 items (420 MiB at 400k through S3): enough to
    # about 1.3M items in a category, where 512 MB ran out at about 540k.
    Function("index", "Merge pending vectors into the category shards", (Schedule("rate(5 minutes)"),), memory_mb=1024, timeout_s=300),
    Function("revalidate", "Re-check product pages; drop dead items", (Schedule("cron(0 14 * * ? *)"),), memory_mb=1024, timeout_s=900),
    Function(
        "search",
        "The public API: find garments in a photo and the most similar items",
        (
            Route("POST", "/search"),
            Route("POST", "/uploads"),
            Route("GET", "/categories"),
            Route("GET", "/items/{item_id}"),
            Route("GET", "/health"),
            Route("GET", "/openapi.json"),
        ),
        memory_mb=1536,
        timeout_s=29,
    ),
)


def by_name(name: str) -> Function:
    for function in FUNCTIONS:
        if function.name == name:
            return function
    raise KeyError(f"no function named {name!r}")


def functions_for_key(key: str) -> list[Function]:
    return [f for f in FUNCTIONS for t in f.triggers if isinstance(t, ObjectCreated) and t.matches(key)]


def scheduled_functions() -> list[tuple[Function, Schedule]]:
    return [(f, t) for f in FUNCTIONS for t in f.triggers if isinstance(t, Schedule)]


def routes() -> list[tuple[Function, Route]]:
    return [(f, t) for f in FUNCTIONS for t in f.triggers if isinstance(t, Route)]
