"""Shop sources: what to scrape and how politely. Declared in a TOML file, or rows of `shops`.

    [[source]]
    name = "Sample shop"
    base_url = "http://127.0.0.1:8765/"
    strategy = "sitemap"          # sitemap | listing | shopify | auto (sitemaps, else listing)
    schedule = "rate(1 day)"      # omitted: every time the scrape function fires (a round
                                  # cut short by the run's time budget goes on at the next)
    delay_s = 1.0                 # between two requests to the host (robots Crawl-delay raises it)
    concurrency = 1               # requests in flight per host, 1 or 2
    local = true                  # may reach private/loopback addresses (demo and tests only)
    allowed_hosts = ["cdn.example"]   # besides the base URL's host; ["*"]: any public host
    listing_urls = ["/collections/all"]
    product_pattern = "/products?/"   # links on listing pages that are product pages
    currency = "EUR"              # for feeds that name none (Shopify)
    [source.fetch]                # any other FetchPolicy field: timeout_s, retries, max_bytes...
    timeout_s = 10
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from shazzam.scrape.fetch import POLICY_FIELDS, FetchPolicy, is_private_host

STRATEGIES = ("auto", "sitemap", "listing", "shopify")
MAX_CONCURRENCY = 2  # per host: the polite ceiling whatever a source asks for
LOCAL_DELAY_S = 0.0  # a local source (the demo shop on 127.0.0.1) is not throttled by default
PUBLIC_DELAY_S = 1.0
# (setting, type, least, most): the most is what the shops table stores (a 32-bit integer column);
# far above any sensible value, and the policy caps concurrency at MAX_CONCURRENCY anyway.
SETTING_RANGES = (("concurrency", int, 1, 1_000), ("max_pages", int, 1, 1_000_000_000), ("delay_s", (int, float), 0, 86_400))
MAX_SCHEDULE_S = 366 * 86_400
# [source.fetch] settings that take a number: (least, most). Each other one takes its default's type.
FETCH_RANGES = {"timeout_s": (0.1, 3_600), "total_timeout_s": (0.1, 3_600), "max_bytes": (1, 1 << 31), "max_redirects": (0, 20),
                "retries": (0, 10), "backoff_s": (0, 600), "max_retry_after_s": (0, 86_400)}
# Policy fields a source sets itself: under [source.fetch] they would be overwritten by the source's.
SOURCE_OWN_FETCH_SETTINGS = ("local", "allowed_hosts", "delay_s", "concurrency")


def _check_fetch_setting(name: str, value: Any) -> None:
    default = getattr(FetchPolicy(), name)
    if name in SOURCE_OWN_FETCH_SETTINGS:
        raise ValueError(f"fetch setting {name} cannot be {value!r} (use the source's own {name})")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        least, most = FETCH_RANGES[name]
        kind = int if isinstance(default, int) else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not least <= value <= most:  # NaN is in no range
            raise ValueError(f"fetch setting {name} must be a{'n integer' if kind is int else ' number'} from {least} to {most:,}, not {value!r}")
    elif not isinstance(value, type(default)):
        raise ValueError(f"fetch setting {name} cannot be {value!r}")


@dataclass(frozen=True)
class ShopSource:
    base_url: str
    name: str | None = None
    strategy: str = "auto"
    schedule: str | None = None
    delay_s: float | None = None
    concurrency: int = 1
    local: bool = False
    allowed_hosts: tuple[str, ...] = ()
    listing_urls: tuple[str, ...] = ()
    product_pattern: str = r"/products?/"
    currency: str | None = None
    max_pages: int = 100_000
    fetch: Mapping[str, Any] = field(default_factory=dict)  # other FetchPolicy fields

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}")
        parts = urlsplit(self.base_url) if isinstance(self.base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, such as https://shop.example/: {self.base_url!r}")
        try:
            object.__setattr__(self, "base_url", canonical_shop_url(self.base_url))
        except ValueError as exc:  # a port out of range
            raise ValueError(f"base_url is not a usable URL ({exc}): {self.base_url!r}") from None
        for name, kind, low, high in SETTING_RANGES:
            value = getattr(self, name)
            if value is None and name == "delay_s":
                continue
            if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
                raise ValueError(f"{name} must be a number from {low} to {high:,}, not {value!r}")
        if not isinstance(self.local, bool):
            raise ValueError(f"local must be true or false, not {self.local!r}")
        for name in ("name", "currency"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, not {getattr(self, name)!r}")
        if not isinstance(self.product_pattern, str):
            raise ValueError(f"product_pattern must be a regular expression in a string, not {self.product_pattern!r}")
        for name in ("allowed_hosts", "listing_urls"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{name} must be a list of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.schedule is not None:
            from shazzam.wiring import Schedule

            try:
                # A source's schedule is how often at most, not when: an interval, not a cron.
                if not isinstance(self.schedule, str) or not self.schedule.startswith("rate(") or not 1 <= Schedule(self.schedule).interval_seconds() <= MAX_SCHEDULE_S:
                    raise ValueError
            except (ValueError, OverflowError):
                raise ValueError(f"schedule must be rate(N minutes|hours|days), from once a minute to once a year (how "
                                 f"often at most the source is scraped), not {self.schedule!r}") from None
        if not isinstance(self.fetch, Mapping):
            raise ValueError(f"fetch must be a table of fetch settings, not {self.fetch!r}")
        unknown = set(self.fetch) - POLICY_FIELDS
        if unknown:
            raise ValueError(f"unknown fetch settings: {', '.join(sorted(unknown))}")
        for name, value in self.fetch.items():
            _check_fetch_setting(name, value)
        try:
            re.compile(self.product_pattern)
        except re.error as exc:
            raise ValueError(f"product_pattern is not a regular expression ({exc}): {self.product_pattern!r}") from None

    @property
    def host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()

    def policy(self) -> FetchPolicy:
        delay = self.delay_s if self.delay_s is not None else (LOCAL_DELAY_S if self.local else PUBLIC_DELAY_S)
        settings = {
            **self.fetch,
            "delay_s": delay,
            "concurrency": min(max(int(self.concurrency), 1), MAX_CONCURRENCY),
            "local": self.local,
            "allowed_hosts": frozenset({self.host, *self.allowed_hosts}),
        }
        return replace(FetchPolicy(), **settings)

    def is_due(self, last_scraped_at: datetime | None, now: datetime) -> bool:
        if self.schedule is None or last_scraped_at is None:
            return True
        from shazzam.wiring import Schedule

        # A little slack, so a daily source is not skipped by a run that fires a minute early.
        return now - last_scraped_at >= timedelta(seconds=Schedule(self.schedule).interval_seconds() * 0.95)

    def discovery_key(self) -> str:
        """A digest of the settings that decide what discovery finds: a round's discovery kept under
        another is started afresh."""
        decides = [self.base_url, self.strategy, list(self.listing_urls), self.product_pattern, self.max_pages]
        return hashlib.sha1(json.dumps(decides).encode(), usedforsecurity=False).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        """The fields kept in the shops row's `settings` JSON (the rest have their own columns)."""
        return {
            "allowed_hosts": list(self.allowed_hosts),
            "listing_urls": list(self.listing_urls),
            "product_pattern": self.product_pattern,
            "currency": self.currency,
            "max_pages": self.max_pages,
            "fetch": dict(self.fetch),
        }


def infer_local(base_url: str) -> bool:
    """A base URL written as a loopback/private literal (127.0.0.1, localhost) is local by intent."""
    return is_private_host(urlsplit(base_url).hostname or "")


def canonical_shop_url(url: str) -> str:
    """The one spelling of a shop's address, so that its spellings name one shop (one id): scheme and
    host in lower case, an internationalised host in punycode, no trailing dot, no default port, no
    fragment, "/" for an empty path, percent-escapes in one form (RFC 3986, 6.2.2). The path keeps
    its case (paths are case-sensitive on most servers). ValueError for a port out of range or a
    host no DNS name can spell."""
    parts = urlsplit(url.strip())
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower().rstrip("."), parts.port
    if not host:
        raise ValueError(f"no host in {url!r}")
    if not host.isascii():
        if DEVIATIONS & set(host):  # IDNA 2003 (Python's codec) maps them away, browsers do not: another domain
            raise ValueError(f"write the host {parts.hostname!r} in punycode (xn--...), as the shop's DNS name is")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{parts.hostname!r} is no internationalised host name") from None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    if parts.username or parts.password or "@" in parts.netloc:
        # It would be the shop's public name (search results, /health) and sent to every page.
        raise ValueError("a shop's address may not carry a user name or password")
    return urlunsplit((scheme, host, _escaped_once(parts.path) or "/", _escaped_once(parts.query), ""))


# The characters IDNA 2003 and 2008 spell differently in a host ("faß.de" is fass.de, or xn--fa-hia.de).
DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _escaped_once(text: str) -> str:
    """`text` with what must be escaped escaped (UTF-8, as a browser sends it), escapes in upper case,
    and unreserved characters never escaped: "/gr%c3%b6%C3%9Fe", "/größe" and "/gr%C3%B6%C3%9Fe"
    are one path."""
    text = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in _UNRESERVED else f"%{m[1].upper()}", text)
    return quote(text, safe="/%:@!$&'()*+,;=-._~?")


def source_from_mapping(data: Mapping[str, Any]) -> ShopSource:
    known = {f.name for f in fields(ShopSource)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown source settings: {', '.join(sorted(unknown))}")
    if "base_url" not in data:
        raise ValueError(f"a source without base_url (the shop's address, such as https://shop.example/): {dict(data)!r}")
    values = dict(data)
    values.setdefault("local", infer_local(values.get("base_url", "")))
    return ShopSource(**values)


def load_sources(path: str | Path) -> list[ShopSource]:
    """The ``[[source]]`` tables of a TOML file, every one checked before any is used: anything else
    at the top, a bad value, or two entries of one address or one name, is a ValueError naming the
    file (and the entry)."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    unknown = sorted(set(data) - {"source"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key {', '.join(unknown)}: write each shop as a [[source]] table")
    entries = data.get("source", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError(f"{path}: source must be an array of tables: write each shop as a [[source]] table")
    sources: list[ShopSource] = []
    for number, entry in enumerate(entries, start=1):
        try:
            source = source_from_mapping(entry)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: source {number}: {exc}") from None
        for earlier, other in enumerate(sources, start=1):
            if other.base_url == source.base_url or (source.name is not None and other.name == source.name):
                same = "address" if other.base_url == source.base_url else "name"
                raise ValueError(f"{path}: sources {earlier} and {number} have the same {same}")
        sources.append(source)
    return sources


__all__ = ["STRATEGIES", "ShopSource", "canonical_shop_url", "infer_local", "load_sources", "source_from_mapping"]
