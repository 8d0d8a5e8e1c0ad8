"""One ClickHouse client for embedded (chDB) and server URLs.

`chdb:///abs/path` gives the real ClickHouse engine in-process; `https://user:pw@host:8443`
(or http://) a ClickHouse server. Both return a clickhouse-connect client, so the rest of the
code does not know which it has.

chDB binds a process to ONE data path for its whole life, so the embedded client is cached per
process and shared; a second path in the same process is a clear error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver._backend.chdb_backend import ChdbBackend, _ChdbStreamSource
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


@contextmanager
def arrow_batches(client: Client, query: str, parameters: dict[str, Any] | None = None) -> Iterator[Iterator[pa.RecordBatch]]:
    """The query's result as Arrow record batches, streamed: memory holds one block at a time.

    clickhouse-connect streams Arrow from a server, but its chDB backend materialises an
    `ArrowStream` result whole before the first batch (only Native and a few text formats stream
    there). chDB itself emits each block as a complete Arrow IPC stream, so for an embedded client
    we read those blocks one by one through the backend's own stream source (clickhouse-connect
    1.12, pinned). Strings come out as `string`, as `query_arrow_stream` gives them. Issue no other
    query on the client until the batches are consumed or the block is left.
    """
    backend = getattr(client, "_backend", None)
    if not isinstance(backend, ChdbBackend):
        with client.query_arrow_stream(query, parameters=parameters) as stream:
            yield iter(stream)
        return
    sql = f"{query}\nSETTINGS output_format_arrow_string_as_string = 1"
    source = _ChdbStreamSource(backend._open_stream(sql, "ArrowStream", parameters or {}, client.database), backend._handle, backend.show_clickhouse_errors)
    try:
        yield (batch for block in source.gen for batch in pa.ipc.open_stream(block))
    finally:
        source.close()  # releases chDB's connection lock even when the consumer stops early
