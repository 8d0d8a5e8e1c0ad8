"""One ClickHouse client for embedded (chDB) and server URLs.

`chdb:///abs/path` gives the real ClickHouse engine in-process; `https://user:pw@host:8443`
(or http://) a ClickHouse server. Both return a clickhouse-connect client, so the rest of the
code does not know which it has.

chDB binds a process to ONE data path for its whole life, so the embedded client is cached per
process and shared; a second path in the same process is a clear error.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

_lock = threading.Lock()
_embedded: dict[str, Client] = {}

# Long timeouts for large uploads and synchronous mutations (runbook: 3600 s).
SERVER_SETTINGS = {"receive_timeout": 3600, "send_timeout": 3600}


class EmbeddedPathError(RuntimeError):
    pass


def connect(url: str) -> Client:
    """A client for the URL; embedded clients are shared within the process."""
    scheme = urlparse(url).scheme
    if scheme == "chdb":
        path = url[len("chdb://") :]
        with _lock:
            if path in _embedded:
                return _embedded[path]
            if _embedded:
                other = next(iter(_embedded))
                raise EmbeddedPathError(
                    f"this process already uses the embedded ClickHouse at {other}; chDB allows one data path per process, not {path}"
                )
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
            _embedded[path] = client
            return client
    if scheme in ("http", "https", "clickhouse"):
        return clickhouse_connect.get_client(dsn=url, connect_timeout=30, send_receive_timeout=3600, settings=SERVER_SETTINGS)
    raise ValueError(f"CONNECTOME_CLICKHOUSE_URL {url!r}: use chdb:///path for embedded or https://host:port for a server")


def is_embedded(url: str) -> bool:
    return urlparse(url).scheme == "chdb"
