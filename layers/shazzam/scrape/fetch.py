"""Polite, guarded HTTP GET: the one way the scraper touches the network.

What a :class:`Fetcher` guarantees, request by request (the conventions of Scrapy and of good
crawlers):

- robots.txt of every host is read once (protego) and obeyed, for the first URL and for every
  redirect hop; its Crawl-delay raises the delay;
- an honest user agent;
- per host: at most ``concurrency`` requests in flight and ``delay_s`` between request starts;
- ``Retry-After`` honoured on 429/503 (up to ``max_retry_after_s``), exponential backoff on other
  5xx and on network errors, ``retries`` times;
- a socket timeout, a total deadline per response (a body that never ends), a byte cap (checked
  against Content-Length first, then while reading), an optional content-type check before the
  body is read, a redirect cap;
- only http/https; only hosts in ``allowed_hosts`` when that set is given; and never a private,
  loopback, link-local or otherwise non-public address unless the policy is ``local``. The
  address check is made on the socket actually connected, so DNS tricks cannot get round it;
- conditional requests: ``etag`` / ``last_modified`` turn an unchanged resource into a 304;
- keep-alive: a host's requests share an idle connection (:class:`ConnectionPool`), as a browser's do.
"""

from __future__ import annotations

import codecs
import email.utils
import functools
import http.client
import ipaddress
import logging
import re
import select
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field, fields, replace
from datetime import timezone
from typing import Iterable
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from protego import Protego

log = logging.getLogger(__name__)

USER_AGENT = "ShazzamBot/0.2 (+https://github.com/shazzam-for-clothes; catalogue of clothes for visual search)"
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_CRAWL_DELAY_S = 60.0  # a robots.txt Crawl-delay above this is taken as this
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
ROBOTS_MAX_REDIRECTS = 5  # RFC 9309, 2.3.1.2: at least five, whatever a source allows its pages
GZIP_MAGIC = b"\x1f\x8b"


class FetchError(Exception):
    """A URL could not be fetched; ``kind`` says why in one word (the summary counts by it)."""

    def __init__(self, message: str, kind: str = "network") -> None:
        super().__init__(message)
        self.kind = kind
        self.redirected = False  # refused at a redirect's target, not at the address asked for
        self.refused_url: str | None = None  # the address refused without asking it (robots.txt, its host, time)
        # False: refused here before the host was asked anything (its Retry-After gate closed, the
        # run's time up), which says nothing of the page.
        self.asked = True


class RobotsDisallowed(FetchError):
    def __init__(self, url: str, written: bool = True) -> None:
        super().__init__(f"disallowed by robots.txt: {url}", kind="robots")
        # The shop's robots.txt says so, rather than one that could not be read keeping the crawler out.
        self.written = written


@dataclass(frozen=True)
class FetchPolicy:
    """How one source may be fetched. Tests shrink the times; a local source sets ``local``."""

    user_agent: str = USER_AGENT
    # The product token robots.txt groups are matched on, whatever the User-Agent header says (a
    # browser-like header must not slip past a group that bans the bot).
    robots_agent: str = "ShazzamBot"
    timeout_s: float = DEFAULT_TIMEOUT_S
    total_timeout_s: float = 120.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = 5
    retries: int = 3
    backoff_s: float = 1.0
    max_retry_after_s: float = 300.0
    delay_s: float = 1.0
    concurrency: int = 1
    local: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", frozenset(h.lower() for h in self.allowed_hosts))
        object.__setattr__(self, "concurrency", max(1, int(self.concurrency)))


POLICY_FIELDS = frozenset(f.name for f in fields(FetchPolicy))
# How a robots.txt fetch fails the same way each time (too large, a redirect to a malformed,
# non-HTTP or non-public address): its rules cannot be read, so the host is left alone.
ROBOTS_UNREADABLE = frozenset({"too-large", "bad-url", "scheme", "blocked-address", "content-type", "bad-encoding"})


@dataclass
class FetchResult:
    url: str
    status: int
    content_type: str
    body: bytes
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def text(self) -> str:
        """The body decoded with the charset of the content type, else of the page's own <meta>
        (HTML's rule: within its first 1,024 bytes), else as UTF-8 if more of it reads as UTF-8
        characters than not (a stray Latin-1 byte in a footer replaced), else as windows-1252 (what a browser in Western
        Europe takes a page of no declared charset for)."""
        for bom, encoding in _BOMS:  # a byte order mark wins over any label (the HTML standard's rule)
            if self.body.startswith(bom):
                return self.body[len(bom) :].decode(encoding, errors="replace")
        header = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", self.content_type or "", re.I)
        if header and (codec := python_codec(header.group(1))):
            return _decoded(self.body, codec)
        meta = _META_CHARSET.search(self.body[:1024])
        if meta and (codec := python_codec(meta.group(1).decode("ascii"))):
            # A <meta> read as ASCII bytes is in no UTF-16: its label means UTF-8 (the HTML standard's rule).
            return _decoded(self.body, "utf-8" if codecs.lookup(codec).name.startswith("utf-16") else codec)
        text = self.body.decode("utf-8", errors="replace")
        # By the balance of evidence: a Latin-1 byte pair can happen to be UTF-8 ("É\xa0"), and a
        # UTF-8 page can hold a stray Latin-1 byte (a footer's "Café").
        if text.count("\ufffd") > len(re.findall(r"[^\x00-\x7f\ufffd]", text)):
            return self.body.decode("cp1252", errors="replace")
        return text


def _decoded(body: bytes, codec: str) -> str:
    """The body in `codec`, what it has no character for replaced, or in EUC-JP read as browsers read it."""
    return body.decode(codec, errors="euc-jp-as-browsers" if codecs.lookup(codec).name == "euc_jp" else "replace")


def _euc_jp_as_browsers(error: UnicodeDecodeError) -> tuple[str, int]:
    """Where Python's euc_jp reads no character in a pair of bytes, what the WHATWG decoder reads: the
    rows Microsoft's code page adds to JIS X 0208 (NEC's row 13: ①, ㈱, Ⅱ; its selection of IBM's
    kanji, rows 89 to 92: 髙, 﨑), from cp932, with whose Shift_JIS the standard's EUC-JP shares its
    index; else U+FFFD for the pair. euc_jis_2004 reads row 13 too, but other kanji in rows 89 to 92."""
    pair = bytes(error.object[error.start : error.start + 2])
    if len(pair) < 2 or not (0xA1 <= pair[0] <= 0xFE and 0xA1 <= pair[1] <= 0xFE):
        return "\ufffd", error.end
    row, cell = pair[0] - 0xA1, pair[1] - 0xA1  # the pair's place in JIS X 0208, as Shift_JIS writes it:
    shift_jis = bytes(((row >> 1) + (0x81 if row < 62 else 0xC1), cell + 0x9F if row % 2 else cell + (0x40 if cell < 63 else 0x41)))
    try:
        return shift_jis.decode("cp932"), error.start + 2
    except UnicodeDecodeError:
        return "\ufffd", error.start + 2


codecs.register_error("euc-jp-as-browsers", _euc_jp_as_browsers)


def percent_encoded(url: str) -> str:
    """The URL with spaces and non-ASCII in its path and query percent-encoded as UTF-8, as a
    browser sends them ("/p/kleid-größe"; http.client refuses them raw); what is already encoded
    stays as it is."""
    parts = urlsplit(url)
    path, query = (quote(part, safe="/%:@!$&'()*+,;=-._~?") for part in (parts.path or "/", parts.query))
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


# Every label of the WHATWG Encoding Standard (its encodings.json) for an encoding Python has a codec
# for, as the codec that reads what browsers read: "ISO-8859-1" pages are windows-1252 (curly quotes,
# the euro sign), Shift_JIS is Microsoft's cp932, EUC-KR is cp949, GBK is read as GB18030 (its
# superset), KOI8-RU as KOI8-U, "utf-16" and "unicode" as UTF-16LE. Not its "replacement" labels
# (HZ-GB-2312, ISO-2022-KR and -CN: browsers show none of such a page) nor x-user-defined: Python's
# codec of that name, if any, reads them. Two of Python's names that shops write, latin-1 and cp936,
# are read as browsers read their standard names; any other label as Python names it.
_WHATWG_CODECS = {label: codec for codec, labels in (
    ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    ("cp866", "866 cp866 csibm866 ibm866"),
    ("iso8859-2", "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2"),
    ("iso8859-3", "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3"),
    ("iso8859-4", "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4"),
    ("iso8859-5", "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 iso_8859-5:1988"),
    ("iso8859-6", "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e iso-8859-6-i "
                  "iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    ("iso8859-7", "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 iso_8859-7 "
                  "iso_8859-7:1987 sun_eu_greek"),
    ("iso8859-8", "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 iso_8859-8 "
                  "iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical"),  # -i is logical order: the same characters
    ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    ("iso8859-16", "iso-8859-16"),
    ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    ("koi8-u", "koi8-ru koi8-u"),
    ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    ("cp1250", "cp1250 windows-1250 x-cp1250"),
    ("cp1251", "cp1251 windows-1251 x-cp1251"),
    ("cp1252", "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 iso_8859-1 "
               "iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252 latin-1"),
    ("cp1253", "cp1253 windows-1253 x-cp1253"),
    ("cp1254", "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254"),
    ("cp1255", "cp1255 windows-1255 x-cp1255"),
    ("cp1256", "cp1256 windows-1256 x-cp1256"),
    ("cp1257", "cp1257 windows-1257 x-cp1257"),
    ("cp1258", "cp1258 windows-1258 x-cp1258"),
    ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030 cp936"),
    ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    ("euc-jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    ("iso2022-jp", "csiso2022jp iso-2022-jp"),
    ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    ("cp949", "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 windows-949"),
    ("utf-16-be", "unicodefffe utf-16be"),
    ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
) for label in labels.split()}


# A gzip file is one member, or a few concatenated (``cat a.gz b.gz``); thousands of tiny ones are
# a server's trick to keep a worker busy, not a page.
MAX_GZIP_MEMBERS = 1000
_GZIP_SLICE = 64 * 1024
# Content-Encoding values that name a compression; any other (servers send "none", "UTF-8",
# "binary") names none, and the body is read as it came, as browsers read it.
_COMPRESSIONS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress", "x-compress"})


def gunzip(body: bytes, limit: int, whole: bool = False) -> bytes:
    """Decompress a gzip body to at most ``limit`` bytes (a gzip bomb stops there). A file may be
    several gzip members one after another, which read as one. A cut-off last member ends the data,
    or, when the body must be `whole` (it came over HTTP, where a cut means a broken transfer),
    raises FetchError to be retried. Linear in the body: each member is fed in slices."""
    data = bytearray()
    view, position, members = memoryview(body), 0, 0
    while bytes(view[position : position + 2]) == GZIP_MAGIC:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise FetchError(f"gzip body of more than {MAX_GZIP_MEMBERS} members", kind="bad-encoding")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof and position < len(view):
            piece = view[position : position + _GZIP_SLICE]
            position += len(piece)
            data += inflater.decompress(piece, limit + 1 - len(data))
            if len(data) > limit:
                raise FetchError(f"gzip body over {limit} bytes", kind="too-large")
        if not inflater.eof:
            if whole:
                raise FetchError(f"gzip body cut short after {len(data)} bytes", kind="network")
            break
        position -= len(inflater.unused_data)  # what followed this member in its last slice
    return bytes(data)


def decoded_transfer(body: bytes, content_encoding: str | None, url: str, limit: int) -> bytes:
    """The body without the gzip its server compressed it with (asked for, as browsers ask: markup
    compresses well, which spares the shop's bandwidth), to at most ``limit`` bytes. A compression
    that was not asked for (br, zstd) is refused; a body labelled gzip that is not is taken as it
    came, as is one labelled with a value that names no compression."""
    codings = [coding.strip().lower() for coding in (content_encoding or "").split(",")]
    codings = [coding for coding in codings if coding in _COMPRESSIONS]
    if not codings:
        return body
    if codings not in (["gzip"], ["x-gzip"]):
        raise FetchError(f"{url} came encoded as {content_encoding!r}, which was not asked for", kind="bad-encoding")
    if body[:2] != GZIP_MAGIC:
        return body
    try:
        return gunzip(body, limit, whole=True)
    except zlib.error as error:
        raise FetchError(f"{url}: its gzip body is corrupt ({error})", kind="bad-encoding") from None


def python_codec(label: str) -> str | None:
    """Python's codec for a charset label as a browser reads it, or None for one it does not know."""
    label = label.strip().lower()
    codec = _WHATWG_CODECS.get(label, label)
    try:
        codecs.lookup(codec)
    except LookupError:
        return None
    return codec


# A robots.txt group's user-agent line, up to its value's end (a comment may follow).
_USER_AGENT_LINE = re.compile(r"^([ \t]*user-?agent[ \t]*:[ \t]*)([^\r\n#]*)", re.I | re.M)


def _product_tokens(robots_txt: str) -> str:
    """robots.txt with each user-agent line's value cut to its product token, as Google's parser
    reads it: "ShazzamBot/0.2 (+https://...)" names the group of "ShazzamBot" (RFC 9309, 2.2.1:
    letters, "_" and "-"), which protego would otherwise match whole, and on no crawler."""
    return _USER_AGENT_LINE.sub(lambda line: line.group(1) + re.match(r"\*|[A-Za-z_-]*", line.group(2)).group(), robots_txt)


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# <meta charset="x"> or <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.-]+)", re.I)


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway may forward to: NAT64 (RFC 6052,
# RFC 8215), SIIT's IPv4-translated addresses (RFC 2765) and the deprecated IPv4-compatible ones.
_IPV4_IN_LAST_32_BITS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96"))


def is_public_address(address: str) -> bool:
    """Global and not multicast; an IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4,
    Teredo, IPv4-compatible) only if that one is public too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(str(ip.ipv4_mapped))
        carried = [ip.sixtofour, *(ip.teredo or ())]
        carried += [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) for net in _IPV4_IN_LAST_32_BITS if ip in net]
        if any(v4 is not None and not is_public_address(str(v4)) for v4 in carried):
            return False
    return ip.is_global and not ip.is_multicast


def is_private_host(host: str) -> bool:
    """Whether a host is written as a non-public IP literal or is localhost (no DNS asked)."""
    host = (host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return not is_public_address(host)
    except ValueError:
        return False


def _guarded(connection_class):
    """An http.client connection class that refuses a socket connected to a forbidden address."""

    class Guarded(connection_class):
        allow_private = False

        def connect(self) -> None:
            super().connect()
            peer = self.sock.getpeername()[0]
            if not self.allow_private and not is_public_address(peer):
                self.sock.close()
                raise FetchError(f"{self.host} resolves to a non-public address {peer}", kind="blocked-address")

    return Guarded


_GuardedHTTP = _guarded(http.client.HTTPConnection)
_GuardedHTTPS = _guarded(http.client.HTTPSConnection)


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # loading the system's certificates takes milliseconds: once


# How long an idle connection is kept for the host's next request, unless its Keep-Alive header
# says the server keeps it less: Apache's default keep-alive timeout is 5 s. A server that closed it
# anyway is asked again on a new connection (see Fetcher._get_once).
KEEP_ALIVE_IDLE_S = 4.0
MAX_IDLE_CONNECTIONS = 32  # in all, whatever the hosts: each holds a file descriptor
_KEEP_ALIVE_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d+)", re.I)
# What a reused connection's request fails with when the server closed it while it was idle.
# BadStatusLine (RemoteDisconnected is one) also covers bytes a server sent past its last answer's
# end, which the next request on that connection would read first.
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, http.client.BadStatusLine)


def keep_alive_s(header: str | None) -> float:
    """How long an idle connection may wait for reuse, given the answer's Keep-Alive header: a
    second less than the server's timeout, at most KEEP_ALIVE_IDLE_S."""
    found = _KEEP_ALIVE_TIMEOUT.search(header or "")
    return KEEP_ALIVE_IDLE_S if found is None else min(KEEP_ALIVE_IDLE_S, int(found.group(1)) - 1.0)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection's server has closed it (or sent what nobody asked for): its
    socket is readable before any request."""
    if isinstance(connection.sock, ssl.SSLSocket) and connection.sock.pending():
        return True  # bytes decrypted and waiting, which polling the socket cannot see
    try:
        poller = select.poll()
        poller.register(connection.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class ConnectionPool:
    """Idle keep-alive connections by scheme, host, port and address policy, so that a host's pages
    and pictures share a connection as a browser's do: one TCP and TLS handshake for many requests,
    which spares the shop as much as it speeds the crawl. A connection goes back only after its
    answer was read whole, and is reused only by a request under the same address policy (it was
    checked against that policy when it connected)."""

    def __init__(self, most_idle: int = MAX_IDLE_CONNECTIONS) -> None:
        self._idle: dict[tuple, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._lock = threading.Lock()
        self.most_idle = most_idle

    def take(self, key: tuple) -> http.client.HTTPConnection | None:
        """The most recently used idle connection for `key` still open at both ends, or None."""
        with self._lock:
            self._close_expired()
            idle = self._idle.get(key, [])
            while idle:
                connection, _expires = idle.pop()
                if not _dropped(connection):
                    return connection
                connection.close()
        return None

    def give_back(self, key: tuple, connection: http.client.HTTPConnection, keep_s: float, most: int) -> None:
        """Keep `connection` for `keep_s` seconds, unless `most` already wait for `key`; past
        `most_idle` in all, the one whose time runs out first goes."""
        with self._lock:
            self._close_expired()
            idle = self._idle.setdefault(key, [])
            if keep_s > 0 and len(idle) < most:
                idle.append((connection, time.monotonic() + keep_s))
                while sum(map(len, self._idle.values())) > self.most_idle:
                    entries, position = min(((entries, position) for entries in self._idle.values() for position in range(len(entries))),
                                            key=lambda found: found[0][found[1]][1])
                    entries.pop(position)[0].close()
                return
        connection.close()

    def _close_expired(self) -> None:
        """Close the connections past their time, whatever their host: a pass over many hosts
        would otherwise hold a socket for each (a server closes its end; ours waits in CLOSE_WAIT)."""
        now = time.monotonic()
        for key, entries in list(self._idle.items()):
            for connection, expires in entries:
                if expires <= now:
                    connection.close()
            entries[:] = [(connection, expires) for connection, expires in entries if expires > now]
            if not entries:
                del self._idle[key]

    def close(self) -> None:
        """Close every idle connection; the pool stays usable."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, _expires in connections:
                connection.close()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(connections) for connections in self._idle.values())


class _HostGate:
    """At most ``concurrency`` requests in flight to one host, and ``delay`` between their starts."""

    def __init__(self, concurrency: int) -> None:
        self.slots = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.next_start = 0.0
        self.last_start = 0.0
        self.closed_until = 0.0  # a Retry-After longer than we wait: no request before then

    def wait_turn(self, delay: float) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.last_start, self.next_start = start, start + delay
        if start > now:
            time.sleep(start - now)

    def space_from_last(self, delay: float) -> None:
        """The next request starts at least ``delay`` after the last one did (a delay learnt from
        that request's answer: robots.txt's Crawl-delay)."""
        with self.lock:
            self.next_start = max(self.next_start, self.last_start + delay)

    def hold_off(self, seconds: float) -> None:
        """Nobody starts a request to this host for ``seconds`` (a Retry-After)."""
        with self.lock:
            self.next_start = max(self.next_start, time.monotonic() + seconds)

    def close_for(self, seconds: float) -> None:
        """No request to this host for ``seconds``: each is refused at once (a Retry-After too long to wait)."""
        with self.lock:
            self.closed_until = max(self.closed_until, time.monotonic() + seconds)

    def closed_for(self) -> float:
        return max(0.0, self.closed_until - time.monotonic())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() takes for a digit
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # the asctime form, or "-0000": an HTTP date is UTC (RFC 9110, 5.6.7)
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, OSError):  # OverflowError: a year no clock reaches
        return None


class Fetcher:
    """GET under a :class:`FetchPolicy`; ``Fetcher(local=True, delay_s=0)`` overrides fields."""

    def __init__(
        self,
        user_agent: str | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
        *,
        policy: FetchPolicy | None = None,
        **overrides,
    ) -> None:
        unknown = set(overrides) - POLICY_FIELDS
        if unknown:
            raise TypeError(f"unknown fetch policy fields: {', '.join(sorted(unknown))}")
        for name, value in (("user_agent", user_agent), ("timeout_s", timeout), ("max_bytes", max_bytes)):
            if value is not None:
                overrides[name] = value
        self.policy = replace(policy or FetchPolicy(), **overrides)
        self._robots: dict[str, Protego] = {}
        self._shut_out: set[str] = set()  # origins kept out because their robots.txt could not be read
        self._gates: dict[str, _HostGate] = {}
        self._connections = ConnectionPool()
        self._lock = threading.Lock()
        # time.monotonic() past which no retry waits (a run's budget): a host that keeps answering
        # 503 with Retry-After would otherwise hold one request for retries x 300 s.
        self.deadline: float | None = None

    def with_policy(self, policy: FetchPolicy) -> "Fetcher":
        """A fetcher for another source: its own policy, and this one's robots.txt reads, host
        gates and idle connections, so that two sources on one host share its robots.txt, pace and
        Retry-After."""
        fetcher = Fetcher(policy=policy)
        fetcher._robots, fetcher._shut_out, fetcher._gates, fetcher._lock = self._robots, self._shut_out, self._gates, self._lock
        fetcher._connections = self._connections
        return fetcher

    def close(self) -> None:
        """Close the connections kept open for reuse (this fetcher's and those it shares through
        with_policy); a later request opens a new one."""
        self._connections.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def user_agent(self) -> str:
        return self.policy.user_agent

    @property
    def robots_agent(self) -> str:
        """The product token robots.txt groups name ("ShazzamBot"), not the whole User-Agent
        header, whose other words ("search", "https", "Mozilla") would match other crawlers' groups."""
        return self.policy.robots_agent

    # -- guards -------------------------------------------------------------------------------

    def check_url(self, url: str, any_host: bool = False) -> None:
        """Raise FetchError unless the URL's scheme and host may be fetched under the policy
        (`any_host`: whatever the source's allowed hosts, as a robots.txt redirect may go)."""
        try:
            parts = urlsplit(url)
            host, _port = (parts.hostname or "").lower(), parts.port  # a port out of range raises here
        except ValueError as error:
            raise FetchError(f"malformed URL {url!r}: {error}", kind="bad-url") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {parts.scheme!r}: {url}", kind="scheme")
        if not host:
            raise FetchError(f"no host in {url}", kind="scheme")
        hosts = self.policy.allowed_hosts
        if hosts and "*" not in hosts and host not in hosts and not any_host:
            raise FetchError(f"host {host} is not allowed for this source", kind="host-not-allowed")
        if not self.policy.local and is_private_host(host):
            raise FetchError(f"{host} is a non-public address", kind="blocked-address")

    def _gate(self, url: str) -> _HostGate:
        host = (urlsplit(url).hostname or "").lower()  # one host's pace, whatever the scheme or port
        with self._lock:
            gate = self._gates.get(host)
            if gate is None:
                gate = self._gates[host] = _HostGate(self.policy.concurrency)
            return gate

    # -- robots.txt ---------------------------------------------------------------------------

    def _robots_for(self, url: str) -> Protego:
        origin = _origin(url)
        with self._lock:
            parser = self._robots.get(origin)
        if parser is not None:
            return parser
        # A network error or a timeout propagates as FetchError and is not cached (the next call
        # retries); an answer that will be the same next time is decided once per host.
        try:
            result = self._get_following(origin + "/robots.txt", robots_file=True)
        except FetchError as error:
            if error.kind == "too-many-redirects":
                result = None  # "unavailable" (RFC 9309, 2.3.1.2): as if there were none
            elif error.kind in ROBOTS_UNREADABLE:
                result = FetchResult(url=origin + "/robots.txt", status=403, content_type="", body=b"")  # unreadable: stay out
            else:
                raise
        if result is not None and result.status == 200 and result.body[:2] == GZIP_MAGIC:
            # A gzip file without a Content-Encoding to say so (a misconfigured server).
            try:
                result = replace(result, body=gunzip(result.body, self.policy.max_bytes))
            except (FetchError, zlib.error):
                result = replace(result, status=403)  # unreadable: stay out
        if result is None:
            parser = Protego.parse("")
        elif result.status == 200:
            parser = Protego.parse(_product_tokens(result.text()))
        elif result.status in (401, 403, 429) or result.status >= 500:
            parser = Protego.parse("User-agent: *\nDisallow: /\n")  # refused, throttled or broken: stay out
            with self._lock:
                self._shut_out.add(origin)
        else:
            parser = Protego.parse("")  # no robots.txt: everything allowed
        with self._lock:
            self._robots.setdefault(origin, parser)
        self._gate(origin).space_from_last(self._delay_for(origin))  # robots.txt's own request was paced before its Crawl-delay was known
        return parser

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of the URL's host lets this user agent fetch it."""
        self.check_url(url)
        return self._robots_for(url).can_fetch(url, self.robots_agent)

    def sitemaps(self, base_url: str) -> list[str]:
        """The Sitemap URLs that robots.txt of base_url's host names (possibly none)."""
        self.check_url(base_url)
        robots_url = _origin(base_url) + "/robots.txt"  # a Sitemap line may be relative to it
        return [urljoin(robots_url, sitemap) for sitemap in self._robots_for(base_url).sitemaps]

    def _delay_for(self, url: str) -> float:
        parser = self._robots.get(_origin(url))
        crawl_delay = parser.crawl_delay(self.robots_agent) if parser is not None else None
        return max(self.policy.delay_s, min(float(crawl_delay or 0), MAX_CRAWL_DELAY_S))

    # -- fetching -----------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: Iterable[str] | None = None,
        max_bytes: int | None = None,
    ) -> FetchResult:
        """GET a URL, following redirects, retrying transient failures.

        HTTP errors come back as their status (4xx, or 5xx once retries are spent); a refusal
        (robots, address, size, type, time) raises FetchError. ``accept`` lists media types
        ("text/html", "image/*"): a 200 of another type raises FetchError before its body is read.
        ``max_bytes`` is this answer's byte cap, when it is not the policy's (a sitemap's is larger).
        """
        return self._get_following(url, etag=etag, last_modified=last_modified, accept=accept, max_bytes=max_bytes)

    def _get_following(self, url, *, robots_file=False, etag=None, last_modified=None, accept=None, max_bytes=None) -> FetchResult:
        """`robots_file`: robots.txt itself, which is not checked against itself and whose
        redirects are followed to any public host (RFC 9309, 2.3.1.2)."""
        max_redirects = ROBOTS_MAX_REDIRECTS if robots_file else self.policy.max_redirects
        max_bytes = max_bytes or self.policy.max_bytes
        for hop in range(max_redirects + 1):
            try:
                self._check_run_deadline(url)
                self.check_url(url, any_host=robots_file)
                url = percent_encoded(url)
                if not robots_file and not self._robots_for(url).can_fetch(url, self.robots_agent):
                    raise RobotsDisallowed(url, written=_origin(url) not in self._shut_out)
            except FetchError as error:
                error.redirected, error.refused_url = hop > 0, url
                error.asked |= hop > 0  # an earlier hop was answered
                raise
            try:
                result, location = self._get_retrying(url, etag, last_modified, accept, max_bytes)
            except FetchError as error:
                error.asked |= hop > 0  # an earlier hop was answered
                raise
            if location is None:
                return result
            try:
                # http.client reads header bytes as Latin-1: a Location in raw UTF-8 ("/p/größe")
                # is read back as the server meant it.
                location = location.encode("latin-1").decode("utf-8")
            except UnicodeError:
                pass
            try:
                url = urljoin(url, location)
            except ValueError:
                raise FetchError(f"{url} redirects to a malformed URL {location!r}", kind="bad-url") from None
            etag = last_modified = None  # validators belong to the URL they came from
        raise FetchError(f"more than {max_redirects} redirects", kind="too-many-redirects")

    def _get_retrying(self, url, etag, last_modified, accept, max_bytes) -> tuple[FetchResult, str | None]:
        policy = self.policy
        gate = self._gate(url)
        asked = False  # whether a request went out: a refusal before any says nothing of the page
        try:
            if (closed := gate.closed_for()) > 0:
                raise FetchError(f"{url}: the host asked for no requests for {closed:.0f} s more", kind="rate-limited")
            for attempt in range(policy.retries + 1):
                last = attempt == policy.retries
                if (held := gate.next_start - time.monotonic()) > 0:
                    self._may_wait(held, url)  # a host held off past the deadline: refused now, not after the wait
                gate.wait_turn(self._delay_for(url))
                self._check_run_deadline(url)
                asked = True
                try:
                    with gate.slots:
                        result, location = self._get_once(url, etag, last_modified, accept, max_bytes)
                except FetchError as error:
                    if error.kind not in ("network", "timeout") or last:
                        raise
                    self._may_wait(policy.backoff_s * 2**attempt, url)
                    time.sleep(policy.backoff_s * 2**attempt)
                    continue
                if result.status in (429, 503) or result.status >= 500:
                    wait = _retry_after_s(result.retry_after) if result.status in (429, 503) else None
                    if wait is not None and wait > policy.max_retry_after_s:
                        gate.close_for(wait)  # the rest of the host's pages are not asked for either
                        raise FetchError(f"{url}: Retry-After {wait:.0f} s is too long", kind="rate-limited")
                    if wait is not None:
                        # Every worker on this host waits, not only this one, and the next page waits
                        # too when this request is not retried (its last try, or past the deadline).
                        gate.hold_off(wait)
                    if not last:
                        self._may_wait(wait if wait is not None else policy.backoff_s * 2**attempt, url)
                        if wait is None:
                            time.sleep(policy.backoff_s * 2**attempt)
                        continue
                return result, location
            raise AssertionError("unreachable")
        except FetchError as error:
            error.asked = asked
            raise

    def _check_run_deadline(self, url: str) -> None:
        # Each request has its own total timeout; the run's deadline bounds them all, a redirect
        # chain's hops and a request's retries included (six slow hops took six timeouts).
        if self.deadline is not None and time.monotonic() >= self.deadline:
            refused = FetchError(f"{url}: the run's time is up", kind="timeout")
            refused.asked = False  # by this request (an earlier hop or try says otherwise)
            raise refused

    def _may_wait(self, seconds: float, url: str) -> None:
        if self.deadline is not None and time.monotonic() + seconds > self.deadline:
            raise FetchError(f"{url}: waiting {seconds:.0f} s for the host would pass the run's deadline", kind="rate-limited")

    def _get_once(self, url, etag, last_modified, accept, max_bytes) -> tuple["_Response", str | None]:
        """One request, on an idle connection to the host when one is kept (asked again on a new
        connection if the server closed that one meanwhile), else on a new connection."""
        parts = urlsplit(url)
        key = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port, self.policy.local)
        seconds = self.policy.total_timeout_s
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - time.monotonic()))
        deadline = time.monotonic() + seconds  # one for the request, on a kept connection and a new one
        connection = self._connections.take(key)
        if connection is not None:
            connection.timeout = self.policy.timeout_s
            connection.sock.settimeout(self.policy.timeout_s)
            try:
                return self._exchange(connection, key, url, etag, last_modified, accept, max_bytes, deadline, reused=True)
            except _StaleConnection:
                log.debug("%s: the kept connection was closed by the server; asking on a new one", url)
        connection_class = _GuardedHTTPS if key[0] == "https" else _GuardedHTTP
        kwargs = {"context": _tls_context()} if connection_class is _GuardedHTTPS else {}
        connection = connection_class(parts.hostname, parts.port, timeout=self.policy.timeout_s, **kwargs)
        connection.allow_private = self.policy.local
        return self._exchange(connection, key, url, etag, last_modified, accept, max_bytes, deadline, reused=False)

    def _exchange(self, connection, key, url, etag, last_modified, accept, max_bytes, deadline, reused) -> tuple["_Response", str | None]:
        policy = self.policy
        headers = {"User-Agent": policy.user_agent, "Accept": "*/*", "Accept-Encoding": "gzip"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        parts = urlsplit(url)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        seconds = max(0.0, deadline - time.monotonic())
        # The socket timeout bounds each read, not the request: a server dripping its status line
        # and headers a byte at a time held a pass for minutes. At the deadline (and a grace for the
        # body check below to speak first) the socket is shut, which ends any read in progress.
        watchdog = _Watchdog(connection, seconds + WATCHDOG_GRACE_S)
        response = None
        try:
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
            except _STALE as error:
                if reused and not watchdog.cut.is_set():
                    raise _StaleConnection() from error
                raise
            if response.status < 200:  # http.client reads past a 100 only: an Early Hints (103) is no answer
                raise FetchError(f"{url} answered {response.status}, an interim answer with no final one read", kind="network")
            location = response.getheader("Location")
            if response.status in _REDIRECTS and location:
                _drain(response, connection)
                answer = _Response.of(url, response, b""), location
            else:
                if response.status == 200 and accept is not None and not _accepts(accept, response.getheader("Content-Type", "")):
                    raise FetchError(f"{url} is {response.getheader('Content-Type')!r}", kind="content-type")
                body = self._read_capped(response, url, max_bytes, deadline)
                if response.status == 200:  # no other answer's body is read: a 404 with a broken one is a 404
                    # http.client's read1 ends quietly where the server hung up before the length it
                    # declared (the deadline's cut is a timeout, said below).
                    if response.length and not watchdog.cut.is_set():
                        raise FetchError(f"body of {url} cut short: {response.length} of its {response.getheader('Content-Length')} "
                                         "declared bytes never came", kind="network")
                    body = decoded_transfer(body, response.getheader("Content-Encoding"), url, max_bytes)
                answer = _Response.of(url, response, body), None
            if watchdog.cut.is_set():  # what came before the cut may parse as a whole answer: it is not one
                raise FetchError(f"{url}: no complete answer in the time it had", kind="timeout")
            return answer
        except (FetchError, _StaleConnection):
            raise
        except (socket.timeout, TimeoutError) as error:
            raise FetchError(f"{url}: timed out ({error})", kind="timeout") from error
        except (http.client.HTTPException, OSError, ValueError) as error:
            if watchdog.cut.is_set():  # the read ended because the deadline passed
                raise FetchError(f"{url}: no complete answer in the time it had", kind="timeout") from error
            raise FetchError(f"cannot fetch {url}: {error}", kind="network") from error
        finally:
            cut = watchdog.stop()
            if not cut and response is not None and _read_to_its_end(response) and not response.will_close:
                # Not closed by the server: the connection serves the host's next request.
                response.close()  # the connection's socket stays open; http.client asks this before the next request
                self._connections.give_back(key, connection, keep_alive_s(response.getheader("Keep-Alive")), policy.concurrency)
            else:
                connection.close()

    def _read_capped(self, response: http.client.HTTPResponse, url: str, limit: int, deadline: float) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise FetchError(f"body of {url} is {length} bytes, over {limit}", kind="too-large")
        chunks: list[bytes] = []
        total = 0
        while chunk := response.read1(_CHUNK):
            total += len(chunk)
            if total > limit:
                raise FetchError(f"body of {url} is over {limit} bytes", kind="too-large")
            if time.monotonic() > deadline:
                raise FetchError(f"body of {url} still coming at its deadline", kind="timeout")
            chunks.append(chunk)
        return b"".join(chunks)


WATCHDOG_GRACE_S = 1.0
DRAIN_TIMEOUT_S = 0.5


def _read_to_its_end(response: http.client.HTTPResponse) -> bool:
    """Whether an answer's body was read whole (a chunked one closes itself at its end; one of a
    known length reads down to none left), leaving nothing of it on the connection. Not an interim
    answer (1xx: the final one follows it), nor a 204 that declares a body, which no server may
    send (RFC 9110, 8.6): http.client reads none, and the next answer would start with it. A 304
    may declare the length of the page it stands for, and is kept (a body sent after it anyway
    is what _dropped looks for)."""
    if response.status < 200:
        return False
    if response.status == 204 and (response.getheader("Transfer-Encoding") or (response.getheader("Content-Length") or "0").strip() != "0"):
        return False
    return response.isclosed() or response.length == 0


def _drain(response: http.client.HTTPResponse, connection: http.client.HTTPConnection) -> None:
    """Read a redirect's short body so that its connection can serve again, within
    DRAIN_TIMEOUT_S in all. A long, chunked, slow or broken one is left (its connection is then
    closed): the redirect does not depend on it."""
    if response.will_close or response.length is None or response.length > _CHUNK:
        return
    end = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while response.length and (left := end - time.monotonic()) > 0:
            connection.sock.settimeout(left)
            if not response.read1(response.length):
                return
    except (http.client.HTTPException, OSError, ValueError):
        pass


class _StaleConnection(Exception):
    """A kept connection failed before any answer: the server closed it while it was idle."""


class _Watchdog:
    """Shuts a connection's socket after `seconds` (which ends any read in progress) unless
    stopped first; `stop` says whether it shut it, so that a shut connection is never kept."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self.connection = connection
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._timer = threading.Timer(seconds, self._shut)
        self._timer.daemon = True
        self._timer.start()

    def _shut(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.cut.set()
            sock = self.connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def stop(self) -> bool:
        with self._lock:
            self._stopped = True
            self._timer.cancel()
            return self.cut.is_set()


def _accepts(accept: Iterable[str], content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    for pattern in accept:
        if media == pattern or (pattern.endswith("/*") and media.startswith(pattern[:-1])):
            return True
    return False


@dataclass
class _Response(FetchResult):
    retry_after: str | None = None

    @classmethod
    def of(cls, url: str, response: http.client.HTTPResponse, body: bytes) -> "_Response":
        return cls(
            url=url,
            status=response.status,
            content_type=response.getheader("Content-Type", "") or "",
            body=body,
            etag=response.getheader("ETag"),
            last_modified=response.getheader("Last-Modified"),
            retry_after=response.getheader("Retry-After"),
        )
