"""Retrying an operation after transient errors, never after data errors.

    retry_call(op, what="upload of synapses", transient=is_transient_clickhouse_error, report=log)

One loop: exponential backoff with jitter (each delay is between half and all of
`first_delay * multiplier**(n-1)`, capped at `max_delay`), at most `attempts` attempts and no new
attempt once `total_seconds` would be exceeded; every retry and the final give-up go to `report`.
Whether an error is transient is the caller's classifier: one per backend below. Retrying is
safe only for operations that can run twice with the same result (reads, `IF NOT EXISTS`/`IF
EXISTS` DDL, a whole upload attempt into a fresh private staging table); the caller decides that,
never the loop. `sleep`, `clock` and `jitter` are injectable so tests do not wait.
"""

from __future__ import annotations

import http.client
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from clickhouse_connect.driver import exceptions as ch

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    total_seconds: float = 900.0  # from the first attempt's start; no attempt starts after it

    def delay(self, retry: int, jitter: float) -> float:
        """The wait before retry number `retry` (1-based); `jitter` in [0, 1)."""
        ceiling = min(self.max_delay, self.first_delay * self.multiplier ** (retry - 1))
        return ceiling * (0.5 + 0.5 * jitter)


def retry_call(
    operation: Callable[[], T],
    *,
    what: str,
    transient: Callable[[BaseException], bool],
    report: Callable[[str], Any],
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> T:
    """The operation's result, retrying it while it fails with a transient error.

    A non-transient error (and any BaseException such as KeyboardInterrupt) propagates at once.
    """
    started = clock()
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = policy.delay(attempt, jitter())
            elapsed = clock() - started
            if attempt == policy.attempts or elapsed + delay > policy.total_seconds:
                report(f"{what}: giving up after {attempt} attempts in {elapsed:.1f} s; last error {type(exc).__name__}: {exc}")
                raise
            report(f"{what}: attempt {attempt} of {policy.attempts} failed with a transient error ({type(exc).__name__}: {exc}); retrying in {delay:.1f} s")
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


# ClickHouse ---------------------------------------------------------------------------------
# Server error codes that say "try again later", not "this query or these rows are wrong"
# (names as ClickHouse's errorCodeToName gives them). MEMORY_LIMIT_EXCEEDED (241) is left out:
# a query too large for the server fails the same way again.
CLICKHOUSE_TRANSIENT_CODES = {
    159: "TIMEOUT_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    225: "NO_ZOOKEEPER",
    242: "TABLE_IS_READ_ONLY",
    252: "TOO_MANY_PARTS",
    279: "ALL_CONNECTION_TRIES_FAILED",
    285: "TOO_FEW_LIVE_REPLICAS",
    319: "UNKNOWN_STATUS_OF_INSERT",  # the insert may have landed: retry only a whole attempt into fresh staging
    439: "CANNOT_SCHEDULE_TASK",
    473: "DEADLOCK_AVOIDED",
    999: "KEEPER_EXCEPTION",
}
# HTTP statuses of a proxy or load balancer in front of the server (no ClickHouse code attached).
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 502, 503, 504})
_CODE = re.compile(r"\bCode:\s*(\d+)")
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")


def is_transient_clickhouse_error(exc: BaseException) -> bool:
    """True for errors of the connection or of a busy server; False for errors of the query or data."""
    if isinstance(exc, ch.Error):
        message = str(exc)
        code = exc.code
        if code is None and (found := _CODE.search(message)):
            code = int(found.group(1))
        if code is not None:
            return code in CLICKHOUSE_TRANSIENT_CODES
        if status := _HTTP_STATUS.search(message):
            return int(status.group(1)) in TRANSIENT_HTTP_STATUSES
        # clickhouse-connect raises OperationalError for transport failures (refused, reset, timed out).
        return isinstance(exc, ch.OperationalError)
    return isinstance(exc, (ConnectionError, TimeoutError))


# GCS ----------------------------------------------------------------------------------------
# google-cloud-storage's own list (google.cloud.storage.retry): these statuses are worth a retry.
GCS_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# pyarrow's GcsFileSystem raises OSError("google::cloud::Status(CODE: …)") once google-cloud-cpp's
# own retry policy gives up; these codes are the transient ones of https://google.aip.dev/194.
_GCLOUD_CPP_TRANSIENT = re.compile(r"google::cloud::Status\((UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|ABORTED|INTERNAL)\b")


def is_transient_gcs_error(exc: BaseException) -> bool:
    """True for throttling, server and connection errors of the object store; never for 4xx (but 408/429) or data."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, api.GoogleAPICallError):
        return exc.code in GCS_TRANSIENT_STATUSES
    if isinstance(exc, auth.TransportError):  # wraps the connection error that stopped a token refresh
        return True
    import requests
    import urllib3

    transport = (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.TimeoutError,
        urllib3.exceptions.PoolError,
        http.client.IncompleteRead,
        http.client.BadStatusLine,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(exc, transport):
        return True
    return isinstance(exc, OSError) and bool(_GCLOUD_CPP_TRANSIENT.search(str(exc)))
