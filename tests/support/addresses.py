"""Addresses for tests of shops that cannot be reached."""

from __future__ import annotations

import socket


def unreachable_address() -> str:
    """http://127.0.0.1:<a port nothing listens on>/: a connection there is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"
